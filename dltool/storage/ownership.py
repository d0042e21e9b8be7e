"""What dltool may delete or replace: only folders it marked as its own, or empty ones.

Every folder dltool creates (a dataset and its staging copy, a run dir, predictions, an export)
gets a `_DLTOOL` marker as its first file: `{"dltool": KIND, "id": ..., "created": ...}`.
Before dltool replaces or deletes a folder it checks for the marker; any other folder that is
not empty is refused (exit 2) with one line naming it and what it holds. Some places are never
replaced at all: `/`, the home folder, the current folder, a bucket's root, and any folder that
holds the command's input or config.

`OutputLock` keeps two commands from writing the same output at once: a lock file beside the
output (`NAME.dltool-lock`), created exclusively on local disks; the second command fails at
once. On HDFS and object stores pyarrow has no exclusive create: the lock is written and read
back (two commands starting within the same moment may both pass there).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable

from dltool.errors import ConfigError, DltoolError
from dltool.storage.fs import Location
from dltool.storage.stores import OBJECT_STORES

__all__ = ["MARKER", "OutputLock", "check_replaceable", "delete_owned", "is_owned", "mark", "protected_paths",
           "stale_siblings"]

MARKER = "_DLTOOL"
LOCK_SUFFIX = ".dltool-lock"
SHOWN = 4  # entries of a refused folder named in its message


class OutputInUseError(DltoolError):
    """Another dltool command is writing the same output (exit 1: a scheduler may retry later)."""


def mark(location: Location, kind: str) -> None:
    """Mark a folder dltool just created as its own (the folder must exist)."""
    record = {"dltool": kind, "id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    location.child(MARKER).write_bytes(json.dumps(record).encode())


def is_owned(location: Location) -> bool:
    """Whether the folder carries dltool's marker."""
    try:
        record = json.loads(location.child(MARKER).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "dltool" in record


def protected_paths(config) -> list[str]:
    """What an experiment's outputs must never replace: its input and the folder its YAML file is in."""
    ingest = getattr(config, "ingest", None)
    paths = [getattr(ingest, "input", None), getattr(config, "_source_dir", None)]
    return [p for p in paths if isinstance(p, str)]


def check_replaceable(location: Location, what: str = "output", protected: Iterable[str] = ()) -> None:
    """Raise ConfigError unless dltool may delete or replace `location`: absent, empty, or marked as its own.

    `protected`: paths of the command's input and config; a folder holding one is never replaced.
    """
    _refuse_special(location, what, protected)
    info = location.info()
    import pyarrow.fs as pafs

    if info.type == pafs.FileType.NotFound:
        return
    if info.type != pafs.FileType.Directory:
        raise ConfigError(f"{location.uri}: {what} is a file that dltool did not write; not replaced: choose another {what}")
    names = _names(location)
    if not names or MARKER in names and is_owned(location):
        return
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    raise ConfigError(
        f"{location.uri}: {what} not replaced: dltool did not write this folder (no {MARKER} marker; it holds "
        f"{shown}); choose another {what}, or empty or remove it yourself"
    )


def delete_owned(location: Location, what: str = "output", protected: Iterable[str] = ()) -> None:
    """Delete `location` if dltool may (see check_replaceable); else raise ConfigError and delete nothing."""
    check_replaceable(location, what, protected)
    location.delete()


def stale_siblings(target: Location, patterns: Iterable[str]) -> list[Location]:
    """Folders beside `target` named `<name><suffix>` for a suffix regex in `patterns` and marked as dltool's.

    Call it holding the target's OutputLock: then no running command owns them.
    """
    import pyarrow.fs as pafs

    parent, name = target.path.rstrip("/").rsplit("/", 1)
    wanted = re.compile(re.escape(name) + "(?:" + "|".join(patterns) + ")$")
    try:
        siblings = target.fs.get_file_info(pafs.FileSelector(parent or "/", allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in siblings:
        if info.type == pafs.FileType.Directory and wanted.fullmatch(info.base_name):
            location = target.sibling(info.base_name[len(name):])
            if is_owned(location):
                found.append(location)
    return found


def _names(location: Location) -> list[str]:
    import pyarrow.fs as pafs

    return sorted(info.base_name for info in location.fs.get_file_info(pafs.FileSelector(location.path)))


def _refuse_special(location: Location, what: str, protected: Iterable[str]) -> None:
    """`/`, home, the current folder, a bucket's root, or a folder holding an input or the config."""
    path = location.path.rstrip("/")
    if location.fs.type_name in OBJECT_STORES:
        if "/" not in path.strip("/"):
            raise ConfigError(f"{location.uri}: {what} is a bucket's root; dltool never replaces it: name a folder in it")
        return
    if location.fs.type_name != "local":
        if path in ("", "/"):
            raise ConfigError(f"{location.uri}: {what} is the filesystem's root; dltool never replaces it")
        return
    real = os.path.realpath(path or "/")
    special = {"/": "the root folder", os.path.realpath(os.path.expanduser("~")): "your home folder",
               os.path.realpath(os.getcwd()): "the current folder"}  # fmt: skip
    if real in special:
        raise ConfigError(f"{location.uri}: {what} is {special[real]}; dltool never replaces it: name a new folder")
    for other in protected:
        if "://" in other and not other.startswith("file://"):
            continue
        held = os.path.realpath(other.removeprefix("file://"))
        if held == real or held.startswith(real + os.sep):
            raise ConfigError(f"{location.uri}: {what} holds {other}, this command's input or config; "
                              "dltool never replaces it: choose another folder")  # fmt: skip


class OutputLock:
    """Held while a command writes `target`; a second command for the same target fails at once."""

    def __init__(self, target: Location):
        self.target = target
        self.lock = target.sibling(LOCK_SUFFIX)
        self._record = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex,
                        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        self._held = False

    def __enter__(self) -> OutputLock:
        parent = self.lock.path.rsplit("/", 1)[0]
        if parent:
            self.lock.fs.create_dir(parent, recursive=True)
        if not self._take():
            holder = self._holder()
            if holder is not None and self._dead(holder):
                self.lock.delete()  # its command is gone (same host, no such process)
                if self._take():
                    return self
                holder = self._holder()
            who = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}" if holder else "?"
            raise OutputInUseError(
                f"{self.target.uri}: another dltool command is writing it ({who}); wait for it to finish, "
                f"or delete {self.lock.uri} if that command is gone"
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._held:
            try:
                self.lock.delete()
            except OSError:
                pass

    def _take(self) -> bool:
        data = json.dumps(self._record).encode()
        if self.lock.fs.type_name == "local":
            try:
                fd = os.open(self.lock.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            if self.lock.exists():
                return False
            with self.lock.fs.open_output_stream(self.lock.path) as f:
                f.write(data)
            holder = self._holder()
            if holder is None or holder.get("id") != self._record["id"]:
                return False
        self._held = True
        return True

    def _holder(self) -> dict | None:
        try:
            record = json.loads(self.lock.read_bytes())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    @staticmethod
    def _dead(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
