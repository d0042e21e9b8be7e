"""A reader registered from outside dltool works end to end: config, schema, ingest on Spark, train, predict."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture(scope="module")
def npy_plugin(spark):
    """tests/plugins/npy_reader.py imported as a top-level module, here and in Spark's Python workers."""
    sys.path.insert(0, str(PLUGINS))
    try:
        module = importlib.import_module("npy_reader")
    finally:
        sys.path.remove(str(PLUGINS))
    spark.sparkContext.addPyFile(str(PLUGINS / "npy_reader.py"))  # executors unpickle its config
    yield module
    from dltool.readers.base import unregister

    unregister("npy")  # later tests see the built-in readers only
    sys.modules.pop("npy_reader", None)


def test_a_plugin_reader_is_validated_and_documented_like_a_builtin(npy_plugin, tmp_path):
    from dltool.config.loader import load_config
    from dltool.config.models import ExperimentConfig
    from dltool.config.reference import render_reference
    from dltool.errors import ConfigError

    config = tmp_path / "e.yaml"
    config.write_text("name: n\ndataset: {path: d}\ningest:\n  reader: npy\n  input: x\n  shape: []\n")
    with pytest.raises(ConfigError, match=r"e.yaml:6: ingest.shape: List should have at least 1 item"):
        load_config(config)
    assert "## `ingest` with `reader: npy`" in render_reference()
    schema = json.dumps(ExperimentConfig.model_json_schema())
    assert "NpyReaderConfig" in schema


def test_a_plugin_reader_ingests_trains_and_predicts(npy_plugin, tmp_path):
    from dltool.config.models import ExperimentConfig
    from dltool.evaluate.predict import run_predict
    from dltool.ingest.run import run_ingest
    from dltool.train.run import run_training

    rng = np.random.default_rng(0)
    for label, centre in (("low", -2.0), ("high", 2.0)):
        (tmp_path / "in" / label).mkdir(parents=True)
        for i in range(40):
            np.save(tmp_path / "in" / label / f"{i}.npy", rng.normal(centre, 1.0, (3, 2)))
    np.save(tmp_path / "in" / "low" / "wrong.npy", np.zeros(5))
    (tmp_path / "in" / "high" / "text.npy").write_text("not numpy")
    config = ExperimentConfig.model_validate({
        "name": "npy", "spark": {"master": "local[2]"},
        "dataset": {"path": str(tmp_path / "ds"), "max_bad_fraction": 0.1},
        "ingest": {"reader": "npy", "input": str(tmp_path / "in"), "shape": [3, 2]},
        "train": {"run_dir": str(tmp_path / "run"), "epochs": 3, "workers": 1},
    })  # fmt: skip
    run_ingest(config, progress=False)
    manifest = json.loads((tmp_path / "ds" / "_manifest.json").read_text())
    assert manifest["reader"] == "npy" and manifest["features"]["shape"] == [3, 2]
    assert manifest["counts"]["ok"] == 80 and manifest["counts"]["quarantined"] == 2
    errors = pads.dataset(str(tmp_path / "ds" / "_errors"), format="parquet").to_table().to_pylist()
    messages = {e["key"]: e["message"] for e in errors}
    assert messages["low/wrong.npy"] == "shape [5], expected [3, 2]"
    assert messages["high/text.npy"].startswith("not a .npy array")

    trained = run_training(config, progress=False)
    assert trained["epochs_done"] == 3
    snapshot = json.loads((tmp_path / "run" / "config.json").read_text())
    assert snapshot["train"]["model"]["builtin"] == "mlp"  # builtin auto -> the plugin's default model

    out = tmp_path / "preds"
    run_predict(config, input_uri=str(tmp_path / "in" / "high"), output_uri=str(out), progress=False)
    predictions = pads.dataset(str(out), format="parquet").to_table()
    assert predictions.num_rows == 40  # the unreadable file is quarantined, not predicted
