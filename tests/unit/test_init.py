"""`dltool init`: a config guessed from the data, on every layout of examples/ and the bundled samples."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from typer.testing import CliRunner

from dltool.api import validate
from dltool.cli import app
from dltool.config.loader import load_config
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("layouts", ROOT / "examples" / "layouts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_layouts(tmp_path_factory.mktemp("layouts"))


def _init(target, out_dir, *extra):
    out = out_dir / "experiment.yaml"
    result = CliRunner().invoke(app, ["init", str(target), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert validate(out) == []  # what `dltool validate` checks, the input's existence included
    cfg = load_config(out)
    return cfg, yaml.safe_load(out.read_text()), result.stderr


def test_images_in_train_and_test_folders(layouts, tmp_path):
    cfg, raw, said = _init(layouts["images"], tmp_path)
    assert cfg.ingest.reader == "image" and cfg.ingest.label.source == "parent_dir"
    assert cfg.dataset.split.by == "path" and raw["dataset"]["split"]["val_from_train"] == 0.1
    assert cfg.ingest.size == (28, 28)  # the digits' own size
    assert cfg.ingest.input == str(layouts["images"])
    assert cfg.train.model.builtin == "auto" and cfg.train.epochs is None
    assert "splits from the folders ['test', 'train']" in said and "10 classes" in said


def test_a_csv_with_a_fold_column(layouts, tmp_path):
    cfg, raw, said = _init(layouts["table"], tmp_path)
    ingest = cfg.ingest
    assert ingest.reader == "csv" and ingest.label == "churn" and ingest.task == "classification"
    assert ingest.numeric == "auto" and ingest.key_column == "customer_id" and ingest.exclude == ["fold"]
    assert cfg.dataset.split.by == "column" and cfg.dataset.split.column == "fold"
    assert cfg.dataset.split.names == {"holdout": "test"}


def test_audio_in_one_folder_per_speaker(layouts, tmp_path):
    cfg, raw, said = _init(layouts["audio"], tmp_path)
    assert cfg.ingest.reader == "audio" and cfg.ingest.sample_rate == 8000 and cfg.ingest.features == "logmel"
    assert cfg.ingest.duration == 1.5  # the longest sample clip
    assert cfg.dataset.split.group == "^([^/]+)/" and cfg.dataset.split.stratify


@pytest.mark.parametrize(("sample", "reader"), [("images", "image"), ("audio", "audio"), ("text", "text"),
                                                ("tabular/customers.csv", "csv")])  # fmt: skip
def test_the_bundled_samples(sample, reader, tmp_path):
    cfg, raw, said = _init(ROOT / "sample_data" / sample, tmp_path)
    assert cfg.ingest.reader == reader
    assert cfg.dataset.split.by == "hash" and cfg.dataset.split.stratify
    assert raw["dataset"]["path"] == f"out/datasets/{cfg.name}"  # beside the config, wherever it is saved


def test_a_parquet_table_with_a_regression_target(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 200
    table = pa.table({"id": list(range(rows)), "size_m2": [30.0 + i for i in range(rows)],
                      "district": [f"d{i % 4}" for i in range(rows)], "price": [1000.0 + 7.5 * i for i in range(rows)]})  # fmt: skip
    pq.write_table(table, tmp_path / "homes.parquet")
    cfg, raw, said = _init(tmp_path / "homes.parquet", tmp_path, "--name", "homes")
    assert cfg.name == "homes" and cfg.ingest.reader == "table" and cfg.ingest.format == "parquet"
    assert cfg.ingest.label == "price" and cfg.ingest.task == "regression" and cfg.ingest.key_column == "id"
    assert cfg.train.monitor == "val_loss"


def test_json_lines_with_a_label_column(tmp_path):
    lines = [json.dumps({"text_len": i, "colour": "red" if i % 2 else "blue", "label": "a" if i % 3 else "b"})
             for i in range(50)]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    cfg, raw, said = _init(tmp_path / "rows.jsonl", tmp_path)
    assert cfg.ingest.reader == "table" and cfg.ingest.format == "json" and cfg.ingest.label == "label"


def test_a_semicolon_export_is_read_with_its_own_delimiter(tmp_path):
    rows = [f"{i};{'nord' if i % 2 else 'sud'};{i * 1.5:.1f};{'ja' if i % 3 else 'nein'}" for i in range(40)]
    (tmp_path / "kunden.csv").write_text("nr;region;umsatz;kündigt\n" + "\n".join(rows) + "\n")
    cfg, raw, said = _init(tmp_path / "kunden.csv", tmp_path)
    assert cfg.ingest.reader == "csv" and cfg.ingest.label == "kündigt" and cfg.ingest.task == "classification"
    assert "delimiter" not in raw["ingest"] and "encoding" not in raw["ingest"]  # ingest finds them as init did
    (tmp_path / "kunden.csv").write_bytes(("nr;region;umsatz;kündigt\n" + "\n".join(rows) + "\n").encode("cp1252"))
    (tmp_path / "windows").mkdir()
    cfg, raw, said = _init(tmp_path / "kunden.csv", tmp_path / "windows")  # a Windows export: said in the YAML
    assert cfg.ingest.label == "kündigt" and raw["ingest"]["encoding"] == "cp1252"


def test_a_report_with_a_title_above_its_header_is_read_from_its_header(tmp_path):
    rows = "".join(f"{i},{i * 1.5},{'ab'[i % 2]},,\n" for i in range(30))
    (tmp_path / "report.csv").write_text("Sales report,,,,\nGenerated 2024-01-05,,,,\n\nid,amount,label,,\n" + rows)
    cfg, raw, said = _init(tmp_path / "report.csv", tmp_path)  # the title's lines skipped, as ingest skips them
    assert cfg.ingest.label == "label" and cfg.ingest.key_column == "id" and raw["ingest"]["numeric"] == "auto"
    (tmp_path / "report.xlsx").write_bytes(b"PK\x03\x04")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "report.xlsx"), "-o", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2 and "a spreadsheet workbook; save it as CSV (UTF-8) first" in result.stderr


def test_a_table_of_texts_and_their_class_is_read_by_the_text_reader(tmp_path):
    words = ["disk", "full", "printer", "jammed", "invoice", "late", "refund", "please", "login", "fails"]
    rows = [f'{i},"{" ".join(words[(i * k) % 10] for k in range(1, 4 + i % 5))}, case {i}",{"ab"[i % 2]}'
            for i in range(60)]  # fmt: skip
    (tmp_path / "tickets.csv").write_text("id,body,queue\n" + "\n".join(rows) + "\n")
    cfg, raw, said = _init(tmp_path / "tickets.csv", tmp_path)
    assert cfg.ingest.reader == "text" and cfg.ingest.format == "csv"
    assert (cfg.ingest.text_column, cfg.ingest.label_column, cfg.ingest.key_column) == ("body", "queue", "id")
    assert "read as documents" in said
    (tmp_path / "more.csv").write_text("body,region,queue\n" + "\n".join(
        f'"{" ".join(words[: 3 + i % 5])} {i}",{"n" if i % 3 else "s"},{"ab"[i % 2]}' for i in range(60)) + "\n")
    (tmp_path / "two").mkdir()
    cfg, raw, said = _init(tmp_path / "more.csv", tmp_path / "two")  # two features: a table, its text as words
    assert cfg.ingest.reader == "csv"
    # Reviews beside their product's code (an ASIN): the code is no second feature.
    (tmp_path / "reviews.csv").write_text("product,review,score\n" + "\n".join(
        f'B{i * 7919 % 100003:07d}X,"{" ".join(words[: 3 + i % 5])} {i}",{"ab"[i % 2]}' for i in range(60)) + "\n")
    (tmp_path / "reviews").mkdir()
    cfg, raw, said = _init(tmp_path / "reviews.csv", tmp_path / "reviews")
    assert (cfg.ingest.reader, cfg.ingest.text_column, cfg.ingest.label_column) == ("text", "review", "score")
    (tmp_path / "semi.csv").write_text("body;queue\n" + "\n".join(f"{' '.join(words[: 3 + i % 5])} {i};{'ab'[i % 2]}"
                                                                    for i in range(60)) + "\n")  # fmt: skip
    (tmp_path / "semi").mkdir()
    cfg, raw, said = _init(tmp_path / "semi.csv", tmp_path / "semi")  # read as the csv reader reads it (its delimiter)
    assert cfg.ingest.reader == "csv" and cfg.ingest.label == "queue"


def test_what_init_cannot_guess_is_said(tmp_path):
    runner = CliRunner()
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.png"):
        (flat / name).write_bytes((ROOT / "sample_data" / "images" / "3").joinpath(
            sorted(p.name for p in (ROOT / "sample_data" / "images" / "3").iterdir())[0]).read_bytes())  # fmt: skip
    result = runner.invoke(app, ["init", str(flat)])
    assert result.exit_code == 2 and "not in class folders" in result.stderr
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["init", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "found no images, audio, text or table files" in result.stderr
    result = runner.invoke(app, ["init", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such file or folder" in result.stderr


def test_init_never_replaces_a_file(tmp_path):
    mine = tmp_path / "experiment.yaml"
    mine.write_text("my own notes\n")
    result = CliRunner().invoke(app, ["init", str(ROOT / "sample_data" / "images"), "-o", str(mine)])
    assert result.exit_code == 2 and "exists" in result.stderr
    assert mine.read_text() == "my own notes\n"
