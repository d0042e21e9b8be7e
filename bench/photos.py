"""Large photos to small tensors: JPEG decoding at reduced size, dltool against the bare loop, one run.

The set (built once into --work): N JPEGs of 300-600 px a side (quality 90), cut at random from
scikit-learn's two bundled photographs (427x640) and scaled, in two class folders. The job: read,
decode to 3 channels, resize to 32x32, label from the folder, write Parquet.

Rows, each on the same files with the page cache warm:
- bare loop, full decode: read + cv2.imdecode + cv2.resize (INTER_AREA) in one process; twice its
  rate is the 2-core ceiling of a loop that decodes every pixel.
- bare loop, reduced decode: the same with IMREAD_REDUCED_COLOR_2/4/8 picked as dltool picks it.
- dltool ingest (Spark local[2], the session started before the clock, a first run then an
  --overwrite rerun) with `reduced_decode: false` and with the default (true).
- how close the reduced tensors are to the full-decode ones (mean absolute difference, 0-255).

    .venv/bin/python bench/photos.py --images 4000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from images_real import ROOT, listed  # noqa: E402  (bench/ is not a package)

SIZE = 32


def make_photos(root: Path, n: int) -> Path:
    import cv2
    from sklearn.datasets import load_sample_images

    folder = root / f"photos-{n}"
    if (folder / ".done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    photos, names = load_sample_images().images, ["china", "flower"]
    for name in names:
        (folder / name).mkdir(parents=True)
    for i in range(n):
        p = int(rng.integers(2))
        photo = photos[p]
        h, w = int(rng.integers(200, 427)), int(rng.integers(200, 427))
        y, x = int(rng.integers(photo.shape[0] - h)), int(rng.integers(photo.shape[1] - w))
        scale = rng.uniform(300, 600) / max(h, w)
        tile = cv2.resize(np.ascontiguousarray(photo[y : y + h, x : x + w, ::-1]), (round(w * scale), round(h * scale)))
        ok, data = cv2.imencode(".jpg", tile, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (folder / names[p] / f"{i:06d}.jpg").write_bytes(data.tobytes())
    (folder / ".done").write_text("")
    return folder


def bare(files: list[tuple[str, int]], reduced: bool) -> tuple[float, list[np.ndarray]]:
    """Seconds for the loop over the files, and its tensors; `reduced` reads the size from the header (Pillow)
    and decodes at the scale dltool picks."""
    import io

    import cv2
    from PIL import Image

    from dltool.transforms.image import jpeg_reduction

    out = []
    start = time.perf_counter()
    for path, _ in files:
        with open(path, "rb") as f:
            data = f.read()
        flags = cv2.IMREAD_COLOR
        if reduced:
            width, height = Image.open(io.BytesIO(data)).size
            factor = jpeg_reduction(width, height, 1, (SIZE, SIZE), "stretch")
            flags = getattr(cv2, f"IMREAD_REDUCED_COLOR_{factor}") if factor > 1 else flags
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        out.append(cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    return time.perf_counter() - start, out


def dltool_ingest(folder: Path, out: Path, reduced: bool) -> tuple[float, float, dict[str, np.ndarray]]:
    """First ingest and an --overwrite rerun, in seconds; and the tensors by file name."""
    import pyarrow.dataset as pads

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import ingest_session, run_ingest
    from dltool.storage.fs import open_dataset, open_location
    from dltool.shards.codec import TensorSpec, decode_tensors

    config = ExperimentConfig.model_validate({
        "name": "photos", "spark": {"master": "local[2]"},
        "dataset": {"path": str(out), "split": {"train": 1.0, "val": 0.0, "test": 0.0}},
        "ingest": {"reader": "image", "input": str(folder), "size": [SIZE, SIZE], "channels": 3, "resize": "stretch",
                   "reduced_decode": reduced},
    })  # fmt: skip
    ingest_session(config, open_location(config.ingest.input), open_dataset(config.dataset.path))  # as ingest does
    start = time.perf_counter()
    run_ingest(config, overwrite=True, progress=False)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    run_ingest(config, overwrite=True, progress=False)
    warm = time.perf_counter() - start
    table = pads.dataset(str(out / "train"), format="parquet").to_table(columns=["features", "key"])
    tensors = decode_tensors(table.column("features"), TensorSpec((SIZE, SIZE, 3), "uint8"))
    keys = [Path(k).name for k in table.column("key").to_pylist()]
    return cold, warm, dict(zip(keys, tensors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "_data")
    args = parser.parse_args()

    folder = make_photos(args.work.resolve(), args.images)
    files = listed(folder)
    mb = sum(Path(f).stat().st_size for f, _ in files) / 2**20
    print(f"{len(files)} JPEGs of 300-600 px ({mb:.0f} MB) -> {SIZE}x{SIZE}x3; page cache warm")
    bare(files[:200], False)  # imports and page cache before the clock
    full_s, full = bare(files, False)
    reduced_s, reduced = bare(files, True)
    n = len(files)
    print(f"bare loop, full decode:     {n / full_s:8,.0f} img/s   2-core ceiling {2 * n / full_s:8,.0f}")
    print(f"bare loop, reduced decode:  {n / reduced_s:8,.0f} img/s   2-core ceiling {2 * n / reduced_s:8,.0f}   "
          f"{full_s / reduced_s:.2f}x the full decode; mean |difference| "
          f"{np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(full, reduced)]):.2f} of 255")  # fmt: skip
    rates = {}
    for name, flag in (("full", False), ("reduced", True)):
        cold, warm, tensors = dltool_ingest(folder, args.work.resolve() / f"photos-dataset-{name}", flag)
        rates[name] = (n / cold, n / warm, tensors)
        print(f"dltool ingest, {name + ' decode:':16s} {n / cold:8,.0f} img/s first, {n / warm:8,.0f} rerun   "
              f"ratio to the full-decode ceiling {n / warm / (2 * n / full_s):.2f}")  # fmt: skip
    by_name = rates["full"][2]
    diff = np.mean([np.abs(t.astype(int) - by_name[k]).mean() for k, t in rates["reduced"][2].items()])
    print(f"dltool reduced / full: {rates['reduced'][0] / rates['full'][0]:.2f}x first, "
          f"{rates['reduced'][1] / rates['full'][1]:.2f}x rerun; mean |difference| of the tensors {diff:.2f} of 255")


if __name__ == "__main__":
    main()
