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
