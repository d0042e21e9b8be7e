"""dltool train on a real local[2] Spark with real TensorFlow: barrier workers, run dir, resume, faults."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pads
import pytest

from dltool.shards.codec import TensorSpec, decode_tensors


def train_cli(*args):
    """`dltool train ARGS --json` in-process: the CLI result and its parsed JSON summary."""
    from typer.testing import CliRunner

    from dltool.cli import app

    result = CliRunner().invoke(app, ["train", *map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def experiment(dataset, run_dir, **train) -> dict:
    settings = {"run_dir": str(run_dir), "epochs": 2, "global_batch_size": 32, "seed": 7, "workers": 2,
                "optimizer": {"name": "adam", "learning_rate": 0.003}, **train}  # fmt: skip
    return {"name": "t", "spark": {"master": "local[2]"}, "dataset": {"path": str(dataset)}, "train": settings}


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_two_workers_train_in_sync_and_leave_a_complete_run_dir(spark, digits_dataset, tmp_path, write_config):
    run = tmp_path / "run"
    config = write_config(experiment(digits_dataset, run, epochs=3, monitor="val_accuracy"))
    result, summary = train_cli(config)
    assert result.exit_code == 0, result.output
    assert summary["status"] == "completed" and summary["epochs_done"] == 3
    assert summary["replicas_in_sync"] == 2  # both workers reported identical weight digests
    rows = history(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < rows[0]["loss"]
    for name in ("run.json", "config.json", "history.jsonl", "model/model.keras", "model/saved_model/saved_model.pb"):
        assert (run / name).is_file(), name
    for epoch in (1, 2, 3):
        folder = run / "checkpoints" / f"epoch-{epoch:03d}"
        assert {p.name for p in folder.iterdir()} == {"model.keras", "state.npz", "checkpoint.json", "_DLTOOL"}
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert list((run / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((run / "tensorboard" / "val").glob("events.out.tfevents.*"))
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["status"] == "completed" and run_json["best"]["monitor"] == "val_accuracy"
    # The kept model is the best epoch's (train.final: best): the best val accuracy, ties to the lower val loss.
    top = max(r["val_accuracy"] for r in rows)
    kept = min((r for r in rows if r["val_accuracy"] == top), key=lambda r: r["val_loss"])
    assert run_json["model_epoch"] == summary["model_epoch"] == kept["epoch"] == run_json["best"]["epoch"]
    assert run_json["kept"] == "best" and run_json["seed"] == 7 and run_json["final"] == kept
    # Each epoch: every worker's share of step time spent waiting for its batches; the report leaves out the
    # first epoch (it fills the in-memory cache).
    for row in rows:
        assert len(row["input_wait_workers"]) == 2 and all(0 <= w <= 1 for w in row["input_wait_workers"])
        assert row["input_wait"] == max(row["input_wait_workers"])
    waits = [r["input_wait"] for r in rows[1:]]
    assert run_json["input_wait"]["mean"] == pytest.approx(sum(waits) / len(waits), abs=1e-4)
    assert run_json["input_wait"]["max"] == max(waits)

    # The saved model takes raw stored tensors and agrees exactly with the workers' val accuracy.
    import keras

    model = keras.models.load_model(run / "model" / "model.keras")
    manifest = json.loads((digits_dataset / "_manifest.json").read_text())
    table = pads.dataset(str(digits_dataset / "val"), format="parquet").to_table()
    images = decode_tensors(table.column("features"), TensorSpec.from_json(manifest["features"]))
    probs = model.predict(images, verbose=0)
    assert probs.shape == (table.num_rows, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(probs.argmax(axis=1) == table.column("label").to_numpy()))
    assert accuracy == pytest.approx(kept["val_accuracy"], abs=1e-6)


def test_resume_continues_history_and_reruns_are_idempotent(spark, churn_dataset, tmp_path, write_config):
    run = tmp_path / "run"
    config = write_config(experiment(churn_dataset, run, epochs=1, monitor="val_loss"))
    result, _ = train_cli(config)
    assert result.exit_code == 0, result.output
    first = history(run)

    result, summary = train_cli(config, "--epochs", "3")
    assert result.exit_code == 2 and "--resume" in summary["message"]

    result, summary = train_cli(config, "--epochs", "3", "--resume")
    assert result.exit_code == 0, result.output
    rows = history(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0] == first[0]  # the resumed run kept epoch 1 as written
    assert summary["epochs_done"] == 3

    result, summary = train_cli(config, "--epochs", "3")
    assert result.exit_code == 0 and summary["status"] == "up_to_date"


def train_with_fault(dataset, run, fault: dict, **train):
    """`run_training` with the test-only fault hook: the summary, or the DltoolError it raised."""
    from dltool.config.models import ExperimentConfig
    from dltool.errors import DltoolError
    from dltool.train.run import run_training

    config = ExperimentConfig.model_validate(experiment(dataset, run, **train))
    try:
        return run_training(config, progress=False, fault={"attempts": [0], **fault})
    except DltoolError as e:
        return e


def test_a_failing_worker_is_retried_from_the_last_checkpoint(spark, churn_dataset, tmp_path):
    run = tmp_path / "run"
    summary = train_with_fault(churn_dataset, run, {"rank": 1, "epoch": 2}, epochs=3, max_retries=1, final="last")
    assert isinstance(summary, dict), summary
    assert summary["attempts"] == 2 and summary["epochs_done"] == 3
    assert summary["kept"] == "last" and summary["model_epoch"] == 3 and summary["final"] == summary["last"]
    assert [r["epoch"] for r in history(run)] == [1, 2, 3]
    # Every worker's output is kept per attempt; the failed one holds its traceback.
    assert "InjectedFault: injected fault: worker 1 in epoch 2" in (run / "logs" / "attempt-1" / "worker-1.log").read_text()
    assert sorted(p.name for p in (run / "logs" / "attempt-2").iterdir()) == ["worker-0.log", "worker-1.log"]


def test_a_hung_worker_is_ended_by_the_watchdogs_and_the_run_retried(spark, churn_dataset, tmp_path):
    run = tmp_path / "run"
    fault = {"rank": 1, "epoch": 2, "kind": "hang"}
    summary = train_with_fault(churn_dataset, run, fault, epochs=3, max_retries=1, timeout_s=10, final="last")
    assert isinstance(summary, dict), summary
    assert summary["attempts"] == 2 and summary["epochs_done"] == 3
    assert [r["epoch"] for r in history(run)] == [1, 2, 3]
    logs = run / "logs" / "attempt-1"
    assert "injected fault: worker 1 hangs in epoch 2" in (logs / "worker-1.log").read_text()
    # Worker 0 waited in a collective for its silent peer; its watchdog ended the attempt.
    assert "dltool watchdog: no progress for" in (logs / "worker-0.log").read_text()


def test_a_failing_worker_without_retries_fails_with_its_message(spark, churn_dataset, tmp_path):
    error = train_with_fault(churn_dataset, tmp_path / "run", {"rank": 1, "epoch": 2}, epochs=3, max_retries=0)
    assert not isinstance(error, dict) and error.exit_code == 1
    assert "worker 1" in str(error) and "injected fault" in str(error)
    assert str(error).endswith(f"(workers' output: {tmp_path / 'run' / 'logs' / 'attempt-1'})")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_more_workers_than_slots_fails_at_once(spark, churn_dataset, tmp_path, write_config):
    config = write_config(experiment(churn_dataset, tmp_path / "run", workers=3))
    result, summary = train_cli(config)
    assert result.exit_code == 2
    assert "3" in summary["message"] and "slot" in summary["message"]


def test_same_config_gives_the_same_first_epoch_loss(spark, churn_dataset, tmp_path, write_config):
    losses = []
    for name in ("a", "b"):
        config = write_config(experiment(churn_dataset, tmp_path / name, epochs=1, workers=1), name=f"{name}.yaml")
        result, _ = train_cli(config)
        assert result.exit_code == 0, result.output
        losses.append(history(tmp_path / name)[0]["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_early_stopping_counts_an_improvement_under_min_delta_as_none(spark, churn_dataset, tmp_path, write_config):
    # min_delta 100: no epoch after the first improves val_loss by that much, so patience 1 runs out at epoch 2.
    settings = {"epochs": 12, "monitor": "val_loss", "early_stopping": {"patience": 1, "min_delta": 100}}
    result, summary = train_cli(write_config(experiment(churn_dataset, tmp_path / "run", **settings)))
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in history(tmp_path / "run")] == [1, 2] and summary["stopped_early"] is True
    assert summary["replicas_in_sync"] == 2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": {"layers": [{"Conv3X": {}}]}}, "unknown Keras layer 'Conv3X'"),
        ({"optimizer": {"name": "adamx"}}, "unknown optimizer 'adamx'"),
        ({"model": {"layers": [{"Conv2D": {"filters": 4, "kernel_size": 3}}]}}, "train.model.layers[0]"),
        ({"monitor": "val_f1"}, "train.monitor"),
        ({"metrics": ["top_20_accuracy"]}, "train.metrics[0]"),
        ({"global_batch_size": 33}, "does not split evenly"),
    ],
)
def test_bad_train_config_fails_with_one_line_and_exit_2(spark, churn_dataset, tmp_path, write_config, change, message):
    config = write_config(experiment(churn_dataset, tmp_path / "run", **change))
    result, summary = train_cli(config)
    assert result.exit_code == 2, result.output
    assert message in summary["message"]
    assert "\n" not in summary["message"]


def test_missing_or_incomplete_dataset_fails_with_exit_2(spark, churn_dataset, tmp_path, write_config):
    config = write_config(experiment(tmp_path / "nowhere", tmp_path / "run"))
    result, summary = train_cli(config)
    assert result.exit_code == 2 and "dataset not found" in summary["message"]

    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(churn_dataset, partial)
    (partial / "_SUCCESS").unlink()
    result, summary = train_cli(write_config(experiment(partial, tmp_path / "run")), "--data", partial)
    assert result.exit_code == 2 and "incomplete" in summary["message"]


def test_a_damaged_shard_is_named_by_inspect_verify_and_by_train(spark, churn_dataset, tmp_path, write_config):
    import shutil

    from typer.testing import CliRunner

    from dltool.cli import app

    data = tmp_path / "churn"
    shutil.copytree(churn_dataset, data)
    checked = CliRunner().invoke(app, ["inspect", str(data), "--verify", "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["verified"]["shards"] == len(list(data.glob("*/part-*.parquet")))
    shard = sorted((data / "train").glob("part-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])  # a copy cut short
    damaged = CliRunner().invoke(app, ["inspect", str(data), "--verify"])
    assert damaged.exit_code == 1 and "damaged shard" in damaged.stderr and shard.name in damaged.stderr
    result, summary = train_cli(write_config(experiment(data, tmp_path / "run", epochs=1, workers=1)))
    assert result.exit_code == 1, result.output
    assert "the manifest says" in summary["message"] and shard.name in summary["message"]
