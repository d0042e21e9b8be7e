"""The ingest verb: list the inputs, check what is at the dataset location, run the reader's job, commit.

The job is the reader's engine: file readers (image, audio) in ingest/files.py, table readers
(csv, table) in ingest/tables.py, the text reader in ingest/text.py; each writes its shards
into a staging folder through the shard sink (shards/sink.py) and returns `WrittenShards`, from which
this module builds the manifest before the staged dataset is committed.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import time
from collections import Counter
from typing import Any

from dltool.config.loader import config_hash
from dltool.config.models import ExperimentConfig
from dltool.errors import ConfigError, DataQualityError, DltoolError, InputNotFoundError, map_errors
from dltool.readers.base import reader_for
from dltool.shards.sink import WrittenShards
from dltool.ingest.results import IngestPlan, IngestResult
from dltool.splits import report
from dltool.storage.commit import StagedFolder, unfinished
from dltool.storage.fs import InputFile, Location, open_dataset, open_location
from dltool.storage.ownership import OutputLock, check_replaceable, is_owned, protected_paths, stale_siblings
from dltool.storage.manifest import FORMAT_VERSION, MANIFEST, SUCCESS, VERSIONS, Manifest, by_split, version_file
from dltool.storage.stores import with_storage


def _heap_frozen(verb):
    """`verb` with the objects already alive frozen (`gc.freeze`) while it runs: the collections its many small
    objects set off skip the imports' and the caller's objects, and so do those of the tasks it forks (the use
    Python's docs give `gc.freeze`). A first ingest of 20k files spent 0.06-0.09 s of its driver's 0.3-0.4 s in
    them. Nothing is kept: the objects go back to the oldest generation after."""

    @functools.wraps(verb)
    def run(*args, **kwargs):
        gc.freeze()
        try:
            return verb(*args, **kwargs)
        finally:
            gc.unfreeze()

    return run


@with_storage
@_heap_frozen
def run_ingest(config: ExperimentConfig, overwrite: bool = False, dry_run: bool = False, progress: bool = True,
               preprocess: str | None = None, vocabulary: list[str] | None = None,
               refit: bool = False) -> IngestResult | IngestPlan:  # fmt: skip
    """Ingest the config's inputs into its dataset location; returns the run summary (the plan for a dry run).

    An existing dataset of the same config grows by a version (ingest/grow.py); `overwrite` rebuilds it
    as version 1; `refit` rebuilds it as its next version, fitting the classes, statistics and categories
    again on the data as it is now while every record keeps its split.

    `preprocess`: for table readers, a fitted `_preprocess.json` to apply rather than fit (predict,
    eval --input); `vocabulary`: for file readers, the classes to index labels by (eval --input; a
    file of another class is quarantined), instead of the classes found.
    """
    if config.ingest is None:
        raise ConfigError("the config has no 'ingest' section: nothing to ingest")
    reader = reader_for(config.ingest)
    dataset = open_dataset(config.dataset.path)
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
    if refit and overwrite:
        raise ConfigError("--refit and --overwrite: choose one (--refit keeps every record's split and the versions)")
    replacing = _check_existing(dataset, digest, fingerprint, overwrite, protected_paths(config), reader.grows(), refit)
    if replacing == "up_to_date":
        return IngestResult("up_to_date", dataset.uri, Manifest.read(dataset).counts,
                            message=f"{dataset.uri} is up to date (same config and inputs); use --overwrite to rebuild")
    with OutputLock(dataset):
        try:
            if replacing == "grown":
                return _grow_dataset(config, reader, dataset, source, files, left_out, fingerprint, started, progress)
            previous = Manifest.read(dataset) if replacing == "refit" else None
            return _write_dataset(config, reader, dataset, source, files, left_out, digest, fingerprint,
                                  "dataset" if previous else replacing, started, progress, preprocess, vocabulary,
                                  previous)  # fmt: skip
        except DltoolError as e:
            explained = reader.explain_failure(str(e)) if type(e) is DltoolError else None
            if explained is None:
                raise
            raise DataQualityError(explained) from e


def _write_dataset(config, reader, dataset, source, files, left_out, digest, fingerprint, replacing, started,
                   progress, preprocess, vocabulary, previous: Manifest | None = None) -> IngestResult:  # fmt: skip
    """The Spark jobs and the commit of an ingest, holding the dataset's lock. `previous`: the manifest of the
    dataset a refit replaces (its records keep their splits, and its versions go on)."""
    from dltool.ingest.grow import known_splits

    known = known_splits(dataset, previous, reader, config.dataset.split) if previous is not None else None
    version = previous.version + 1 if previous is not None else 1
    spark, parallelism = ingest_session(config, source, dataset)
    for stale in stale_siblings(dataset, STALE_SIBLINGS):  # this command holds the lock: no other owns them
        stale.delete()
    with map_errors(f"ingest of {source.uri}"):
        # Staged beside the dataset (copied in on object stores): _SUCCESS, written last, marks it complete.
        with StagedFolder(dataset, kind="dataset") as staged:
            staging = staged.location
            if reader.kind == "file":
                from dltool.ingest.files import ingest_files

                shards = ingest_files(spark, config, reader, source, files, staging, parallelism, progress, vocabulary,
                                      known, version)  # fmt: skip
            else:
                engine = _table_engine(reader.engine)
                shards = engine(spark, config, reader, source, files, staging, parallelism, progress, preprocess,
                                known=known)  # fmt: skip
            manifest = _manifest(config, reader, source, shards, digest, fingerprint, left_out)
            if reader.grows() and reader.kind != "file":  # a file reader's job wrote its record index
                from dltool.ingest.grow import index_table

                index_table(staging, reader, files, version)
            manifest = _versioned(manifest, staging if reader.grows() else None, reader.kind == "file", dataset,
                                  previous)  # fmt: skip
            manifest.write(staging)
            # A run that fails its quality gate never displaces a complete dataset: it lands beside it.
            failed = manifest.status != "ok" and replacing == "dataset"
            target = staged.commit(to=dataset.sibling(".failed") if failed else None)
    summary = IngestResult(
        "written" if manifest.status == "ok" else "failed_quality", dataset.uri, manifest.counts,
        replaced=replacing, seconds=round(time.time() - started, 2),
        splits={name: entry.rows for name, entry in manifest.splits.items()},
        labels=manifest.label.vocabulary, errors=shards.first_errors, warnings=manifest.warnings,
        left_out=(manifest.columns or {}).get("left_out", {}), version=manifest.version,
    )  # fmt: skip
    if manifest.status != "ok":
        kept = " (the previous complete dataset is kept)" if target is not dataset else " (not marked complete)"
        first = f"; the first, {shards.first_errors[0]['path']}: {shards.first_errors[0]['message']}" \
            if shards.first_errors else ""  # fmt: skip
        raise DataQualityError.quarantined(manifest.counts, config.dataset.max_bad_fraction,
                                           f"{target.uri}/_errors{kept}{first}", summary=summary)
    dataset.child(SUCCESS).write_bytes(b"")
    return summary


def _grow_dataset(config, reader, dataset, source, files, left_out, fingerprint, started, progress) -> IngestResult:
    """The next version of a dataset: only its new and changed input files read (ingest/grow.py)."""
    from dltool.ingest.grow import grow_files, grow_table

    old = Manifest.read(dataset)
    spark, parallelism = ingest_session(config, source, dataset)
    grow = grow_files if reader.kind == "file" else functools.partial(grow_table, engine=_table_engine(reader.engine))
    with map_errors(f"ingest of {source.uri}"):
        grown = grow(spark, config, reader, source, dataset, old, files, parallelism, progress, fingerprint, left_out)
    manifest = grown.manifest
    return IngestResult(
        "updated", dataset.uri, manifest.counts, seconds=round(time.time() - started, 2),
        splits={name: entry.rows for name, entry in manifest.splits.items()}, labels=manifest.label.vocabulary,
        errors=grown.first_errors, warnings=manifest.warnings, version=manifest.version,
        changes={"added": grown.added, "changed": grown.changed, "removed": grown.removed,
                 "quarantined": grown.quarantined},
    )  # fmt: skip


def ingest_session(config: ExperimentConfig, *locations: Location) -> tuple[Any, int]:
    """The Spark session of an ingest that reads and writes `locations`, and its parallelism; a new local one
    starts its Python workers importing the reader's modules.

    File readers (images, audio) run RDD jobs only: they get the context without a SQL session, whose start
    would take the JVM 1.5-2 s of the same cores the workers' start-up and the driver's listing need. On a
    local master with local folders they need no Spark at all: (None, cores), and their tasks run in processes
    forked from this one (`local_file_tasks`)."""
    from dltool.spark.session import default_parallelism, spark_session

    reader = reader_for(config.ingest)
    cores = local_file_tasks(config, *locations)
    if cores:
        return None, cores
    spark = spark_session(config.spark, warm=reader.task_imports(), sql=reader.kind != "file")
    return spark, default_parallelism(spark)


def local_file_tasks(config: ExperimentConfig, *locations: Location) -> int:
    """The processes a file reader's ingest forks instead of running Spark tasks: a local master's cores, where
    every location is on a local disk; else 0. A forked child starts with the driver's imports (milliseconds,
    against 1.3-2 s for a Spark worker's start and imports plus the JVM's own start: docs/benchmarks.md), and is
    as isolated as a Spark worker. Object stores and HDFS keep Spark's tasks: their clients are not fork-safe."""
    from dltool.spark.local import local_cores

    if reader_for(config.ingest).kind != "file" or not locations:
        return 0
    return local_cores(config.spark) if all(location.fs.type_name == "local" for location in locations) else 0


def _fingerprint(files: list[InputFile]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relpath}\0{f.size}\0{f.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _existing(dataset: Location, digest: str, fingerprint: str) -> str | None:
    """What is at the dataset location: None, "up_to_date", "grown" (the same config, other inputs),
    "dataset" (another config's), "incomplete" or "foreign"."""
    if not dataset.exists():
        return None
    if dataset.child(SUCCESS).exists():
        manifest = Manifest.read(dataset)
        if manifest.config_hash != digest:
            return "dataset"
        return "up_to_date" if manifest.input_fingerprint == fingerprint else "grown"
    if not is_owned(dataset):
        return "foreign" if not dataset.is_dir() or not _is_empty(dataset) else None
    if dataset.child(MANIFEST).exists() or unfinished(dataset):
        return "incomplete"  # dltool's ingest that died or failed its quality gate: always safe to replace
    return None if _is_empty(dataset) else "incomplete"


def _check_existing(dataset: Location, digest: str, fingerprint: str, overwrite: bool, protected: list[str],
                    grows: bool, refit: bool = False) -> str | None:  # fmt: skip
    """The existing state, or a ConfigError when replacing it needs --overwrite or is not dltool's to replace.
    "grown": the dataset (of a reader that `grows`) adds a version with the new and changed inputs (ingest/grow.py);
    "refit": it is rebuilt as its next version."""
    if dataset.version is not None:
        raise ConfigError(f"{dataset.uri}: names a version; ingest writes the dataset's next version: drop the @N")
    state = _existing(dataset, digest, fingerprint)
    if state == "up_to_date" and not overwrite and not refit:
        return state  # nothing is replaced
    check_replaceable(dataset, "dataset", protected)  # a folder dltool did not write: refused, --overwrite or not
    if refit and state in ("up_to_date", "grown", "dataset"):
        if not grows or state == "dataset":
            what = "another config" if state == "dataset" else "a reader whose datasets do not grow"
            raise ConfigError(f"{dataset.uri}: --refit keeps the splits of a dataset of the same config, and this one "
                              f"is of {what}: rebuild it with --overwrite")  # fmt: skip
        return "refit"
    if overwrite:
        return "dataset" if state in ("up_to_date", "grown") else state
    if state == "grown" and grows:
        return state
    if state in ("dataset", "grown"):
        other = "another config" if state == "dataset" else \
            "other inputs (catalog and Delta tables do not grow)"  # fmt: skip
        raise ConfigError(
            f"{dataset.uri} holds a dataset built from {other}; pass --overwrite to rebuild it, or choose another --data"
        )
    return state


# Names StagedFolder and a failed quality gate leave beside a dataset (see storage/commit.py).
STALE_SIBLINGS = (r"\.staging-[0-9a-f]{8}", r"\.old-[0-9a-f]{8}", r"\.failed")


def _is_empty(location: Location) -> bool:
    import pyarrow.fs as pafs

    return not location.fs.get_file_info(pafs.FileSelector(location.path))


def _table_engine(name: str):
    """The job that reads, checks, fits and writes a table reader's rows: `table` (rows by column role; csv and
    table readers) or `text` (documents, tokenised; the text reader)."""
    if name == "text":
        from dltool.ingest.text import ingest_text

        return ingest_text
    from dltool.ingest.tables import ingest_table

    return ingest_table


def _manifest(config, reader, source, shards: WrittenShards, digest, fingerprint, left_out) -> Manifest:
    """The manifest of the shards written, with the warnings about the records read (a title skipped), the splits
    and the copies across them."""
    warnings = [*shards.warnings, *report({name: entry.per_class for name, entry in shards.splits.items()},
                                          shards.label.vocabulary, config.dataset.split)]  # fmt: skip
    duplicates = shards.duplicates
    if duplicates is not None:
        if config.dataset.on_duplicates == "fail":
            raise DataQualityError(f"{duplicates.message()}; dataset.on_duplicates is fail (use warn or drop_from_eval)")
        dropped = f"; dropped {duplicates.dropped} val/test records that train holds" if duplicates.dropped else ""
        warnings.append(duplicates.message() + dropped)
    return shards.manifest(
        name=config.name, reader=reader.name, source=source.uri, ingest=json.loads(config.ingest.model_dump_json()),
        config_hash=digest, input_fingerprint=fingerprint, passthrough=getattr(config.ingest, "passthrough", []),
        left_out_by_patterns=left_out, max_bad_fraction=config.dataset.max_bad_fraction, warnings=warnings,
    )  # fmt: skip


def _versioned(manifest: Manifest, staged: Location | None, of_files: bool, dataset: Location,
               previous: Manifest | None) -> Manifest:  # fmt: skip
    """The manifest as version 1, or as the version after `previous`'s (a refit), with the record index
    `staged` holds (none: the reader's datasets do not grow); `of_files`: the index's files are counted
    per split (a table's counts are rows)."""
    import dataclasses

    from dltool.ingest.files import read_records, split_counts
    from dltool.ingest.grow import last_records, refit_entry

    version = previous.version + 1 if previous is not None else 1
    records = version_file(version, "records.parquet") if staged is not None else None
    if previous is not None:
        index = read_records(staged.child(*records.split("/")))
        entry = refit_entry(version, manifest.input_fingerprint, last_records(dataset, previous), index,
                            manifest.splits, of_files)  # fmt: skip
        return dataclasses.replace(manifest, version=version, versions=(*previous.versions, entry))
    if records is not None and of_files:
        added = split_counts(staged.child(*records.split("/")))
    else:
        added = Counter({name: entry.rows for name, entry in manifest.splits.items() if entry.rows})
    entry = {"version": 1, "created": manifest.created, "input_fingerprint": manifest.input_fingerprint,
             "added": by_split(added), "changed": {}, "removed": {}, "quarantined": manifest.counts.quarantined,
             "rows": {name: e.rows for name, e in manifest.splits.items()}, "records": records}  # fmt: skip
    return dataclasses.replace(manifest, version=1, versions=(entry,))


def _plan(config, reader, dataset, source, files, left_out, existing: str | None) -> IngestPlan:
    """What an ingest would read and write, without starting Spark."""
    if reader.kind == "file":
        from dltool.ingest.files import assign_files

        assigned, vocabulary, unplaced = assign_files(config, reader, files)
        what = {"features": reader.tensor_spec(), "labels": None if vocabulary is None else tuple(vocabulary),
                "unlabelled": len(unplaced), "splits": {s: len(items) for s, items in assigned.items()}}  # fmt: skip
    else:
        what = reader.planned()
    return IngestPlan(
        dataset=dataset.uri, source=source.uri, inputs=len(files), left_out_by_patterns=left_out,
        sample_inputs=tuple(f.relpath for f in files[:10]), bytes=sum(f.size for f in files),
        writes=tuple(f"{dataset.uri}/{d}" for d in ("train/", "val/", "test/", "_errors/", f"{VERSIONS}/", MANIFEST, SUCCESS)),
        existing=existing, **what,
    )  # fmt: skip
