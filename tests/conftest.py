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
