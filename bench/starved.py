"""Is the model starved? dltool's input-wait report on input-bound and compute-bound training, in one run.

Every epoch each worker measures, inside its compiled train loop, how long it waited for its next
batch and how long its steps took; `input_wait` (history.jsonl, run.json, the progress line,
MLflow, TensorBoard) is the largest worker's waiting share, and a share over 20% in an epoch of
2 s or more prints a warning with the likely cause and the setting to change. On one worker,
Spark local[2], epoch 1 (the cache fill) left out:

(a) a table of 16 numeric columns, the builtin mlp, batches of 64: a step takes microseconds, the
    feed's per-batch cost (a Python generator handing a batch to tf.data) sets the pace: input-bound;
(b) the same with batches of 1024, what the warning for (a) says to do;
(c) 64x64 RGB images and a CNN of 3 convolutions, batches of 64: compute-bound.

It prints samples/s, the input wait and the warning of each run, and the ratio (b)/(a) of
examples per second: what following the warning gained.

    .venv/bin/python bench/starved.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ingest import make_images  # noqa: E402  (bench/ is not a package)

CNN = {"layers": [{"Conv2D": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
                  {"Conv2D": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
                  {"MaxPooling2D": {}},
                  {"Conv2D": {"filters": 128, "kernel_size": 3, "activation": "relu"}},
                  {"GlobalAveragePooling2D": {}}]}  # fmt: skip
COLUMNS = [f"x{i}" for i in range(16)]


def make_table(root: Path, rows: int) -> Path:
    """`rows` rows of 16 numeric columns and a 2-class label that a linear model can learn."""
    path = root / f"starved-table-{rows}.csv"
    if not path.exists():
        x = np.random.default_rng(0).normal(size=(rows, len(COLUMNS))).round(4)
        y = (x[:, :4].sum(axis=1) > 0).astype(int)
        lines = [",".join([*COLUMNS, "label"])] + [",".join([*map(str, r), str(c)]) for r, c in zip(x, y)]
        path.write_text("\n".join(lines) + "\n")
    return path


def experiment(name: str, work: Path, ingest: dict, model: dict, batch: int, epochs: int) -> dict:
    return {
        "name": name,
        "spark": {"master": "local[2]"},
        "dataset": {"path": str(work / f"starved-{name}"), "split": {"train": 0.9, "val": 0.1, "test": 0.0}},
        "ingest": ingest,
        "train": {"run_dir": str(work / f"starved-run-{name}-{batch}"), "epochs": epochs, "workers": 1,
                  "global_batch_size": batch, "model": model, "seed": 1},  # fmt: skip
    }


def train(config) -> dict:
    """Samples/s and mean input wait over the epochs after the first, and the run's warning."""
    from dltool.train.run import run_training

    summary = run_training(config, overwrite=True, progress=False, quiet=True)
    rows = [json.loads(line) for line in (Path(config.train.run_dir) / "history.jsonl").read_text().splitlines()]
    return {"rate": float(np.mean([r["samples_per_s"] for r in rows[1:]])),
            "wait": float(np.mean([r["input_wait"] for r in rows[1:]])),
            "warning": (summary.get("input_wait") or {}).get("warning")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300000, help="table rows")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_data")
    args = parser.parse_args()

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import run_ingest
    from dltool.spark.session import spark_session

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    table = {"reader": "csv", "input": str(make_table(work, args.rows)), "header": True, "numeric": COLUMNS,
             "label": "label", "task": "classification"}  # fmt: skip
    images = {"reader": "image", "input": str(make_images(work, args.images)), "size": [64, 64], "channels": 3,
              "resize": "stretch"}  # fmt: skip
    runs = {
        "(a) table, mlp, batch 64": experiment("table", work, table, {"builtin": "mlp"}, 64, args.epochs),
        "(b) table, mlp, batch 1024": experiment("table", work, table, {"builtin": "mlp"}, 1024, args.epochs),
        "(c) images, CNN, batch 64": experiment("images", work, images, CNN, 64, args.epochs),
    }
    configs = {name: ExperimentConfig.model_validate(raw) for name, raw in runs.items()}
    spark = spark_session(configs["(a) table, mlp, batch 64"].spark)
    for name in ("(a) table, mlp, batch 64", "(c) images, CNN, batch 64"):
        started = time.perf_counter()
        run_ingest(configs[name], overwrite=True, progress=False)
        print(f"ingested {name[4:].split(',')[0]} in {time.perf_counter() - started:.1f}s")
    print(f"1 worker, {args.epochs} epochs (epoch 1 left out)")
    results = {}
    for name, config in configs.items():
        results[name] = found = train(config)
        print(f"{name:28s} {found['rate']:9.0f} samples/s   input wait {found['wait']:5.1%}")
        if found["warning"]:
            print(f"{'':28s} warning: {found['warning']}")
    gain = results["(b) table, mlp, batch 1024"]["rate"] / results["(a) table, mlp, batch 64"]["rate"]
    print(f"following the warning: (b)/(a) = {gain:.2f}x the examples per second")
    spark.stop()


if __name__ == "__main__":
    main()
