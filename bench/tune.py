"""Tuning benchmark: the same 8-trial random search three ways, one run, trials per hour and the ratios.

(a) `dltool tune` with parallel 2 on local[2] (the whole CLI, Spark start included),
(b) the same trials as sequential `dltool train` commands, one after another (each its own process),
(c) a plain Optuna loop calling Keras `fit` in one process on the train split held as numpy, with the
    same model (dltool's builder) and the same validation each epoch, TensorFlow on both cores;
(c1) the same loop with TensorFlow on one thread: twice its rate is the 2-core ceiling of two such loops.

(b) and (c) run exactly the values (a)'s trials drew, so all three do the same work; pruning is off.
The data is the bundled digit images (configs/images.yaml), ingested once.

    .venv/bin/python bench/tune.py              # 8 trials of 8 epochs
    .venv/bin/python bench/tune.py --epochs 3   # quick
    .venv/bin/python bench/tune.py --ways a,c,c1  # without (b), the longest
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"train.optimizer.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}, "train.global_batch_size": {"choice": [32, 64]}}


def write_config(work: Path, name: str, epochs: int, trials: int, values: dict | None = None) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "images.yaml").read_text())
    data["ingest"]["input"] = str(ROOT / "sample_data" / "images")
    data["spark"] = {"master": "local[2]", "conf": {"spark.ui.enabled": False}}
    data["dataset"]["path"] = str(work / "digits")
    data["train"].update(run_dir=str(work / name), epochs=epochs, workers=1)
    data["tune"] = {"trials": trials, "parallel": 2, "sampler": "random", "pruner": "none", "space": SPACE}
    for dotted, value in (values or {}).items():
        node = data["train"]
        *path, last = dotted.removeprefix("train.").split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dltool(*args) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dltool.cli", *map(str, args), "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dltool {args[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def plain(config_path: Path, trials: list[dict], epochs: int, threads: int) -> tuple[float, list[float]]:
    """plain_optuna in a fresh process (TensorFlow's threads are fixed when it starts)."""
    done = subprocess.run([sys.executable, __file__, "--plain", json.dumps([str(config_path), trials, epochs, threads])],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the plain loop failed: {done.stderr[-2000:]}")
    seconds, values = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, values


def plain_optuna(config_path: Path, trials: list[dict], epochs: int, threads: int) -> tuple[float, list[float]]:
    """One process: the split as numpy, then one Keras fit per trial (the same values), best val_accuracy each."""
    started = time.perf_counter()
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    import optuna
    import pyarrow.dataset as pads

    from dltool.config.loader import load_config
    from dltool.shards.codec import decode_tensors
    from dltool.storage import Manifest, open_location
    from dltool.train.model import build_model

    config = load_config(config_path)
    dataset = Path(config.dataset.path)
    manifest = Manifest.read(open_location(str(dataset)))

    def split(name: str):
        # The split's shards of the dataset's current version (a folder may still hold an earlier version's).
        table = pads.dataset([str(dataset / f) for f in manifest.splits[name].files], format="parquet").to_table()
        return decode_tensors(table.column("features"), manifest.features), table.column("label").to_numpy().astype(np.int32)

    (x, y), (vx, vy) = split("train"), split("val")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for values in trials:
        study.enqueue_trial(values)

    def objective(trial):
        lr = trial.suggest_float("train.optimizer.learning_rate", 1e-4, 1e-2, log=True)
        batch = trial.suggest_categorical("train.global_batch_size", [32, 64])
        keras.utils.set_random_seed(config.train.seed)
        model = build_model(config.train, manifest)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, batch_size=batch, epochs=epochs, validation_data=(vx, vy), verbose=0, shuffle=True)
        return max(history.history["val_accuracy"])

    study.optimize(objective, n_trials=len(trials))
    return time.perf_counter() - started, [t.value for t in study.trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_data" / "tune")
    parser.add_argument("--ways", default="a,b,c,c1", help="which ways to run, comma-separated (b takes longest)")
    parser.add_argument("--plain", help=argparse.SUPPRESS)  # internal: run plain_optuna in this process
    args = parser.parse_args()
    if args.plain:
        config, trials, epochs, threads = json.loads(args.plain)
        print(json.dumps(plain_optuna(Path(config), trials, epochs, threads)))
        return
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    study_config = write_config(work, "study", args.epochs, args.trials)
    dltool("ingest", study_config)  # once, untimed: every way trains on the same shards
    print(f"{args.trials} trials, {args.epochs} epochs each, the sample digits, local[2] (2 cores)")

    ways = set(args.ways.split(","))
    summary, seconds_a = dltool("tune", study_config, "--overwrite")
    trials = [t["params"] for t in summary["trials"]]
    values_a = [t["value"] for t in summary["trials"]]
    rate = lambda seconds: args.trials / seconds * 3600
    print(f"(a) dltool tune, parallel 2:        {seconds_a:7.1f} s  {rate(seconds_a):6.1f} trials/h  "
          f"best val_accuracy {max(values_a):.4f}; trials in a kept worker process: {kept_processes(work)}")  # fmt: skip
    if ways == {"a"}:
        return
    seconds_b = seconds_c = seconds_c1 = float("nan")
    if "b" in ways:
        seconds_b = sequential(work, trials, args.epochs, rate)
    if "c" in ways:
        seconds_c, values_c = plain(study_config, trials, args.epochs, 0)
        print(f"(c) plain Optuna + Keras fit:       {seconds_c:7.1f} s  {rate(seconds_c):6.1f} trials/h  "
              f"best val_accuracy {max(values_c):.4f}")  # fmt: skip
    if "c1" in ways:
        seconds_c1, values_c1 = plain(study_config, trials, args.epochs, 1)
        print(f"(c1) the same, TensorFlow on 1 thread: {seconds_c1:5.1f} s  {rate(seconds_c1):6.1f} trials/h  "
              f"(x2 = {2 * rate(seconds_c1):.1f} trials/h, the 2-core ceiling of two such loops)")  # fmt: skip
    print(f"ratio a/b = {seconds_b / seconds_a:.2f}   a/c = {seconds_c / seconds_a:.2f}   "
          f"a/(2*c1) = {seconds_c1 / (2 * seconds_a):.2f}   a/(2c) = {seconds_c / (2 * seconds_a):.2f}")


def kept_processes(work: Path) -> str:
    """How many trials ran in a worker process an earlier trial left (their log says so)."""
    logs = sorted((work / "study" / "tune").glob("trial-*/logs/attempt-1/worker-0.log"))
    kept = sum("TensorFlow already loaded" in log.read_text() for log in logs)
    return f"{kept} of {len(logs)}"


def sequential(work: Path, trials: list[dict], epochs: int, rate) -> float:
    """(b): each trial as its own `dltool train` command."""
    started = time.perf_counter()
    values_b = []
    for number, values in enumerate(trials):
        config = write_config(work, f"sequential-{number}", epochs, len(trials), values)
        result, _ = dltool("train", config, "--overwrite")
        values_b.append(result["best"]["value"])
    seconds_b = time.perf_counter() - started
    print(f"(b) {len(trials)} x dltool train, in sequence: {seconds_b:7.1f} s  {rate(seconds_b):6.1f} trials/h  "
          f"best val_accuracy {max(values_b):.4f}")  # fmt: skip
    return seconds_b


if __name__ == "__main__":
    main()
