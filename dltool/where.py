"""Print the path of dltool's entry script, for spark-submit: `spark-submit $(python -m dltool.where) train C.yaml`."""

from pathlib import Path

print(Path(__file__).with_name("__main__.py"))
