"""A dataset's next version: only the files added or changed since the last one are read.

`run_ingest` comes here when a dataset of the same config is at the location and only the inputs
changed (docs/guide.md "Growing datasets"). The last version's record index
(`_versions/vNNNNN.records.parquet`: each file's key, size, mtime, split and content digest) says
which listed files are new, changed (another size or mtime) or gone:

- new and changed files are decoded by the same Spark job as a full ingest, into shards named for
  the version (`<split>/part-vNNNNN-*.parquet`);
- the old shards that held a changed or removed file are rewritten without it, under a new name
  (`part-vNNNNN-rNNNNN`): a shard is never modified in place, so every earlier version stays
  readable (`DATASET@N`) until `dltool gc` removes it;
- every record keeps its split for life, and a new file of a known group joins its group
  (splits.assign's `known`); new files are placed among themselves by the rules;
- the class vocabulary and the train statistics of the dataset are kept, so old shards and models
  stay valid; a file of a new class fails the ingest or is quarantined (`dataset.new_classes`);
- table and text datasets grow the same way by input file (`grow_table`): the records of new and
  changed files are read with the dataset's fitted preprocessing, those of changed and removed
  ones taken out.

`--refit` is not done here: it rebuilds the whole dataset as its next version (ingest/run.py), with
every record's split from `known_splits`.

The new version's manifest, written last, makes it current: an ingest interrupted before leaves
the last version as it was, and its rerun writes the same names again.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace

from dltool.errors import ConfigError, DataQualityError
from dltool.ingest.files import (
    assign_files, drop_from_eval, filter_shard, of_files, read_records, records_of, write_file_shards, write_records,
)  # fmt: skip
from dltool.shards.sink import on_write_complete
from dltool.splits import find_duplicates, report
from dltool.storage.manifest import SPLITS, Counts, Manifest, SplitEntry, by_split, shard_checksums, version_file


MIN_FILES = 500  # files per task at least: a day's few new files make a few shards, not one per core

@dataclass(frozen=True)
class Growth:
    """A new version, written: its manifest (already current) and what changed per split."""

    manifest: Manifest
    added: dict[str, int]  # files per split
    changed: dict[str, int]
    removed: dict[str, int]
    quarantined: int  # new or changed files quarantined
    first_errors: tuple[dict, ...]


def grow_files(spark, config, reader, source, dataset, old: Manifest, files, parallelism: int, progress: bool,
               fingerprint: str, left_out: int) -> Growth:  # fmt: skip
    """Write the next version of a file dataset (the caller holds its lock); DataQualityError leaves it as it was."""
    version = old.version + 1
    prefix = f"part-v{version:05d}"
    previous = last_records(dataset, old)
    todo, changed, removed = _diff(previous, files)
    vocabulary = old.label.vocabulary
    if vocabulary is not None and config.dataset.new_classes == "fail":
        _refuse_new_classes(reader, todo, vocabulary)
    known = {key: record[2] for key, record in previous.items() if record[2] is not None}
    classes = list(vocabulary) if vocabulary is not None else None
    assigned, _, unplaced = assign_files(config, reader, todo, classes, known)
    results, driver_errors = write_file_shards(spark, config, reader, source, todo, dataset, parallelism, progress,
                                               assigned, vocabulary, unplaced, prefix, MIN_FILES)  # fmt: skip
    fresh = records_of(todo, results)
    gone = set(removed) | {f.relpath for f in changed}  # their rows leave the old shards
    records = {**{k: r for k, r in previous.items() if k not in gone}, **fresh}
    duplicates = _duplicates(config.dataset, dataset, old, records, results, gone, previous)
    written = on_write_complete(results, old.features, old.label, len(todo), quarantined=len(driver_errors),
                                first_errors=driver_errors, stats_axis=reader.stats_axis())  # fmt: skip
    kept = _without(dataset, old, {k for k in gone if previous[k][2] is not None}, config.dataset, prefix)
    splits = {s: _merged(old.splits.get(s), kept[s], written.splits[s], vocabulary) for s in SPLITS}
    quarantined = sum(1 for r in records.values() if r[2] is None)
    counts = Counts(inputs=len(files), ok=len(files) - quarantined, quarantined=quarantined,
                    augmented=old.counts.augmented - sum(k.lost_augmented for k in kept.values()) + written.augmented,
                    rows=sum(e.rows for e in splits.values()), left_out_by_patterns=left_out)  # fmt: skip
    if counts.bad_fraction > config.dataset.max_bad_fraction:
        raise DataQualityError.quarantined(counts, config.dataset.max_bad_fraction,
                                           f"{dataset.uri}/_errors (version {old.version} is kept)")
    entry = _entry(version, fingerprint, previous, fresh, changed, removed, splits)
    warnings = report({s: e.per_class for s, e in splits.items()}, vocabulary, config.dataset.split)
    if duplicates is not None:
        warnings.append(duplicates.message())
    manifest = _next(dataset, old, version, entry, splits, counts, fingerprint, warnings, duplicates)
    write_records(dataset.child(*entry["records"].split("/")), records)
    manifest.write(dataset)  # _manifest.json last: from here the new version is the current one
    return Growth(manifest, entry["added"], entry["changed"], entry["removed"], entry["quarantined"], written.first_errors)


def grow_table(spark, config, reader, source, dataset, old: Manifest, files, parallelism: int, progress: bool,
               fingerprint: str, left_out: int, engine) -> Growth:  # fmt: skip
    """Write the next version of a table or text dataset (the caller holds its lock): the records of its new
    and changed input files, checked and encoded by the dataset's own fitted preprocessing (an unseen
    category is `<other>`, an unseen word out of vocabulary), and the old shards without the records of its
    changed and removed files (a record's key is `<file>:<row>`, or a text file's path). Records keep their
    split: a hash, path or column split gives a record the split it had, and a stratified one is given the
    old records' splits (`known`). `engine`: the reader's job (ingest/tables.py or ingest/text.py)."""
    from dltool.ingest.tables import PREPROCESS, TYPED

    version = old.version + 1
    prefix = f"part-v{version:05d}"
    previous = last_records(dataset, old)
    todo, changed, removed = _diff(previous, files)
    gone = set(removed) | {f.relpath for f in changed}
    split = config.dataset.split
    if split.stratify and split.group and todo:
        raise ConfigError(
            f"{dataset.uri}: a stratified group split of a table ranks whole groups, so dltool cannot tell which "
            "split the new rows of an old group belong in: take them in with --refit (every row keeps its split)"
        )
    if gone and getattr(config.ingest, "key_column", None):
        raise ConfigError(
            f"{len(gone)} input file(s) of {dataset.uri} changed or went away ({sorted(gone)[0]!r}...) and its rows "
            "are keyed by ingest.key_column, so dltool cannot tell which rows they held: add rows as new files, or "
            "rebuild with --refit"
        )
    dataset.child(TYPED).delete()  # what an interrupted run of this version left
    for name in written_errors(dataset, prefix):
        dataset.child("_errors", name).delete()
    file_of = record_file(reader)
    kept = _without(dataset, old, gone, config.dataset, prefix, of=lambda key, drop: file_of(key) in drop)
    known = {key: name for name, k in kept.items() for key in k.taken} if split.stratify else None
    written = None
    if todo:
        written = engine(spark, config, reader, source, todo, dataset, parallelism, progress,
                         dataset.child(PREPROCESS).uri, prefix, known)  # fmt: skip
    errors = read_errors(dataset, written_errors(dataset, prefix))
    if old.label.vocabulary is not None and config.dataset.new_classes == "fail":
        _refuse_new_labels(errors)
    fresh = table_records(todo, errors, file_of)
    records = {**{k: r for k, r in previous.items() if k not in gone}, **fresh}
    new = written.splits if written is not None else {s: SplitEntry(0, (), {}) for s in SPLITS}
    vocabulary = old.label.vocabulary
    splits = {s: _merged(old.splits.get(s), kept[s], new[s], vocabulary) for s in SPLITS}
    # Quarantined records of a file whose key does not name it (key_column) count in the totals alone.
    quarantined = old.counts.quarantined - sum(previous[k][4] or 0 for k in gone) + \
        (written.quarantined if written is not None else 0)  # fmt: skip
    rows = sum(e.rows for e in splits.values())
    counts = Counts(inputs=rows + quarantined, ok=rows, quarantined=quarantined, augmented=0, rows=rows,
                    left_out_by_patterns=left_out)  # fmt: skip
    if counts.bad_fraction > config.dataset.max_bad_fraction:
        raise DataQualityError.quarantined(counts, config.dataset.max_bad_fraction,
                                           f"{dataset.uri}/_errors (version {old.version} is kept)", "rows")
    entry = {"version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "input_fingerprint": fingerprint, "added": {s: e.rows for s, e in new.items() if e.rows}, "changed": {},
             "removed": {s: k.rows for s, k in kept.items() if k.rows},
             "quarantined": sum(r[4] for r in fresh.values()),
             "files": {"added": len(todo) - len(changed), "changed": len(changed), "removed": len(removed)},
             "rows": {s: e.rows for s, e in splits.items()}, "records": version_file(version, "records.parquet")}  # fmt: skip
    warnings = report({s: e.per_class for s, e in splits.items()}, vocabulary, config.dataset.split)
    warnings += written.warnings if written is not None else ()
    manifest = _next(dataset, old, version, entry, splits, counts, fingerprint, warnings, old.duplicates)
    write_records(dataset.child(*entry["records"].split("/")), records)
    manifest.write(dataset)  # _manifest.json last: from here the new version is the current one
    return Growth(manifest, entry["added"], entry["changed"], entry["removed"], entry["quarantined"],
                  written.first_errors if written is not None else ())  # fmt: skip


def record_file(reader):
    """The input file (its relpath) of a table or text record's key: `<file>:<row>`; a text file's document
    is keyed by the file itself. (A key from `key_column` names no file.)"""
    if getattr(reader.config, "format", None) == "files":
        return lambda key: key
    return lambda key: key.rsplit(":", 1)[0]


def table_records(files, errors, file_of) -> dict[str, tuple]:
    """A table or text dataset's record index: each input file -> (size, mtime_ns, None, None, records
    quarantined), those counted from the keys of the `errors` rows."""
    keys = errors.column("key").to_pylist() if errors is not None else []
    bad = Counter(file_of(key) for key in keys if key is not None)
    return {f.relpath: (f.size, f.mtime_ns, None, None, bad[f.relpath]) for f in files}


def index_table(staging, reader, files, version: int) -> None:
    """Write the record index of a table or text dataset written whole (in `staging`, before its commit)."""
    records = table_records(files, read_errors(staging, written_errors(staging, "part")), record_file(reader))
    write_records(staging.child(*version_file(version, "records.parquet").split("/")), records)


def known_splits(dataset, old: Manifest, reader, split) -> dict[str, str] | None:
    """The split of every record `dataset` holds, for a refit to keep: a file dataset's from its record
    index; a table's from its shards' keys, needed only when stratified (any other split of a row is
    decided by its key, path or split column alone, the same again)."""
    import pyarrow.parquet as pq

    if reader.kind == "file":
        return {key: r[2] for key, r in last_records(dataset, old).items() if r[2] is not None}
    if not split.stratify:
        return None
    known = {}
    for name, entry in old.splits.items():
        for file in entry.files:
            location = dataset.child(*file.split("/"))
            keys = pq.read_table(location.path, columns=["key"], filesystem=location.fs).column("key").to_pylist()
            known.update(dict.fromkeys(keys, name))
    return known


def refit_entry(version: int, fingerprint: str, previous: dict[str, tuple], records: dict[str, tuple], splits,
                of_files: bool) -> dict:  # fmt: skip
    """The `versions` entry of a refit (every shard rewritten): the inputs added, changed and removed since
    the last version (files per split for a file dataset; a table's, in files)."""
    listed = [_Listed(key, r[0], r[1]) for key, r in records.items()]
    todo, changed, removed = _diff(previous, listed)
    if of_files:  # a file quarantined before and placed now (a new class learnt) is added too
        again = {f.relpath for f in todo}
        placed = [f for f in listed if f.relpath not in again and previous[f.relpath][2] is None and records[f.relpath][2]]
        fresh = {f.relpath: records[f.relpath] for f in todo + placed}
        return {**_entry(version, fingerprint, previous, fresh, changed, removed, splits), "refit": True}
    files = {"added": len(todo) - len(changed), "changed": len(changed), "removed": len(removed)}
    return {**_entry(version, fingerprint, {}, {}, [], [], splits), "refit": True, "files": files,
            "quarantined": sum(r[4] or 0 for r in records.values())}  # fmt: skip


@dataclass(frozen=True)
class _Listed:
    """A record index's file, as the listing would give it (_diff)."""

    relpath: str
    size: int
    mtime_ns: int


def read_errors(dataset, names: list[str]):
    """The error rows of `dataset`'s `_errors/` files `names` as one table (key, message); None if none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(loc.path, columns=["key", "message"], filesystem=loc.fs)
              for loc in (dataset.child("_errors", name) for name in names)]  # fmt: skip
    return pa.concat_tables(tables) if tables else None


def written_errors(dataset, prefix: str) -> list[str]:
    """The names of the error files in `dataset`'s `_errors/` whose names start with `prefix`-."""
    import pyarrow.fs as pafs

    folder = dataset.child("_errors")
    found = folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))
    return sorted(i.base_name for i in found if i.base_name.startswith(prefix + "-") and i.base_name.endswith(".parquet"))


def _refuse_new_labels(errors) -> None:
    if errors is None:
        return
    import pyarrow.compute as pc

    # Every reader says of a record of an unknown class: "... is not one of the N the model knows".
    unknown = errors.filter(pc.fill_null(pc.ends_with(errors.column("message"), "the model knows"), False))
    if unknown.num_rows:
        raise ConfigError(
            f"{unknown.num_rows} new row(s) of a class the dataset does not have "
            f"({unknown.column('message')[0].as_py()}): its models cannot learn it; learn it with --refit (every row "
            "keeps its split), or set dataset.new_classes: quarantine to leave such rows out"
        )


def _next(dataset, old: Manifest, version: int, entry: dict, splits, counts, fingerprint, warnings,
          duplicates) -> Manifest:  # fmt: skip
    """The manifest of version `version`: `old`'s, with these splits and counts, and the checksums of its shards."""
    files_now = {f for e in splits.values() for f in e.files}
    checksums = {f: c for f, c in (old.shards or {}).items() if f in files_now}
    return replace(
        old, created=entry["created"], splits=splits, counts=counts, input_fingerprint=fingerprint, version=version,
        versions=(*old.versions, entry), warnings=tuple(warnings), duplicates=duplicates,
        shards={**checksums, **shard_checksums(dataset, sorted(files_now - set(checksums)))},
    )  # fmt: skip


def _diff(previous: dict[str, tuple], files) -> tuple[list, list, list[str]]:
    """The listed files to decode (new, then changed: another size or mtime), the changed ones, the removed keys."""
    listed = {f.relpath for f in files}
    changed = [f for f in files if f.relpath in previous and tuple(previous[f.relpath][:2]) != (f.size, f.mtime_ns)]
    todo = [f for f in files if f.relpath not in previous] + changed
    return todo, changed, [key for key in previous if key not in listed]


def _entry(version: int, fingerprint: str, previous, fresh, changed, removed, splits) -> dict:
    """The new version's entry in `versions`: files added, changed and removed per split, rows per split."""
    again = {f.relpath for f in changed}
    added = Counter(r[2] for key, r in fresh.items() if key not in again and r[2] is not None)
    moved = Counter(fresh[key][2] for key in again if fresh[key][2] is not None)
    lost = Counter(previous[key][2] for key in removed if previous[key][2] is not None)
    return {"version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "input_fingerprint": fingerprint, "added": by_split(added), "changed": by_split(moved),
            "removed": by_split(lost), "quarantined": sum(1 for r in fresh.values() if r[2] is None),
            "rows": {s: e.rows for s, e in splits.items()}, "records": version_file(version, "records.parquet")}  # fmt: skip


def _duplicates(settings, dataset, old: Manifest, records, results, gone: set[str], previous):
    """Identical files across splits, old and new ones together, handled as `dataset.on_duplicates` says; a
    val or test copy dropped (drop_from_eval) is one of the new version's, never an old record."""
    duplicates = find_duplicates((r[3], r[2], key) for key, r in records.items() if r[2] is not None)
    if duplicates is not None and settings.on_duplicates == "fail":
        raise DataQualityError(f"{duplicates.message()}; dataset.on_duplicates is fail (use warn or drop_from_eval)")
    if duplicates is not None and settings.on_duplicates == "drop_from_eval":
        in_train = {r[3] for k, r in previous.items() if k not in gone and r[2] == "train"}
        drop_from_eval(dataset, results, settings, old.features, in_train)
    return duplicates


def last_records(dataset, manifest: Manifest) -> dict[str, tuple]:
    """The record index of the dataset's current version; a ConfigError for a dataset that has none."""
    entry = next((v for v in manifest.versions if v["version"] == manifest.version), None)
    if entry is None or not entry.get("records"):
        raise ConfigError(
            f"{dataset.uri}: holds a dataset written before dltool kept a record index, so it cannot add only the "
            "new files; rebuild it once with --overwrite"
        )
    return read_records(dataset.child(*entry["records"].split("/")))


def _refuse_new_classes(reader, files, vocabulary) -> None:
    found = Counter(label for f in files if (label := reader.label_of(f.relpath)) is not None and label not in vocabulary)
    if found:
        names = ", ".join(f"{name!r} ({n} files)" for name, n in sorted(found.items())[:5])
        raise ConfigError(
            f"new class {names} is not one of the dataset's {len(vocabulary)} classes: its models cannot learn it; "
            "learn it with --refit (every file keeps its split), or set dataset.new_classes: quarantine to leave such "
            "files out"
        )


@dataclass
class _Kept:
    """One split's old shards once the removed and changed files are out of them."""

    files: list[str]  # the old shards still used, and those rewritten
    rows: int  # rows taken out
    per_class: Counter  # rows taken out per label index (as text), or "all"
    lost_augmented: int = 0
    taken: list[str] = field(default_factory=list)  # the keys of the rows taken out


def _without(dataset, old: Manifest, drop: set[str], settings, prefix: str, of=of_files) -> dict[str, _Kept]:
    """Per split, the old shards with the rows of `drop`'s files taken out (`of(key, drop)`: a row of theirs):
    a shard that holds none is kept as it is, one that does is rewritten under a new name (the old one stays
    for the earlier versions)."""
    import pyarrow.parquet as pq

    kept = {s: _Kept([], 0, Counter()) for s in SPLITS}
    rewritten = 0
    for split, entry in old.splits.items():
        for file in entry.files:
            location = dataset.child(*file.split("/"))
            keys = pq.read_table(location.path, columns=["key"], filesystem=location.fs).column("key").to_pylist() \
                if drop else []  # fmt: skip
            gone = [k for k in keys if of(k, drop)]
            if not gone:
                kept[split].files.append(file)
                continue
            name = f"{split}/{prefix}-r{rewritten:05d}.parquet"
            rewritten += 1
            rows, lost = filter_shard(location, dataset.child(*name.split("/")), drop, settings, old.features, of)
            if rows:
                kept[split].files.append(name)
            kept[split].rows += len(gone)
            kept[split].per_class.update(lost)
            kept[split].lost_augmented += sum(1 for k in gone if "#aug" in k)
            kept[split].taken += gone
    return kept


def _merged(old: SplitEntry | None, kept: _Kept, new: SplitEntry, vocabulary) -> SplitEntry:
    """A split of the new version: the old shards kept or rewritten, and the new ones."""
    per_class = Counter(old.per_class if old is not None else {})
    if vocabulary is not None:
        per_class.subtract({vocabulary[int(k)]: n for k, n in kept.per_class.items()})
    per_class.update(new.per_class)
    rows = (old.rows if old is not None else 0) - kept.rows + new.rows
    if vocabulary is not None:
        ordered = {c: per_class[c] for c in vocabulary if per_class[c] > 0}
    else:
        ordered = {"all": rows} if rows else {}
    return SplitEntry(rows, tuple(sorted(kept.files + list(new.files))), ordered)
