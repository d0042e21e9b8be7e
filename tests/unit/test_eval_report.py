"""Eval reporting: the terminal table holds the figures, and the plots are valid PNGs written atomically."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from dltool.errors import DltoolError
from dltool.evaluate.metrics import ClassificationSums, RegressionSums
from dltool.evaluate.report import confusion_png, metric_over_epochs_png, print_table
from tests.conftest import ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def classification(classes: int, seed: int, checkpoint: str | None = None) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, 400)
    logits = rng.normal(size=(400, classes))
    logits[np.arange(400), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = ["cat", "dog", "bird", "fish"][:classes] if classes <= 4 else [f"c{i}" for i in range(classes)]
    result = ClassificationSums(names, [2] if classes > 2 else [1]).update(y, probs).compute()
    return result | ({"checkpoint": checkpoint} if checkpoint else {})


def render(results, best=None) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    print_table(results, best, console)
    return console.export_text()


def assert_png(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 0 and image.height > 0
        return image.size


def test_one_checkpoint_table_has_the_figures_and_per_class_rows():
    result = classification(3, 0, "runs/x/checkpoints/epoch-003")
    text = render([result])
    assert "epoch-003" in text
    for title, value in [("examples", "400"), ("loss", result["loss"]), ("accuracy", result["accuracy"]),
                         ("top-2 accuracy", result["top_k"]["2"]), ("macro F1", result["macro"]["f1"]),
                         ("ECE", result["ece"])]:
        shown = value if isinstance(value, str) else f"{value:.4f}"
        assert any(title in line and shown in line for line in text.splitlines()), (title, shown)
    for name in ("cat", "dog", "bird", "macro avg", "weighted avg"):
        line = next(line for line in text.splitlines() if f" {name} " in line)
        if name in result["per_class"]:
            assert f"{result['per_class'][name]['f1']:.4f}" in line
            assert str(result["per_class"][name]["support"]) in line
    assert "ROC AUC" not in text


def test_several_checkpoints_side_by_side_with_the_best_marked():
    results = [classification(2, seed, f"runs/x/checkpoints/epoch-{seed:03d}") for seed in (1, 2, 3)]
    text = render(results, best=2)
    header = next(line for line in text.splitlines() if "epoch-001" in line)
    assert "epoch-002" in header and "epoch-003 ★ best" in header
    for title, key in [("accuracy", "accuracy"), ("ROC AUC", "roc_auc"), ("PR AUC", "pr_auc")]:
        line = next(line for line in text.splitlines() if line.strip("│┃ ").startswith(title))
        assert all(f"{result[key]:.4f}" in line for result in results), title
    assert "per class" not in text  # only for a single checkpoint


def test_regression_table():
    rng = np.random.default_rng(4)
    y = rng.normal(size=100)
    result = RegressionSums().update(y, y + rng.normal(size=100) * 0.1).compute()
    text = render([result])
    for title, key in [("MAE", "mae"), ("RMSE", "rmse"), ("R²", "r2")]:
        assert any(title in line and f"{result[key]:.4f}" in line for line in text.splitlines()), title
    assert "accuracy" not in text and "per class" not in text


def test_confusion_png_is_a_valid_image_written_atomically(tmp_path):
    result = classification(4, 5)
    path = tmp_path / "eval" / "test" / "confusion.png"  # folders are created
    confusion_png(result["confusion_matrix"], list(result["per_class"]), path)
    width, height = assert_png(path)
    assert width > 200 and height > 200
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temp file left behind


def test_confusion_png_with_many_classes(tmp_path):
    matrix = np.random.default_rng(6).integers(0, 50, (70, 70))
    confusion_png(matrix, [f"class {i}" for i in range(70)], tmp_path / "big.png")
    assert_png(tmp_path / "big.png")


def test_confusion_png_rejects_a_mismatched_matrix(tmp_path):
    with pytest.raises(DltoolError, match=r"shape \[2, 2\], expected \[3, 3\]"):
        confusion_png([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "x.png")


def test_metric_over_epochs_png(tmp_path):
    path = tmp_path / "metrics.png"
    metric_over_epochs_png([1, 2, 3, 4], {"accuracy": [0.5, 0.6, None, 0.7], "loss": [1.2, 0.9, 0.8, 0.75]}, path)
    assert_png(path)
    with pytest.raises(DltoolError, match="3 values for 4 epochs"):
        metric_over_epochs_png([1, 2, 3, 4], {"loss": [1.0, 0.9, 0.8]}, path)


def test_importing_the_evaluate_package_loads_no_plotting_or_terminal_library():
    code = (
        "import sys, dltool.evaluate.metrics, dltool.evaluate.report;"
        "print(','.join(m for m in ('matplotlib', 'rich', 'sklearn', 'pyarrow', 'tensorflow', 'pyspark')"
        " if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == ""
