"""Training benchmark: dltool train (1 and 2 barrier workers) against plain Keras fit, same model and data.

(a) single-process Keras `fit` on the train split held in memory as numpy (the ceiling),
(b) `dltool train` with 1 worker, (c) with 2 workers, all in one run on Spark local[2].
Samples/s are taken after the first epoch (tracing and cache fill excluded); the time to the
first step and the peak RSS of each TensorFlow worker process are reported too.

    .venv/bin/python bench/train.py --images 8000 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ingest import make_images  # noqa: E402  (bench/ is not a package)

MODEL = {"builtin": "small_cnn"}


def experiment(dataset: Path, images: Path, run_dir: Path, epochs: int, workers: int, batch: int) -> dict:
    return {
        "name": "bench-train",
        "spark": {"master": "local[2]"},
        "dataset": {"path": str(dataset), "split": {"train": 0.9, "val": 0.1, "test": 0.0}},
        "ingest": {"reader": "image", "input": str(images), "size": [32, 32], "channels": 3, "resize": "stretch"},
        "train": {"run_dir": str(run_dir), "epochs": epochs, "workers": workers, "global_batch_size": batch,
                  "model": MODEL, "seed": 1},  # fmt: skip
    }


class WorkerMemory:
    """Peak RSS of the `dltool.train.worker` processes, sampled from /proc while they run."""

    def __init__(self):
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for pid_dir in Path("/proc").iterdir():
                if not pid_dir.name.isdigit():
                    continue
                try:
                    if b"dltool.train.worker" not in (pid_dir / "cmdline").read_bytes():
                        continue
                    status = (pid_dir / "status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peaks[int(pid_dir.name)] = max(self.peaks.get(int(pid_dir.name), 0), int(line.split()[1]))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        worker_peaks = [kib for kib in self.peaks.values() if kib > 200 * 1024]  # not the short model check
        return ", ".join(f"{kib / 1024:.0f} MB" for kib in sorted(worker_peaks)) or "n/a"


def keras_fit(dataset: Path, config, epochs: int, batch: int) -> tuple[float, float]:
    """Plain Keras on in-memory numpy: (samples/s after epoch 1, seconds to the first step)."""
    import keras
    import pyarrow.dataset as pads

    from dltool.shards.codec import decode_tensors
    from dltool.storage import Manifest, open_location
    from dltool.train.model import build_model

    started = time.perf_counter()
    manifest = Manifest.read(open_location(str(dataset)))
    table = pads.dataset(str(dataset / "train"), format="parquet").to_table()
    x = decode_tensors(table.column("features"), manifest.features)
    y = table.column("label").to_numpy().astype(np.int32)
    model = build_model(config.train, manifest)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if not times:
                times.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter())

    steps = len(x) // batch
    model.fit(x[: steps * batch], y[: steps * batch], batch_size=batch, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[Clock()])  # fmt: skip
    rate = steps * batch * (epochs - 1) / (times[-1] - times[1])
    return rate, times[0] - started


def dltool_train(config, workers: int) -> tuple[float, float, str]:
    from dltool.train.run import run_training

    with WorkerMemory() as memory:
        summary = run_training(config, overwrite=True, progress=False)
    rows = [json.loads(line) for line in (Path(config.train.run_dir) / "history.jsonl").read_text().splitlines()]
    rate = float(np.mean([r["samples_per_s"] for r in rows[1:]]))
    return rate, summary.get("time_to_first_step_s", float("nan")), memory.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_data")
    args = parser.parse_args()

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import run_ingest
    from dltool.spark.session import spark_session

    work = args.work.resolve()
    images = make_images(work, args.images)
    dataset = work / f"train-digits-{args.images}"
    configs = {w: ExperimentConfig.model_validate(experiment(dataset, images, work / f"run-{w}", args.epochs, w, args.batch))
               for w in (1, 2)}  # fmt: skip
    t = time.perf_counter()
    spark = spark_session(configs[1].spark)
    print(f"spark session: {time.perf_counter() - t:.1f}s")
    run_ingest(configs[1], progress=False)
    print(f"dataset: {json.loads((dataset / '_manifest.json').read_text())['splits']['train']['rows']} train rows, "
          f"epochs {args.epochs}, global batch {args.batch}, model {MODEL}")  # fmt: skip

    ceiling, ceiling_first = keras_fit(dataset, configs[1], args.epochs, args.batch)
    print(f"(a) keras fit, in memory:   {ceiling:8.0f} samples/s   first step after {ceiling_first:.1f}s")
    results = {}
    for workers in (1, 2):
        rate, first, memory = dltool_train(configs[workers], workers)
        results[workers] = rate
        label = "b" if workers == 1 else "c"
        print(f"({label}) dltool train, {workers} worker(s): {rate:8.0f} samples/s   first step after {first:.1f}s"
              f"   worker peak RSS {memory}")  # fmt: skip
    print(f"ratio b/a = {results[1] / ceiling:.2f}   ratio c/a = {results[2] / ceiling:.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
