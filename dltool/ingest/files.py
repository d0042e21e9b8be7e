"""The file readers' ingest job: labels and splits from the paths on the driver, shards written in Spark tasks.

The driver lists the files with pyarrow, assigns labels and splits from their paths and cuts each
split into shard-sized tasks; each Spark task reads its files straight from storage, decodes them
and writes one Parquet shard with pyarrow through the shard sink. Bytes never cross the JVM, and the
driver holds only file names and the tasks' results (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

from dltool.config.models import ExperimentConfig
from dltool.errors import NOT_RECORD_ERRORS, EnvironmentProblem, RecordError, StorageError
from dltool.readers.base import FileReader, reader_for
from dltool.shards.codec import TensorSpec, plain_array
from dltool.shards.sink import FIRST_ERRORS, Moments, SplitShards, TaskResult, WrittenShards, error_row, on_write_complete, write_errors
from dltool.shards.writer import shard_schema
from dltool.splits import Item, assign, find_duplicates, split_point
from dltool.storage.fs import InputFile, Location, open_location
from dltool.storage.manifest import SPLITS, Label, version_file
from dltool.storage.stores import OBJECT_STORES


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
    prefix: str = "part"  # shard names: <split>/<prefix>-NNNNN.parquet (a later version's: part-vNNNNN)


TASKS_PER_CORE = 4  # the cores stay busy to the end when tasks are small and alike (measured: docs/benchmarks.md)


def plan_shards(records: int, record_bytes: int, shard_mb: int, parallelism: int, share: float) -> int:
    """Shards (one task each) for one split holding `share` of the inputs: each under shard_mb, and
    about TASKS_PER_CORE tasks of one size per core over all splits, so no core idles at the end."""
    if records == 0:
        return 0
    by_size = math.ceil(records * record_bytes / (shard_mb << 20))
    by_cores = max(1, round(TASKS_PER_CORE * parallelism * share))
    return max(1, min(records, max(by_size, by_cores)))


def assign_files(config: ExperimentConfig, reader: FileReader, files: list[InputFile], classes: list[str] | None = None,
                 known: dict[str, str] | None = None):  # fmt: skip
    """Labels and splits of the listed files, decided on the driver from their paths.

    Also returns the files quarantined on the driver with their reason: unreadable links, files
    without a label (when labelled), of a class not in `classes` (when given) and files that
    `by: path` cannot place. `known`: the splits of the records a dataset already holds (splits.assign).
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
    placed, missing = assign([Item(path, path, label) for path, label in labels.items()], config.dataset.split, known)
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


def ingest_files(spark, config, reader, source, files, staging, parallelism, progress, classes=None, known=None,
                 version: int = 1) -> WrittenShards:  # fmt: skip
    """Every listed file decoded into the staged dataset's shards, with the record index of its `version`.
    `known`: the splits of the files the dataset held (a refit keeps them; splits.assign)."""
    assigned, vocabulary, unplaced = assign_files(config, reader, files, classes, known)
    results, driver_errors = write_file_shards(spark, config, reader, source, files, staging, parallelism, progress,
                                               assigned, vocabulary, unplaced)  # fmt: skip
    write_records(staging.child(*version_file(version, "records.parquet").split("/")), records_of(files, results))
    duplicates = find_duplicates((digest, split, key) for r in results for digest, split, key in r.digests)
    if duplicates is not None and config.dataset.on_duplicates == "drop_from_eval":
        drop_from_eval(staging, results, config.dataset, reader.tensor_spec())
    label = Label("class", tuple(vocabulary)) if vocabulary is not None else Label(None)
    return on_write_complete(results, reader.tensor_spec(), label, len(files), quarantined=len(driver_errors),
                             first_errors=driver_errors, stats_axis=reader.stats_axis(), duplicates=duplicates)  # fmt: skip


def write_file_shards(spark, config, reader, source, files, target, parallelism, progress, assigned, vocabulary,
                      unplaced, prefix: str = "part", min_files: int = 1) -> tuple[list[TaskResult], list[dict]]:  # fmt: skip
    """Decode the assigned files in Spark tasks (with `spark` None: in `parallelism` forked processes) into
    `<split>/<prefix>-NNNNN.parquet` shards under `target`; returns the tasks' results and the error rows of the
    files quarantined on the driver (`unplaced`).
    `min_files`: the fewest files a task gets (a version's few new files: a few shards, not one per core)."""
    spec = reader.tensor_spec()
    label_kind = "class" if vocabulary is not None else None
    copies = reader.augment_copies()
    tasks = []
    for split, items in assigned.items():
        per_record = spec.nbytes * (1 + (copies if split == "train" else 0))
        n = plan_shards(len(items), per_record, config.dataset.shard_mb, parallelism, len(items) / max(1, len(files)))
        n = min(n, max(1, len(items) // min_files)) if items else 0
        if config.ingest.files_per_task:
            n = max(n, math.ceil(len(items) / config.ingest.files_per_task)) if items else 0
        for part in range(n):
            chunk = items[part::n]
            tasks.append(FileTask(config.ingest, source.uri, target.uri, split, part, chunk, label_kind,
                                  config.dataset.row_group_mb, config.dataset.compression, prefix))  # fmt: skip
    driver_errors = [error_row(f.relpath, f.path, reader.name, error) for f, error in unplaced]
    if driver_errors:
        write_errors(target.child("_errors", f"{prefix}-driver.parquet"), driver_errors)
    results: list[TaskResult] = []
    if tasks:
        tasks.sort(key=lambda t: -sum(size for *_, size in t.files))  # tasks start in order: the largest first
        description = f"ingest {config.name}: {len(files)} files"
        if spark is None:  # a local master's, in processes forked from this one (ingest_session says when)
            from dltool.spark.local import map_in_processes

            modules = reader.task_imports()  # what a Spark session's warm-up imports
            return map_in_processes(_run_file_task, tasks, parallelism, progress, description, modules), driver_errors
        from dltool.spark.progress import spark_progress

        rdd = spark.sparkContext.parallelize(tasks, len(tasks))
        with spark_progress(spark, description, progress):
            results = rdd.map(_run_file_task).collect()
    return results, driver_errors


# A version's record index (_versions/vN.records.parquet), one row per input file: a file reader's holds its
# split and content digest (None: quarantined); a table's or text's, the file's records quarantined.
RECORD_FIELDS = ("key", "size", "mtime_ns", "split", "digest", "quarantined")


def records_of(files: list[InputFile], results: list[TaskResult]) -> dict[str, tuple]:
    """The record index of the listed files: key -> (size, mtime_ns, split, content digest); split and digest
    are None for a file that was quarantined (it is not read again while it stays the same)."""
    read = {key: (split, digest) for r in results for digest, split, key in r.digests}
    return {f.relpath: (f.size, f.mtime_ns, *read.get(f.relpath, (None, None))) for f in files}


def write_records(location: Location, records: dict[str, tuple]) -> None:
    """Write a record index: key -> the other RECORD_FIELDS in order (the last ones may be left out: None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = sorted(records)
    width = len(RECORD_FIELDS) - 1
    rows = [records[k] + (None,) * (width - len(records[k])) for k in keys]
    columns = [keys, *(list(c) for c in zip(*rows))] if rows else [[] for _ in RECORD_FIELDS]
    types = [pa.string(), pa.int64(), pa.int64(), pa.string(), pa.string(), pa.int64()]
    table = pa.table([plain_array(c, t) for c, t in zip(columns, types)], names=list(RECORD_FIELDS))
    location.fs.create_dir(location.path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, location.path, filesystem=location.fs)


def split_counts(location: Location) -> Counter:
    """How many records of a record index each split holds (quarantined ones have none), from its one column."""
    import pyarrow.parquet as pq

    # pq.read_table imports pyarrow.dataset and pandas, value_counts pyarrow.compute: 0.2 s of a first ingest
    with location.fs.open_input_file(location.path) as f:
        counts = Counter(pq.ParquetFile(f).read(columns=["split"]).column("split").to_pylist())
    counts.pop(None, None)
    return counts


def read_records(location: Location) -> dict[str, tuple]:
    """A record index: key -> (size, mtime_ns, split, digest, quarantined); a field an older index lacks is None."""
    import pyarrow.parquet as pq

    table = pq.read_table(location.path, filesystem=location.fs).to_pydict()
    columns = [table.get(f, [None] * len(table["key"])) for f in RECORD_FIELDS[1:]]
    return {key: tuple(c[i] for c in columns) for i, key in enumerate(table["key"])}


def drop_from_eval(staging: Location, results: list[TaskResult], settings, spec: TensorSpec,
                    in_train: set[str] = frozenset()) -> None:  # fmt: skip
    """Remove from the val and test shards the files whose bytes a train file has (their examples and
    windows alike), adjusting the results; each result counts the rows it lost as `dropped`. The few
    affected shards are rewritten on the driver, one at a time, in row groups of `row_group_mb`.
    `in_train`: the digests of train files already in the dataset (a later version's)."""
    in_train = set(in_train) | {digest for r in results for digest, split, _ in r.digests if split == "train"}
    for r in results:
        drop = {key for digest, split, key in r.digests if split != "train" and digest in in_train}
        if not drop or not r.shards:
            continue
        shard = r.shards[0]
        location = staging.child(*shard.name.split("/"))
        kept, lost = filter_shard(location, location, drop, settings, spec)
        shard.per_class = {k: v - lost[k] for k, v in shard.per_class.items()}
        shard.rows = kept
        r.digests = [(d, split, k) for d, split, k in r.digests if k not in drop]
        r.dropped += sum(lost.values())
        if not kept:
            r.shards = []


def filter_shard(source: Location, target: Location, drop: set[str], settings, spec: TensorSpec,
                 of=None) -> tuple[int, Counter]:  # fmt: skip
    """Write `source`'s rows but those of the files in `drop` to `target` (nothing when none is left, and a
    source that is the target is then deleted); returns the rows kept and the rows left out per label index
    (as text; "all" without labels). `of(key, drop)` says whether a row is one of theirs (`of_files`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(source.path, filesystem=source.fs)
    of = of or of_files
    gone = [of(k, drop) for k in table.column("key").to_pylist()]
    labels = table.column("label").to_pylist() if "label" in table.column_names else None
    lost = Counter(str(label) for label, g in zip(labels, gone) if g) if labels is not None and \
        table.schema.field("label").type == pa.int32() else Counter(all=sum(gone))  # fmt: skip
    kept = table.filter(pc.invert(pa.array(gone, pa.bool_())))
    if kept.num_rows:
        compression = None if settings.compression == "none" else settings.compression
        rows = max(1, (settings.row_group_mb << 20) // spec.nbytes)
        pq.write_table(kept, target.path, filesystem=target.fs, compression=compression, row_group_size=rows)
    elif source.path == target.path:
        source.delete()
    return kept.num_rows, lost


def of_files(key: str, files: set[str]) -> bool:
    """Whether a record's key is one of `files` or a window or copy of one (`<file key>#3`, `#aug1`, `#3#aug1`)."""
    while key not in files and "#" in key:
        key = key.rsplit("#", 1)[0]
    return key in files


def _unlabelled_reason(config, relpath: str) -> str:
    label = config.ingest.label
    if label.source == "regex":
        return f"label regex {label.pattern!r} does not match {relpath!r}"
    return f"{relpath!r} is not inside a class folder (label source parent_dir)"


def _run_file_task(task: FileTask) -> TaskResult:
    """Executor side: read, decode and write one shard; quarantine what fails."""
    reader = reader_for(task.reader_config)
    reader.setup()
    spec = reader.tensor_spec()
    staging = open_location(task.staging_uri)
    source = open_location(task.source_uri)
    result, errors = TaskResult(), []
    max_bytes = int(task.reader_config.max_file_mb * (1 << 20))
    copies = reader.augment_copies() if task.split == "train" else 0
    shards = SplitShards(staging, task.split, f"{task.prefix}-{task.part:05d}", shard_schema(spec, task.label_kind), spec,
                         task.row_group_mb, task.compression)  # fmt: skip
    moments = Moments(reader.stats_axis())
    for path, key, label, size in task.files:
        try:
            if size > max_bytes:
                raise RecordError("read", f"file is {size / 2**20:.1f} MB, over max_file_mb {task.reader_config.max_file_mb:g}")
            data = _read(source.fs, path, max_bytes)
            examples = reader.decode(data, key)
            result.digests.append((hashlib.blake2b(data, digest_size=16).hexdigest(), task.split, key))
        except StorageError:  # an unreachable store fails the ingest: it is no record's fault
            raise
        except NOT_RECORD_ERRORS as e:
            raise EnvironmentProblem(
                f"the {reader.name} reader cannot run on this executor ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}) while decoding {key}; fix the environment and rerun"
            ) from e
        except Exception as e:  # any other failure of one record is that record's, never the task's
            errors.append(error_row(key, path, reader.name, e))
            continue
        result.ok += 1
        for suffix, example in examples:
            shards.add(example, key + suffix, label)
            if task.split == "train":
                moments.add(example)
            for copy in range(copies):
                shards.add(reader.augment(example, key + suffix, copy), f"{key}{suffix}#aug{copy + 1}", label)
                result.augmented += 1
    result.shards = shards.close()
    result.moments = moments.result()
    result.quarantined = len(errors)
    if errors:
        write_errors(staging.child("_errors", f"{task.prefix}-{task.split}-{task.part:05d}.parquet"), errors)
    result.errors = errors[:FIRST_ERRORS]
    return result


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
