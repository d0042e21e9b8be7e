"""What `dltool eval` returns: the scores of each model, the best one, and the quality gates it passed or missed."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckpointScore", "EvalResult", "GateOutcome", "PredictResult"]


@dataclass(frozen=True)
class CheckpointScore:
    """One scored model: where it is, its short name, its epoch (None when unknown) and its metrics."""

    checkpoint: str  # URI of the checkpoint folder or .keras file
    name: str
    epoch: int | None
    metrics: dict  # metrics.compute(): loss, accuracy, per class, confusion matrix... or the regression figures
    runtime: str = "tensorflow"  # what scored it: "onnxruntime" (the ONNX copy train made) or "tensorflow"
    runtime_note: str = ""  # how the ONNX copy was checked, or why TensorFlow scored it

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "name": self.name, "epoch": self.epoch, "metrics": self.metrics,
                "runtime": self.runtime, "runtime_note": self.runtime_note}  # fmt: skip


@dataclass(frozen=True)
class GateOutcome:
    """One `--fail-under` threshold applied to the scored model."""

    metric: str
    rule: str  # ">=" or "<="
    threshold: float
    value: float | None  # None: the metric is undefined on this split, which misses the gate
    passed: bool

    def to_json(self) -> dict:
        return {"metric": self.metric, "rule": self.rule, "threshold": self.threshold, "value": self.value,
                "passed": self.passed}  # fmt: skip

    def describe(self) -> str:
        if self.value is None:
            return f"{self.metric} is undefined on this split (needs {self.rule} {self.threshold:g})"
        return f"{self.metric} {self.value:.4f}, needs {self.rule} {self.threshold:g}"


@dataclass(frozen=True)
class EvalResult:
    """The scores of one eval run; `eval_json()` is what eval.json holds, `to_json()` adds where and how long."""

    split: str
    dataset: str
    dataset_hash: str  # manifest_hash of the dataset, as the run recorded it
    run_dir: str
    checkpoints: tuple[CheckpointScore, ...]
    best: int | None  # index into checkpoints by `monitor`; None for one checkpoint
    monitor: str
    fail_under: dict[str, float]
    gates: tuple[GateOutcome, ...]
    eval_dir: str
    seconds: float
    quarantined: int = 0  # eval --input: raw inputs that could not be read (or have an unknown label), not scored
    mistakes: tuple[dict, ...] = ()  # classification: the most confidently wrong rows {key, true, predicted, probability}
    dataset_version: int | None = None  # the version of the dataset scored (None: raw inputs)
    parent: dict | None = None  # relative gates: the parent model and its scores on the same rows

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def scored(self) -> CheckpointScore:
        """The model the gates apply to: the best one, or the only one."""
        return self.checkpoints[self.best or 0]

    def eval_json(self) -> dict:
        return {
            "split": self.split, "dataset": self.dataset, "dataset_hash": self.dataset_hash,
            "dataset_version": self.dataset_version, "run_dir": self.run_dir, "checkpoints": [score.to_json() for score in self.checkpoints], "best": self.best,
            "monitor": self.monitor, "fail_under": dict(self.fail_under),
            "gates": [gate.to_json() for gate in self.gates], "passed": self.passed, "mistakes": list(self.mistakes),
            **({"parent": self.parent} if self.parent is not None else {}),
        }  # fmt: skip

    def to_json(self) -> dict:
        return {**self.eval_json(), "eval_dir": self.eval_dir, "seconds": self.seconds, "quarantined": self.quarantined}


@dataclass(frozen=True)
class PredictResult:
    """What `dltool predict` wrote: the Parquet predictions folder, its rows and the records quarantined on the way."""

    status: str  # "completed"
    output: str
    input: str
    raw_input: bool  # raw files or rows (ingested on the way), not a dataset split
    split: str | None
    model: str
    rows: int
    quarantined: int
    seconds: float
    dataset_version: int | None = None  # the version of the dataset predicted (None: raw inputs)
    runtime: str = "tensorflow"  # what scored the rows: "onnxruntime" (the model's ONNX copy) or "tensorflow"
    runtime_note: str = ""  # how the ONNX copy was checked, or why TensorFlow scored them

    @classmethod
    def from_json(cls, data: dict) -> PredictResult:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
