"""User code named by a config reaches Spark's Python workers; dltool's own zip is importable as shipped."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import dltool
from dltool.config.loader import parse_config
from dltool.spark.shipping import (
    _zip,
    config_code,
    factory_code,
    factory_modules,
    ship_code,
)

CONFIG = """
name: shipped
dataset: {path: data}
train: {run_dir: run, model: {factory: "%s:build"}}
"""


@pytest.fixture
def restore_path(monkeypatch):
    """factory_code edits sys.path and PYTHONPATH: give both back after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))


def test_a_factory_module_next_to_the_config_runs_in_spark_tasks(spark, tmp_path, restore_path):
    (tmp_path / "shipped_model_a.py").write_text("ANSWER = 42\ndef build(*a):\n    pass\n")
    config = parse_config(CONFIG % "shipped_model_a", base_dir=tmp_path)
    code = config_code(config)
    assert code == tmp_path / "shipped_model_a.py"
    assert str(tmp_path) in sys.path and os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    assert factory_modules(config) == ["shipped_model_a"]

    assert ship_code(spark, code) == ["shipped_model_a.py"]
    assert ship_code(spark, code) == []  # once per application
    answers = spark.sparkContext.parallelize(range(2), 2).map(lambda _: __import__("shipped_model_a").ANSWER).collect()
    assert answers == [42, 42]


def test_a_factory_package_is_zipped_and_runs_in_spark_tasks(spark, tmp_path, restore_path):
    package = tmp_path / "shipped_pkg_b"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text("WIDTH = 7\ndef build(*a):\n    pass\n")
    config = parse_config(CONFIG % "shipped_pkg_b.models", base_dir=tmp_path)
    code = config_code(config)
    assert code == package
    assert ship_code(spark, code) == ["shipped_pkg_b"]
    widths = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("shipped_pkg_b.models").models.WIDTH).collect()
    assert widths == [7]


def test_a_factory_module_in_the_current_directory_is_found(tmp_path, restore_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "shipped_model_c.py").write_text("def build(*a):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    assert factory_code("shipped_model_c:build", tmp_path / "configs") == tmp_path / "shipped_model_c.py"
    assert sys.path[0] == str(tmp_path)


def test_installed_or_missing_factory_modules_are_not_shipped(tmp_path, restore_path):
    assert factory_code("keras.applications:MobileNetV2", tmp_path) is None  # installed: executors need it too
    assert factory_code("json:loads", tmp_path) is None  # the standard library
    assert factory_code("no_such_module_here:build", tmp_path) is None  # the model build says it is missing
    assert factory_code(None, tmp_path) is None


def test_the_dltool_zip_runs_the_worker_entry_point_without_the_installed_package(tmp_path):
    archive = _zip(Path(dltool.__file__).parent)
    names = zipfile.ZipFile(archive).namelist()
    assert "dltool/__init__.py" in names and "dltool/train/worker.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The zip goes first on sys.path, as Spark puts shipped files: it wins over the installed package.
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import dltool.train.worker, dltool.spark.barrier; print(dltool.__file__)"
    result = subprocess.run([sys.executable, "-I", "-c", probe, str(archive)], capture_output=True, text=True,
                            cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(archive / "dltool" / "__init__.py")
