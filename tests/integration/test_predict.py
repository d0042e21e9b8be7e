"""dltool predict on a real local[2] Spark: a dataset split and a raw folder with a hostile file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.dataset as pads
import pytest
import yaml

from tests.conftest import ROOT


def _trained(name: str, sample: str, dataset, folder):
    """The shipped config `name` trained for one epoch on a session dataset; returns its path."""
    from typer.testing import CliRunner

    from dltool.cli import app

    data = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    data["ingest"]["input"] = str(ROOT / "sample_data" / sample)
    data["dataset"]["path"] = str(dataset)
    data["spark"] = {"master": "local[2]"}
    data["train"].update(run_dir=str(folder / "run"), epochs=1, workers=1)
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["train", str(config), "--json"])
    assert result.exit_code == 0, result.output
    return config


@pytest.fixture(scope="module")
def trained(spark, digits_dataset, tmp_path_factory):
    """The images config trained for one epoch on the session's digits dataset."""
    folder = tmp_path_factory.mktemp("predict")
    return _trained("images", "images", digits_dataset, folder), folder


def predict(config, source, output, keep=()):
    from dltool.config.loader import load_config
    from dltool.evaluate.predict import run_predict

    return run_predict(load_config(config), str(source), str(output), progress=False, keep=list(keep))


def test_predict_a_dataset_split_writes_one_row_per_example(trained, digits_dataset):
    config, folder = trained
    summary = predict(config, digits_dataset, folder / "preds")
    manifest = json.loads((digits_dataset / "_manifest.json").read_text())
    table = pads.dataset(str(folder / "preds"), format="parquet").to_table()
    assert summary["rows"] == table.num_rows == manifest["splits"]["test"]["rows"]
    assert (folder / "preds" / "_SUCCESS").exists()
    shards = pads.dataset(str(digits_dataset / "test"), format="parquet").to_table()
    assert sorted(table.column("key").to_pylist()) == sorted(shards.column("key").to_pylist())
    probs = np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))
    assert probs.shape == (table.num_rows, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert table.column("predicted").to_pylist() == probs.argmax(axis=1).tolist()
    # Scored by the model's ONNX copy, with Keras's outputs to float32 rounding.
    import keras

    from dltool.shards.codec import TensorSpec, decode_tensors

    assert summary["runtime"] == "onnxruntime" and "model.onnx" in summary["runtime_note"]
    assert "of this process (a local master" in summary["runtime_note"]  # scored in threads: no Spark tasks
    order = {key: i for i, key in enumerate(shards.column("key").to_pylist())}
    x = decode_tensors(shards.column("features"), TensorSpec.from_json(manifest["features"]))
    x = x[[order[key] for key in table.column("key").to_pylist()]]
    expected = keras.models.load_model(folder / "run" / "model" / "model.keras", compile=False).predict(x, verbose=0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    names = [manifest["label"]["vocabulary"][i] for i in table.column("label").to_pylist()]
    assert table.column("label_name").to_pylist() == names
    # A rerun over its own output replaces it; a folder dltool did not write is refused, --overwrite or not.
    from dltool.errors import ConfigError

    assert run_predict_overwrite(config, digits_dataset, folder / "preds")["rows"] == summary["rows"]
    (folder / "photos").mkdir()
    (folder / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="dltool did not write this folder .*holiday.jpg"):
        run_predict_overwrite(config, digits_dataset, folder / "photos")
    assert (folder / "photos" / "holiday.jpg").read_bytes() == b"precious"


def run_predict_overwrite(config, source, output):
    from dltool.config.loader import load_config
    from dltool.evaluate.predict import run_predict

    return run_predict(load_config(config), str(source), str(output), overwrite=True, progress=False)


def test_predict_a_raw_folder_quarantines_a_hostile_file(trained, tmp_path):
    config, _ = trained
    raw = tmp_path / "raw"
    raw.mkdir()
    for digit in ("3", "7"):
        for path in sorted((ROOT / "sample_data" / "images" / digit).iterdir())[:2]:
            shutil.copy(path, raw / f"{digit}_{path.name}")
    (raw / "not_an_image.png").write_text("hello")
    summary = predict(config, raw, tmp_path / "preds")
    table = pads.dataset(str(tmp_path / "preds"), format="parquet", exclude_invalid_files=True).to_table()
    assert summary["rows"] == table.num_rows == 4 and summary["quarantined"] == 1
    assert sorted(k.split("/")[-1] for k in table.column("key").to_pylist())[0].startswith("3_")
    errors = pads.dataset(str(tmp_path / "preds" / "_errors"), format="parquet").to_table()
    assert errors.num_rows == 1 and "not_an_image.png" in errors.column("path").to_pylist()[0]


@pytest.fixture(scope="module")
def trained_churn(spark, churn_dataset, tmp_path_factory):
    """The csv config trained for one epoch on the session's churn dataset."""
    folder = tmp_path_factory.mktemp("predict-csv")
    return _trained("csv", "tabular/customers.csv", churn_dataset, folder), folder


def test_predict_a_raw_csv_applies_the_training_features_pipeline(trained_churn, churn_dataset, tmp_path):
    """New rows (no label column) get the training data's vocabularies and imputation, not refitted ones."""
    import pandas as pd

    config, _ = trained_churn
    split = predict(config, churn_dataset, tmp_path / "split").get("rows")
    expected = pads.dataset(str(tmp_path / "split"), format="parquet").to_table().to_pandas().set_index("key")
    rows = pd.read_csv(ROOT / "sample_data" / "tabular" / "customers.csv", dtype=str, keep_default_na=False)
    fresh = rows[rows["customer_id"].isin(expected.index)].drop(columns=["churn", "notes"])
    extra = pd.DataFrame([
        {"customer_id": "NEW1", "age": "40", "income": "50000", "tenure_months": "3", "plan": "platinum",
         "region": "mars", "monthly_spend": "99", "support_calls": ""},  # unseen categories, a missing number
        {"customer_id": "BAD1", "age": "forty", "income": "1", "tenure_months": "1", "plan": "basic",
         "region": "east", "monthly_spend": "1", "support_calls": "0"},  # not a number: quarantined
    ])  # fmt: skip
    raw = tmp_path / "new_customers.csv"
    pd.concat([fresh, extra]).to_csv(raw, index=False)

    summary = predict(config, raw, tmp_path / "preds")
    table = pads.dataset(str(tmp_path / "preds"), format="parquet", exclude_invalid_files=True).to_table()
    got = table.to_pandas().set_index("key")
    assert summary["raw_input"] and summary["rows"] == len(got) == split + 1 and summary["quarantined"] == 1
    assert "label" not in got.columns and "NEW1" in got.index and "BAD1" not in got.index
    both = np.stack(got.loc[expected.index, "probabilities"]), np.stack(expected["probabilities"])
    np.testing.assert_allclose(*both, rtol=1e-5, atol=1e-6)  # same rows, same features, same predictions
    errors = pads.dataset(str(tmp_path / "preds" / "_errors"), format="parquet").to_table().to_pylist()
    assert [e["key"] for e in errors] == ["BAD1"] and "field age" in errors[0]["message"]


def test_predict_a_labelled_raw_folder_keeps_each_file_s_class(trained, tmp_path):
    config, _ = trained
    raw = tmp_path / "held_out"
    for digit in ("3", "7"):
        (raw / digit).mkdir(parents=True)
        for path in sorted((ROOT / "sample_data" / "images" / digit).iterdir())[:3]:
            shutil.copy(path, raw / digit / path.name)
    summary = predict(config, raw, tmp_path / "preds")
    table = pads.dataset(str(tmp_path / "preds"), format="parquet", exclude_invalid_files=True).to_table()
    assert summary["rows"] == 6 and summary["quarantined"] == 0
    assert table.column("label_name").to_pylist() == [k.split("/")[0] for k in table.column("key").to_pylist()]
    assert set(table.column("label_name").to_pylist()) == {"3", "7"}


def test_predict_a_labelled_raw_csv_keeps_the_label_and_chosen_columns(trained_churn, tmp_path):
    config, _ = trained_churn
    raw = tmp_path / "scored.csv"
    lines = (ROOT / "sample_data" / "tabular" / "customers.csv").read_text().splitlines()[:21]
    lines += ["N1,40,50000,3,basic,east,99,1,,not scored yet", "N2,41,50000,3,basic,east,99,1,maybe,a new class"]
    raw.write_text("\n".join(lines) + "\n")
    summary = predict(config, raw, tmp_path / "preds", keep=["notes"])
    got = pads.dataset(str(tmp_path / "preds"), format="parquet", exclude_invalid_files=True).to_table().to_pandas()
    assert summary["rows"] == 22 and {"label", "label_name", "notes", "predicted_name"} <= set(got.columns)
    unlabelled = got.set_index("key").loc[["N1", "N2"]]  # still predicted: a label is carried, never checked
    assert unlabelled["label_name"].tolist() == [None, "maybe"] and unlabelled["label"].isna().all()
    got = got[~got["key"].isin(["N1", "N2"])]
    import pandas as pd

    truth = pd.read_csv(raw, dtype=str, keep_default_na=False).set_index("customer_id")
    assert (got.set_index("key")["label_name"] == truth.loc[got["key"], "churn"].values).all()
    assert (got.set_index("key")["notes"].fillna("") == truth.loc[got["key"], "notes"].values).all()  # empty: null
    with pytest.raises(Exception, match="a feature or label column"):
        predict(config, raw, tmp_path / "other", keep=["plan"])
