"""Which file eval, predict and Spark ML score: the final model's checked ONNX copy, or the model, and why."""

from __future__ import annotations

import hashlib
import json

import pytest

from dltool.artefacts import scorer_for
from dltool.storage.fs import open_location


@pytest.fixture
def model(tmp_path):
    """run_dir/model as train leaves it: model.keras, model.onnx and the record of the copy's check."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"keras bytes")
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    record = {"keras_sha256": hashlib.sha256(b"keras bytes").hexdigest(), "runtime": "onnxruntime", "file": "model.onnx",
              "bytes": 10, "rows_checked": 64, "max_difference": 2.4e-7}  # fmt: skip
    (folder / "scoring.json").write_text(json.dumps(record))
    return folder


def scorer(folder, gpus=False):
    return scorer_for(open_location(str(folder / "model.keras")), gpus)


def test_the_checked_copy_of_this_very_model_is_scored(model):
    chosen = scorer(model)
    assert chosen.runtime == "onnxruntime" and chosen.uri.endswith("/model/model.onnx")
    assert chosen.note == "model.onnx, within 2e-07 of Keras on 64 rows"
    assert scorer(model, gpus=True).runtime == "tensorflow" and "GPUs" in scorer(model, gpus=True).note


@pytest.mark.parametrize("damage, reason", [
    (lambda m: (m / "scoring.json").unlink(), "no ONNX copy beside it"),
    (lambda m: (m / "scoring.json").write_text("[1, 2]"), "no ONNX copy beside it"),
    (lambda m: (m / "scoring.json").write_text("{not json"), "no ONNX copy beside it"),
    (lambda m: (m / "scoring.json").write_text('{"runtime": "tensorflow", "reason": "no ONNX copy: op X"}'),
     "no ONNX copy: op X"),
    (lambda m: (m / "model.keras").write_bytes(b"retrained"), "model.keras changed after its ONNX copy was made"),
    (lambda m: (m / "model.onnx").unlink(), "its ONNX copy model.onnx is gone"),
    (lambda m: (m / "model.onnx").write_bytes(b"cut"), "has 3 bytes, not the 10 checked"),
])  # fmt: skip
def test_without_a_valid_copy_tensorflow_scores_the_model_and_says_why(model, damage, reason):
    damage(model)
    chosen = scorer(model)
    assert chosen.runtime == "tensorflow" and chosen.uri.endswith("/model/model.keras")
    assert reason in chosen.note


def test_a_record_without_its_figures_or_naming_another_file_still_scores_the_copy_train_wrote(model, tmp_path):
    record = json.loads((model / "scoring.json").read_text())
    del record["max_difference"]
    (model / "scoring.json").write_text(json.dumps({**record, "file": "../../elsewhere.onnx"}))
    chosen = scorer(model)
    assert chosen.runtime == "onnxruntime" and chosen.uri.endswith("/model/model.onnx") and chosen.note == "model.onnx, checked"


def test_an_onnx_file_is_scored_as_it_is(tmp_path):
    (tmp_path / "exported.onnx").write_bytes(b"x")
    chosen = scorer_for(open_location(str(tmp_path / "exported.onnx")))
    assert chosen.runtime == "onnxruntime" and chosen.uri.endswith("exported.onnx")
