"""Model quality on real data: scikit-learn's scanned digits, trained by 1 and 2 workers with dltool's defaults.

A small, fast version of bench/quality.py's digits set (docs/benchmarks.md, "Model quality").
"""

from __future__ import annotations

import json

import numpy as np
import pytest

FLOOR = 0.85  # chance is 0.10; the full benchmark reaches 0.99 on 32x32 images


@pytest.fixture(scope="module")
def real_digits(spark, tmp_path_factory):
    """600 of scikit-learn's 1,797 scanned digits as 16x16 PNG files in class folders, ingested."""
    import cv2
    from sklearn.datasets import load_digits

    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import run_ingest

    root = tmp_path_factory.mktemp("real-digits")
    data = load_digits()
    for i, (image, target) in enumerate(zip(data.images[:600], data.target[:600])):
        folder = root / "images" / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.clip(image * (255 / 16), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"d{i:04d}.png"), cv2.resize(grey, (16, 16), interpolation=cv2.INTER_CUBIC))
    base = {
        "name": "real-digits",
        "spark": {"master": "local[2]"},
        "dataset": {"path": str(root / "dataset"), "split": {"train": 0.7, "val": 0.1, "test": 0.2}},
        "ingest": {"reader": "image", "input": str(root / "images"), "size": [16, 16], "channels": 1},
    }
    run_ingest(ExperimentConfig.model_validate(base), progress=False)
    return root, base


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_defaults_learn_real_digits_with_any_number_of_workers(real_digits, workers):
    from dltool.config.models import ExperimentConfig
    from dltool.evaluate.score import run_eval
    from dltool.train.run import run_training

    root, base = real_digits
    run_dir = root / f"run-{workers}"
    # Only the builtin, the epochs and the workers: every other setting is dltool's default.
    train = {"run_dir": str(run_dir), "epochs": 8, "workers": workers, "model": {"builtin": "small_cnn"}}
    config = ExperimentConfig.model_validate({**base, "train": train})
    summary = run_training(config, overwrite=True, progress=False)

    # The kept model is the best epoch by the default monitor (val_loss), and says so.
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    best = min(history, key=lambda row: row["val_loss"])
    assert summary["kept"] == "best" and summary["model_epoch"] == best["epoch"] == summary["best"]["epoch"]
    assert summary["final"]["val_loss"] == best["val_loss"]
    assert summary["seed"] == 0 and summary["replicas_in_sync"] == workers

    accuracy = run_eval(config, progress=False).checkpoints[0].metrics["accuracy"]
    assert accuracy >= FLOOR, f"{workers} worker(s): test accuracy {accuracy:.3f} < {FLOOR}"
