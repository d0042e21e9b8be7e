"""dltool.ml in Spark ML: the docs/spark-ml.md examples, transform against `dltool predict`, column checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import example


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("spark_ml"))


def _probabilities(frame, key: str) -> dict:
    return {row[key]: np.asarray(row.probability.toArray()) for row in frame.select(key, "probability").collect()}


def test_a_pipeline_fits_scores_saves_and_loads_with_identical_predictions(spark, workdir):
    from pyspark.ml.feature import StringIndexerModel

    from dltool.ml import KerasClassificationModel

    out = example("spark_ml/tabular_pipeline.py").main(spark, workdir)
    fitted = out["model"].stages[-1]
    assert isinstance(fitted, KerasClassificationModel)
    indexer = next(s for s in out["model"].stages if isinstance(s, StringIndexerModel) and s.getOutputCol() == "label")
    assert fitted.getClasses() == list(indexer.labels)  # class names from StringIndexer's metadata, its order
    assert out["accuracy"] > 0.6
    scored = out["scored"]
    assert set(out["test"].columns) < set(scored.columns)  # every input column is kept
    assert scored.schema["prediction"].metadata["ml_attr"]["vals"] == list(indexer.labels)
    before, after = _probabilities(scored, "customer_id"), _probabilities(out["loaded"].transform(out["test"]), "customer_id")
    assert before.keys() == after.keys() and len(before) == out["test"].count()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # The saved stage carries the model's checked ONNX copy, which its transform scores with.
    from dltool.artefacts import scorer_for
    from dltool.storage.fs import open_location

    loaded = out["loaded"].stages[-1]
    chosen = scorer_for(open_location(loaded.getModelPath()))
    assert chosen.runtime == "onnxruntime" and chosen.uri.startswith(loaded.getModelPath().rsplit("/", 1)[0])
    named = {row.predicted_churn for row in out["named"].collect()}
    assert named <= {"yes", "no"} and named
    assert fitted.history() and fitted.history()[-1]["epoch"] == fitted.trainingSummary.epochs_done


def test_an_image_dataset_loaded_as_a_frame_trains_a_cnn(spark, workdir, digits_dataset):
    out = example("spark_ml/image_dataset.py").main(spark, workdir, dataset=str(digits_dataset))
    model = out["model"]
    assert model.getInputShape() == [32, 32, 3] and model.numClasses >= 3
    assert out["accuracy"] > 2.0 / model.numClasses  # well above chance


def test_cross_validation_picks_the_learning_rate_with_the_best_mean_metric(spark, workdir):
    from dltool.ml import KerasClassificationModel

    out = example("spark_ml/cross_validation.py").main(spark, workdir)
    metrics = out["fitted"].avgMetrics
    assert len(metrics) == 2 and all(0.0 <= m <= 1.0 for m in metrics)
    best = out["best"]
    assert isinstance(best, KerasClassificationModel)
    assert best.getLearningRate() == out["grid"][int(np.argmax(metrics))][out["classifier"].learningRate]
    # Five fits on two Python workers: later ones ran in a worker process an earlier fit left, TensorFlow loaded.
    logs = [log.read_text() for log in Path(workdir, "fits").rglob("worker-0.log")]
    assert len(logs) >= 5 and any("TensorFlow already loaded" in log for log in logs)


@pytest.fixture(scope="module")
def synthetic(spark):
    """10k rows: 8 numbers as array<float>, a class from their sum's sign, a regression target, an id."""
    from pyspark.sql import functions as F

    values = F.array(*[F.randn(seed=i).cast("float") for i in range(8)])
    frame = spark.range(10_000).select(F.col("id").cast("string").alias("id"), values.alias("x"))
    total = F.aggregate("x", F.lit(0.0).cast("double"), lambda acc, v: acc + v)
    return frame.withColumn("y", (total > 0).cast("double")).withColumn("target", total).cache()


def test_transform_runs_as_an_arrow_udf_and_equals_dltool_predict(spark, workdir, synthetic):
    import dltool
    from dltool.ml import KerasClassifier, write_dataset

    model = KerasClassifier(featuresCol="x", labelCol="y", epochs=2, keepDataset=True, workDir=f"{workdir}/fits").fit(synthetic)
    assert model.getClasses() == ["0", "1"]  # no ML attributes: the indices are the names
    scored = model.transform(synthetic)
    assert "ArrowEvalPython" in scored._jdf.queryExecution().executedPlan().toString()  # a Python UDF in the tasks: no collect to the driver
    # The same rows as a dltool dataset, predicted by the CLI's code path.
    data = f"{workdir}/synthetic"
    write_dataset(synthetic, data, features_col="x", label_col="y", key_col="id", split=(0.0, 0.0, 1.0))
    run = model.getRunDir()
    config = {"name": "synthetic", "dataset": {"path": run.rsplit("/", 1)[0] + "/dataset"}, "train": {"run_dir": run}}
    result = dltool.predict(config, data, f"{workdir}/predicted")
    assert result.rows == 10_000
    predicted = pq.read_table(result.output, columns=["key", "probabilities"]).to_pydict()
    theirs = dict(zip(predicted["key"], map(np.asarray, predicted["probabilities"]), strict=True))
    ours = _probabilities(scored, "id")
    assert ours.keys() == theirs.keys()
    assert max(np.abs(ours[k] - theirs[k]).max() for k in ours) < 1e-6
    accuracy = scored.where("prediction = y").count() / 10_000
    assert accuracy > 0.8


FACTORY = """
import keras


@keras.saving.register_keras_serializable(package="ml_factory")
class Halve(keras.layers.Layer):
    def call(self, x):
        return x * 0.5


def build(input_shape, outputs, manifest, width=16):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(width, activation="relu")(Halve()(inputs))
    return keras.Model(inputs, keras.layers.Dense(outputs)(x))
"""


def test_a_regressor_from_a_factory_fits_and_scores_a_streaming_frame(spark, workdir, synthetic, tmp_path, monkeypatch):
    from pyspark.ml.evaluation import RegressionEvaluator

    from dltool.ml import KerasRegressor

    # A factory with a custom layer: the scoring tasks import its module before loading the model.
    (tmp_path / "ml_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = KerasRegressor(featuresCol="x", labelCol="target", epochs=3, learningRate=0.01, workDir=f"{workdir}/fits",
                           train={"model": {"factory": "ml_factory:build"}}).fit(synthetic)  # fmt: skip
    assert model.getModules() == ["ml_factory"]
    scored = model.transform(synthetic)
    rmse = RegressionEvaluator(labelCol="target", metricName="rmse").evaluate(scored)
    spread = synthetic.agg({"target": "stddev"}).first()[0]
    assert rmse < 0.5 * spread
    # The same model on a stream: files arriving in a folder, scored into a memory table.
    source = tmp_path / "incoming"
    synthetic.limit(100).write.parquet(str(source))
    stream = spark.readStream.schema(synthetic.schema).parquet(str(source))
    query = (model.transform(stream).writeStream.format("memory").queryName("scored_stream")
             .trigger(availableNow=True).start())  # fmt: skip
    query.awaitTermination(120)
    rows = spark.table("scored_stream").collect()
    assert len(rows) == 100 and all(isinstance(r.prediction, float) for r in rows)


def test_wrong_columns_fail_with_one_line_before_any_spark_job(spark, synthetic):
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from dltool.errors import ConfigError
    from dltool.ml import KerasClassifier

    named = synthetic.withColumn("name", F.lit("a")).withColumn("raw", F.lit(b"\x00\x01"))
    vectors = VectorAssembler(inputCols=["target"], outputCol="v").transform(named)
    cases = [
        (KerasClassifier(featuresCol="name", labelCol="y"), named, "features column 'name' is string"),
        (KerasClassifier(featuresCol="nope", labelCol="y"), named, "features column 'nope' is not in the DataFrame"),
        (KerasClassifier(featuresCol="raw", labelCol="y"), named, "set featuresShape"),
        (KerasClassifier(featuresCol="v", labelCol="y", featuresShape=[2, 2]), vectors, "holds 4 values, but column 'v' is a vector of 1"),
        (KerasClassifier(featuresCol="x", labelCol="name"), named, "index it first"),
        (KerasClassifier(featuresCol="x", labelCol="y", train="epochs: [1"), named, "train param: invalid YAML"),
        (KerasClassifier(featuresCol="x", labelCol="y", train={"optimiser": {}}), named, "train.optimiser"),
    ]  # fmt: skip
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("column-checks", "must start no job")
    try:
        for estimator, frame, message in cases:
            with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as error:
                estimator.fit(frame)
            assert "\n" not in str(error.value)
    finally:
        spark.sparkContext.setJobGroup("", "")
    assert tracker.getJobIdsForGroup("column-checks") == []


def test_rows_that_cannot_be_written_fail_the_write_with_the_count_and_the_first(spark, tmp_path):
    from dltool.errors import DataQualityError
    from dltool.ml import write_dataset

    frame = spark.createDataFrame([("a", [1.0, 2.0], 0.0), ("b", [1.0], 1.0), ("c", [float("nan"), 1.0], 1.0)],
                                  "id string, x array<float>, y double").coalesce(1)  # fmt: skip
    with pytest.raises(DataQualityError, match=r"2 of 3 rows cannot be written as 'x' \[2\] float32, e\.g\. row b: "
                       r"features hold the wrong number of values"):  # fmt: skip
        write_dataset(frame, str(tmp_path / "d"), features_col="x", label_col="y", key_col="id", shape=[2])
    assert not (tmp_path / "d").exists()
    manifest = write_dataset(frame.where("id = 'a'"), str(tmp_path / "d"), features_col="x", label_col="y", key_col="id",
                             shape=[2], split=(1.0, 0.0, 0.0))  # fmt: skip
    assert manifest.counts.rows == 1 and manifest.label.vocabulary == ("0",) and manifest.stats.mean == (1.0, 2.0)


def test_an_empty_frame_and_workers_without_numpy_fail_in_one_line(spark, synthetic, tmp_path):
    import subprocess
    import sys

    from dltool.errors import ConfigError, EnvironmentProblem
    from dltool.ml import KerasClassifier

    estimator = KerasClassifier(featuresCol="x", labelCol="y", featuresShape=[8])
    with pytest.raises(ConfigError, match=r"the dataset has no rows in its train split \(0 in all\)"):
        estimator.fit(synthetic.limit(0))
    # A session of the user's own starts its workers with `python3` on the PATH unless PYSPARK_PYTHON says: one
    # without dltool's libraries fails before any dltool code runs in the task, and the error says what to set.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    context = spark.sparkContext
    mine, context.pythonExec = context.pythonExec, str(bare / "bin" / "python")
    try:
        with pytest.raises(EnvironmentProblem, match=r"ModuleNotFoundError: .* in Spark's Python workers \(.*bare"
                           r"/bin/python\): they need a Python that imports it, which PYSPARK_PYTHON") as error:  # fmt: skip
            estimator.fit(synthetic.limit(100))
    finally:
        context.pythonExec = mine
    assert "\n" not in str(error.value)
