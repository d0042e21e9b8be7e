"""Evaluation benchmark: `dltool eval` on Spark local[2] against plain Keras `predict` in one process.

Both score the same test split with the same trained model: (a) `model.predict` on the split
held in memory as numpy (the ceiling; TensorFlow's default threads use both cores), (b)
`run_eval`, which scores the split's shards in Spark tasks and reduces exact metric sums.
(b) runs in a fresh process, as `dltool eval` would: its Spark session starts as eval starts it
(Python workers importing TensorFlow meanwhile) and is timed on its own; then (b) runs twice
(cold: the first scoring job; warm: a rerun).

    .venv/bin/python bench/eval.py --images 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest import make_images  # noqa: E402  (bench/ is not a package)


def experiment(dataset: Path, images: Path, run_dir: Path) -> dict:
    return {
        "name": "bench-eval",
        "spark": {"master": "local[2]"},
        "dataset": {"path": str(dataset), "split": {"train": 0.2, "val": 0.0, "test": 0.8}},
        "ingest": {"reader": "image", "input": str(images), "size": [32, 32], "channels": 3, "resize": "stretch"},
        "train": {"run_dir": str(run_dir), "epochs": 1, "workers": 1, "global_batch_size": 64,
                  "model": {"builtin": "small_cnn"}, "monitor": "loss"},  # fmt: skip
    }


def keras_predict(dataset: Path, model_path: Path) -> tuple[int, float]:
    """Rows and seconds of plain `model.predict` over the test split in memory (load time excluded)."""
    import keras
    import pyarrow.dataset as pads

    from dltool.shards.codec import TensorSpec, decode_tensors

    manifest = json.loads((dataset / "_manifest.json").read_text())
    table = pads.dataset(str(dataset / "test"), format="parquet").to_table()
    x = decode_tensors(table.column("features"), TensorSpec.from_json(manifest["features"]))
    model = keras.models.load_model(model_path, compile=False)
    model.predict(x[:256], batch_size=256, verbose=0)  # trace once, like the first batch of a task
    started = time.perf_counter()
    model.predict(x, batch_size=256, verbose=0)
    return len(x), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_data")
    args = parser.parse_args()

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import run_ingest
    from dltool.spark.session import spark_session
    from dltool.train.run import run_training

    work = args.work.resolve()
    images = make_images(work, args.images)
    dataset, run_dir = work / f"eval-digits-{args.images}", work / f"eval-run-{args.images}"
    config = ExperimentConfig.model_validate(experiment(dataset, images, run_dir))
    t = time.perf_counter()
    spark = spark_session(config.spark)
    print(f"spark session: {time.perf_counter() - t:.1f}s")
    run_ingest(config, progress=False)
    run_training(config, progress=False)
    rows, seconds = keras_predict(dataset, run_dir / "model" / "model.keras")
    ceiling = rows / seconds
    print(f"test split: {rows} rows of 32x32x3 uint8; model small_cnn")
    print(f"(a) keras predict, in memory, one process: {ceiling:8.0f} examples/s")
    spark.stop()
    # Cold as a user's `dltool eval` is: a fresh process whose session starts as eval starts it (its
    # Python workers importing TensorFlow meanwhile), timed from the session being up; then a rerun.
    settings = work / f"eval-config-{args.images}.json"
    settings.write_text(config.model_dump_json())
    done = subprocess.run([sys.executable, "-c", FRESH, str(settings), str(rows)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    times = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"fresh process: spark session {times['session']:.1f}s (not counted below)")
    for label in ("cold", "warm"):
        seconds = times[label]
        print(f"(b) dltool eval, {label}: {rows / seconds:8.0f} examples/s  ({seconds:.1f}s)  ratio b/a = "
              f"{rows / seconds / ceiling:.2f}")  # fmt: skip


FRESH = """
import json, sys, time
from pathlib import Path
from dltool.config.models import ExperimentConfig
from dltool.evaluate.score import run_eval
from dltool.evaluate.tasks import SCORING_MODULES, tensorflow_tasks
from dltool.spark.session import spark_session
config = ExperimentConfig.model_validate_json(Path(sys.argv[1]).read_text())
times = {}
t = time.perf_counter()
rows = 15930 if len(sys.argv) < 3 else int(sys.argv[2])
spark_session(config.spark, warm=SCORING_MODULES, warm_tensorflow=tensorflow_tasks(rows))  # as run_eval starts it
times["session"] = time.perf_counter() - t
for label in ("cold", "warm"):
    t = time.perf_counter()
    run_eval(config, split="test", progress=False)
    times[label] = time.perf_counter() - t
print(json.dumps(times))
"""


if __name__ == "__main__":
    main()
