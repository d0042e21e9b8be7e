"""The generated config reference matches the models, and `dltool schema` describes every reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from dltool.cli import app
from dltool.config.reference import REGENERATE, render_reference
from dltool.readers import AudioReaderConfig, CsvReaderConfig, ImageReaderConfig, TableReaderConfig

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
READERS = [ImageReaderConfig, AudioReaderConfig, CsvReaderConfig, TableReaderConfig]


def test_reference_doc_is_up_to_date():
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(), (
        f"docs/config-reference.md is out of date with dltool/config/models.py; regenerate it: {REGENERATE}"
    )


def test_reference_is_deterministic():
    assert render_reference() == render_reference()


@pytest.mark.parametrize("model", READERS, ids=lambda m: m.__name__)
def test_reference_lists_every_reader_field(model):
    text = render_reference()
    tag = get_args(model.model_fields["reader"].annotation)[0]
    section = text.split(f"## `ingest` with `reader: {tag}`", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in model.model_fields if f"| `{name}` |" not in section]
    assert not missing, f"{model.__name__} fields missing from its reference table: {missing}"


def test_schema_command_prints_json_schema_with_every_reader():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    for reader in ("image", "audio", "csv", "table"):
        assert f'"const": "{reader}"' in text or f'"enum": ["{reader}"]' in text, f"reader {reader!r} not in schema"
    union = next(option for option in schema["properties"]["ingest"]["anyOf"] if "discriminator" in option)
    mapping = union["discriminator"]["mapping"]
    assert sorted(mapping) == ["audio", "csv", "image", "table", "text"]
