"""`dltool export`'s options and quality gate, without TensorFlow: what counts as a loss, and its limits."""

from __future__ import annotations

import pytest

from dltool.errors import ConfigError
from dltool.export import drop_gates, loss_against_keras, parse_max_drop


def rows(metric: str, keras: float, *formats: tuple[str, float | None]) -> list[dict]:
    out = [{"format": "keras", metric: keras, "drop": 0.0}]
    out += [{"format": f, metric: v, "drop": loss_against_keras(metric, keras, v)} for f, v in formats]
    return out


def test_max_drop_options_parse_and_refuse_nonsense():
    assert parse_max_drop(["accuracy=0.01", " mae = 0.5"]) == {"accuracy": 0.01, "mae": 0.5}
    for bad in ("accuracy", "accuracy=", "accuracy=x", "=0.1", "accuracy=-0.1", "accuracy=nan"):
        with pytest.raises(ConfigError, match="--max-drop"):
            parse_max_drop([bad])


def test_a_lower_accuracy_is_a_loss_and_only_more_than_allowed_fails():
    gates = drop_gates(rows("accuracy", 0.90, ("tflite", 0.90), ("tflite-int8", 0.88), ("onnx", 0.91)),
                       "accuracy", {"accuracy": 0.01})  # fmt: skip
    assert [(g["format"], round(g["drop"], 6), g["passed"]) for g in gates] == [
        ("tflite", 0.0, True), ("tflite-int8", 0.02, False), ("onnx", -0.01, True)]  # fmt: skip


def test_a_higher_error_is_a_loss_for_regression_and_an_unscored_format_fails():
    gates = drop_gates(rows("mae", 1.0, ("tflite-fp16", 1.2), ("tflite-int8", 0.9), ("onnx", None)), "mae", {"mae": 0.1})
    assert [(g["format"], None if g["drop"] is None else round(g["drop"], 6), g["passed"]) for g in gates] == [
        ("tflite-fp16", 0.2, False), ("tflite-int8", -0.1, True), ("onnx", None, False)]  # fmt: skip
    assert drop_gates(rows("mae", 1.0, ("onnx", 2.0)), "mae", {}) == []  # no --max-drop: nothing to fail
