"""Shared fixtures: repository paths and a config writer."""

from __future__ import annotations

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
