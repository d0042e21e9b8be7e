"""Typed experiment configuration loaded from YAML: `dltool.config.models` and `dltool.config.loader`.

Names are imported on first use, so `import dltool.config.base` (what readers need) loads nothing else.
"""

import importlib

_EXPORTS = {
    "config_hash": "dltool.config.loader",
    "load_config": "dltool.config.loader",
    "parse_config": "dltool.config.loader",
    "DatasetSettings": "dltool.config.models",
    "ExperimentConfig": "dltool.config.models",
    "SparkSettings": "dltool.config.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dltool.config' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
