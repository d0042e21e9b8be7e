"""What `run_ingest` returns: the summary of an ingest, or the plan of a dry run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from dltool.storage.manifest import Counts

if TYPE_CHECKING:
    from dltool.shards.codec import TensorSpec


@dataclass(frozen=True)
class IngestResult:
    """What `run_ingest` reports: the dataset written (or found up to date) and where every input went."""

    status: str  # "written", "updated" (a new version added: ingest/grow.py), "failed_quality" or "up_to_date"
    dataset: str
    counts: Counts
    replaced: str | None = None  # what was at the location: None, "dataset", "incomplete" or "foreign"
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)  # rows per split
    labels: tuple[str, ...] | None = None  # the class vocabulary
    errors: tuple[dict, ...] = ()  # error-table rows of the first few quarantined inputs
    message: str | None = None  # why nothing was done (up_to_date)
    warnings: tuple[str, ...] = ()  # about the splits (the manifest keeps them too)
    left_out: dict[str, str] = field(default_factory=dict)  # table columns `auto` did not use, with the reason
    version: int | None = None  # the dataset's version now
    changes: dict | None = None  # "updated": files added, changed and removed per split, and quarantined

    def to_json(self) -> dict:
        if self.status == "up_to_date":
            return {"status": self.status, "dataset": self.dataset, "counts": self.counts.to_json(),
                    "message": self.message}  # fmt: skip
        return {
            "status": self.status, "dataset": self.dataset, "replaced": self.replaced, "seconds": self.seconds,
            "counts": self.counts.to_json(), "splits": dict(self.splits),
            "labels": None if self.labels is None else list(self.labels), "errors": list(self.errors),
            "warnings": list(self.warnings), "left_out": dict(self.left_out),
            **({"version": self.version} if self.version is not None else {}),
            **({"changes": self.changes} if self.changes is not None else {}),
        }  # fmt: skip


@dataclass(frozen=True)
class IngestPlan:
    """What `run_ingest(dry_run=True)` reports: what an ingest would read and write, with nothing started."""

    dataset: str
    source: str
    inputs: int
    left_out_by_patterns: int
    sample_inputs: tuple[str, ...]  # the first few inputs' relative paths
    bytes: int
    writes: tuple[str, ...]
    existing: str | None  # what is at the dataset location: None, "up_to_date", "dataset", "incomplete", "foreign"
    # File readers: what each input becomes, the labels found in the paths, and files per split.
    features: TensorSpec | None = None
    labels: tuple[str, ...] | None = None
    unlabelled: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    # Table readers: the configured column roles.
    columns: dict | None = None

    status: ClassVar[str] = "dry_run"

    def to_json(self) -> dict:
        data = {"status": self.status, "dataset": self.dataset, "source": self.source, "inputs": self.inputs,
                "left_out_by_patterns": self.left_out_by_patterns, "sample_inputs": list(self.sample_inputs),
                "bytes": self.bytes}  # fmt: skip
        if self.features is not None:
            data.update(features=self.features.to_json(), labels=None if self.labels is None else list(self.labels),
                        unlabelled=self.unlabelled, splits=dict(self.splits))  # fmt: skip
        else:
            data.update(columns=self.columns)
        data.update(writes=list(self.writes), existing=self.existing)
        return data
