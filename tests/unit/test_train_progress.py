"""The driver's view of training: the epoch line's input wait, the starvation warning and run.json's report."""

from __future__ import annotations

import pytest

from dltool.train.progress import TrainProgress, format_logs, starved_warning

CACHED = {"cached": True, "mb": 12.0, "cache_mb": 1024, "per_worker_batch": 32}
STREAMED = {"cached": False, "mb": 5000.0, "cache_mb": 1024, "per_worker_batch": 32}


def start(feed: dict, epoch: int = 1) -> dict:
    return {"type": "start", "epoch": epoch, "epochs": 5, "steps": 10, "global_batch": 64, "feed": feed}


def epoch(n: int, waits: list[float], seconds: float = 5.0) -> dict:
    logs = {"epoch": n, "loss": 0.5, "seconds": seconds, "samples_per_s": 100.0, "learning_rate": 0.001,
            "input_wait": max(waits), "input_wait_workers": waits}  # fmt: skip
    return {"type": "epoch", "epoch": n, "epochs": 5, "logs": logs, "best": False, "checkpoint": f"epoch-{n:03d}"}


def test_a_starving_worker_is_named_once_with_the_setting_to_change(capsys):
    view = TrainProgress(enabled=False)
    for event in (start(CACHED), epoch(1, [0.9, 0.8]), epoch(2, [0.1, 0.45]), epoch(3, [0.3, 0.5])):
        view.handle(event)
    err = capsys.readouterr().err
    assert "input 90%" in err and "input 45%" in err
    assert err.count("warning:") == 1  # once per run
    assert "worker 1 waited for its batches 45% of its step time in epoch 2" in err
    assert "train.global_batch_size" in err
    # The cached feed's first epoch (the cache fill) is left out of the report.
    assert view.input_report() == {"mean": pytest.approx(0.475), "max": 0.5, "warning": view.input_warning}


def test_a_streamed_feed_is_told_about_its_cache_and_short_epochs_are_not_warned_about(capsys):
    view = TrainProgress(enabled=False, quiet=True)
    view.handle(start(STREAMED, epoch=3))  # a resumed run: its first epoch is 3
    view.handle(epoch(3, [0.6], seconds=0.5))  # 0.3 s of waiting: not worth a setting
    assert view.input_warning is None
    view.handle(epoch(4, [0.6]))
    assert "does not fit train.cache_mb (1024)" in view.input_warning and "5,000 MB" in view.input_warning
    assert view.input_report()["mean"] == pytest.approx(0.6)  # a streamed feed's first epoch counts


def test_no_input_wait_no_report():
    view = TrainProgress(enabled=False, quiet=True)
    view.handle(start(CACHED))
    assert view.input_report() is None
    view.handle({**epoch(1, [0.5]), "logs": {"epoch": 1, "loss": 0.5, "seconds": 1.0, "samples_per_s": 1.0}})
    assert view.input_report() is None


def test_the_metrics_shown_leave_the_timing_out():
    shown = format_logs({"loss": 0.25, "input_wait": 0.5, "seconds": 2.0, "val_loss": 0.5})
    assert shown == "loss 0.2500  val_loss 0.5000"
    assert "raise train.cache_mb" in starved_warning(0.4, 0, 2, STREAMED)
