"""dltool export and eval --model on a real local[2] Spark with real TensorFlow, TFLite and onnxruntime:
every format of the sample image and CSV models, scored against the Keras model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from dltool.shards.codec import TensorSpec, decode_tensors
from tests.conftest import ROOT, read_split

FLOAT_FORMATS = ("savedmodel", "tflite", "onnx")


def cli(command: str, *args):
    from typer.testing import CliRunner

    from dltool.cli import app

    result = CliRunner().invoke(app, [command, *map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def train_sample(name: str, dataset, folder, epochs: int):
    data = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    data["dataset"]["path"] = str(dataset)
    data["spark"] = {"master": "local[2]"}
    data["train"].update(run_dir=str(folder / "run"), epochs=epochs, workers=1)
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump(data))
    result, _ = cli("train", config)
    assert result.exit_code == 0, result.output
    return config


@pytest.fixture(scope="module")
def digits_export(spark, digits_dataset, tmp_path_factory):
    """The sample image model (3 epochs) exported to every format once: (config, run folder, export summary)."""
    folder = tmp_path_factory.mktemp("export-digits")
    config = train_sample("images", digits_dataset, folder, epochs=3)
    formats = [arg for f in ("savedmodel", "tflite", "tflite-fp16", "tflite-int8", "onnx") for arg in ("--format", f)]
    result, summary = cli("export", config, *formats, "--calibration", "200", "--max-drop", "accuracy=0.2")
    assert result.exit_code == 0, result.output
    return config, folder / "run", summary


def test_export_writes_every_format_and_scores_it_against_keras(digits_export):
    _, run, summary = digits_export
    export = run / "export"
    assert json.loads((export / "export.json").read_text()) == {k: v for k, v in summary.items() if k not in ("status", "exit_code")}
    rows = {row["format"]: row for row in summary["formats"]}
    assert list(rows) == ["keras", "savedmodel", "tflite", "tflite-fp16", "tflite-int8", "onnx"]
    for name in ("saved_model/saved_model.pb", "model.tflite", "model-fp16.tflite", "model-int8.tflite", "model.onnx"):
        assert (export / name).exists(), name
    keras = rows["keras"]["accuracy"]
    assert 0 <= keras <= 1 and summary["passed"] and len(summary["gates"]) == 5
    for fmt in FLOAT_FORMATS:  # the same float32 computation: the same predictions
        assert rows[fmt]["accuracy"] == pytest.approx(keras, abs=1e-9) and abs(rows[fmt]["drop"]) < 1e-9
    assert abs(rows["tflite-fp16"]["drop"]) <= 0.02
    assert rows["tflite-int8"]["bytes"] < rows["tflite"]["bytes"] / 2  # int8 weights: a quarter, plus the graph
    assert rows["tflite-fp16"]["bytes"] < rows["tflite"]["bytes"]
    for row in rows.values():
        assert row["latency_ms"] > 0 and row["rows_per_s"] > 0


def test_exported_files_give_the_keras_model_s_outputs(digits_export, digits_dataset):
    from dltool.artefacts import load_predictor
    from dltool.tfenv import import_tensorflow_quietly

    _, run, _ = digits_export
    tf = import_tensorflow_quietly()
    x = decode_tensors(read_split(digits_dataset, "test").column("features"), TensorSpec((32, 32, 3), "uint8"))[:64]
    reference = load_predictor(tf, str(run / "model" / "model.keras")).predict(x)
    tolerance = {"saved_model": 1e-5, "model.tflite": 1e-5, "model.onnx": 1e-5, "model-fp16.tflite": 2e-2}
    for name, atol in tolerance.items():
        np.testing.assert_allclose(load_predictor(tf, str(run / "export" / name)).predict(x), reference, atol=atol, err_msg=name)
    int8 = load_predictor(tf, str(run / "export" / "model-int8.tflite")).predict(x)
    assert np.abs(int8 - reference).max() < 0.25 and (int8.argmax(1) == reference.argmax(1)).mean() >= 0.8


def test_eval_model_scores_tflite_and_onnx_as_direct_calls_do(digits_export, digits_dataset):
    from dltool.artefacts import load_predictor
    from dltool.tfenv import import_tensorflow_quietly

    config, run, summary = digits_export
    tf = import_tensorflow_quietly()
    test = read_split(digits_dataset, "test")
    x = decode_tensors(test.column("features"), TensorSpec((32, 32, 3), "uint8"))
    y = np.asarray(test.column("label").to_pylist())
    for name, fmt in (("model-int8.tflite", "tflite-int8"), ("model.onnx", "onnx")):
        result, scored = cli("eval", config, "--model", run / "export" / name)
        assert result.exit_code == 0, result.output
        direct = (load_predictor(tf, str(run / "export" / name)).predict(x).argmax(1) == y).mean()
        assert scored["checkpoints"][0]["metrics"]["accuracy"] == pytest.approx(direct, abs=1e-9)
        assert scored["checkpoints"][0]["metrics"]["accuracy"] == pytest.approx(
            next(r["accuracy"] for r in summary["formats"] if r["format"] == fmt), abs=1e-9)  # fmt: skip
        assert (run / "eval" / f"test-{name}" / "eval.json").exists()


def test_a_table_model_exports_to_tflite_and_onnx(spark, churn_dataset, tmp_path):
    config = train_sample("csv", churn_dataset, tmp_path, epochs=1)
    result, summary = cli("export", config, "--format", "tflite", "--format", "onnx", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = {row["format"]: row for row in summary["formats"]}
    assert set(rows) == {"keras", "tflite", "onnx"} and (tmp_path / "out" / "model.onnx").exists()
    for fmt in ("tflite", "onnx"):
        assert rows[fmt]["accuracy"] == pytest.approx(rows["keras"]["accuracy"], abs=1e-9)


def test_export_refuses_unknown_formats_and_other_metrics_before_any_work(digits_export):
    config, _, _ = digits_export
    result, _ = cli("export", config, "--format", "coreml")  # a usage error: the command line's parser says it
    assert result.exit_code == 2 and "'coreml' is not one of" in result.output.replace("│", "").replace("\n", "")
    result, summary = cli("export", config, "--format", "tflite", "--max-drop", "mae=0.1")
    assert result.exit_code == 2 and "use --max-drop accuracy=VALUE" in summary["message"]
    result, summary = cli("eval", config, "--model", ROOT / "README.md")
    assert result.exit_code == 2 and "not a model dltool can score" in summary["message"]
