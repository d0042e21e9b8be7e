"""Image ingest side by side on real image files: dltool, Petastorm, and the bare-library ceiling, one run.

The set (built once, deterministically, into --work): scans of handwritten digits (scikit-learn's
bundled UCI digits, 8x8 grey scans upscaled to 32x32 with a small random shift, rotation and
stroke weight each) in ten class folders, mixed with RGB photo tiles of 48-160 px cut at random
from scikit-learn's two bundled photographs (two more class folders); 70% JPEG, 30% PNG. Every
system does the same job: read the file, decode to 3 channels, resize to 32x32, label from
the folder, and write Parquet.

Rows, each on the same files with the page cache warm:
- bare loop, 1 process: read + cv2.imdecode + cv2.resize in one Python process; twice its rate
  is the 2-core ceiling every ratio is against.
- bare loop, 2-process pool: the same loop in a `multiprocessing` pool of two.
- Petastorm 0.13.1 `materialize_dataset` (Spark local[2], `NdarrayCodec` for the 32x32x3 field,
  an untimed warm-up job first), from its own virtualenv (--peer-python; ../shared/NOTES.md says how to
  make it). Skipped with a note when that Python is missing.
- dltool: `run_ingest` (local[2]) after `ingest_session`, as `dltool ingest` runs them, in a fresh
  Python (the bench's loops imported OpenCV, which forked children would inherit): with
  local folders on a local master there is no Spark session, and the tasks run in two processes
  forked from the bench's own (until 2026-12-07 a session started before the clock, its Python
  workers importing the reader's modules); the first ingest in the process and a rerun with
  --overwrite. The session start (none now) is printed, and one row adds it back.

    .venv/bin/python bench/images_real.py --images 20000
    .venv/bin/python bench/images_real.py --images 100000 --skip-peer
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
PEER = """
import os, sys, time
import numpy as np, cv2
from pyspark.sql import SparkSession
from petastorm.codecs import NdarrayCodec, ScalarCodec
from petastorm.etl.dataset_metadata import materialize_dataset
from petastorm.unischema import Unischema, UnischemaField, dict_to_spark_row
from pyspark.sql.types import IntegerType

root, out = sys.argv[1], sys.argv[2]
schema = Unischema("Images", [UnischemaField("image", np.uint8, (32, 32, 3), NdarrayCodec(), False),
                              UnischemaField("label", np.int32, (), ScalarCodec(IntegerType()), False)])
classes = sorted(os.listdir(root))
classes = [c for c in classes if not c.startswith(".")]
files = [(os.path.join(root, c, f), i) for i, c in enumerate(classes) for f in sorted(os.listdir(os.path.join(root, c)))]
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.driver.memory", "4g").getOrCreate())
sc = spark.sparkContext

def row(item):
    path, label = item
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    image = cv2.resize(cv2.imdecode(data, cv2.IMREAD_COLOR), (32, 32), interpolation=cv2.INTER_AREA)
    return dict_to_spark_row(schema, {"image": image, "label": np.int32(label)})

def materialize(url, items):
    with materialize_dataset(spark, url, schema, 64):
        rdd = sc.parallelize(items, 8).map(row)
        spark.createDataFrame(rdd, schema.as_spark_schema()).write.mode("overwrite").parquet(url)

materialize("file://" + out + "-warmup", files[:500])
start = time.perf_counter()
materialize("file://" + out, files)
print(f"PEER {len(files)} {time.perf_counter() - start:.3f}")
"""


def make_images(root: Path, n: int) -> Path:
    """n files in 12 class folders (digits 0-9, photo tiles china and flower), made once."""
    import cv2
    from sklearn.datasets import load_digits, load_sample_images

    folder = root / f"real-images-{n}"
    if (folder / ".done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    digits = load_digits()
    photos = load_sample_images()
    names = ["china", "flower"]
    for c in [*map(str, range(10)), *names]:
        (folder / c).mkdir(parents=True)
    for i in range(n):
        jpeg = rng.random() < 0.7
        if rng.random() < 0.6:  # a digit scan
            k = int(rng.integers(len(digits.images)))
            scan = (digits.images[k] * (255 / 16)).astype(np.float32)
            big = cv2.resize(scan, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
            turn = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), float(rng.normal(0, 8)), float(rng.uniform(0.85, 1.1)))
            turn[:, 2] += rng.normal(0, 1.5, 2)
            big = cv2.warpAffine(big, turn, (SIZE, SIZE), borderValue=0)
            if rng.random() < 0.5:
                big = cv2.dilate(big, np.ones((2, 2), np.uint8))
            image = np.clip(255 - big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)  # dark ink on paper
            label = str(digits.target[k])
        else:  # an RGB tile of a photograph
            p = int(rng.integers(2))
            photo = photos.images[p]
            side = int(rng.integers(48, 161))
            y, x = int(rng.integers(photo.shape[0] - side)), int(rng.integers(photo.shape[1] - side))
            image = np.ascontiguousarray(photo[y:y + side, x:x + side, ::-1])
            if rng.random() < 0.5:
                image = image[:, ::-1]
            label = names[p]
        ok, data = cv2.imencode(".jpg" if jpeg else ".png", image, [cv2.IMWRITE_JPEG_QUALITY, 90] if jpeg else [])
        (folder / label / f"{i:06d}.{'jpg' if jpeg else 'png'}").write_bytes(data.tobytes())
    (folder / ".done").write_text("")
    return folder


def listed(folder: Path) -> list[tuple[str, int]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    return [(str(f), i) for i, c in enumerate(classes) for f in sorted((folder / c).iterdir())]


def decode_one(item: tuple[str, int]) -> tuple[np.ndarray, int]:
    import cv2

    path, label = item
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    return cv2.resize(cv2.imdecode(data, cv2.IMREAD_COLOR), (SIZE, SIZE), interpolation=cv2.INTER_AREA), label


def bare_loop(files: list[tuple[str, int]]) -> float:
    start = time.perf_counter()
    for item in files:
        decode_one(item)
    return time.perf_counter() - start


def bare_pool(files: list[tuple[str, int]]) -> float:
    with Pool(2) as pool:
        pool.map(decode_one, files[:200], chunksize=50)  # workers started and cv2 imported before the clock
        start = time.perf_counter()
        pool.map(decode_one, files, chunksize=256)
        return time.perf_counter() - start


def petastorm(python: str, folder: Path, out: Path) -> float | None:
    if not Path(python).exists():
        print(f"Petastorm: {python} not found; make the peer virtualenv (../shared/NOTES.md) or pass --peer-python")
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
    env.update(PYSPARK_PYTHON=python, SPARK_LOCAL_IP="127.0.0.1")
    done = subprocess.run([python, "-c", PEER, str(folder), str(out)], capture_output=True, text=True, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("PEER ")), None)
    if done.returncode != 0 or line is None:
        print(f"Petastorm failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
        return None
    return float(line.split()[2])


def dltool_fresh(folder: Path, out: Path) -> tuple[float, float, float, float]:
    """`dltool_ingest` in a fresh Python, as a command runs it: nothing imported yet that this bench's loops
    imported (OpenCV), which forked children would otherwise inherit."""
    done = subprocess.run([sys.executable, __file__, "--dltool-only", str(folder), str(out)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def dltool_ingest(folder: Path, out: Path) -> tuple[float, float, float, float]:
    """Session start, first ingest and an --overwrite rerun, in seconds; the driver's peak RSS in MB."""
    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import ingest_session, run_ingest
    from dltool.storage.fs import open_dataset, open_location

    config = ExperimentConfig.model_validate({
        "name": "real-images", "spark": {"master": "local[2]"},
        "dataset": {"path": str(out), "split": {"train": 0.7, "val": 0.15, "test": 0.15}},
        "ingest": {"reader": "image", "input": str(folder), "size": [SIZE, SIZE], "channels": 3, "resize": "stretch"},
    })  # fmt: skip
    start = time.perf_counter()
    # as `dltool ingest` starts it: on local[2] with local folders no Spark (its tasks run in forked processes)
    ingest_session(config, open_location(config.ingest.input), open_dataset(config.dataset.path))
    session = time.perf_counter() - start
    start = time.perf_counter()
    first = run_ingest(config, progress=False)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    run_ingest(config, overwrite=True, progress=False)
    warm = time.perf_counter() - start
    assert first.counts.ok == first.counts.inputs, first.counts
    return session, cold, warm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "_data")
    parser.add_argument("--peer-python", default="/tmp/peer-venv/bin/python")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--dltool-only", nargs=2, type=Path, help=argparse.SUPPRESS)  # dltool_fresh's: folder, out
    args = parser.parse_args()
    if args.dltool_only:
        print(json.dumps(dltool_ingest(*args.dltool_only)))
        return
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    folder = make_images(args.work, args.images)
    files = listed(folder)
    n = len(files)
    size = sum(os.path.getsize(f) for f, _ in files)
    print(f"{n} files, {size / 2**20:.0f} MB, {sum(f.endswith('.jpg') for f, _ in files) / n:.0%} JPEG; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    bare_loop(files[:2000])  # page cache and cv2 warm
    loop = bare_loop(files)
    ceiling = 2 * n / loop
    rows = [("bare loop, 1 process", n / loop), ("bare loop, 2-process pool", n / bare_pool(files))]
    work = Path(tempfile.mkdtemp(prefix="dltool-images-real-"))
    try:
        if not args.skip_peer:
            took = petastorm(args.peer_python, folder, work / "petastorm")
            if took is not None:
                rows.append(("Petastorm 0.13.1 materialize (local[2], after a warm-up)", n / took))
        session, cold, warm, peak = dltool_fresh(folder, work / "dltool")
        rows.append(("dltool ingest, first in the process (local[2], local folders: forked processes, no session)",
                     n / cold))
        rows.append(("dltool ingest, --overwrite rerun", n / warm))
        rows.append(("dltool session (none here) + first ingest: the whole command less Python's start",
                     n / (session + cold)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| system | images/s | x 2-core ceiling |\n| --- | ---: | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / ceiling:.2f} |")
    peer = next((rate for name, rate in rows if name.startswith("Petastorm")), None)
    if peer:
        print(f"\ndltool / Petastorm: first {n / cold / peer:.2f}x, rerun {n / warm / peer:.2f}x")
    print(f"dltool session start (not counted in the first two): {session:.1f} s; driver peak RSS {peak:.0f} MB")
    print(json.dumps({"images": n, "rates": dict(rows), "session_s": round(session, 2)}))


if __name__ == "__main__":
    main()
