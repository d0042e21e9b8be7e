"""Write a folder so that readers see all of it or none of it: stage, write, commit.

Ingest (datasets), training (checkpoints) and predict (prediction folders) all commit
through `StagedFolder`:

    with StagedFolder(target) as staged:      # staged.location: where to write
        ...write into staged.location, its completion marker last...
        staged.commit()                       # or staged.commit(to=another place)

The folder is always written beside the target (`<target>.staging-<id>`), so a run that fails
or dies before its commit never touches the target. Where folders can be renamed (local
disks, HDFS), the commit renames it into place; a target already there is first moved aside
and deleted only after the swap. A crash inside the swap leaves no target and the old copy
beside it, both cleared by the next write. Object stores (S3, GCS) cannot rename a folder:
the commit marks the target `_WRITING`, replaces its objects with server-side copies of the
staged ones, and removes the mark; only then is the staging prefix deleted. The old dataset
is therefore lost only to a crash inside that copy, which leaves `_WRITING` (`unfinished`): a
rerun replaces such a folder without --overwrite. The caller's completion marker, written
last, still alone says the folder is complete. Leaving the `with` block by an exception
deletes whatever was staged.

Only a folder dltool marked as its own (storage/ownership.py), or an empty one, is ever
replaced: the staged folder gets the marker first, and a target without one is refused before
anything is written.
"""

from __future__ import annotations

import uuid

from dltool.storage.fs import Location
from dltool.storage.ownership import MARKER, check_replaceable, mark
from dltool.storage.stores import OBJECT_STORES

__all__ = ["WRITING", "StagedFolder", "renames_folders", "unfinished"]

WRITING = "_WRITING"  # in place on an object store: there from the first write to the commit


def unfinished(location: Location) -> bool:
    """Whether the folder is a write in place that never committed (a crashed ingest or predict on a store)."""
    return location.child(WRITING).exists()


def renames_folders(location: Location) -> bool:
    """Whether the location's filesystem can rename a folder (not S3 or GCS)."""
    return location.fs.type_name not in OBJECT_STORES


class StagedFolder:
    """A folder staged beside `target` and committed by rename, or written in place on object stores.

    `staging` and `old` name the scratch folders (default: `<target>.staging-<id>` and
    `<target>.old-<id>` beside it), for writers that clean up by their own names. `kind` goes
    into the ownership marker ("dataset", "predictions", "checkpoint").
    """

    def __init__(self, target: Location, staging: Location | None = None, old: Location | None = None,
                 kind: str = "output"):  # fmt: skip
        token = uuid.uuid4().hex[:8]
        self.target, self.kind = target, kind
        self.location = staging or target.sibling(f".staging-{token}")
        self._old = old or target.sibling(f".old-{token}")
        self._committed = False

    def __enter__(self) -> StagedFolder:
        check_replaceable(self.target, self.kind)
        self.location.fs.create_dir(self.location.path, recursive=True)
        mark(self.location, self.kind)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self._committed:
            self.location.delete()
        return False

    def commit(self, to: Location | None = None) -> Location:
        """Make the staged folder `to` (default: the target); returns where it now is."""
        final = to or self.target
        check_replaceable(final, self.kind)  # `to` may name another folder than the target
        if not renames_folders(final):
            self._copy_into(final)
        else:
            moved_aside = final.exists()
            if moved_aside:
                final.fs.move(final.path, self._old.path)
            parent = final.path.rsplit("/", 1)[0]
            if parent:
                final.fs.create_dir(parent, recursive=True)
            final.fs.move(self.location.path, final.path)
            if moved_aside:
                self._old.delete()
        self._committed = True
        return final

    def _copy_into(self, final: Location) -> None:
        """An object store's commit: the target's objects replaced by server-side copies of the staged ones."""
        import pyarrow.fs as pafs

        def files(location: Location) -> list[str]:
            found = location.fs.get_file_info(pafs.FileSelector(location.path, recursive=True, allow_not_found=True))
            return [info.path for info in found if info.type == pafs.FileType.File]

        final.child(WRITING).write_bytes(b"")  # from here to the end a crash leaves a folder marked unfinished
        for path in files(final):
            if path.rsplit("/", 1)[-1] not in (WRITING, MARKER):  # its marker stays: a rerun may replace it
                final.fs.delete_file(path)
        for path in files(self.location):
            final.fs.copy_file(path, final.path + path[len(self.location.path):])
        final.child(WRITING).delete()
        self.location.delete()
