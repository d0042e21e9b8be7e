"""What `dltool eval` scores and the checks it makes before Spark: run dirs and saved models faked on disk, no TF."""

from __future__ import annotations

import json
import zipfile

import pytest

from dltool.errors import ConfigError, DltoolError, InputNotFoundError
from dltool.evaluate.score import (
    apply_gates,
    check_gates,
    _eval_monitor,
    parse_fail_under,
)
from dltool.evaluate.targets import check_target, resolve_targets
from dltool.shards.codec import TensorSpec
from dltool.storage.fs import open_location
from dltool.storage.manifest import Label
from tests.conftest import make_manifest

MANIFEST = make_manifest(features=TensorSpec((16,), "float32"), label=Label("class", ("no", "yes")))


def keras_file(path, shape=(16,), dtype="float32", units=2):
    """A .keras zip whose config.json declares a functional model: InputLayer -> Dense(units)."""
    config = {"class_name": "Functional", "config": {
        "layers": [
            {"class_name": "InputLayer", "name": "features",
             "config": {"batch_shape": [None, *shape], "dtype": dtype, "name": "features"}},
            {"class_name": "Dense", "name": "output", "config": {"name": "output", "units": units}},
        ],
        "input_layers": [["features", 0, 0]], "output_layers": [["output", 0, 0]],
    }}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"weights")
    return path


def fake_run(root, epochs=(1, 2, 3), status="completed", best=2, final=True, dataset_hash="h"):
    for epoch in epochs:
        folder = root / "checkpoints" / f"epoch-{epoch:03d}"
        keras_file(folder / "model.keras")
        meta = {"epoch": epoch, "best": {"epoch": best} if best else None, "dataset_hash": dataset_hash}
        (folder / "checkpoint.json").write_text(json.dumps(meta))
    if final:
        keras_file(root / "model" / "model.keras")
    run = {"status": status, "dataset_hash": dataset_hash, "epochs_done": max(epochs)}
    if best:
        run["best"] = {"epoch": best}
    (root / "run.json").write_text(json.dumps(run))
    return open_location(str(root))


def labels(targets):
    return [(t.label, t.epoch) for t in targets]


def test_the_default_is_the_final_model_else_the_best_else_the_newest_checkpoint(tmp_path):
    assert labels(resolve_targets(fake_run(tmp_path / "a"))) == [("final", 3)]
    assert labels(resolve_targets(fake_run(tmp_path / "b", status="running"))) == [("epoch-002", 2)]
    assert labels(resolve_targets(fake_run(tmp_path / "c", status="failed", best=None))) == [("epoch-003", 3)]


def test_all_and_named_checkpoints(tmp_path):
    run = fake_run(tmp_path / "run")
    assert labels(resolve_targets(run, "all")) == [("epoch-001", 1), ("epoch-002", 2), ("epoch-003", 3)]
    named = f"epoch-003, {tmp_path / 'run' / 'checkpoints' / 'epoch-001' / 'model.keras'},{tmp_path / 'run' / 'model'}"
    assert labels(resolve_targets(run, named)) == [("epoch-003", 3), ("epoch-001", 1), ("final", 3)]
    loose = keras_file(tmp_path / "elsewhere" / "mine.keras")
    [target] = resolve_targets(run, str(loose))
    assert (target.label, target.epoch, target.meta) == ("mine.keras", None, {})


def test_missing_or_incomplete_runs_and_checkpoints_exit_2(tmp_path):
    with pytest.raises(InputNotFoundError, match="run dir not found"):
        resolve_targets(open_location(str(tmp_path / "nowhere")))
    run = fake_run(tmp_path / "run")
    with pytest.raises(InputNotFoundError, match="checkpoint not found"):
        resolve_targets(run, "epoch-009")
    (tmp_path / "run" / "checkpoints" / "epoch-002" / "checkpoint.json").unlink()
    with pytest.raises(InputNotFoundError, match="incomplete checkpoint"):
        resolve_targets(run, "epoch-002")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a checkpoint folder or a .keras file"):
        resolve_targets(run, str(tmp_path / "notes.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(InputNotFoundError, match="no final model and no complete checkpoint"):
        resolve_targets(open_location(str(empty)))


def test_models_that_do_not_fit_the_dataset_stop_before_spark(tmp_path):
    run = fake_run(tmp_path / "run")
    [target] = resolve_targets(run, "epoch-001")
    check_target(target, MANIFEST, "h")
    with pytest.raises(ConfigError, match="trained on another dataset"):
        check_target(target, MANIFEST, "other")
    for kwargs, message in [({"shape": (5,)}, r"shape \[5\]"), ({"dtype": "uint8"}, "uint8 inputs"),
                            ({"units": 3}, "3 outputs, the dataset has 2 classes")]:  # fmt: skip
        keras_file(tmp_path / "bad.keras", **kwargs)
        [bad] = resolve_targets(run, str(tmp_path / "bad.keras"))
        with pytest.raises(ConfigError, match=message):
            check_target(bad, MANIFEST, "h")
    model = tmp_path / "run" / "checkpoints" / "epoch-001" / "model.keras"
    model.write_bytes(model.read_bytes()[:40])
    with pytest.raises(DltoolError, match="damaged model file") as error:
        check_target(target, MANIFEST, "h")
    assert error.value.exit_code == 1


def test_fail_under_parsing_names_and_direction():
    assert parse_fail_under(["accuracy=0.9", " loss = 0.5"]) == {"accuracy": 0.9, "loss": 0.5}
    for bad in ("accuracy", "=0.9", "accuracy=high", "accuracy=nan"):
        with pytest.raises(ConfigError, match="expected METRIC=NUMBER"):
            parse_fail_under([bad])
    with pytest.raises(ConfigError, match="use one of loss, accuracy, top_3_accuracy"):
        check_gates({"f1": 0.5}, "class", ["a", "b", "c"], [3])
    with pytest.raises(ConfigError, match="use one of loss, mae, mse, rmse, r2"):
        check_gates({"accuracy": 0.5}, "regression", [], [])
    result = {"task": "regression", "loss": 2.0, "mae": 1.0, "mse": 2.0, "rmse": 2.0**0.5, "r2": None}
    gates = check_gates({"mae": 1.0, "r2": 0.1, "rmse": 1.0}, "regression", [], [])
    outcome = {g.metric: (g.rule, g.passed) for g in apply_gates(gates, result)}
    assert outcome == {"mae": ("<=", True), "r2": (">=", False), "rmse": ("<=", False)}  # undefined r2 fails
    assert _eval_monitor("val_mae", result) == "mae" and _eval_monitor("val_accuracy", result) == "loss"
