"""What `dltool train` returns: the run's status, its kept model and best epoch, with the whole run.json summary."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """One training run (or the finding that it was already done); `summary` is run.json as written."""

    status: str  # "completed" or "up_to_date"
    run_dir: str
    model: str | None  # URI of the kept .keras model
    epochs_done: int
    seconds: float
    best: dict | None  # {"monitor", "value", "epoch"} of the best epoch
    model_epoch: int | None  # the epoch the kept model is from
    kept: str | None  # train.final: "best" or "last"
    message: str | None = None  # why nothing was done (up_to_date)
    summary: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_summary(cls, run_dir: str, summary: dict) -> TrainResult:
        return cls(status=summary["status"], run_dir=run_dir, model=summary.get("model"),
                   epochs_done=int(summary.get("epochs_done", 0)), seconds=float(summary.get("seconds", 0.0)),
                   best=summary.get("best"), model_epoch=summary.get("model_epoch"), kept=summary.get("kept"),
                   message=summary.get("message"), summary=summary)  # fmt: skip

    @property
    def metrics(self) -> dict:
        """The kept model's epoch metrics (loss, accuracy, val_loss, val_accuracy...)."""
        return dict(self.summary.get("final") or {})

    def to_json(self) -> dict:
        return dict(self.summary)
