"""What in a config runs code: an operator's check before running configs from people they do not trust.

A config is not only data. `train.model.factory` imports and calls a Python function; a few
Keras layers load and run saved code (`TFSMLayer`, `Lambda`); and some Spark settings load
jars, plugins, Java agents or another Python. `dltool validate --untrusted CONFIG` lists them and
exits 2; with `DLTOOL_UNTRUSTED=1` in the environment every verb refuses such a config the same way.
"""

from __future__ import annotations

import os
import re

__all__ = ["UNTRUSTED_ENV", "code_in_config", "refuse_code"]

UNTRUSTED_ENV = "DLTOOL_UNTRUSTED"

CODE_LAYERS = {"TFSMLayer": "loads and runs a SavedModel", "Lambda": "runs a Python function"}
# Spark settings that load code into the driver or the executors (jars, plugins, agents, interpreters, scripts).
CODE_CONF = re.compile(
    r"^spark\.(?:jars|packages|repositories|plugins|extraListeners|archives|sql\.extensions"
    r"|sql\.queryExecutionListeners|sql\.streaming\.streamingQueryListeners|submit\.pyFiles|files"
    r"|(?:driver|executor)\.(?:extraJavaOptions|extraClassPath|extraLibraryPath|plugins|defaultJavaOptions)"
    r"|pyspark\.(?:driver\.)?python|python\.(?:daemon|worker)\.module|.*discoveryScript|.*\.jars)"
)


def code_in_config(config) -> list[str]:
    """Each place in the config that names code to run, as `field: why`."""
    found = []
    model = config.train.model if config.train is not None else None
    if model is not None and model.factory:
        found.append(f"train.model.factory: imports and calls {model.factory}")
    for i, entry in enumerate((model.layers or []) if model is not None else []):
        for name in entry:
            if name in CODE_LAYERS:
                found.append(f"train.model.layers[{i}]: {name} {CODE_LAYERS[name]}")
    for key in config.spark.conf:
        if CODE_CONF.match(key):
            found.append(f"spark.conf.{key}: loads code into Spark")
    return found


def refuse_code(config, source: str, always: bool = False) -> None:
    """Raise ConfigError naming the code a config would run, when `always` or DLTOOL_UNTRUSTED=1."""
    if not always and os.environ.get(UNTRUSTED_ENV, "") in ("", "0"):
        return
    found = code_in_config(config)
    if found:
        from dltool.errors import ConfigError

        raise ConfigError(f"{source}: refused as untrusted: it names code to run ({'; '.join(found)})")
