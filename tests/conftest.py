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
