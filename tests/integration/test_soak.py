"""Two workers over thousands of steps: threads, memory and open files of each worker stay flat."""

from __future__ import annotations

from dltool.train.worker import read_resource_lines
from tests.integration.test_train import experiment, history


def test_two_workers_stay_flat_over_3000_steps(spark, churn_dataset, tmp_path):
    from dltool.config.models import ExperimentConfig
    from dltool.train.run import run_training

    run = tmp_path / "run"
    # 222 train rows in global batches of 2: 111 steps an epoch, one all-reduce of the gradients each.
    settings = experiment(churn_dataset, run, epochs=28, global_batch_size=2, keep_checkpoints=1, monitor="val_loss")
    summary = run_training(ExperimentConfig.model_validate(settings), progress=False)
    assert summary["status"] == "completed" and summary["attempts"] == 1 and summary["replicas_in_sync"] == 2
    assert len(history(run)) == 28
    for rank in (0, 1):
        usage = read_resource_lines((run / "logs" / "attempt-1" / f"worker-{rank}.log").read_text())
        assert [u["epoch"] for u in usage] == list(range(1, 29))
        first, last = usage[0], usage[-1]
        assert last["steps"] >= 3000
        # Before the fix each collective left a thread sleeping for train.timeout_s: +2 threads a step here.
        assert last["threads"] <= first["threads"] + 2, (rank, first, last)
        assert last["open_files"] <= first["open_files"] + 2, (rank, first, last)
        assert last["rss_mb"] <= first["rss_mb"] + 24, (rank, first, last)
