"""Map local paths and URIs to pyarrow filesystems and list inputs (object-store settings: `stores`)."""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urlsplit

from dltool.errors import ConfigError, InputNotFoundError, StorageError
from dltool.storage.hdfs import hdfs_filesystem
from dltool.storage.stores import OBJECT_STORES, s3_filesystem, storage_settings


@dataclass(frozen=True)
class Location:
    """A place in storage: the pyarrow filesystem and the path inside it, plus the URI users gave."""

    uri: str
    fs: object  # pyarrow.fs.FileSystem
    path: str
    version: int | None = None  # a dataset's version N (`DATASET@N`, see open_dataset); None: the current one

    def child(self, *parts: str) -> "Location":
        path = posixpath.join(self.path, *parts)
        base = self.uri[: -len(f"@{self.version}")] if self.version is not None else self.uri
        uri = base.rstrip("/") + "/" + "/".join(parts)
        return Location(uri, self.fs, path)

    def sibling(self, suffix: str) -> "Location":
        """A location next to this one whose name ends with suffix (staging, old copies)."""
        return Location(self.uri.rstrip("/") + suffix, self.fs, self.path.rstrip("/") + suffix)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type == pafs.FileType.Directory

    def info(self):
        """pyarrow's FileInfo; an unreachable store or a refused request is a StorageError naming the URI."""
        try:
            return self.fs.get_file_info(self.path)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot reach storage: {str(e).splitlines()[0] if str(e) else e!r}") from e

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
        """Write a small file atomically: a temp name, then a rename (an object store's one PUT is atomic)."""
        if self.fs.type_name in OBJECT_STORES:
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
            return
        tmp = self.path + ".tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, self.path)

    def delete(self) -> None:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path)


def file_digest(location: Location) -> tuple[int, str]:
    """(size, 128-bit BLAKE2b hex digest) of a file, streamed: shard and checkpoint checksums."""
    import hashlib

    digest, size = hashlib.blake2b(digest_size=16), 0
    with location.fs.open_input_stream(location.path) as stream:
        while block := stream.read(8 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def open_location(uri: str) -> Location:
    """Resolve a local path, file://, hdfs://, s3://, gs:// or abfs:// URI to a Location.

    Raises StorageError with one line saying what to install or set when the
    filesystem cannot be reached.
    """
    import pyarrow.fs as pafs

    if "://" not in uri:
        path = os.path.abspath(uri)
        return Location(path, pafs.LocalFileSystem(), path)
    scheme = uri.split("://", 1)[0].lower()
    try:
        if scheme in ("s3", "s3a", "s3n"):  # one S3 client for the three spellings Spark users write
            parts = urlsplit(uri)
            if not parts.netloc:
                raise ConfigError(f"{uri}: an S3 URI needs a bucket: s3://BUCKET/PATH")
            return Location(uri, s3_filesystem(), (parts.netloc + parts.path).rstrip("/"))
        if scheme == "hdfs":  # WebHDFS: no libhdfs, Hadoop install or JVM in Python (storage/hdfs.py)
            parts = urlsplit(uri)
            return Location(uri, hdfs_filesystem(parts.netloc, storage_settings()), parts.path.rstrip("/") or "/")
        fs, path = pafs.FileSystem.from_uri(uri)
    except OSError as e:
        text = str(e)
        raise StorageError(f"{uri}: cannot open storage: {text.splitlines()[0] if text else e!r}") from e
    except ValueError as e:  # pyarrow.ArrowInvalid: an unknown scheme
        raise ConfigError(f"{uri}: unsupported storage URI ({e}); use a local path, file://, hdfs:// or s3://") from e
    return Location(uri, fs, path)


VERSIONED = re.compile(r"^(.*[^/@])@([0-9]+)$")


def open_dataset(uri: str) -> Location:
    """A dataset's location; `DATASET@N` names its version N, which `Manifest.read` reads as it was."""
    found = VERSIONED.match(uri)
    if found is None:
        return open_location(uri)
    base = open_location(found.group(1))
    version = int(found.group(2))
    if version < 1:
        raise ConfigError(f"{uri}: dataset versions count from 1")
    return Location(f"{base.uri}@{version}", base.fs, base.path, version)


@dataclass(frozen=True)
class InputFile:
    """One listed input: where it is, its path relative to the input root, size and mtime.

    `problem` says why a listed entry cannot be read (a dangling or looping symbolic link):
    ingest quarantines it with that reason instead of reading it.
    """

    path: str
    relpath: str
    size: int
    mtime_ns: int
    problem: str | None = None


@dataclass(frozen=True)
class _Listed:
    path: str
    size: int
    mtime_ns: int
    problem: str | None = None


def _walk_local(base: str) -> list[_Listed]:
    """Every file under a local folder; symbolic links never loop and never list a file twice.

    A link to a file or folder inside the input is skipped: its target is listed by its own,
    real path (so `loop -> .` adds nothing, and a linked image keeps its real class folder).
    A link to something outside the input is followed, each folder and file at most once.
    Dangling and looping links are listed with their problem, to be quarantined.
    """
    root = os.path.realpath(base)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    listed = []
    for folder, dirs, names in os.walk(base, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not (os.path.islink(os.path.join(folder, d)) and inside(os.path.join(folder, d))))
        for name in sorted(names):
            path = os.path.join(folder, name)
            st = os.lstat(path)  # one system call for a plain file; links need a second
            link = stat.S_ISLNK(st.st_mode)
            if link:
                try:
                    st = os.stat(path)
                except OSError as e:
                    why = "symbolic link loop" if e.errno == errno.ELOOP else "dangling symbolic link"
                    listed.append(_Listed(path, 0, 0, f"{why} to {os.readlink(path)!r}"))
                    continue
            if (link and inside(path)) or (st.st_dev, st.st_ino) in seen_files or not stat.S_ISREG(st.st_mode):
                continue
            seen_files.add((st.st_dev, st.st_ino))
            listed.append(_Listed(path, st.st_size, st.st_mtime_ns))
    return listed


def _matcher(patterns: Iterable[str]):
    """One compiled regex for a list of case-insensitive glob patterns (matched against lower-cased paths)."""
    patterns = [p.lower() for p in patterns]
    if not patterns:
        return lambda path: False
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


def list_files(root: Location, include: Iterable[str], exclude: Iterable[str] = ()) -> tuple[list[InputFile], int]:
    """List files under root (recursively) whose relative path matches include and not exclude.

    Returns the matches sorted by relative path and the number of files that were
    present but left out (hidden, or by the patterns), reported so nothing vanishes silently.
    """
    import pyarrow.fs as pafs

    try:
        info = root.fs.get_file_info(root.path)
    except OSError as e:
        raise StorageError(f"{root.uri}: cannot reach input: {e}") from e
    if info.type == pafs.FileType.NotFound:
        raise InputNotFoundError(f"{root.uri}: input not found")
    if info.type == pafs.FileType.File:  # a file named explicitly is read whatever its name
        rel = posixpath.basename(root.path)
        return [InputFile(info.path, rel, info.size or 0, info.mtime_ns or 0)], 0
    try:
        if isinstance(root.fs, pafs.LocalFileSystem):  # the only one here with symbolic links
            listed = _walk_local(root.path)
        else:
            infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True))
            listed = [_Listed(i.path, i.size or 0, i.mtime_ns or 0) for i in infos if i.type == pafs.FileType.File]
    except OSError as e:
        raise StorageError(f"{root.uri}: cannot list input: {e}") from e
    included, excluded = _matcher(include), _matcher(exclude)
    base = root.path.rstrip("/") + "/"
    matched, left_out = [], 0
    for item in listed:
        rel = item.path[len(base):] if item.path.startswith(base) else posixpath.relpath(item.path, root.path)
        low = rel.lower()
        hidden = low[0] in "._" or "/." in low or "/_" in low  # .crc, _SUCCESS, .DS_Store at any depth
        if not hidden and included(low) and not excluded(low):
            matched.append(InputFile(item.path, rel, item.size, item.mtime_ns, item.problem))
        else:
            left_out += 1
    matched.sort(key=lambda f: f.relpath)
    return matched, left_out


def local_scratch(prefix: str):
    """A fresh local folder under TMPDIR (the task's own temp dir in a worker), for files on their way to a
    location or from it (a checkpoint, a model); its user removes it."""
    import uuid
    from pathlib import Path

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path
