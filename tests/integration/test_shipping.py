"""User code named by a config reaches Spark's Python workers; dltool's own zip is importable as shipped."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import dltool
from dltool.config.loader import parse_config
from dltool.spark.shipping import _zip, config_code, factory_modules, ship_code

CONFIG = """
name: shipped
dataset: {path: data}
train: {run_dir: run, model: {factory: "%s:build"}}
"""


def test_a_factory_module_next_to_the_config_runs_in_spark_tasks(spark, tmp_path):
    (tmp_path / "shipped_model_a.py").write_text("ANSWER = 42\ndef build(*a):\n    pass\n")
    config = parse_config(CONFIG % "shipped_model_a", base_dir=tmp_path)
    code = config_code(config)
    assert code == tmp_path / "shipped_model_a.py"
    assert str(tmp_path) not in sys.path and str(tmp_path) not in os.environ.get("PYTHONPATH", "")  # the driver's own are untouched
    assert factory_modules(config) == ["shipped_model_a"]

    assert ship_code(spark, code) == ["shipped_model_a.py"]
    assert ship_code(spark, code) == []  # once per application
    answers = spark.sparkContext.parallelize(range(2), 2).map(lambda _: __import__("shipped_model_a").ANSWER).collect()
    assert answers == [42, 42]


def test_a_factory_package_is_zipped_and_runs_in_spark_tasks(spark, tmp_path):
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


def test_the_dltool_zip_runs_the_worker_entry_point_without_the_installed_package(tmp_path):
    archive = _zip(Path(dltool.__file__).parent)
    names = zipfile.ZipFile(archive).namelist()
    assert "dltool/__init__.py" in names and "dltool/train/worker.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The zip goes first on sys.path, as Spark puts shipped files: it wins over the installed package.
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import dltool.train.worker, dltool.train.barrier; print(dltool.__file__)"
    result = subprocess.run([sys.executable, "-I", "-c", probe, str(archive)], capture_output=True, text=True,
                            cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(archive / "dltool" / "__init__.py")
