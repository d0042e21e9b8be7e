"""`dltool gc DATASET --keep N`: remove the shards and version files that no kept version uses.

A dataset that grows (ingest/grow.py) keeps every version's shards, so `DATASET@N` reads version N as it
was. gc keeps the newest `keep` versions (the current one always) and removes the rest: shard files no
kept version names, and the removed versions' manifests and record indexes. It also removes shards an
interrupted ingest left that no version names. It holds the dataset's lock, touches only a dataset dltool
marked as its own, and deletes only file names dltool writes there (`<split>/part-*.parquet`,
`_versions/vNNNNN.*`); anything else in the folder is left alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dltool.errors import ConfigError
from dltool.storage.fs import Location, open_location
from dltool.storage.manifest import SPLITS, VERSIONS, Manifest, version_file
from dltool.storage.ownership import OutputLock, is_owned

SHARD = re.compile(r"^part-[0-9a-z-]+\.parquet$")  # the shard names ingest writes
VERSION_FILE = re.compile(r"^v([0-9]{5})\.(json|records\.parquet)$")


@dataclass(frozen=True)
class GcResult:
    """What gc removed (or, for a dry run, would remove)."""

    dataset: str
    kept: tuple[int, ...]  # the versions still readable
    removed_versions: tuple[int, ...]
    files: int  # files removed
    bytes: int
    dry_run: bool = False
    status: str = "collected"

    def to_json(self) -> dict:
        return {"status": self.status, "dataset": self.dataset, "kept": list(self.kept),
                "removed_versions": list(self.removed_versions), "files": self.files, "bytes": self.bytes,
                "dry_run": self.dry_run}  # fmt: skip


def collect(uri: str, keep: int = 1, dry_run: bool = False) -> GcResult:
    """Keep the newest `keep` versions of the dataset at `uri`; remove the files only older versions use."""
    if keep < 1:
        raise ConfigError(f"--keep {keep}: keep at least the current version (1)")
    dataset = open_location(uri)
    if not is_owned(dataset):
        raise ConfigError(f"{dataset.uri}: not a folder dltool wrote; gc removes nothing there")
    with OutputLock(dataset):
        manifest = Manifest.read(dataset)
        numbers = sorted({entry["version"] for entry in manifest.versions} | {manifest.version})
        kept = [n for n in numbers if n > manifest.version - keep]
        used = set()
        for number in kept:
            used |= _files_of(dataset, manifest, number)
        doomed = [info for info in _written_files(dataset) if info.path[len(dataset.path) + 1:] not in used]
        removed = [n for n in numbers if n not in kept and dataset.child(*version_file(n).split("/")).exists()]
        if not dry_run:
            for info in doomed:
                dataset.fs.delete_file(info.path)
        return GcResult(dataset.uri, tuple(kept), tuple(removed), len(doomed), sum(i.size for i in doomed), dry_run)


def _files_of(dataset: Location, current: Manifest, number: int) -> set[str]:
    """The files (relative to the dataset) version `number` needs: its shards, manifest and record index."""
    if number == current.version:
        manifest = current
    else:
        try:
            manifest = Manifest.from_json(json.loads(dataset.child(*version_file(number).split("/")).read_bytes()))
        except FileNotFoundError:
            return set()  # removed by an earlier gc
    entry = next((v for v in manifest.versions if v["version"] == number), {})
    files = {f for split in manifest.splits.values() for f in split.files} | {version_file(number)}
    return files | ({entry["records"]} if entry.get("records") else set())


def _written_files(dataset: Location) -> list:
    """The files of the dataset that ingest writes and gc may remove: shards and version files."""
    import pyarrow.fs as pafs

    found = []
    for folder, pattern in [*((name, SHARD) for name in SPLITS), (VERSIONS, VERSION_FILE)]:
        selector = pafs.FileSelector(dataset.child(folder).path, allow_not_found=True)
        found += [info for info in dataset.fs.get_file_info(selector)
                  if info.type == pafs.FileType.File and pattern.match(info.base_name)]  # fmt: skip
    return found
