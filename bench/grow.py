"""What a growing dataset costs: an incremental ingest of 1% new files against a full ingest, one run.

The set is bench/images_real.py's (20k real small images in 12 class folders: digit scans, most of
them 1-2 KB, and photo tiles, JPEG and PNG), copied into a work folder with 1% held back. In one
SparkSession (local[2], started before the clock as `dltool ingest` starts it), on a warm page cache:

- full: the first ingest of the 99%, then the same again with --overwrite (the cost of today's
  "rebuild every day");
- grow 1%: the held-back 1% copied in, then `dltool ingest` (version 2: those files decoded, the
  manifest and record index written);
- grow 1 file: one more file, then `dltool ingest`: the fixed cost of a version (listing, diff, one
  Spark task, the manifest);
- change and remove 1%: 1% of the files rewritten and 1% removed: the old shards that held them
  are rewritten too;
- up to date: nothing changed (the listing alone).

The goal (issue "Datasets that grow"): grow 1% <= 10% of a full ingest + the fixed cost.

    .venv/bin/python bench/grow.py --images 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from images_real import SIZE, make_images  # noqa: E402  (bench/ is not a package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "_data")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import ingest_session, run_ingest

    source = make_images(args.work, args.images)
    files = sorted(p for p in source.rglob("*.*") if p.name != ".done")
    held = files[::100]  # 1%, spread over the classes
    work = Path(tempfile.mkdtemp(prefix="dltool-grow-"))
    try:
        folder = work / "images"
        kept = set(held)
        for path in files:
            if path not in kept:
                target = folder / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        config = ExperimentConfig.model_validate({
            "name": "grow", "spark": {"master": "local[2]"},
            "dataset": {"path": str(work / "ds"), "split": {"train": 0.7, "val": 0.15, "test": 0.15}},
            "ingest": {"reader": "image", "input": str(folder), "size": [SIZE, SIZE], "channels": 3, "resize": "stretch"},
        })  # fmt: skip
        print(f"{len(files) - len(held)} files, then {len(held)} more; load {os.getloadavg()[0]:.2f}", flush=True)
        start = time.perf_counter()
        ingest_session(config)
        session = time.perf_counter() - start

        def timed(**kw) -> tuple[float, object]:
            start = time.perf_counter()
            result = run_ingest(config, progress=False, **kw)
            return time.perf_counter() - start, result

        rows = []
        first, _ = timed()
        rows.append(("full ingest, first in the session", first, None))
        full, _ = timed(overwrite=True)
        rows.append(("full ingest, --overwrite (the rebuild)", full, None))
        for path in held:
            shutil.copy2(path, folder / path.relative_to(source))
        grow, result = timed()
        assert result.status == "updated" and sum(result.changes["added"].values()) == len(held), result
        rows.append((f"grow: {len(held)} new files (1%)", grow, result.changes))
        extra = folder / "0" / "one-more.png"
        shutil.copy2(held[0], extra)
        fixed, result = timed()
        rows.append(("grow: 1 new file (the fixed cost)", fixed, result.changes))
        for path in files[1::100]:  # 1% changed: new bytes (the file flipped), new mtime
            import cv2

            target = folder / path.relative_to(source)
            image = cv2.imread(str(target))
            cv2.imwrite(str(target), image[:, ::-1])
        for path in files[2::100]:  # 1% removed
            (folder / path.relative_to(source)).unlink()
        churn, result = timed()
        rows.append(("change 1% and remove 1%", churn, result.changes))
        noop, result = timed()
        assert result.status == "up_to_date"
        rows.append(("up to date (nothing changed)", noop, None))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| ingest | seconds | x full (rebuild) | files added/changed/removed |\n| --- | ---: | ---: | --- |")
    for name, seconds, changes in rows:
        said = "" if changes is None else "/".join(str(sum(changes[k].values())) for k in ("added", "changed", "removed"))
        print(f"| {name} | {seconds:.2f} | {seconds / full:.3f} | {said} |")
    print(f"\nsession start (not counted): {session:.1f} s")
    print(f"grow 1% - fixed cost = {grow - fixed:.2f} s = {(grow - fixed) / full:.3f} of a full ingest (goal <= 0.10); "
          f"grow 1% = {grow / full:.3f} of a full ingest")  # fmt: skip
    print(json.dumps({"full_s": round(full, 2), "grow_s": round(grow, 2), "fixed_s": round(fixed, 2),
                      "churn_s": round(churn, 2), "noop_s": round(noop, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
