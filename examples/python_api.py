"""The Python API (docs/python.md), one function per verb, on the bundled customer table.

    .venv/bin/python examples/python_api.py [WORKDIR]

Each function is one example of docs/python.md; tests/integration/test_python_api.py runs them in order.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "csv.yaml"


def ingest_example(workdir: str):
    import dltool

    # A YAML path; keyword overrides name a field with __ for its dots.
    result = dltool.ingest(CONFIG, dataset__path=f"{workdir}/churn")
    print(f"{result.status}: {result.counts.ok} rows, splits {result.splits}, {result.counts.quarantined} quarantined")
    return result


def train_example(workdir: str):
    import yaml

    import dltool

    # A dict works as well as a file: here the YAML, read and changed in Python.
    config = yaml.safe_load(CONFIG.read_text())
    config["dataset"]["path"] = f"{workdir}/churn"
    config["train"].update(run_dir=f"{workdir}/run", epochs=8)
    result = dltool.train(config)
    print(f"{result.status} in {result.seconds:.0f}s; best {result.best}; model {result.model}")
    return result


def evaluate_example(workdir: str):
    import dltool
    from dltool.errors import QualityGateError

    try:
        scores = dltool.evaluate(CONFIG, dataset__path=f"{workdir}/churn", train__run_dir=f"{workdir}/run",
                                 fail_under={"accuracy": 0.6})  # fmt: skip
    except QualityGateError as missed:  # exit code 3 on the command line
        print(f"gate missed: {missed}")
        raise
    metrics = scores.scored.metrics
    print(f"test accuracy {metrics['accuracy']:.3f}, loss {metrics['loss']:.3f}; files in {scores.eval_dir}")
    return scores


def predict_example(workdir: str):
    import dltool

    # Raw rows go through the training data's fitted preprocessing; --keep is keep=.
    result = dltool.predict(CONFIG, ROOT / "sample_data/tabular/customers.csv", f"{workdir}/predictions",
                            dataset__path=f"{workdir}/churn", train__run_dir=f"{workdir}/run",
                            keep=["customer_id"], overwrite=True)  # fmt: skip
    print(f"{result.rows} predictions in {result.output}")
    return result


def load_dataset_example(workdir: str):
    import dltool

    test = dltool.load_dataset(f"{workdir}/churn", split="test", vectors=True)
    test.groupBy("label").count().orderBy("label").show()
    print(test.schema["label"].metadata)  # {'ml_attr': {'type': 'nominal', 'vals': ['no', 'yes'], ...}}
    return test


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "out" / "python_api")
    for example in (ingest_example, train_example, evaluate_example, predict_example, load_dataset_example):
        example(folder)
