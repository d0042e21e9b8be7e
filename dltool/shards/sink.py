"""One sink for every ingest's shards: what a task writes and hands back, and what the driver makes of it.

Every writer (file readers in ingest/run.py, tables in ingest/tables.py, text in ingest/text.py,
`write_dataset` in ml/dataset.py) writes its shards with `SplitShards`, its quarantined records with
`write_errors`, adds up the train examples' statistics with `Moments`, and returns one `TaskResult` per
task (as Ray Data's `Datasink.write`); `on_write_complete` adds them up into the `WrittenShards` the
manifest is built from.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import numpy as np

from dltool.errors import RecordError
from dltool.storage.manifest import SPLITS, Counts, Duplicates, Label, Manifest, SplitEntry, Stats

if TYPE_CHECKING:
    import pyarrow as pa

    from dltool.shards.codec import TensorSpec
    from dltool.storage.fs import Location

ERROR_FIELDS = ("key", "path", "reader", "stage", "error_class", "message")
FIRST_ERRORS = 5  # error rows a result carries, for the summary; the error table has them all


@dataclass
class ShardFile:
    """One shard a task wrote: its path in the dataset, its rows, and its rows per label."""

    split: str
    name: str  # "<split>/part-....parquet"
    rows: int
    per_class: dict[str, int]  # rows per label index (as text), or {"all": rows} when there are no classes


@dataclass
class TaskResult:
    """What one writing task hands back to the driver."""

    shards: list[ShardFile] = field(default_factory=list)
    ok: int = 0  # inputs read and kept (files, or rows); a row left out as a copy of a train row counts here
    quarantined: int = 0
    augmented: int = 0
    dropped: int = 0  # val and test records left out because train holds the same content (drop_from_eval)
    moments: np.ndarray | None = None  # [3, C] over the train examples: count, sum, sum of squares
    errors: list[dict] = field(default_factory=list)  # the first few error-table rows
    digests: list[tuple[str, str]] = field(default_factory=list)  # (content digest, key) of each file read

    def to_json(self) -> str:
        """As text, for a task that can hand back only Arrow columns (mapInArrow)."""
        data = dataclasses.asdict(self)
        data["moments"] = None if self.moments is None else self.moments.tolist()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> TaskResult:
        data = json.loads(text)
        return cls(
            shards=[ShardFile(**s) for s in data["shards"]], ok=data["ok"], quarantined=data["quarantined"],
            augmented=data["augmented"], dropped=data["dropped"],
            moments=None if data["moments"] is None else np.asarray(data["moments"], np.float64),
            errors=data["errors"], digests=[tuple(d) for d in data["digests"]],
        )  # fmt: skip


@dataclass(frozen=True)
class WrittenShards:
    """What the writers of one ingest wrote into staging; the manifest is built from it
    (`inputs == ok + quarantined` is checked there)."""

    features: TensorSpec
    label: Label
    splits: dict[str, SplitEntry]
    stats: Stats | None
    inputs: int
    ok: int
    quarantined: int
    augmented: int = 0
    first_errors: tuple[dict, ...] = ()  # error-table rows of the first few quarantined inputs
    feature_names: tuple[str, ...] | None = None  # one per slot, table readers only
    preprocess: str | None = None  # the fitted preprocessing's file, table readers only
    duplicates: Duplicates | None = None  # identical records in more than one split
    columns: dict | None = None  # table readers: the columns used per role and those left out, with the reason
    vocabulary: tuple[str, ...] | None = None  # text readers: the tokens of ids 2.. (0 padding, 1 out-of-vocabulary)
    warnings: tuple[str, ...] = ()  # about the records written (a later version's categories the dataset lacks)

    def manifest(self, *, name: str, reader: str, source: str, ingest: dict, config_hash: str, input_fingerprint: str,
                 passthrough: Iterable[str] = (), left_out_by_patterns: int = 0, max_bad_fraction: float = 0.0,
                 warnings: Iterable[str] = ()) -> Manifest:  # fmt: skip
        """The dataset's manifest: these shards' splits, counts and statistics, with what the writer knows of the
        data (its name, reader, source, the ingest settings and their hash, the inputs' fingerprint). Its status
        is failed_quality when more than `max_bad_fraction` of the inputs were quarantined."""
        import time

        import dltool

        counts = Counts(inputs=self.inputs, ok=self.ok, quarantined=self.quarantined, augmented=self.augmented,
                        rows=sum(entry.rows for entry in self.splits.values()),
                        left_out_by_patterns=left_out_by_patterns)  # fmt: skip
        if counts.inputs != counts.ok + counts.quarantined:
            raise RuntimeError(f"ingest lost records: {counts}")  # a bug, not bad input: never hide it
        return Manifest(
            name=name, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), dltool_version=dltool.__version__,
            reader=reader, source=source, features=self.features, feature_names=self.feature_names, label=self.label,
            passthrough=tuple(passthrough), splits=self.splits, counts=counts, stats=self.stats,
            preprocess=self.preprocess, errors="_errors", vocabulary=self.vocabulary, config_hash=config_hash,
            input_fingerprint=input_fingerprint, ingest=ingest,
            status="ok" if counts.bad_fraction <= max_bad_fraction else "failed_quality", warnings=tuple(warnings),
            duplicates=self.duplicates, columns=self.columns,
        )  # fmt: skip


def on_write_complete(results: Iterable[TaskResult], features: TensorSpec, label: Label, inputs: int, *,
                      quarantined: int = 0, first_errors: Iterable[dict] = (), stats_axis: int = -1,
                      duplicates: Duplicates | None = None, **described) -> WrittenShards:  # fmt: skip
    """The tasks' results added up: the splits' shards and rows per class, the counts, the train statistics.

    `quarantined` and `first_errors`: what a step before the writing tasks quarantined (the driver's
    listing, a table's typing pass); `described`: the rest of `WrittenShards` (feature names, the
    preprocessing's file, the vocabulary).
    """
    rows, files = Counter(), {s: [] for s in SPLITS}
    per_class = {s: Counter() for s in SPLITS}
    moments, ok, augmented, dropped, errors = None, 0, 0, 0, list(first_errors)[:FIRST_ERRORS]
    for result in results:
        for shard in result.shards:
            rows[shard.split] += shard.rows
            files[shard.split].append(shard.name)
            per_class[shard.split].update(shard.per_class)
        ok, augmented, dropped = ok + result.ok, augmented + result.augmented, dropped + result.dropped
        quarantined += result.quarantined
        if result.moments is not None:
            moments = result.moments if moments is None else moments + result.moments
        errors.extend(result.errors[: max(0, FIRST_ERRORS - len(errors))])
    splits = {s: split_entry(rows[s], files[s], per_class[s], label.vocabulary) for s in SPLITS}
    return WrittenShards(
        features=features, label=label, splits=splits, stats=stats_of(moments, stats_axis % len(features.shape)),
        inputs=inputs, ok=ok, quarantined=quarantined, augmented=augmented, first_errors=tuple(errors),
        duplicates=None if duplicates is None else dataclasses.replace(duplicates, dropped=dropped), **described,
    )  # fmt: skip


def split_entry(rows: int, files: list[str], counts: Counter, vocabulary: tuple[str, ...] | None) -> SplitEntry:
    """Rows per class name (label index order; "all" without classes) and the sorted files of one split."""
    if vocabulary is not None:
        per_class = {vocabulary[int(k)]: v for k, v in sorted(counts.items(), key=lambda kv: int(kv[0]))}
    else:
        per_class = {"all": sum(counts.values())} if counts else {}
    return SplitEntry(rows, tuple(sorted(files)), per_class)


def stats_of(moments: np.ndarray | None, axis: int) -> Stats | None:
    """Mean and std per entry of one tensor axis (channel, mel bin, feature) over train."""
    if moments is None or not moments[0, 0]:
        return None
    count, total, squares = moments
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return Stats(axis, int(count[0]), tuple(mean.round(6).tolist()), tuple(std.round(6).tolist()))


class Moments:
    """Count, sum and sum of squares per entry of one axis, added up a batch at a time."""

    BATCH = 256

    def __init__(self, axis: int):
        self.axis = axis
        self.pending: list[np.ndarray] = []
        self.total: np.ndarray | None = None

    def add(self, example: np.ndarray) -> None:
        self.pending.append(example)
        if len(self.pending) >= self.BATCH:
            self._flush()

    def add_batch(self, batch: np.ndarray) -> None:
        """Add a [n, *shape] batch of examples at once."""
        self._flush()
        if len(batch):
            self._add(np.asarray(batch))

    def _flush(self) -> None:
        if self.pending:
            self._add(np.stack(self.pending))
            self.pending = []

    def _add(self, batch: np.ndarray) -> None:
        batch = np.moveaxis(batch, self.axis % (batch.ndim - 1) + 1, -1)
        values = batch.reshape(-1, batch.shape[-1])
        if values.dtype == np.uint8:  # images: exact, from a histogram per entry (5x faster than float sums)
            levels = np.arange(256, dtype=np.float64)
            counts = np.stack([np.bincount(column, minlength=256) for column in np.ascontiguousarray(values.T)])
            sums, squares = counts @ levels, counts @ (levels * levels)
        else:
            floats = values.astype(np.float32)
            sums, squares = values.sum(0, dtype=np.float64), np.einsum("ij,ij->j", floats, floats, dtype=np.float64)
        update = np.stack([np.full(values.shape[1], values.shape[0], np.float64), sums, squares])
        self.total = update if self.total is None else self.total + update

    def result(self) -> np.ndarray | None:
        self._flush()
        return self.total


class SplitShards:
    """The shard files one task writes into one split: `<split>/<part>.parquet`, or with `max_rows`, a new
    `<split>/<part>-<n>.parquet` every `max_rows` rows. Rows are added one example at a time (`add`) or as
    Arrow tables that hold the shard schema's columns (`write`); `close` returns the files written."""

    def __init__(self, staging: Location, split: str, part: str, schema: pa.Schema, spec: TensorSpec,
                 row_group_mb: int, compression: str, max_rows: int | None = None):  # fmt: skip
        self.staging, self.split, self.part, self.schema, self.spec = staging, split, part, schema, spec
        self.row_group_mb, self.compression, self.max_rows = row_group_mb, compression, max_rows
        self.classes = "label" in schema.names and str(schema.field("label").type) == "int32"
        self.done: list[ShardFile] = []
        self.writer, self.name, self.counts = None, None, Counter()

    def add(self, example: np.ndarray, key: str, label=None, extra: dict | None = None) -> None:
        self._open().add(example, key, label, extra)
        self.counts[str(label) if self.classes else "all"] += 1
        if self.max_rows is not None and self.writer.rows >= self.max_rows:
            self._finish()

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            writer = self._open()
            room = table.num_rows if self.max_rows is None else self.max_rows - writer.rows
            head, table = table.slice(0, room), table.slice(room)
            writer.write_table(head)
            if self.classes:
                self.counts.update(str(k) for k in head.column("label").to_numpy().tolist())
            else:
                self.counts["all"] += head.num_rows
            if self.max_rows is not None and writer.rows >= self.max_rows:
                self._finish()

    def _open(self):
        if self.writer is None:
            from dltool.shards.writer import ShardWriter

            suffix = "" if self.max_rows is None else f"-{len(self.done):03d}"
            self.name = f"{self.split}/{self.part}{suffix}.parquet"
            self.writer = ShardWriter(self.staging.child(*self.name.split("/")), self.schema, self.spec,
                                      self.row_group_mb, self.compression)  # fmt: skip
        return self.writer

    def _finish(self) -> None:
        self.writer.close()
        if self.writer.rows:
            self.done.append(ShardFile(self.split, self.name, self.writer.rows, dict(self.counts)))
        self.writer, self.counts = None, Counter()

    def close(self) -> list[ShardFile]:
        if self.writer is not None:
            self._finish()
        return self.done


def write_errors(target: Location, rows: pa.Table | list[dict]) -> None:
    """The error table of one task: one row per quarantined record, the columns of ERROR_FIELDS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dltool.shards.codec import plain_array

    if isinstance(rows, list):
        rows = pa.table({name: plain_array([row[name] for row in rows], pa.string()) for name in ERROR_FIELDS})
    target.fs.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(rows.select(list(ERROR_FIELDS)), target.path, filesystem=target.fs, compression="zstd")


def error_row(key: str, path: str, reader: str, error: Exception) -> dict:
    """The error-table row of one record that failed: `error.stage` for a RecordError, else "decode"."""
    stage = error.stage if isinstance(error, RecordError) else "decode"
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return {"key": key, "path": path, "reader": reader, "stage": stage,
            "error_class": type(error).__name__, "message": message}  # fmt: skip
