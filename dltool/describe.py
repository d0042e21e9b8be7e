"""Describe a dataset from its manifest and shards: counts, schema, errors and a sample row."""

from __future__ import annotations

import numpy as np

from dltool.storage.fs import open_dataset
from dltool.storage.manifest import SUCCESS, Manifest, version_file
from dltool.storage.stores import storage_scope


def describe_dataset(uri: str, storage: dict | None = None, verify: bool = False) -> dict:
    """Manifest facts plus what the files themselves say (schema, a sample row, error counts);
    `storage`: object-store settings as in a config's `storage:` section. `verify` reads every shard
    and checks its size and hash against the manifest: a damaged one raises DltoolError naming it."""
    with storage_scope(storage):
        verified = verify_shards(open_dataset(uri)) if verify else None  # first: a damaged shard cannot be described
        info = _describe(uri)
        return {**info, "verified": verified} if verify else info


def verify_shards(dataset) -> dict:
    """Every shard read and checked against the manifest's sizes and hashes: {"shards", "bytes"}."""
    from concurrent.futures import ThreadPoolExecutor

    from dltool.errors import DltoolError
    from dltool.storage.fs import file_digest

    manifest = Manifest.read(dataset, require_success=False)
    if manifest.shards is None:
        raise DltoolError(f"{dataset.uri}: written before dltool kept shard checksums; nothing to verify against")
    files = [f for entry in manifest.splits.values() for f in entry.files]

    def check(file: str) -> tuple[str | None, int]:
        try:
            size, digest = file_digest(dataset.child(*file.split("/")))
        except FileNotFoundError:
            return f"{dataset.child(*file.split('/')).uri}: missing", 0
        return manifest.shard_problem(dataset, file, size, digest), size

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(check, files))
    damaged = [problem for problem, _ in results if problem is not None]
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise DltoolError(f"damaged shard: {damaged[0]}{more}; re-run dltool ingest --overwrite")
    return {"shards": len(files), "bytes": sum(size for _, size in results)}


def _describe(uri: str) -> dict:
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from dltool.shards.codec import decode_tensors

    dataset = open_dataset(uri)
    manifest = Manifest.read(dataset, require_success=False)
    data = manifest.to_json()
    info = {
        "dataset": dataset.uri,
        "complete": dataset.child(SUCCESS).exists(),
        "name": manifest.name,
        "reader": manifest.reader,
        "created": manifest.created,
        "features": data["features"],
        "label": data["label"],
        "counts": data["counts"],
        "splits": {name: {"rows": entry.rows, "files": len(entry.files), "per_class": entry.per_class}
                   for name, entry in manifest.splits.items()},  # fmt: skip
        "stats": data["stats"],
        "warnings": list(manifest.warnings),
        "duplicates": data["duplicates"],
        "columns": data["columns"],
        "vocabulary": None if manifest.vocabulary is None else {"size": len(manifest.vocabulary),
                                                                "most_frequent": list(manifest.vocabulary[:20])},
        "version": manifest.version,
        "versions": [{**entry, "readable": entry["version"] == manifest.version or
                      dataset.child(*version_file(entry["version"]).split("/")).exists()} for entry in manifest.versions],
    }  # fmt: skip
    first = next((f for entry in manifest.splits.values() for f in entry.files), None)
    if first:
        shard = dataset.child(*first.split("/"))
        parquet = pq.ParquetFile(shard.path, filesystem=shard.fs)
        info["schema"] = {field.name: str(field.type) for field in parquet.schema_arrow}
        row = parquet.read_row_group(0).slice(0, 1)
        tensor = decode_tensors(row.column("features"), manifest.features)[0]
        sample = {"key": row.column("key")[0].as_py(), "features_shape": list(tensor.shape),
                  "features_min": float(np.min(tensor)), "features_max": float(np.max(tensor))}  # fmt: skip
        if manifest.vocabulary is not None and tensor.dtype == np.int32:  # token ids: the words they stand for
            words = ["", "[UNK]", *manifest.vocabulary]
            sample["tokens"] = " ".join(words[i] for i in tensor if i)
        if "label" in row.column_names:
            label = row.column("label")[0].as_py()
            vocab = manifest.label.vocabulary
            sample["label"] = label
            if vocab:
                sample["label_name"] = vocab[label]
        info["sample"] = sample
    errors = dataset.child("_errors")
    if errors.exists():
        table = pads.dataset(errors.path, filesystem=errors.fs, format="parquet").to_table(columns=["stage", "error_class"])
        by_class: dict[str, int] = {}
        for stage, cls in zip(table.column("stage").to_pylist(), table.column("error_class").to_pylist()):
            by_class[f"{stage}/{cls}"] = by_class.get(f"{stage}/{cls}", 0) + 1
        info["errors"] = dict(sorted(by_class.items()))
    return info


def print_versions(info: dict) -> None:
    """The dataset's versions, one line each: what each ingest added, changed and removed, per split."""
    from rich.console import Console
    from rich.table import Table

    def per_split(counts: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"

    table = Table("version", "created", "added", "changed", "removed", "rows", title=f"{info['dataset']}: versions")
    for entry in info["versions"]:
        current = " (current)" if entry["version"] == info["version"] else "" if entry["readable"] else " (removed)"
        table.add_row(f"{entry['version']}{current}", entry["created"], per_split(entry.get("added", {})),
                      per_split(entry.get("changed", {})), per_split(entry.get("removed", {})),
                      per_split(entry.get("rows", {})))  # fmt: skip
    Console(stderr=True, highlight=False).print(table)


def print_description(info: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=True, highlight=False)
    state = "[green]complete[/]" if info["complete"] else "[red]INCOMPLETE (no _SUCCESS)[/]"
    feats = info["features"]
    console.print(f"[bold]{info['name']}[/] ({info['reader']} reader) at {info['dataset']}: {state}, "
                  f"version {info['version']}")
    console.print(f"features: shape {feats['shape']} {feats['dtype']} ({feats['encoding']}); label: {info['label'].get('kind')}")
    if info.get("verified"):
        verified = info["verified"]
        console.print(f"[green]verified[/]: {verified['shards']} shards, {verified['bytes']:,} bytes match the manifest")
    if info.get("vocabulary") is not None:
        vocabulary = info["vocabulary"]
        console.print(f"vocabulary: {vocabulary['size']} tokens (ids 2..; 0 padding, 1 out-of-vocabulary), "
                      f"most frequent: {', '.join(vocabulary['most_frequent'][:8])}")  # fmt: skip
    counts = info["counts"]
    console.print(
        f"inputs {counts['inputs']} = ok {counts['ok']} + quarantined {counts['quarantined']}; "
        f"rows {counts['rows']} (augmented {counts.get('augmented', 0)})"
    )
    table = Table("split", "rows", "files", "per class")
    for split, entry in info["splits"].items():
        per_class = ", ".join(f"{k}: {v}" for k, v in entry["per_class"].items())
        table.add_row(split, str(entry["rows"]), str(entry["files"]), per_class)
    console.print(table)
    if info.get("stats"):
        stats = info["stats"]
        console.print(f"train stats (per entry of axis {stats['axis']}, first 8): mean {stats['mean'][:8]} std {stats['std'][:8]}")
    if info.get("schema"):
        console.print("schema: " + ", ".join(f"{k} {v}" for k, v in info["schema"].items()))
    if info.get("sample"):
        console.print(f"sample row: {info['sample']}")
    if info.get("errors"):
        console.print("quarantined by stage/class: " + ", ".join(f"{k} {v}" for k, v in info["errors"].items()))
    for warning in info.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    for example in (info.get("duplicates") or {}).get("examples", [])[:5]:
        console.print(f"  same content in {', '.join(example['splits'])}: {escape(', '.join(example['keys']))}")
    for column, reason in ((info.get("columns") or {}).get("left_out") or {}).items():
        console.print(f"left out column {escape(column)}: {escape(reason)}")
