"""dltool tune on real local Spark and TensorFlow, on the sample CSV: trials at once, a failing trial, the good
learning-rate region found, best.yaml trains; a SIGKILLed study resumes without counting a trial twice; a poor
trial is pruned before its last epoch; an invalid space key exits 2 with its line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import yaml
from typer.testing import CliRunner

from dltool.cli import app
from tests.conftest import ROOT


def cli(*args):
    result = CliRunner().invoke(app, [*map(str, args), "--json"])
    lines = result.stdout.strip().splitlines()
    return result, (json.loads(lines[-1]) if lines else None)


def write_tune_config(tmp_path, dataset, tune: dict, epochs: int) -> str:
    data = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    data["spark"] = {"master": "local[2]", "conf": {"spark.ui.enabled": False, "spark.hadoop.fs.s3a.secret.key": SECRET}}
    data["dataset"]["path"] = str(dataset)
    data["ingest"]["input"] = str(ROOT / "sample_data" / "tabular" / "customers.csv")
    data["train"].update(run_dir=str(tmp_path / "run"), epochs=epochs)
    data["tune"] = tune
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


SECRET = "planted-tune-secret-93ab1c"
LR = "train.optimizer.learning_rate"
BATCH = "train.global_batch_size"


def test_two_trials_at_once_a_failure_recorded_and_the_good_region_found(spark, churn_dataset, tmp_path):
    config = write_tune_config(tmp_path, churn_dataset, epochs=6, tune={
        "trials": 6, "parallel": 2, "sampler": "random", "seed": 3,
        # A batch larger than the train split fails its trial (the first, enqueued); the study goes on.
        "space": {LR: {"loguniform": [1.0e-6, 1.0e-1]}, BATCH: {"choice": [32, 64, 100000]}},
        "enqueue": [{LR: 0.01, BATCH: 100000}],
    })  # fmt: skip

    result, summary = cli("tune", config)
    assert result.exit_code == 0, result.output
    trials = summary["trials"]
    assert len(trials) == 6 and [t["number"] for t in trials] == list(range(6))
    failed = [t for t in trials if t["state"] == "failed"]
    assert failed and failed[0]["number"] == 0 and "fewer than one global batch" in failed[0]["error"]
    trained = [t for t in trials if t["state"] in ("complete", "pruned")]
    assert sum(summary["counts"].values()) == 6 and len(trained) + len(failed) == 6
    overlapping = any(a["started"] < b["finished"] and b["started"] < a["finished"]
                      for i, a in enumerate(trained) for b in trained[i + 1:])  # fmt: skip
    assert overlapping, [(t["started"], t["finished"]) for t in trained]

    best = summary["best"]
    assert best["params"][LR] > 1e-3  # a trial from the good region: tiny rates barely move in 6 epochs
    assert best["value"] == max(t["value"] for t in trials if t["state"] == "complete")
    folder = tmp_path / "run" / "tune"
    # A trial keeps model.keras alone: `train --from-tune` trains the model with its SavedModel and ONNX copy.
    assert sorted(p.name for p in (folder / f"trial-{best['number']:03d}" / "model").iterdir()) == ["model.keras"]
    stored = json.loads((folder / "tune.json").read_text())
    assert stored["best"] == best and stored["status"] == "completed"
    assert {name for name in summary["plots"]} >= {"history", "parallel"}
    assert all(os.path.getsize(path) > 1000 for path in summary["plots"].values())

    best_config = yaml.safe_load((folder / "best.yaml").read_text())
    assert best_config["train"]["optimizer"]["learning_rate"] == best["params"][LR]
    assert best_config["train"]["global_batch_size"] == best["params"][BATCH]
    assert "tune" in best_config and best_config["dataset"]["path"] == str(churn_dataset)
    result, trained_best = cli("train", folder / "best.yaml", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert trained_best["status"] == "completed" and trained_best["epochs_done"] == 2
    assert os.path.exists(os.path.join(trained_best["saved_model"], "saved_model.pb"))
    assert (folder / "tune.json").exists()  # the study stays beside the training

    result, again = cli("tune", config)
    assert result.exit_code == 0 and again["status"] == "up_to_date"
    # The secret in spark.conf reached no file of the study, its trials or the training, nor best.yaml.
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert (folder / "best.yaml") in written and not [p for p in written if SECRET.encode() in p.read_bytes()]


def test_a_killed_study_resumes_and_a_poor_trial_is_pruned(churn_dataset, tmp_path):
    config = write_tune_config(tmp_path, churn_dataset, epochs=6, tune={
        "trials": 3, "parallel": 1, "sampler": "random", "seed": 1,
        "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 2},
        "space": {LR: {"loguniform": [1.0e-6, 1.0e-1]}},
        "enqueue": [{LR: 0.01}, {LR: 1.0e-6}],  # a good trial to compare with, then one that cannot learn
    })  # fmt: skip
    tune = tmp_path / "run" / "tune"
    process = subprocess.Popen([sys.executable, "-m", "dltool.cli", "tune", config, "--json"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    tick, deadline = threading.Event(), time.monotonic() + 300
    while not (tune / "trial-001").exists() and process.poll() is None and time.monotonic() < deadline:
        tick.wait(0.1)  # polls the second trial's run dir, never a guessed delay
    assert (tune / "trial-001").exists(), process.stderr.read().decode()[-3000:] if process.poll() is not None else ""
    os.killpg(process.pid, signal.SIGKILL)  # the search, its Spark and its trial's workers
    process.wait()
    process.stderr.close()

    result, summary = cli("tune", config)
    assert result.exit_code == 2 and "--resume" in summary["message"]
    result, summary = cli("tune", config, "--resume")
    assert result.exit_code == 0, result.output
    trials = {t["number"]: t for t in summary["trials"]}
    assert trials[0]["state"] == "complete" and trials[1]["state"] == "interrupted"
    counted = [t for t in trials.values() if t["state"] in ("complete", "pruned", "failed")]
    assert len(counted) == 3 and len(trials) == 4  # the interrupted trial ran again and counts once
    rerun = next(t for t in trials.values() if t["rerun_of"] == 1)
    assert rerun["params"] == {LR: 1.0e-6}
    assert rerun["state"] == "pruned" and 2 <= rerun["pruned_at"] < 6 and rerun["epochs"] == rerun["pruned_at"]
    assert json.loads((tune / f"trial-{rerun['number']:03d}" / "run.json").read_text())["stopped_on_request"]

    result, trained = cli("train", config, "--from-tune", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert trained["status"] == "completed"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["optimizer"]["learning_rate"] == (
        summary["best"]["params"][LR]
    )


def test_an_invalid_space_key_exits_2_with_its_line(tmp_path):
    config = write_tune_config(tmp_path, tmp_path / "no-dataset", epochs=2, tune={
        "trials": 2, "space": {"train.optimiser.learning_rate": {"uniform": [0.001, 0.01]}}})  # fmt: skip
    line = next(n for n, text in enumerate(open(config), 1) if "optimiser" in text)
    result, summary = cli("tune", config)
    assert result.exit_code == 2
    assert summary["message"] == (
        f"{config}:{line}: tune.space.train.optimiser.learning_rate: 0.001 does not fit train.optimiser: no such setting"
    )


def test_a_trial_in_a_kept_worker_process_trains_as_in_a_fresh_one(spark, churn_dataset, tmp_path):
    """A trial takes the worker process, TensorFlow loaded, that an earlier trial left in its Spark Python worker,
    and trains there exactly as `dltool train` does in a fresh one."""
    rates = [0.005, 0.002, 0.003, 0.004]
    config = write_tune_config(tmp_path, churn_dataset, epochs=2, tune={
        "trials": 4, "parallel": 1, "sampler": "random", "space": {LR: {"loguniform": [1.0e-3, 1.0e-2]}},
        "enqueue": [{LR: rate} for rate in rates]})  # fmt: skip
    result, summary = cli("tune", config)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "tune"

    def trained(run_dir) -> list:
        rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
        return [(row["loss"], row["val_loss"], row["val_accuracy"]) for row in rows]

    processes = {}  # trial number: (run in its process, process id)
    for number in range(4):
        log = (folder / f"trial-{number:03d}" / "logs" / "attempt-1" / "worker-0.log").read_text()
        words = next(line for line in log.splitlines() if line.startswith("dltool worker: run ")).split()
        processes[number] = (int(words[3]), words[6])
    # local[2] has at most two Spark Python workers: four trials one after another reuse a process (the first may
    # take one an earlier study of this session kept).
    kept = [n for n, (run, _) in processes.items() if run > 1]
    assert len({pid for _, pid in processes.values()}) <= 2 and len(kept) >= 2, processes
    assert all(trial["state"] == "complete" for trial in summary["trials"])

    number = kept[0]
    data = yaml.safe_load(open(config))
    data["train"].setdefault("optimizer", {})["learning_rate"] = rates[number]
    data["train"]["run_dir"] = str(tmp_path / "fresh")
    (tmp_path / "fresh.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result, fresh = cli("train", tmp_path / "fresh.yaml", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert trained(tmp_path / "fresh") == trained(folder / f"trial-{number:03d}")
