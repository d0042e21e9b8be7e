"""Write a folder so that readers see all of it or none of it: stage, write, commit.

Ingest (datasets), training (checkpoints) and predict (prediction folders) all commit
through `StagedFolder`:

    with StagedFolder(target) as staged:      # staged.location: where to write
        ...write into staged.location, its completion marker last...
        staged.commit()                       # or staged.commit(to=another place)

Where folders can be renamed (local disks, HDFS), the folder is written beside the target
and renamed into place; a target already there is first moved aside and deleted only
after the swap. A crash before the swap leaves the old target untouched; a crash inside
it leaves no target and the old copy beside it, both cleared by the next write. Object
stores (S3, GCS) cannot rename a folder: the target is cleared and written in place, and
only the marker file, which the caller writes last, says the folder is complete; until the
commit a `_WRITING` file says the folder is dltool's own unfinished work (`unfinished`), so
a rerun after a crash replaces it without --overwrite. Leaving the `with` block by an
exception deletes whatever was staged.
"""

from __future__ import annotations

import uuid

from dltool.storage.fs import Location
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
    `<target>.old-<id>` beside it), for writers that clean up by their own names.
    """

    def __init__(self, target: Location, staging: Location | None = None, old: Location | None = None):
        token = uuid.uuid4().hex[:8]
        self.target = target
        self.in_place = not renames_folders(target)
        self.location = target if self.in_place else staging or target.sibling(f".staging-{token}")
        self._old = old or target.sibling(f".old-{token}")
        self._committed = False

    def __enter__(self) -> StagedFolder:
        if self.in_place:
            self.target.delete()
        self.location.fs.create_dir(self.location.path, recursive=True)
        if self.in_place:
            self.target.child(WRITING).write_bytes(b"")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self._committed:
            self.location.delete()
        return False

    def commit(self, to: Location | None = None) -> Location:
        """Make the staged folder `to` (default: the target); returns where it now is (written in
        place, it stays at the target: `to` cannot apply)."""
        final = to or self.target
        if self.in_place:
            self.target.child(WRITING).delete()
            final = self.target
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
