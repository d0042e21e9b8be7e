"""dltool.ml's params, without Spark: the train: section they build, conventions of Spark ML stages."""

from __future__ import annotations

import pytest

from dltool.errors import ConfigError
from dltool.ml import KerasClassificationModel, KerasClassifier, KerasRegressor


def test_params_you_set_win_over_the_train_text_and_defaults_do_not():
    text = "{epochs: 30, optimizer: {name: sgd, learning_rate: 0.1}, early_stopping: {min_delta: 0.01}}"
    assert KerasClassifier(train=text).train_section() == {
        "epochs": 30, "optimizer": {"name": "sgd", "learning_rate": 0.1}, "early_stopping": {"min_delta": 0.01},
        "workers": 1, "seed": 0}  # fmt: skip
    section = KerasClassifier(train=text, epochs=5, learningRate=0.01, patience=2, batchSize=64, workers=2).train_section()
    assert section["epochs"] == 5 and section["workers"] == 2 and section["global_batch_size"] == 64
    assert section["optimizer"] == {"name": "sgd", "learning_rate": 0.01}
    assert section["early_stopping"] == {"min_delta": 0.01, "patience": 2}


def test_the_train_param_takes_a_dict_yaml_or_json_and_says_what_is_wrong():
    assert KerasRegressor(train={"loss": "huber"}).train_section()["loss"] == "huber"
    assert KerasRegressor(train='{"loss": "mae"}').train_section()["loss"] == "mae"
    with pytest.raises(ConfigError, match="train param: invalid YAML"):
        KerasClassifier(train="epochs: [1").train_section()
    with pytest.raises(ConfigError, match="expected a mapping"):
        KerasClassifier(train="[1, 2]").train_section()


def test_stages_follow_spark_ml_conventions():
    classifier = KerasClassifier(featuresCol="x", epochs=3)
    assert classifier.getFeaturesCol() == "x" and classifier.getEpochs() == 3 and classifier.getLabelCol() == "label"
    assert classifier.setLearningRate(0.5) is classifier and classifier.getLearningRate() == 0.5
    copy = classifier.copy({classifier.learningRate: 0.1})
    assert copy.uid == classifier.uid and copy.getLearningRate() == 0.1 and classifier.getLearningRate() == 0.5
    assert "learningRate: train.optimizer.learning_rate" in classifier.explainParams()
    assert classifier.getProbabilityCol() == "probability" and classifier.getRawPredictionCol() == "rawPrediction"
    with pytest.raises(TypeError):
        KerasClassifier(epochs="many")  # the type converter refuses it
    model = KerasClassificationModel()
    assert model.getPredictionCol() == "prediction" and model.getClasses() == [] and model.numClasses == 0


def test_rows_that_cannot_be_written_are_named_with_the_reason():
    import pyarrow as pa

    from dltool.ml.dataset import _valid
    from dltool.shards.codec import TensorSpec

    rows = pa.table({
        "features": pa.array([[1.0, 2.0, 3.0], None, [1.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], pa.list_(pa.float32())),
        "label": pa.array([0, 1, 1, 5, None], pa.int32()),
        "key": ["a", "b", "c", "d", "e"],
    })  # fmt: skip
    errors = []
    kept = _valid(rows, TensorSpec((3,), "float32"), "class", ("x", "y"), errors)
    assert kept.column("key").to_pylist() == ["a"]
    assert [(e["key"], e["message"]) for e in errors] == [
        ("b", "null features"), ("c", "features hold the wrong number of values (expected 3 for [3] float32)"),
        ("d", "label is not a class index 0..1"), ("e", "null label")]  # fmt: skip
    images = pa.table({"features": pa.array([b"abcd", b"abc"]), "key": ["ok", "short"]})
    errors = []
    assert _valid(images, TensorSpec((2, 2), "uint8"), None, None, errors).num_rows == 1
    assert errors[0]["key"] == "short" and "expected 4 for [2, 2] uint8" in errors[0]["message"]


def test_settings_left_unset_are_sized_to_the_train_rows():
    from dltool.config.models import TrainSettings
    from dltool.train.sizing import MIN_STEPS, TABLE_EPOCHS, TABLE_EXAMPLES, TABLE_MIN_STEPS, sized

    small = sized(TrainSettings(run_dir="r"), 135)  # iris's train rows
    assert small.global_batch_size == 8 and small.epochs * (135 // 8) >= MIN_STEPS
    assert small.early_stopping.patience == max(10, small.epochs // 10)
    big = sized(TrainSettings(run_dir="r"), 100_000)
    assert big.global_batch_size == 64 and big.epochs == 10
    assert sized(TrainSettings(run_dir="r"), 135, workers=3).global_batch_size == 9  # splits evenly over 3
    mine = TrainSettings(run_dir="r", epochs=3, global_batch_size=16)
    assert sized(mine, 135) == mine  # what the user set is kept, and no early stopping added
    assert sized(TrainSettings(run_dir="r", per_worker_batch_size=4), 135, workers=2).epochs == 63  # 1000 / 16 steps
    # The table model's steps are cheap, and it needs more where early stopping keeps the best epoch: 2,000
    # (a 410-row table: 25 steps of 16, 80 epochs); other models, or a table trained through, 1,000.
    table = TrainSettings(run_dir="r", model={"builtin": "tabular"})
    assert sized(table, 410, val_rows=57).epochs == 80 and 80 * 25 >= TABLE_MIN_STEPS
    assert sized(table, 410, val_rows=12).epochs == 40 and sized(table, 410, val_rows=12).final == "last"
    assert sized(TrainSettings(run_dir="r", model={"builtin": "small_cnn"}), 410, val_rows=57).epochs == 40
    # A table of thousands of rows gets TABLE_EPOCHS (its 2,000 steps are 10 epochs), as far as TABLE_EXAMPLES go.
    assert sized(table, 13_649, val_rows=1953).epochs == TABLE_EPOCHS == 80
    assert sized(table, 37_758, val_rows=5_394).epochs == TABLE_EXAMPLES // 37_758 == 29
    assert sized(table, 1_000_000, val_rows=140_000).epochs == 10 == big.epochs
    assert sized(TrainSettings(run_dir="r", model={"builtin": "small_cnn"}), 13_649, val_rows=1953).epochs == 10
    # A validation split too small to pick an epoch: all sized epochs, the last one kept, unless the config says.
    few = sized(TrainSettings(run_dir="r"), 135, val_rows=12)
    assert few.early_stopping is None and few.final == "last" and few.epochs == small.epochs
    assert sized(TrainSettings(run_dir="r"), 369, val_rows=42).final == "last"  # CPS1985: 42 rows chose by chance
    enough = sized(TrainSettings(run_dir="r"), 135, val_rows=50)
    assert enough.early_stopping == small.early_stopping and enough.final == "best"
    assert sized(TrainSettings(run_dir="r", final="best"), 135, val_rows=12).final == "best"
    assert sized(TrainSettings(run_dir="r"), 135, val_rows=0).early_stopping == small.early_stopping  # no val split
    assert sized(mine, 135, val_rows=12) == mine
