"""dltool: deep-learning ETL and training on Spark, driven by one YAML file.

The verbs of the command line are functions here (docs/python.md):

    import dltool
    dltool.ingest("configs/csv.yaml")
    result = dltool.train("configs/csv.yaml", train__epochs=5)
    scores = dltool.evaluate("configs/csv.yaml", fail_under={"accuracy": 0.8})
    frame = dltool.load_dataset("out/datasets/churn", split="test")

Spark ML Estimators and Transformers are in `dltool.ml`. The functions are imported on first
use, so `import dltool` (and `dltool --help`) loads no Spark or TensorFlow.
"""

import sys
import types

__version__ = "0.1.0"

__all__ = ["evaluate", "export", "gc", "ingest", "load_dataset", "predict", "run", "train", "tune", "validate"]


class _Package(types.ModuleType):
    """dltool's module object: `dltool.ingest`, `dltool.train`, `dltool.evaluate`, `dltool.export` and `dltool.tune`
    stay the API's functions.

    Importing the subpackages or modules of those names (`dltool/ingest/`, `dltool/export.py`...) would otherwise set them as
    attributes of this module, hiding the functions. Imports of the subpackages are unaffected:
    Python finds them in sys.modules, never through this attribute.
    """

    def __setattr__(self, name: str, value) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in __all__:
        from dltool import api

        return getattr(api, name)
    raise AttributeError(f"module 'dltool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
