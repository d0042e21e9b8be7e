"""Evaluation benchmark: `dltool eval` on Spark local[2] against plain Keras `predict` in one process.

Both score the same test split with the same trained model: (a) `model.predict` on the split
held in memory as numpy (the ceiling; TensorFlow's default threads use both cores), (b)
`run_eval`, which scores the split's shards with the ONNX copy train wrote beside the model and
reduces exact metric sums (on local[2]: in two threads of its own process, with no Spark
session), (c) the same with the copy taken away (TensorFlow scores in Spark tasks, as before
the copy existed). (b) and (c) each run in a fresh process, as `dltool eval` would: a Spark
session, where eval needs one, starts as eval starts it and is timed on its own; then each
runs twice (cold: the first scoring; warm: a rerun).

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
    """Rows and seconds of plain `model.predict` over the test split in memory (load time excluded; the best of
    three passes)."""
    import keras
    import pyarrow.dataset as pads

    from dltool.shards.codec import TensorSpec, decode_tensors

    manifest = json.loads((dataset / "_manifest.json").read_text())
    table = pads.dataset(str(dataset / "test"), format="parquet").to_table()
    x = decode_tensors(table.column("features"), TensorSpec.from_json(manifest["features"]))
    model = keras.models.load_model(model_path, compile=False)
    model.predict(x[:256], batch_size=256, verbose=0)  # trace once, like the first batch of a task
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        model.predict(x, batch_size=256, verbose=0)
        best = min(best, time.perf_counter() - started)
    return len(x), best


def prepare(config) -> None:
    """The split's shards and a one-epoch model (the bench measures speed, not quality)."""
    from dltool.ingest.run import run_ingest
    from dltool.spark.session import spark_session
    from dltool.train.run import run_training

    t = time.perf_counter()
    spark_session(config.spark)
    print(f"spark session: {time.perf_counter() - t:.1f}s")
    run_ingest(config, progress=False)
    run_training(config, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_data")
    parser.add_argument("--ceiling", nargs=2, type=Path, help=argparse.SUPPRESS)  # (a) alone: dataset, model
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # ingest and train alone
    args = parser.parse_args()
    if args.ceiling:
        print(json.dumps(keras_predict(*args.ceiling)))
        return

    from dltool.config.models import ExperimentConfig

    work = args.work.resolve()
    images = make_images(work, args.images)
    dataset, run_dir = work / f"eval-digits-{args.images}", work / f"eval-run-{args.images}"
    config = ExperimentConfig.model_validate(experiment(dataset, images, run_dir))
    if args.prepare:
        prepare(config)
        return
    # Every step in a process of its own, so that no measured one runs beside another's JVM (a stopped session
    # keeps its JVM): (a) ran at 3,000-4,800 examples/s in one sitting in the process that had trained.
    subprocess.run([sys.executable, __file__, "--prepare", "--images", str(args.images), "--work", str(work)], check=True)
    done = subprocess.run([sys.executable, __file__, "--ceiling", str(dataset), str(run_dir / "model" / "model.keras")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    rows, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    ceiling = rows / seconds
    print(f"test split: {rows} rows of 32x32x3 uint8; model small_cnn")
    print(f"(a) keras predict, in memory, one process, best of 3: {ceiling:8.0f} examples/s")
    # Cold as a user's `dltool eval` is: a fresh process whose session starts as eval starts it (its
    # Python workers importing TensorFlow meanwhile), timed from the session being up; then a rerun.
    # (c): the same in a fresh process, with the ONNX copy taken away (TensorFlow scores, as before it existed).
    import shutil

    tf_run = work / f"eval-run-{args.images}-tensorflow"
    shutil.rmtree(tf_run, ignore_errors=True)
    shutil.copytree(run_dir, tf_run)
    (tf_run / "model" / "scoring.json").unlink()
    for name, variant in (("b", config), ("c", config.model_copy(update={"train": config.train.model_copy(
            update={"run_dir": str(tf_run)})}))):  # fmt: skip
        settings = work / f"eval-config-{args.images}-{name}.json"
        settings.write_text(variant.model_dump_json())
        done = subprocess.run([sys.executable, "-c", FRESH, str(settings), str(rows)], capture_output=True, text=True,
                              check=True)  # fmt: skip
        times = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"fresh process: spark session {times['session']:.1f}s (not counted below)" if "session" in times else
              "fresh process: no Spark session (a local master: eval scores the ONNX copy in its own threads)")
        for label in ("cold", "warm"):
            seconds = times[label]
            print(f"({name}) dltool eval by {times['runtime']}, {label}: {rows / seconds:8.0f} examples/s  "
                  f"({seconds:.1f}s)  ratio {name}/a = {rows / seconds / ceiling:.2f}  accuracy {times['accuracy']:.4f}")
    shutil.rmtree(tf_run, ignore_errors=True)


FRESH = """
import json, sys, time
from pathlib import Path
from dltool.artefacts import scorer_for
from dltool.config.models import ExperimentConfig
from dltool.evaluate.score import run_eval
from dltool.storage.fs import open_location
from dltool.evaluate.tasks import SCORING_MODULES, tensorflow_tasks
from dltool.spark.local import local_cores
from dltool.spark.session import spark_session
config = ExperimentConfig.model_validate_json(Path(sys.argv[1]).read_text())
times = {}
t = time.perf_counter()
rows = 15930 if len(sys.argv) < 3 else int(sys.argv[2])
scorer = scorer_for(open_location(config.train.run_dir).child("model", "model.keras"))
tensorflow = tensorflow_tasks(rows) if scorer.runtime == "tensorflow" else 0
if tensorflow or not local_cores(config.spark):  # else run_eval scores in its own threads, with no session
    spark_session(config.spark, warm=SCORING_MODULES, warm_tensorflow=tensorflow, sql=False)  # as run_eval starts it
    times["session"] = time.perf_counter() - t
for label in ("cold", "warm"):
    t = time.perf_counter()
    result = run_eval(config, split="test", progress=False)
    times[label] = time.perf_counter() - t
times["runtime"] = result.scored.runtime
times["accuracy"] = result.scored.metrics["accuracy"]
print(json.dumps(times))
"""


if __name__ == "__main__":
    main()
