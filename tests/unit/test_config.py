"""Config loading: safe YAML, errors with file, line and field, overrides, relative paths."""

from __future__ import annotations

import re
import textwrap

import pytest

from dltool.config import load_config, parse_config
from dltool.errors import ConfigError

GOOD = textwrap.dedent(
    """\
    name: digits
    dataset:
      path: out/digits
    ingest:
      reader: image
      input: images
      size: [32, 32]
    """
)


def test_relative_paths_resolve_against_config_file(tmp_path):
    path = tmp_path / "conf" / "x.yaml"
    path.parent.mkdir()
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.dataset.path == str(tmp_path / "conf" / "out" / "digits")
    assert cfg.ingest.input == str(tmp_path / "conf" / "images")
    assert cfg.spark.master == "local[*]"
    assert cfg.ingest.channels == 3 and cfg.ingest.size == (32, 32)


def test_a_catalog_table_name_is_not_taken_for_a_path(tmp_path):
    config = tmp_path / "sales.yaml"
    config.write_text("name: s\ndataset: {path: out}\ningest: {reader: table, format: table, input: sales.customers,"
                      " label: churn, numeric: auto}\n")  # fmt: skip
    loaded = load_config(config)
    assert loaded.ingest.input == "sales.customers" and loaded.dataset.path == str(tmp_path / "out")


def test_uris_and_overrides_are_kept(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(GOOD.replace("out/digits", "s3://bucket/digits"))
    cfg = load_config(path, {"spark.master": "spark://h:7077", "spark.conf": {"spark.executor.cores": "1"}})
    assert cfg.dataset.path == "s3://bucket/digits"
    assert cfg.spark.master == "spark://h:7077"
    assert cfg.spark.conf == {"spark.executor.cores": "1"}


def test_error_names_file_line_and_field():
    bad = GOOD.replace("size: [32, 32]", "size: [32, 32]\n  channels: 5")
    with pytest.raises(ConfigError) as info:
        parse_config(bad, source="exp.yaml")
    message = str(info.value)
    assert message.startswith("exp.yaml:8: ingest.channels:"), message
    assert "1, 3 or 4" in message


def test_unknown_field_and_missing_field():
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace("  size: [32, 32]", "  sise: [32, 32]"), source="exp.yaml")
    message = str(info.value)
    assert "exp.yaml:7: ingest.sise: unknown field" in message
    assert "ingest.size: required field is missing" in message


def test_unknown_reader_lists_known_ones():
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace("reader: image", "reader: video"), source="exp.yaml")
    assert "exp.yaml:5: ingest.reader: 'video' is not one of image, audio" in str(info.value)
    assert "csv, text" in str(info.value)


def test_python_tags_are_rejected():
    evil = GOOD + "extra: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ConfigError) as info:
        parse_config(evil, source="exp.yaml")
    assert "exp.yaml:8" in str(info.value)
    assert "Python object tags are not allowed" in str(info.value)


def test_invalid_yaml_has_line():
    with pytest.raises(ConfigError) as info:
        parse_config("name: x\ndataset: [unclosed\n", source="exp.yaml")
    assert str(info.value).startswith("exp.yaml:")
    assert "invalid YAML" in str(info.value)


def test_split_fractions_must_sum_to_one():
    bad = GOOD.replace("  path: out/digits", "  path: out/digits\n  split: {train: 0.8, val: 0.3, test: 0.1}")
    with pytest.raises(ConfigError) as info:
        parse_config(bad, source="exp.yaml")
    assert "exp.yaml:4: dataset.split: train + val + test must be 1.0, got 1.2" in str(info.value)


def test_label_regex_needs_a_group():
    bad = GOOD.replace("  size: [32, 32]", "  size: [32, 32]\n  label: {source: regex, pattern: 'cat|dog'}")
    with pytest.raises(ConfigError) as info:
        parse_config(bad, source="exp.yaml")
    assert "ingest.label.pattern" in str(info.value) and "capturing group" in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "config file not found" in str(info.value)


@pytest.mark.parametrize("config", ["images.yaml", "audio.yaml", "csv.yaml", "text.yaml"])
def test_shipped_configs_validate(config):
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / config)
    assert cfg.ingest.reader in ("image", "audio", "csv", "text")


@pytest.mark.parametrize("example", ["folders-train-test.yaml", "csv-split-column.yaml", "audio-by-speaker.yaml"])
def test_example_configs_validate(example):
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "examples" / example)
    assert cfg.dataset.split.by in ("path", "column") or cfg.dataset.split.group


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  size: [32, 32]", "  size: [32, 32]\n  chanels: 3", "exp.yaml:8: ingest.chanels: unknown field; did you mean 'channels'?"),
        ("  size: [32, 32]", "  size: [32, 32]\n  resize: padd", "exp.yaml:8: ingest.resize: 'padd' is not one of stretch, pad, crop; did you mean 'pad'?"),
        ("reader: image", "reader: imgae", "exp.yaml:5: ingest.reader: 'imgae' is not one of image, audio, table, csv, text; did you mean 'image'?"),
        ("  size: [32, 32]", "  size: 32", "exp.yaml:7: ingest.size: expected a list [height, width], got 32"),
    ],
)
def test_errors_say_what_was_meant(old, new, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(old, new), source="exp.yaml")
    assert expected in str(info.value)


def test_a_factory_that_is_not_module_function_says_the_form():
    bad = GOOD + "train:\n  run_dir: r\n  model: {factory: mod.build}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(bad, source="exp.yaml")
    assert "exp.yaml:10: train.model.factory: 'mod.build' is not of the form this field takes: 'module:function'" in str(info.value)


@pytest.mark.parametrize(("text", "line", "what"), [
    ("name: a\ningest: {reader: csv, input: x.csv\ntrain:\n  epochs: 3\n", 2, "the '{' opened here (column 9) is not closed; at line 3"),
    ("name: a\ndataset: {path: [a, b\nx: 1\n", 2, "the '[' opened here (column 17) is not closed"),
    ('name: "a\ningest: {reader: csv}\n', 1, "the quote opened here (column 7) is not closed"),
])
def test_an_unclosed_bracket_or_quote_is_named_where_it_opens(text, line, what):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="exp.yaml")
    assert str(info.value).startswith(f"exp.yaml:{line}: invalid YAML: {what}"), str(info.value)


@pytest.mark.parametrize("roles, message, valid", [
    ("dates: [day]\n  date_formats: {sold: '%d/%m/%Y'}", "date_formats: column sold is not listed in `dates`",
     "dates: [day]\n  date_formats: {day: '%d/%m/%Y'}"),
    ("dates: [day]\n  date_formats: {day: '%d/%m'}", "date_formats: day: '%d/%m' names no year and month",
     "dates: [day]\n  date_formats: {day: '%d/%m/%Y'}"),
    ("numeric: [weight]\n  units: {height: cm}", "units: column height is not listed in `numeric`",
     "numeric: [weight]\n  units: {weight: sq ft}"),
    ("numeric: [weight]\n  units: {weight: '(kg)'}", "units: weight: '(kg)' is not a unit",
     "numeric: [weight]\n  units: {weight: kg}"),
])  # fmt: skip
def test_a_date_format_or_a_unit_belongs_to_its_column_and_is_well_formed(roles, message, valid):
    table = lambda roles: GOOD.replace("reader: image", "reader: csv").replace(  # noqa: E731
        "input: images\n  size: [32, 32]", f"input: t.csv\n  {roles}")
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(table(roles), source="exp.yaml")
    parse_config(table(valid), source="exp.yaml")


def test_a_text_table_s_label_names_its_class_column_and_files_say_what_they_take():
    text = GOOD.replace("reader: image", "reader: text").replace("input: images\n  size: [32, 32]",
                                                                 "input: t.csv\n  format: csv\n  label: sentiment")
    assert parse_config(text, source="exp.yaml").ingest.label_column == "sentiment"
    with pytest.raises(ConfigError, match=re.escape("label: 'sentiment' names a column, which only table formats")):
        parse_config(text.replace("format: csv", "format: files"), source="exp.yaml")


@pytest.mark.parametrize("values, task", [
    (["1.0", "0.0", "", "NA"], "classification"),  # 0/1 written as floats (a pandas export with gaps)
    ([str(i) for i in range(21)], "regression"),
    ([f"{i / 2}" for i in range(11)], "regression"),
    ([f"{i / 2}" for i in range(9)] + ["nan", "inf"], "classification"),  # half-star ratings: few values
    (["3", "cat"], "classification"),
])  # fmt: skip
def test_task_auto_makes_a_label_of_many_numbers_a_regression_target(values, task):
    from dltool.config.readers import label_task

    assert label_task(values, ("", "NA"))[0] == task
