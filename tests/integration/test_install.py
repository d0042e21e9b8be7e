"""A newcomer's install: the built wheel in a fresh virtualenv outside the repo, then `dltool init` and `dltool run`
on the sample CSV from a temporary folder.

The wheel is built and installed for real (its files, its package data, its `dltool` script). Its dependencies are
not downloaded again: the fresh environment sees the test environment's site-packages through a .pth line, after
its own, so the dltool it imports is the wheel's and never the repo's editable copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The `dltool` script of a fresh virtualenv holding the wheel built from this checkout."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # a copy: building in the checkout would leave build/ and egg-info in it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "dltool", source / "dltool", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, text=True)  # fmt: skip
    (wheel,) = wheels.glob("dltool-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    Path(purelib, "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin" / "dltool"


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYSPARK_PYTHON")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def test_the_wheel_installs_and_runs_the_sample_from_any_folder(installed, tmp_path):
    env, here = _clean_env(), tmp_path / "mine"
    here.mkdir()
    shutil.copy(ROOT / "sample_data" / "tabular" / "customers.csv", here / "customers.csv")

    version = subprocess.run([str(installed), "--version"], cwd=here, env=env, capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines()[0].startswith("dltool ")
    where = subprocess.run([str(installed.parent / "python"), "-c", "import dltool; print(dltool.__file__)"],
                           cwd=here, env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(installed.parent.parent) in where  # the wheel's copy, not the checkout's

    init = subprocess.run([str(installed), "init", "customers.csv", "-o", "churn.yaml"], cwd=here, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert init.returncode == 0, init.stderr
    run = subprocess.run([str(installed), "run", "churn.yaml", "--json"], cwd=here, env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Using incubator modules" not in run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    metrics = summary["steps"]["eval"]["checkpoints"][0]["metrics"]
    assert metrics["examples"] > 20 and metrics["accuracy"] >= 0.7  # the majority class is 0.65 of this split
    assert (here / "out" / "runs" / "customers" / "model").is_dir()  # beside the config, where init put it


def test_init_on_train_and_test_folders_trains_as_well_as_the_demo(installed, tmp_path):
    """The newcomer's path: images in train/ and test/ folders, `dltool init`, then the chain on what it wrote,
    unedited: at least the README demo's 0.97 on the same digits."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("layouts", ROOT / "examples" / "layouts.py")
    layouts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layouts)
    here = tmp_path / "mine"
    images = layouts.build_layouts(here)["images"]
    env = _clean_env()
    init = subprocess.run([str(installed), "init", str(images.name), "-o", "photos.yaml"], cwd=images.parent, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert init.returncode == 0, init.stderr
    run = subprocess.run([str(installed), "run", "photos.yaml", "--json"], cwd=images.parent, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads(run.stdout.strip().splitlines()[-1])["steps"]["eval"]["checkpoints"][0]["metrics"]
    assert metrics["examples"] == 120 and metrics["accuracy"] >= 0.97
