"""`dltool run`: ingest, train, eval and export in one process and one Spark application, skipping what is up to date.

Each step is the verb's own API call, so a step is up to date exactly when the verb alone
would say so: ingest when the dataset matches the config and inputs, train when the run
finished. Eval and export have no such check of their own: they are up to date when
nothing before them changed in this chain and their output (`eval.json`, `export.json`)
was written for the model there now; their quality gates (`--fail-under`, `--max-drop`)
are then checked against the stored figures, so a rerun still fails when a gate is missed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from dltool.config.models import ExperimentConfig
from dltool.errors import ConfigError, DltoolError, QualityGateError
from dltool.storage.fs import Location, open_dataset, open_location
from dltool.storage.stores import with_storage

__all__ = ["STEPS", "ChainError", "RunResult", "run_chain"]

STEPS = ("ingest", "train", "eval", "export")


class ChainError(DltoolError):
    """A step failed: `summary` holds the steps done and the failure; the exit code is the failing step's."""

    def __init__(self, cause: DltoolError, summary: dict):
        super().__init__(str(cause))
        self.exit_code = cause.exit_code
        self.summary = summary


@dataclass(frozen=True)
class RunResult:
    """What `dltool run` did: each step's summary (ingest, train, eval, export), up to `until`."""

    status: str  # "ok"
    until: str
    steps: dict  # step -> the summary that step's command prints with --json
    seconds: float

    @classmethod
    def from_json(cls, data: dict) -> RunResult:
        return cls(status=data["status"], until=data["until"], steps=data["steps"], seconds=data["seconds"])

    def to_json(self) -> dict:
        return {"status": self.status, "until": self.until, "steps": self.steps, "seconds": self.seconds}


@with_storage
def run_chain(config: ExperimentConfig, until: str = "eval", fail_under: dict[str, float] | None = None,
              formats: list[str] = (), max_drop: dict[str, float] | None = None, overwrite: bool = False,
              progress: bool = True) -> dict:  # fmt: skip
    """Run the steps up to `until`; returns {"status", "steps": {step: its summary}, "seconds"}.

    Raises ChainError (carrying that summary, with the failing step) when a step fails.
    """
    if until not in STEPS:
        raise ConfigError(f"--until {until}: choose one of {', '.join(STEPS)}")
    steps = STEPS[: STEPS.index(until) + 1]
    if "export" in steps and not formats:
        raise ConfigError("--until export needs at least one --format (savedmodel, tflite, tflite-fp16, tflite-int8, onnx)")
    if config.train is None and len(steps) > 1:
        raise ConfigError("the config has no 'train' section: `dltool run` can only --until ingest")
    started = time.monotonic()
    if "train" in steps:  # the one session of the chain, with training's settings (the barrier timeout)
        from dltool.spark.shipping import config_code
        from dltool.train.run import training_session

        training_session(config, config_code(config))
    summary: dict = {"status": "ok", "until": until, "steps": {}}
    changed = False
    step = steps[0]
    try:
        for step in steps:
            result = _STEP[step](config, changed, overwrite=overwrite, progress=progress, fail_under=fail_under or {},
                                 formats=list(formats), max_drop=max_drop or {})  # fmt: skip
            summary["steps"][step] = result
            changed = changed or result.get("status") != "up_to_date"
    except DltoolError as e:
        body = e.summary if isinstance(getattr(e, "summary", None), dict) else getattr(e, "summary", None)
        failed = {"status": "failed_gate" if isinstance(e, QualityGateError) else "error", "exit_code": e.exit_code,
                  "error": type(e).__name__, "message": str(e)}  # fmt: skip
        if body is not None:
            failed["summary"] = body if isinstance(body, dict) else body.to_json()
        summary["steps"][step] = failed
        summary.update(status=failed["status"], failed_step=step, exit_code=e.exit_code,
                       seconds=round(time.monotonic() - started, 1))  # fmt: skip
        raise ChainError(e, summary) from e
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _ingest(config, changed, overwrite, progress, **_) -> dict:
    from dltool.ingest.run import run_ingest

    if config.ingest is None:
        return {"status": "up_to_date", "message": "no ingest section: the dataset is taken as it is"}
    return run_ingest(config, overwrite=overwrite, progress=progress).to_json()


def _train(config, changed, overwrite, progress, **_) -> dict:
    from dltool.train.run import run_training

    # A dataset rebuilt in this chain is retrained from scratch: its old run belongs to the old data.
    return run_training(config, overwrite=overwrite or changed, progress=progress)


def _eval(config, changed, progress, fail_under, **_) -> dict:
    from dltool.evaluate.score import run_eval

    stored = None if changed else _read_json(_run_dir(config).child("eval", "test", "eval.json"))
    if stored is None or not _same_model(config, [c["checkpoint"] for c in stored["checkpoints"]]):
        return run_eval(config, fail_under=fail_under, progress=progress).to_json()
    gates = _stored_gates(config, stored, fail_under)
    result = {**stored, "status": "up_to_date", "gates": gates, "passed": all(g["passed"] for g in gates)}
    missed = [g for g in gates if not g["passed"]]
    if missed:
        raise _GateMissed("quality gate missed on the test split: " + "; ".join(
            f"{g['metric']} {g['value']}, needs {g['rule']} {g['threshold']:g}" for g in missed), result)  # fmt: skip
    return result


def _export(config, changed, progress, formats, max_drop, **_) -> dict:
    from dltool.export import EXPORT_FILE, drop_gates, run_export

    stored = None if changed else _read_json(_run_dir(config).child("export", EXPORT_FILE))
    same = stored is not None and [r["format"] for r in stored["formats"][1:]] == list(dict.fromkeys(formats))
    if not same or not _same_model(config, [stored["model"]]):
        return run_export(config, formats, max_drop=max_drop, progress=progress)
    gates = drop_gates(stored["formats"], stored["metric"], max_drop)
    result = {**stored, "status": "up_to_date", "gates": gates, "passed": all(g["passed"] for g in gates)}
    if not result["passed"]:
        raise _GateMissed("; ".join(f"{g['format']} loses {g['drop']} {g['metric']} against the Keras model "
                                    f"(--max-drop {g['max_drop']:g})" for g in gates if not g["passed"]), result)  # fmt: skip
    return result


_STEP = {"ingest": _ingest, "train": _train, "eval": _eval, "export": _export}


class _GateMissed(QualityGateError):
    """A gate missed on stored figures; `summary` is the stored summary with the gates applied (a dict)."""


def _run_dir(config) -> Location:
    return open_location(config.train.run_dir)


def _read_json(location: Location) -> dict | None:
    try:
        return json.loads(location.read_bytes()) if location.exists() else None
    except (OSError, ValueError):
        return None  # unreadable: scored again


def _same_model(config, scored: list[str]) -> bool:
    """Whether the stored output was made from the run's final model as it is now (not an older run's)."""
    from dltool.train import checkpoints as ckpt

    run = _read_json(_run_dir(config).child(ckpt.RUN_FILE)) or {}
    return run.get("status") == "completed" and scored == [run.get("model")]


def _stored_gates(config, stored: dict, fail_under: dict[str, float]) -> list[dict]:
    """`--fail-under` applied to the figures eval.json holds (the metric names checked as eval checks them)."""
    from dltool.evaluate.score import apply_gates, check_gates, sums_spec
    from dltool.storage.manifest import Manifest

    manifest = Manifest.read(open_dataset(config.dataset.path))
    kind = manifest.label.kind
    names = [str(n) for n in manifest.label.vocabulary or ()]
    spec = sums_spec(config.train, kind, names)
    gates = check_gates(fail_under, kind, names, list(spec.top_k))
    return [g.to_json() for g in apply_gates(gates, stored["checkpoints"][0]["metrics"])]
