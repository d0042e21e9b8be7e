"""Shared fixtures: repository paths and a config writer."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def write_config(tmp_path):
    """Write an experiment dict as YAML into tmp_path and return its path."""

    def write(data: dict, name: str = "experiment.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def run_ingest_cli(*args):
    """`dltool ingest ARGS --json` in-process: the CLI result and its parsed JSON summary."""
    import json

    from typer.testing import CliRunner

    from dltool.cli import app

    result = CliRunner().invoke(app, ["ingest", *map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def read_split(dataset: Path, split: str):
    """One split of a dataset as an Arrow table, read with plain pyarrow."""
    import pyarrow.dataset as pads

    return pads.dataset(str(dataset / split), format="parquet").to_table()


def make_manifest(features=None, label=None, splits=None, **fields):
    """A complete Manifest: the parts a test names, plain placeholders for the rest.

    Defaults: float32 features [2], three classes a, b, c, no splits, no stats.
    """
    from dltool.shards.codec import TensorSpec
    from dltool.storage.manifest import Counts, Label, Manifest

    parts = {
        "name": "test", "created": "2026-01-01T00:00:00Z", "dltool_version": "0.1.0", "reader": "image",
        "source": "/inputs", "features": features or TensorSpec((2,), "float32"), "feature_names": None,
        "label": label or Label("class", ("a", "b", "c")), "passthrough": (), "splits": splits or {},
        "counts": Counts(inputs=0, ok=0, quarantined=0, augmented=0, rows=0, left_out_by_patterns=0),
        "stats": None, "preprocess": None, "errors": "_errors", "config_hash": "0" * 16,
        "input_fingerprint": "0" * 16, "ingest": {}, "status": "ok",
    }  # fmt: skip
    return Manifest(**{**parts, **fields})


def write_dataset(root, files, spec=None, label_kind="class", split="train"):
    """Shards of one split with (rows, rows per row group) per file: the manifest, the split's x and y.

    The default features are float32 [2] whose first value is the row's index in the split,
    so a test can tell rows apart; labels are index % 7 (class) or index / 4 (regression).
    """
    import numpy as np

    from dltool.shards.codec import TensorSpec
    from dltool.shards.writer import ShardWriter, shard_schema
    from dltool.storage.fs import open_location
    from dltool.storage.manifest import Label, SplitEntry

    spec = spec or TensorSpec((2,), "float32")
    total = sum(rows for rows, _ in files)
    if spec.dtype == "float32":
        x = np.stack([np.arange(total), -np.arange(total)], axis=1).astype(np.float32).reshape(total, *spec.shape)
    else:
        x = (np.arange(total * spec.size) % 251).astype(np.uint8).reshape(total, *spec.shape)
    y = (np.arange(total) % 7).astype(np.int32) if label_kind == "class" else np.arange(total) / 4
    names, offset = [], 0
    for part, (rows, group_rows) in enumerate(files):
        name = f"{split}/part-{part:05d}.parquet"
        with ShardWriter(open_location(str(root / name)), shard_schema(spec, label_kind), spec, 1, "zstd") as writer:
            writer.row_group_rows = group_rows
            for i in range(offset, offset + rows):
                writer.add(x[i], f"k{i}", None if label_kind is None else y[i])
        names.append(name)
        offset += rows
    manifest = make_manifest(
        features=spec,
        label=Label(label_kind, tuple("abcdefg") if label_kind == "class" else None),
        splits={split: SplitEntry(total, tuple(names), {}), "val": SplitEntry(0, (), {})},
    )
    return manifest, x, (None if label_kind is None else y.astype(np.int32 if label_kind == "class" else np.float32))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


BUCKET = "dltool-test"


class S3Server:
    """An S3-compatible server (moto's) on 127.0.0.1 with one bucket, and a credentials profile for it."""

    def __init__(self, root: Path):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.access_key, self.secret = "AKIADLTOOLTESTKEY01", "dltool-test-secret-5f0c9e2a7b"
        self.credentials = root / "credentials"
        self.credentials.write_text(f"[dltool-test]\naws_access_key_id = {self.access_key}\n"
                                    f"aws_secret_access_key = {self.secret}\n")  # fmt: skip
        # The settings a config's `storage:` section holds; credentials come from the profile.
        self.storage = {"endpoint_url": self.endpoint, "region": "us-east-1", "profile": "dltool-test",
                        "credentials_file": str(self.credentials)}  # fmt: skip
        # What a process started with only the standard AWS variables needs.
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1",
                    "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret}  # fmt: skip
        self.fs().create_dir(BUCKET)

    def fs(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint.split("://")[1], scheme="http", region="us-east-1",
                                 access_key=self.access_key, secret_key=self.secret, allow_bucket_creation=True)  # fmt: skip

    def uri(self, *parts: str) -> str:
        return "/".join(["s3:/", BUCKET, *parts])

    def upload(self, local: Path, prefix: str, every: int = 1) -> int:
        """Copy every `every`-th file under local to s3://BUCKET/prefix/ (same relative paths); returns the count."""
        from concurrent.futures import ThreadPoolExecutor

        files = sorted(p for p in local.rglob("*") if p.is_file())[::every]
        fs = self.fs()

        def put(path: Path) -> None:
            with fs.open_output_stream(f"{BUCKET}/{prefix}/{path.relative_to(local).as_posix()}") as f:
                f.write(path.read_bytes())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, files))
        return len(files)

    def objects(self, prefix: str = "") -> list[str]:
        """Every object's key under prefix."""
        import pyarrow.fs as pafs

        infos = self.fs().get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True))
        return [i.path.split("/", 1)[1] for i in infos if i.type == pafs.FileType.File]

    def read(self, key: str) -> bytes:
        with self.fs().open_input_stream(f"{BUCKET}/{key}") as f:
            return f.read()

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


def hadoop_launcher():
    """`.ci/hadoop` (the local Hadoop cluster's launcher, a script without .py) loaded as a module."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("dltool_ci_hadoop", str(ROOT / ".ci" / "hadoop"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def example(relpath: str):
    """A file under examples/ loaded as a module (its main() is run by the test, with the session's Spark)."""
    import importlib.util

    path = ROOT / "examples" / relpath
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

