"""Hostile and surprising configs, without Spark: alias bombs, duplicate keys, code to run, a foreign run dir."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from typer.testing import CliRunner

from dltool.cli import app
from dltool.config.loader import parse_config
from dltool.errors import ConfigError

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")),
        "name: bomb",
        "dataset: {path: /tmp/x}",
    ]
)


def test_a_yaml_alias_bomb_is_refused_at_once_in_bounded_memory():
    assert len(BOMB) < 1024  # 1 KB that stands for 9**9 = 387 million strings
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ConfigError, match="more than 100,000 values once its aliases"):
            parse_config(BOMB, source="bomb.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    assert time.process_time() - started < 5  # CPU seconds; the expansion alone would take hours
    plain = "name: &n exp\ndataset: {path: /tmp/x}\nspark: {conf: {spark.app.name: *n}}\n"  # a plain alias still works
    assert parse_config(plain, source="ok.yaml").spark.conf["spark.app.name"] == "exp"


def test_a_duplicate_key_names_both_lines():
    with pytest.raises(ConfigError, match=r"^c.yaml:4: duplicate key 'dataset' \(first at line 2\)"):
        parse_config("name: x\ndataset: {path: /a}\ningest: null\ndataset: {path: /b}\n", source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml:4: duplicate key 'path' \(first at line 3\)"):
        parse_config("name: x\ndataset:\n  path: /a\n  path: /b\n", source="c.yaml")


CODE = """name: x
dataset: {path: /tmp/d}
spark: {conf: {spark.jars: /tmp/evil.jar, spark.driver.memory: 2g}}
train: {run_dir: /tmp/r, model: {layers: [{TFSMLayer: {filepath: /tmp/m}}, {Dense: {units: 2}}]}}
"""


def test_code_in_a_config_is_refused_when_the_operator_says_untrusted(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(CODE)
    assert CliRunner().invoke(app, ["validate", str(config)]).exit_code == 0
    result = CliRunner().invoke(app, ["validate", "--untrusted", str(config)])
    assert result.exit_code == 2
    assert "train.model.layers[0]: TFSMLayer loads and runs a SavedModel" in result.stderr
    assert "spark.conf.spark.jars: loads code into Spark" in result.stderr and "driver.memory" not in result.stderr
    factory = tmp_path / "f.yaml"
    factory.write_text("name: x\ndataset: {path: /tmp/d}\ntrain: {run_dir: /tmp/r, model: {factory: 'mod:build'}}\n")
    monkeypatch.setenv("DLTOOL_UNTRUSTED", "1")  # every verb refuses it before doing anything
    result = CliRunner().invoke(app, ["train", str(factory), "--json"])
    assert result.exit_code == 2 and "train.model.factory: imports and calls mod:build" in result.stdout


def test_train_refuses_a_run_dir_dltool_did_not_write(tmp_path):
    from dltool.storage.fs import open_location
    from dltool.train.checkpoints import check_run_dir_is_ours

    run = tmp_path / "results"
    run.mkdir()
    (run / "run.json").write_text("{}")  # looks like a run, carries no marker
    with pytest.raises(ConfigError, match="run dir not replaced: dltool did not write this folder .*run.json"):
        check_run_dir_is_ours(open_location(str(run)))
