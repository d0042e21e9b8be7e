"""The ingest job: list inputs, decode them in Spark tasks, write shards, commit the dataset.

File readers (image, audio): the driver lists files with pyarrow, assigns labels
and splits, and cuts each split into shard-sized tasks; each Spark task reads
its files straight from storage, decodes them and writes one Parquet shard with
pyarrow. Bytes never cross the JVM, and the driver only holds file names and
per-task summaries (docs/benchmarks.md has the measurements behind this).
Table readers (CSV) build a DataFrame with Spark and write it through the same
shard writer inside `mapInArrow`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

import dltool
from dltool.config.loader import config_hash
from dltool.config.models import ExperimentConfig
from dltool.errors import (
    NOT_RECORD_ERRORS,
    ConfigError,
    DataQualityError,
    DltoolError,
    EnvironmentProblem,
    InputNotFoundError,
    RecordError,
    StorageError,
    map_errors,
)
from dltool.readers.base import FileReader, reader_for
from dltool.shards.codec import TensorSpec
from dltool.shards.writer import ShardWriter, shard_schema
from dltool.spark.results import IngestPlan, IngestResult, WrittenShards
from dltool.spark.splits import SPLITS, Item, assign, find_duplicates, report, split_point
from dltool.storage.commit import StagedFolder, unfinished
from dltool.storage.fs import InputFile, Location, open_location
from dltool.storage.ownership import OutputLock, check_replaceable, is_owned, protected_paths, stale_siblings
from dltool.storage.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    SUCCESS,
    Counts,
    Duplicates,
    Label,
    Manifest,
    SplitEntry,
    Stats,
)
from dltool.storage.stores import OBJECT_STORES, with_storage

ERROR_FIELDS = ("key", "path", "reader", "stage", "error_class", "message")


@dataclass
class FileTask:
    """One Spark task: the files of one shard, everything it needs as plain picklable values."""

    reader_config: object
    source_uri: str
    staging_uri: str
    split: str
    part: int
    files: list[tuple[str, str, int | None, int]]  # path, relpath (the key), label index, size
    label_kind: str | None
    row_group_mb: int
    compression: str


@dataclass
class TaskSummary:
    split: str
    shard: str | None = None
    rows: int = 0
    inputs_ok: int = 0
    quarantined: int = 0
    augmented: int = 0
    per_class: Counter = field(default_factory=Counter)
    moments: np.ndarray | None = None  # [3, C]: count, sum, sum of squares per last-axis entry
    errors: list[dict] = field(default_factory=list)  # only the first few, for the summary
    digests: list[tuple[str, str]] = field(default_factory=list)  # (content digest, key) of each file read


@with_storage
def run_ingest(config: ExperimentConfig, overwrite: bool = False, dry_run: bool = False, progress: bool = True,
               preprocess: str | None = None, vocabulary: list[str] | None = None) -> IngestResult | IngestPlan:  # fmt: skip
    """Ingest the config's inputs into its dataset location; returns the run summary (the plan for a dry run).

    `preprocess`: for table readers, a fitted `_preprocess.json` to apply rather than fit (predict,
    eval --input); `vocabulary`: for file readers, the classes to index labels by (eval --input; a
    file of another class is quarantined), instead of the classes found.
    """
    if config.ingest is None:
        raise ConfigError("the config has no 'ingest' section: nothing to ingest")
    reader = reader_for(config.ingest)
    dataset = open_location(config.dataset.path)
    source = open_location(config.ingest.input)
    files, left_out = reader.inputs()
    if not files:
        raise ConfigError(f"{source.uri}: no input files match include {reader.patterns()[0]}")
    broken = next((f for f in files if f.problem is not None), None)
    if not reader.labels_from_paths() and broken is not None:  # a table's rows are quarantined, not its files
        raise InputNotFoundError(f"{broken.path}: cannot read: {broken.problem}")
    fingerprint = _fingerprint(files)
    digest = config_hash({"ingest": config.ingest.model_dump(mode="json", exclude={"input"}),
                          "split": config.dataset.split.model_dump(mode="json"), "format": FORMAT_VERSION})  # fmt: skip
    started = time.time()
    if dry_run:
        return _plan(config, reader, dataset, source, files, left_out, _existing(dataset, digest, fingerprint))
    replacing = _check_existing(dataset, digest, fingerprint, overwrite, protected_paths(config))
    if replacing == "up_to_date":
        return IngestResult("up_to_date", dataset.uri, Manifest.read(dataset).counts,
                            message=f"{dataset.uri} is up to date (same config and inputs); use --overwrite to rebuild")
    with OutputLock(dataset):
        try:
            return _write_dataset(config, reader, dataset, source, files, left_out, digest, fingerprint, replacing,
                                  started, progress, preprocess, vocabulary)  # fmt: skip
        except DltoolError as e:
            explained = reader.explain_failure(str(e)) if type(e) is DltoolError else None
            if explained is None:
                raise
            raise DataQualityError(explained) from e


def _write_dataset(config, reader, dataset, source, files, left_out, digest, fingerprint, replacing, started,
                   progress, preprocess, vocabulary) -> IngestResult:  # fmt: skip
    """The Spark jobs and the commit of an ingest, holding the dataset's lock."""
    from dltool.spark.session import default_parallelism

    spark = ingest_session(config)
    for stale in stale_siblings(dataset, STALE_SIBLINGS):  # this command holds the lock: no other owns them
        stale.delete()
    with map_errors(f"ingest of {source.uri}"):
        # Staged beside the dataset (copied in on object stores): _SUCCESS, written last, marks it complete.
        with StagedFolder(dataset, kind="dataset") as staged:
            staging = staged.location
            if reader.kind == "file":
                shards = _ingest_files(spark, config, reader, source, files, staging, default_parallelism(spark), progress,
                                       vocabulary)  # fmt: skip
            else:
                shards = reader.write(spark, config, source, files, staging, default_parallelism(spark), progress,
                                      preprocess)  # fmt: skip
            manifest = _manifest(config, reader, source, shards, digest, fingerprint, left_out)
            manifest.write(staging)
            # A run that fails its quality gate never displaces a complete dataset: it lands beside it.
            failed = manifest.status != "ok" and replacing == "dataset"
            target = staged.commit(to=dataset.sibling(".failed") if failed else None)
    summary = IngestResult(
        "written" if manifest.status == "ok" else "failed_quality", dataset.uri, manifest.counts,
        replaced=replacing, seconds=round(time.time() - started, 2),
        splits={name: entry.rows for name, entry in manifest.splits.items()},
        labels=manifest.label.vocabulary, errors=shards.first_errors, warnings=manifest.warnings,
        left_out=(manifest.columns or {}).get("left_out", {}),
    )  # fmt: skip
    if manifest.status != "ok":
        counts = manifest.counts
        kept = " (the previous complete dataset is kept)" if target is not dataset else " (not marked complete)"
        raise DataQualityError(
            f"{counts.quarantined} of {counts.inputs} inputs quarantined "
            f"({counts.bad_fraction:.1%} > max_bad_fraction {config.dataset.max_bad_fraction:g}); "
            f"see {target.uri}/_errors{kept}",
            summary,
        )
    dataset.child(SUCCESS).write_bytes(b"")
    return summary


def ingest_session(config: ExperimentConfig):
    """The Spark session of an ingest; a new local one starts its Python workers importing the reader's modules."""
    from dltool.spark.session import spark_session

    reader = reader_for(config.ingest)
    return spark_session(config.spark, warm=(*reader.task_modules, type(reader).__module__))


def _fingerprint(files: list[InputFile]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relpath}\0{f.size}\0{f.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _existing(dataset: Location, digest: str, fingerprint: str) -> str | None:
    """What is at the dataset location: None, "up_to_date", "dataset", "incomplete" or "foreign"."""
    if not dataset.exists():
        return None
    if dataset.child(SUCCESS).exists():
        manifest = Manifest.read(dataset)
        same = manifest.config_hash == digest and manifest.input_fingerprint == fingerprint
        return "up_to_date" if same else "dataset"
    if not is_owned(dataset):
        return "foreign" if not dataset.is_dir() or not _is_empty(dataset) else None
    if dataset.child(MANIFEST).exists() or unfinished(dataset):
        return "incomplete"  # dltool's ingest that died or failed its quality gate: always safe to replace
    return None if _is_empty(dataset) else "incomplete"


def _check_existing(dataset: Location, digest: str, fingerprint: str, overwrite: bool,
                    protected: list[str]) -> str | None:  # fmt: skip
    """The existing state, or a ConfigError when replacing it needs --overwrite or is not dltool's to replace."""
    state = _existing(dataset, digest, fingerprint)
    if state == "up_to_date" and not overwrite:
        return state  # nothing is replaced
    check_replaceable(dataset, "dataset", protected)  # a folder dltool did not write: refused, --overwrite or not
    if state == "up_to_date" and overwrite:
        return "dataset"
    if state == "dataset" and not overwrite:
        raise ConfigError(
            f"{dataset.uri} holds a dataset built from another config or other inputs; "
            "pass --overwrite to rebuild it, or choose another --output"
        )
    return state


# Names StagedFolder and a failed quality gate leave beside a dataset (see storage/commit.py).
STALE_SIBLINGS = (r"\.staging-[0-9a-f]{8}", r"\.old-[0-9a-f]{8}", r"\.failed")


def _is_empty(location: Location) -> bool:
    import pyarrow.fs as pafs

    return not location.fs.get_file_info(pafs.FileSelector(location.path))


TASKS_PER_CORE = 4  # the cores stay busy to the end when tasks are small and alike (measured: docs/benchmarks.md)


def plan_shards(records: int, record_bytes: int, shard_mb: int, parallelism: int, share: float) -> int:
    """Shards (one task each) for one split holding `share` of the inputs: each under shard_mb, and
    about TASKS_PER_CORE tasks of one size per core over all splits, so no core idles at the end."""
    if records == 0:
        return 0
    by_size = math.ceil(records * record_bytes / (shard_mb << 20))
    by_cores = max(1, round(TASKS_PER_CORE * parallelism * share))
    return max(1, min(records, max(by_size, by_cores)))


def _assign(config: ExperimentConfig, reader: FileReader, files: list[InputFile], classes: list[str] | None = None):
    """Labels and splits of the listed files, decided on the driver from their paths.

    Also returns the files quarantined on the driver with their reason: unreadable links, files
    without a label (when labelled), of a class not in `classes` (when given) and files that
    `by: path` cannot place.
    """
    labelled = config.ingest.label.source != "none"
    unplaced = []
    labels = {}
    for f in files:
        label = reader.label_of(f.relpath)
        if f.problem is not None:
            unplaced.append((f, RecordError("read", f.problem)))
        elif labelled and label is None:
            unplaced.append((f, RecordError("label", _unlabelled_reason(config, f.relpath))))
        elif classes is not None and label not in classes:
            unplaced.append((f, RecordError("label", f"class {label!r} is not one of the {len(classes)} the model knows")))
        else:
            labels[f.relpath] = label
    placed, missing = assign([Item(path, path, label) for path, label in labels.items()], config.dataset.split)
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for f in files:
        if f.relpath in missing:
            unplaced.append((f, RecordError("split", missing[f.relpath])))
        elif f.relpath in placed:
            by_split[placed[f.relpath]].append(f)
    vocabulary = sorted({labels[f.relpath] for items in by_split.values() for f in items}) if labelled else None
    vocabulary = list(classes) if labelled and classes is not None else vocabulary
    index = {name: i for i, name in enumerate(vocabulary or [])}
    assigned = {
        split: [(f.path, f.relpath, index.get(labels[f.relpath]), f.size) for f in sorted(items, key=_hash_order)]
        for split, items in by_split.items()
    }
    return assigned, vocabulary, unplaced


def _hash_order(f: InputFile) -> float:
    # Shards in hash order mix classes, so a shuffle buffer at training time sees them all.
    return split_point(f.relpath)


def _ingest_files(spark, config, reader, source, files, staging, parallelism, progress, classes=None) -> WrittenShards:
    spec = reader.tensor_spec()
    assigned, vocabulary, unplaced = _assign(config, reader, files, classes)
    label_kind = "class" if vocabulary is not None else None
    copies = reader.augment_copies()
    tasks = []
    for split, items in assigned.items():
        per_record = spec.nbytes * (1 + (copies if split == "train" else 0))
        n = plan_shards(len(items), per_record, config.dataset.shard_mb, parallelism, len(items) / len(files))
        if config.ingest.files_per_task:
            n = max(n, math.ceil(len(items) / config.ingest.files_per_task)) if items else 0
        for part in range(n):
            chunk = items[part::n]
            tasks.append(FileTask(config.ingest, source.uri, staging.uri, split, part, chunk, label_kind,
                                  config.dataset.row_group_mb, config.dataset.compression))  # fmt: skip
    driver_errors = [_error_row(f.relpath, f.path, reader.name, error) for f, error in unplaced]
    if driver_errors:
        _write_errors(staging.child("_errors", "part-driver.parquet"), driver_errors)
    summaries: list[TaskSummary] = []
    if tasks:
        from dltool.spark.progress import spark_progress

        tasks.sort(key=lambda t: -sum(size for *_, size in t.files))  # Spark starts tasks in order: the largest first
        rdd = spark.sparkContext.parallelize(tasks, len(tasks))
        with spark_progress(spark, f"ingest {config.name}: {len(files)} files", progress):
            summaries = rdd.map(_run_file_task).collect()
    duplicates = find_duplicates((digest, s.split, key) for s in summaries for digest, key in s.digests)
    if duplicates is not None and config.dataset.on_duplicates == "drop_from_eval":
        duplicates = _drop_from_eval(staging, summaries, duplicates, config.dataset, spec)
    shards = _combine(summaries, spec, vocabulary, len(files), driver_errors, reader.stats_axis() % len(spec.shape))
    return dataclasses.replace(shards, duplicates=duplicates)


def _drop_from_eval(staging: Location, summaries: list[TaskSummary], duplicates: Duplicates, settings,
                    spec: TensorSpec) -> Duplicates:  # fmt: skip
    """Remove from the val and test shards the files whose bytes a train file has (their examples and
    windows alike), adjusting the summaries; the duplicates report counts the rows removed. The few
    affected shards are rewritten on the driver, one at a time, in row groups of `row_group_mb`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    in_train = {digest for s in summaries if s.split == "train" for digest, _ in s.digests}
    dropped = 0
    for s in summaries:
        drop = {key for digest, key in s.digests if s.split != "train" and digest in in_train}
        if not drop or s.shard is None:
            continue
        shard = staging.child(*s.shard.split("/"))
        table = pq.read_table(shard.path, filesystem=shard.fs)
        keys = table.column("key").to_pylist()
        gone = [k in drop or k.rsplit("#", 1)[0] in drop for k in keys]  # a window's key is the file's key + "#n"
        if "label" in table.column_names:
            s.per_class.subtract(Counter(label for label, g in zip(table.column("label").to_pylist(), gone) if g))
        else:
            s.per_class[None] -= sum(gone)
        kept = table.filter(pc.invert(pa.array(gone)))
        s.rows = kept.num_rows
        s.digests = [(d, k) for d, k in s.digests if k not in drop]
        dropped += sum(gone)
        if kept.num_rows:
            compression = None if settings.compression == "none" else settings.compression
            rows = max(1, (settings.row_group_mb << 20) // spec.nbytes)
            pq.write_table(kept, shard.path, filesystem=shard.fs, compression=compression, row_group_size=rows)
        else:
            shard.delete()
            s.shard = None
    return dataclasses.replace(duplicates, dropped=dropped)


def _unlabelled_reason(config, relpath: str) -> str:
    label = config.ingest.label
    if label.source == "regex":
        return f"label regex {label.pattern!r} does not match {relpath!r}"
    return f"{relpath!r} is not inside a class folder (label source parent_dir)"


def _run_file_task(task: FileTask) -> TaskSummary:
    """Executor side: read, decode and write one shard; quarantine what fails."""
    reader = reader_for(task.reader_config)
    reader.setup()
    spec = reader.tensor_spec()
    staging = open_location(task.staging_uri)
    source = open_location(task.source_uri)
    name = f"part-{task.part:05d}.parquet"
    summary = TaskSummary(split=task.split)
    errors = []
    max_bytes = int(task.reader_config.max_file_mb * (1 << 20))
    copies = reader.augment_copies() if task.split == "train" else 0
    schema = shard_schema(spec, task.label_kind)
    moments = Moments(reader.stats_axis())
    with ShardWriter(staging.child(task.split, name), schema, spec, task.row_group_mb, task.compression) as writer:
        for path, key, label, size in task.files:
            try:
                if size > max_bytes:
                    raise RecordError("read", f"file is {size / 2**20:.1f} MB, over max_file_mb {task.reader_config.max_file_mb:g}")
                data = _read(source.fs, path, max_bytes)
                examples = reader.decode(data, key)
                summary.digests.append((hashlib.blake2b(data, digest_size=16).hexdigest(), key))
            except StorageError:  # an unreachable store fails the ingest: it is no record's fault
                raise
            except NOT_RECORD_ERRORS as e:
                raise EnvironmentProblem(
                    f"the {reader.name} reader cannot run on this executor ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}) while decoding {key}; fix the environment and rerun"
                ) from e
            except Exception as e:  # any other failure of one record is that record's, never the task's
                errors.append(_error_row(key, path, reader.name, e))
                continue
            summary.inputs_ok += 1
            for suffix, example in examples:
                writer.add(example, key + suffix, label)
                summary.per_class[label] += 1
                if task.split == "train":
                    moments.add(example)
                for copy in range(copies):
                    writer.add(reader.augment(example, key + suffix, copy), f"{key}{suffix}#aug{copy + 1}", label)
                    summary.per_class[label] += 1
                    summary.augmented += 1
    summary.rows = writer.rows
    summary.moments = moments.result()
    summary.shard = f"{task.split}/{name}" if summary.rows else None
    summary.quarantined = len(errors)
    if errors:
        _write_errors(staging.child("_errors", f"part-{task.split}-{task.part:05d}.parquet"), errors)
    summary.errors = errors[:5]
    return summary


def _read(fs, path: str, max_bytes: int) -> bytes:
    try:
        with fs.open_input_file(path) as f:
            data = f.read(min(f.size(), max_bytes + 1))  # never allocate max_bytes for a small file
    except FileNotFoundError as e:
        raise RecordError("read", "file disappeared after listing") from e
    except OSError as e:
        # Not the file's bytes but the environment (a stale mount, a permission change, the store): the run
        # fails and a rerun reads the file again. A bad record would be marked done and never read again.
        text = str(e).splitlines()[0] if str(e) else repr(e)
        if "NO_SUCH_KEY" in text:
            raise RecordError("read", "file disappeared after listing") from e
        where = f"{fs.type_name}://{path}" if fs.type_name in OBJECT_STORES else path
        raise StorageError(f"{where}: cannot read from the store: {text}") from e
    if len(data) > max_bytes:
        raise RecordError("read", f"file grew past max_file_mb after listing ({len(data)} bytes read)")
    return data


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
        self.pending.extend(batch)
        self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        batch = np.moveaxis(np.stack(self.pending), self.axis % self.pending[0].ndim + 1, -1)
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
        self.pending = []

    def result(self) -> np.ndarray | None:
        self._flush()
        return self.total


def _error_row(key: str, path: str, reader: str, error: Exception) -> dict:
    stage = error.stage if isinstance(error, RecordError) else "decode"
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return {"key": key, "path": path, "reader": reader, "stage": stage,
            "error_class": type(error).__name__, "message": message}  # fmt: skip


def _write_errors(target: Location, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array([row[name] for row in rows], pa.string()) for name in ERROR_FIELDS})
    target.fs.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, target.path, filesystem=target.fs, compression="zstd")


def _combine(summaries: list[TaskSummary], spec: TensorSpec, vocabulary, inputs: int, driver_errors,
             stats_axis: int) -> WrittenShards:  # fmt: skip
    splits = {s: {"rows": 0, "files": [], "per_class": Counter()} for s in SPLITS}
    moments = None
    counts = Counter(inputs=inputs, quarantined=len(driver_errors))
    first_errors = driver_errors[:5]
    for s in summaries:
        entry = splits[s.split]
        entry["rows"] += s.rows
        entry["per_class"].update(s.per_class)
        if s.shard:
            entry["files"].append(s.shard)
        counts.update(ok=s.inputs_ok, quarantined=s.quarantined, augmented=s.augmented)
        if s.moments is not None:
            moments = s.moments if moments is None else moments + s.moments
        first_errors.extend(s.errors[: max(0, 5 - len(first_errors))])
    label = Label("class", tuple(vocabulary)) if vocabulary is not None else Label(None)
    return WrittenShards(
        features=spec, label=label, splits={name: _split_entry(entry, vocabulary) for name, entry in splits.items()},
        stats=_stats(moments, stats_axis), inputs=counts["inputs"], ok=counts["ok"],
        quarantined=counts["quarantined"], augmented=counts["augmented"], first_errors=tuple(first_errors),
    )  # fmt: skip


def _split_entry(entry: dict, vocabulary: list[str] | None) -> SplitEntry:
    """Rows per class name (label index order; "all" when unlabelled) and sorted files of one split."""
    per_class = {
        (vocabulary[k] if vocabulary is not None and k is not None else "all"): v
        for k, v in sorted(entry["per_class"].items(), key=lambda kv: (kv[0] is None, kv[0]))
    }
    return SplitEntry(entry["rows"], tuple(sorted(entry["files"])), per_class)


def _stats(moments: np.ndarray | None, axis: int) -> Stats | None:
    """Mean and std per entry of one tensor axis (channel, mel bin, feature) over train."""
    if moments is None:
        return None
    count, total, squares = moments
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return Stats(axis, int(count[0]), tuple(mean.round(6).tolist()), tuple(std.round(6).tolist()))


def _manifest(config, reader, source, shards: WrittenShards, digest, fingerprint, left_out) -> Manifest:
    counts = Counts(inputs=shards.inputs, ok=shards.ok, quarantined=shards.quarantined, augmented=shards.augmented,
                    rows=sum(entry.rows for entry in shards.splits.values()), left_out_by_patterns=left_out)  # fmt: skip
    if counts.inputs != counts.ok + counts.quarantined:
        raise RuntimeError(f"ingest lost records: {counts}")  # a bug, not bad input: never hide it
    warnings = report({name: entry.per_class for name, entry in shards.splits.items()}, shards.label.vocabulary,
                      config.dataset.split)  # fmt: skip
    duplicates = shards.duplicates
    if duplicates is not None:
        if config.dataset.on_duplicates == "fail":
            raise DataQualityError(f"{duplicates.message()}; dataset.on_duplicates is fail (use warn or drop_from_eval)")
        dropped = f"; dropped {duplicates.dropped} val/test records that train holds" if duplicates.dropped else ""
        warnings.append(duplicates.message() + dropped)
    return Manifest(
        name=config.name, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        dltool_version=dltool.__version__, reader=reader.name, source=source.uri,
        features=shards.features, feature_names=shards.feature_names, label=shards.label,
        passthrough=tuple(getattr(config.ingest, "passthrough", [])), splits=shards.splits, counts=counts,
        stats=shards.stats, preprocess=shards.preprocess, errors="_errors", vocabulary=shards.vocabulary,
        config_hash=digest, input_fingerprint=fingerprint, ingest=json.loads(config.ingest.model_dump_json()),
        status="ok" if counts.bad_fraction <= config.dataset.max_bad_fraction else "failed_quality",
        warnings=tuple(warnings), duplicates=duplicates, columns=shards.columns,
    )  # fmt: skip


def _plan(config, reader, dataset, source, files, left_out, existing: str | None) -> IngestPlan:
    """What an ingest would read and write, without starting Spark."""
    if reader.kind == "file":
        assigned, vocabulary, unplaced = _assign(config, reader, files)
        what = {"features": reader.tensor_spec(), "labels": None if vocabulary is None else tuple(vocabulary),
                "unlabelled": len(unplaced), "splits": {s: len(items) for s, items in assigned.items()}}  # fmt: skip
    else:
        what = reader.planned()
    return IngestPlan(
        dataset=dataset.uri, source=source.uri, inputs=len(files), left_out_by_patterns=left_out,
        sample_inputs=tuple(f.relpath for f in files[:10]), bytes=sum(f.size for f in files),
        writes=tuple(f"{dataset.uri}/{d}" for d in ("train/", "val/", "test/", "_errors/", MANIFEST, SUCCESS)),
        existing=existing, **what,
    )  # fmt: skip
