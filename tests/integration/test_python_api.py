"""The Python API: each docs/python.md example (examples/python_api.py) on the sample table, in order."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, example

api = example("python_api.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("python_api"))


def test_ingest_returns_the_typed_result_and_reuses_the_active_session(spark, workdir):
    from pyspark.sql import SparkSession

    from dltool.ingest.results import IngestResult

    result = api.ingest_example(workdir)
    assert isinstance(result, IngestResult) and result.status == "written"
    assert result.counts.ok == result.counts.inputs == 400 and sum(result.splits.values()) == 400
    assert SparkSession.getActiveSession() is spark
    again = api.ingest_example(workdir)  # idempotent, like the command
    assert again.status == "up_to_date"


def test_train_takes_a_dict_config(workdir):
    from dltool.train.result import TrainResult

    result = api.train_example(workdir)
    assert isinstance(result, TrainResult) and result.status == "completed"
    assert result.epochs_done == 8 and result.model.endswith("model/model.keras")
    assert 0.5 < result.metrics["val_accuracy"] <= 1.0
    assert result.to_json()["epochs_done"] == 8  # run.json, as `dltool train --json` prints it


def test_evaluate_scores_the_test_split_and_passes_its_gate(workdir):
    scores = api.evaluate_example(workdir)
    assert scores.split == "test" and scores.gates[0].passed
    assert scores.scored.metrics["accuracy"] >= 0.6


def test_evaluate_raises_the_gate_error_the_cli_exits_3_on(workdir):
    import dltool
    from dltool.errors import QualityGateError

    with pytest.raises(QualityGateError) as missed:
        dltool.evaluate(api.CONFIG, dataset__path=f"{workdir}/churn", train__run_dir=f"{workdir}/run",
                        fail_under={"accuracy": 1.01})  # fmt: skip
    assert missed.value.exit_code == 3 and "accuracy" in str(missed.value)


def test_predict_writes_one_row_per_raw_row(workdir):
    result = api.predict_example(workdir)
    assert result.raw_input and result.rows == 400 and result.quarantined == 0
    table = pq.read_table(result.output)
    assert table.num_rows == 400 and {"customer_id", "predicted", "probabilities"} <= set(table.column_names)


def test_load_dataset_gives_spark_ml_a_labelled_frame(workdir):
    from pyspark.ml.linalg import VectorUDT

    test = api.load_dataset_example(workdir)
    assert isinstance(test.schema["features"].dataType, VectorUDT)
    assert test.schema["label"].metadata["ml_attr"]["vals"] == ["no", "yes"]
    from dltool.storage.fs import open_location
    from dltool.storage.manifest import Manifest

    manifest = Manifest.read(open_location(f"{workdir}/churn"))
    rows = test.collect()
    assert len(rows) == manifest.rows("test") > 0
    assert len(rows[0].features) == manifest.features.shape[0] == len(manifest.feature_names)
    assert {r.split for r in rows} == {"test"} and {r.label for r in rows} <= {0.0, 1.0}


def test_a_config_object_and_overrides_are_validated_like_the_file(workdir):
    import dltool
    from dltool.config.loader import load_config
    from dltool.errors import ConfigError

    config = load_config(ROOT / "configs" / "csv.yaml")
    with pytest.raises(ConfigError, match="train.epochs"):
        dltool.train(config, train__epochs=0)
    with pytest.raises(ConfigError, match="expected a YAML path, a dict or an ExperimentConfig"):
        dltool.ingest(42)
