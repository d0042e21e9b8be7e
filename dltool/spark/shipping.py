"""Ship dltool and the config's own Python code to executors, as `spark-submit --py-files` would.

On a cluster the executors' Python has the dependencies (pyarrow, TensorFlow, ...) but may not
have dltool, or has another version of it. The driver zips the dltool package it runs and adds it
with `addPyFile`; Spark puts shipped files first on the executors' `sys.path`, so executors run
exactly the driver's code. A model factory named `module:function` is looked up in the config's
folder, then the current directory, then on `sys.path`; unless it is an installed package, its
top-level module (file or package folder) is shipped the same way. The driver never imports it:
child processes that build the model get its folder on their own PYTHONPATH (`with_code_path`).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

_shipped: dict[str, set[str]] = {}  # application id -> names already added


def factory_code(factory: str | None, config_dir: Path | None) -> Path | None:
    """The file or package folder of the factory's top-level module when it is the user's own code.

    Only a lookup: this process's `sys.path` and environment are left as they are.
    """
    if not factory:
        return None
    top = factory.split(":", 1)[0].split(".", 1)[0]
    folders = [f for f in (config_dir, Path.cwd()) if f is not None]
    root = next((r for r in (_in_folder(top, f) for f in folders) if r is not None), None)
    if root is None:
        spec = importlib.util.find_spec(top) if top not in sys.modules else sys.modules[top].__spec__
        origin = getattr(spec, "origin", None) if spec is not None else None
        if not origin or origin in ("built-in", "frozen") or _installed(origin):
            return None  # missing (the model build names it) or installed: executors must have it too
        root = Path(origin).parent if Path(origin).name == "__init__.py" else Path(origin)
    return root


def with_code_path(env: Mapping[str, str], code: Path | None) -> dict[str, str]:
    """A child process's environment with the folder holding `code` (factory_code's result) first on PYTHONPATH."""
    if code is None:
        return dict(env)
    folder = str(code.absolute().parent)  # absolute: a child may run in another directory
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (folder, env.get("PYTHONPATH")) if p)}


def ship_code(spark, user_code: Path | None = None) -> list[str]:
    """addPyFile dltool (on a cluster) and the user's module; returns what was added this time."""
    sc = spark.sparkContext
    done = _shipped.setdefault(sc.applicationId, set())
    wanted = []
    if not sc.master.startswith("local"):  # local executors share this machine's Python
        import dltool

        wanted.append(Path(dltool.__file__).parent)
    if user_code is not None:
        wanted.append(user_code)
    added = []
    for root in wanted:
        if root.name in done:
            continue
        sc.addPyFile(str(root if root.is_file() else _zip(root)))
        done.add(root.name)
        added.append(root.name)
    return added


def _in_folder(top: str, folder: Path) -> Path | None:
    if (folder / f"{top}.py").is_file():
        return folder / f"{top}.py"
    if (folder / top / "__init__.py").is_file():
        return folder / top
    return None


def _installed(origin: str) -> bool:
    parts = Path(origin).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    stdlib = Path(os.__file__).parent
    return Path(origin).is_relative_to(stdlib)


def _zip(package: Path) -> Path:
    """A zip of the package's source (no caches), named after it so executors import it by name."""
    scratch = Path(tempfile.mkdtemp(prefix="dltool-ship-"))
    atexit.register(shutil.rmtree, scratch, True)
    target = scratch / f"{package.name}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                archive.write(path, Path(package.name) / path.relative_to(package))
    return target


def config_code(config) -> Path | None:
    """factory_code for the config's model (None when it names no factory)."""
    return factory_code(_factory(config), Path(config.source_dir) if config.source_dir else None)


def factory_modules(config) -> list[str]:
    """Modules to import before loading a saved model: the factory's, whose custom layers it may register."""
    factory = _factory(config)
    return [factory.split(":", 1)[0]] if factory else []


def _factory(config) -> str | None:
    return config.train.model.factory if config.train is not None else None
