"""dltool's imports form no cycle and go down its layers, counting every import: module level, inside
functions and under TYPE_CHECKING (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dltool"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # A package importing its own modules, and a module's own packages, are the normal package pattern.
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        found = every_import(path, set(files))
        found |= {".".join(n.split(".")[:i]) for n in list(found) for i in range(2, n.count(".") + 1)}  # a/__init__ runs first
        graph[name] = (found & set(files)) - own
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                cycles.append(trail[trail.index(child):] + [child] if child in trail else [node, child])
            elif child not in state:
                visit(child, trail + [child])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# dltool's layers, lowest first: a module imports its own layer or lower ones, at module level and inside functions
# alike (a function-level import is still a dependency; it only runs later).
LAYERS = [
    ["dltool.errors", "dltool.config.redaction", "dltool.where", "dltool.shards.codec", "dltool.tfenv"],
    ["dltool.config", "dltool.config.*"],
    ["dltool.storage", "dltool.storage.*"],
    ["dltool.shards", "dltool.shards.*", "dltool.artefacts"],
    ["dltool.transforms", "dltool.transforms.*", "dltool.splits"],
    ["dltool.readers", "dltool.readers.*"],
    ["dltool.spark", "dltool.spark.*"],
    ["dltool.ingest", "dltool.ingest.*"],
    ["dltool.train", "dltool.train.*", "dltool.tracking"],
    ["dltool.evaluate", "dltool.evaluate.*"],
    ["dltool.describe", "dltool.guess", "dltool.doctor", "dltool.export", "dltool.tune", "dltool.chain"],
    ["dltool.ml", "dltool.ml.*", "dltool.api"],
    ["dltool.cli", "dltool.__main__", "dltool"],
]
# Imports that still go up a layer, as (importing file, imported module): each is a move still to make. The list
# only shrinks: an entry that no longer occurs fails the test too, so it is taken out when its import goes.
UPWARD: set[tuple[str, str]] = set()


def layer_of(module: str) -> int:
    from fnmatch import fnmatch

    exact = [i for i, names in enumerate(LAYERS) if module in names]
    found = exact or [i for i, names in enumerate(LAYERS) if any(fnmatch(module, n) for n in names)]
    assert found, f"{module} is in no layer: add it to LAYERS"
    return found[0]


def every_import(path: Path, modules: set[str]) -> set[str]:
    """The dltool modules a file imports anywhere in it: module level, inside functions, under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
    return found & modules


def test_every_import_goes_down_the_layers():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    upward = set()
    for name, path in files.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        for target in every_import(path, set(files)) - own:
            if layer_of(target) > layer_of(name):
                upward.add((str(path.relative_to(PACKAGE.parent)), target))
    assert upward - UPWARD == set(), f"imports up the layers: {sorted(upward - UPWARD)}"
    assert UPWARD - upward == set(), f"gone, take them out of UPWARD: {sorted(UPWARD - upward)}"


def test_config_is_a_leaf():
    """Validating a config loads no reader, no Spark, no numpy: the config layer imports only itself and errors."""
    code = ("import sys; from dltool.config.loader import load_config; load_config(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith(('dltool.readers', 'dltool.spark', 'numpy', 'pyarrow'))))")  # fmt: skip
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code, str(PACKAGE.parent / "configs" / "images.yaml")],
                          capture_output=True, text=True, check=True, cwd=PACKAGE.parent)  # fmt: skip
    assert done.stdout.strip() == "[]"
