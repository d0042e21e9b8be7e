"""Where a config's model factory is found, and how child processes get it, with no change to the driver's paths."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dltool.spark.shipping import factory_code, with_code_path


@pytest.fixture
def untouched():
    """The driver's sys.path and environment as they were before, to compare with after."""
    state = lambda: (list(sys.path), {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"})
    before = state()
    yield
    assert state() == before


def test_a_factory_next_to_the_config_is_found_and_nothing_is_added_to_the_paths(tmp_path, untouched):
    (tmp_path / "unit_model_a.py").write_text("def build(*a):\n    pass\n")
    assert factory_code("unit_model_a:build", tmp_path) == tmp_path / "unit_model_a.py"
    (tmp_path / "unit_pkg_b" / "models").mkdir(parents=True)
    (tmp_path / "unit_pkg_b" / "__init__.py").write_text("")
    assert factory_code("unit_pkg_b.models:build", tmp_path) == tmp_path / "unit_pkg_b"


def test_a_factory_module_in_the_current_directory_is_found(tmp_path, monkeypatch, untouched):
    (tmp_path / "configs").mkdir()
    (tmp_path / "unit_model_c.py").write_text("def build(*a):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    assert factory_code("unit_model_c:build", tmp_path / "configs") == tmp_path / "unit_model_c.py"


def test_installed_or_missing_factory_modules_are_not_shipped(tmp_path, untouched):
    assert factory_code("pytest:main", tmp_path) is None  # installed: executors need it too
    assert factory_code("json:loads", tmp_path) is None  # the standard library
    assert factory_code("no_such_module_here:build", tmp_path) is None  # the model build says it is missing
    assert factory_code(None, tmp_path) is None


def test_a_child_process_imports_the_factory_from_its_own_environment(tmp_path, monkeypatch, untouched):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "unit_model_d.py").write_text("ANSWER = 42\n")
    code = factory_code("unit_model_d:build", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)  # a relative config folder still gives the child an absolute path
    env = with_code_path({**os.environ, "PYTHONPATH": "/elsewhere"}, code.relative_to(tmp_path))
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path / "configs"), "/elsewhere"])
    done = subprocess.run([sys.executable, "-c", "import unit_model_d; print(unit_model_d.ANSWER)"], env=env,
                          cwd=tmp_path.parent, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.stdout.strip() == "42", done.stderr
    assert with_code_path({"PATH": "/bin"}, None) == {"PATH": "/bin"}
    assert with_code_path({}, code)["PYTHONPATH"] == str(tmp_path / "configs")
