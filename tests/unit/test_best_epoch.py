"""Which epoch is the best: the monitored metric, and on a tie the lower loss of the same split."""

from __future__ import annotations

from dltool.train.metrics import best_epoch_entry


def pick(monitor: str, history: list[dict]) -> int:
    best = None
    for logs in history:
        best = best_epoch_entry(monitor, logs, best) or best
    return best["epoch"]


def test_a_saturated_accuracy_is_broken_by_the_loss():
    history = [
        {"epoch": 1, "val_accuracy": 0.9, "val_loss": 0.5},
        {"epoch": 2, "val_accuracy": 1.0, "val_loss": 0.3},
        {"epoch": 3, "val_accuracy": 1.0, "val_loss": 0.1},
        {"epoch": 4, "val_accuracy": 1.0, "val_loss": 0.2},
        {"epoch": 5, "val_accuracy": 0.95, "val_loss": 0.05},
    ]
    assert pick("val_accuracy", history) == 3


def test_losses_go_down_and_equal_losses_keep_the_first():
    history = [{"epoch": 1, "val_loss": 0.4}, {"epoch": 2, "val_loss": 0.2}, {"epoch": 3, "val_loss": 0.2}]
    assert pick("val_loss", history) == 2


def test_train_metrics_tie_break_on_the_train_loss_and_missing_values_never_win():
    history = [{"epoch": 1, "accuracy": 0.8, "loss": 0.6}, {"epoch": 2, "accuracy": 0.8, "loss": 0.4}, {"epoch": 3}]
    assert pick("accuracy", history) == 2
