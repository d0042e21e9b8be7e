"""Every verb against an S3-compatible server on 127.0.0.1 (moto's): raw files, dataset, run dir and
predictions all on s3://, a killed ingest on the store, and no secret in anything written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from dltool.cli import app
from tests.conftest import BUCKET, ROOT
from tests.integration.test_killed_ingest import _kill_tree, _wait_for


def cli(*args: str):
    result = CliRunner().invoke(app, [*map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


@pytest.fixture(scope="module")
def raw(s3):
    """A third of the sample images and all the sample audio, uploaded once."""
    return {"images": s3.upload(ROOT / "sample_data" / "images", "raw/images", every=3),
            "audio": s3.upload(ROOT / "sample_data" / "audio", "raw/audio")}  # fmt: skip


def read_store_table(s3, prefix: str):
    import pyarrow as pa

    parts = [k for k in s3.objects(prefix) if k.endswith(".parquet")]
    return pa.concat_tables([pq.ParquetFile(s3.fs().open_input_file(f"{BUCKET}/{k}")).read() for k in parts])


def store_config(s3, tmp_path, shipped: str, name: str, epochs: int, storage: dict | None = None):
    """A shipped config with its input, dataset and run dir on the store."""
    data = yaml.safe_load((ROOT / "configs" / f"{shipped}.yaml").read_text())
    data["spark"] = {"master": "local[2]", "conf": {"spark.ui.enabled": False}}
    data["ingest"]["input"] = s3.uri("raw", shipped)
    data["dataset"]["path"] = s3.uri("datasets", name)
    data["train"].update(run_dir=s3.uri("runs", name), epochs=epochs, workers=1)
    if storage is not None:
        data["storage"] = storage
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def digits(spark, s3, raw, tmp_path_factory):
    """The uploaded images ingested from the store into the store, once: (config, ingest summary)."""
    config = store_config(s3, tmp_path_factory.mktemp("digits"), "images", "digits", epochs=3, storage=s3.storage)
    result, ingested = cli("ingest", config)
    assert result.exit_code == 0, result.output
    return config, ingested


def test_images_ingest_train_eval_predict_on_the_store(s3, raw, digits):
    config, ingested = digits
    assert ingested["counts"]["ok"] == raw["images"] and ingested["dataset"] == s3.uri("datasets", "digits")
    keys = s3.objects("datasets/digits")
    assert "datasets/digits/_SUCCESS" in keys and "datasets/digits/_manifest.json" in keys
    assert not [k for k in keys if ".staging" in k or k.endswith(".tmp")]
    shards = [k for k in keys if k.startswith("datasets/digits/train/") and k.endswith(".parquet")]
    assert shards and read_store_table(s3, "datasets/digits/train").num_rows == ingested["splits"]["train"]
    result, again = cli("ingest", config)
    assert result.exit_code == 0 and again["status"] == "up_to_date"

    result, trained = cli("train", config)
    assert result.exit_code == 0, result.output
    run = s3.objects("runs/digits")
    for key in ("run.json", "history.jsonl", "model/model.keras", "model/saved_model/saved_model.pb"):
        assert f"runs/digits/{key}" in run
    assert any(k.startswith("runs/digits/tensorboard/val/events.out.tfevents") for k in run)
    assert len([k for k in run if k.endswith("checkpoint.json")]) >= 1
    history = [json.loads(line) for line in s3.read("runs/digits/history.jsonl").decode().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    result, scored = cli("eval", config)
    assert result.exit_code == 0, result.output
    written = json.loads(s3.read("runs/digits/eval/test/eval.json"))
    accuracy = written["checkpoints"][0]["metrics"]["accuracy"]
    assert scored["checkpoints"][0]["metrics"]["accuracy"] == accuracy
    assert "runs/digits/eval/test/confusion_matrix.png" in s3.objects("runs/digits/eval")

    # Predictions of the test split from the store agree with eval's accuracy there.
    result, predicted = cli("predict", config, "--input", s3.uri("datasets", "digits"), "--output", s3.uri("preds", "test"))
    assert result.exit_code == 0, result.output
    table = read_store_table(s3, "preds/test")
    assert table.num_rows == ingested["splits"]["test"]
    hits = np.array(table.column("predicted").to_pylist()) == np.array(table.column("label").to_pylist())
    assert hits.mean() == pytest.approx(accuracy)

    result, predicted = cli("predict", config, "--input", s3.uri("raw", "images"), "--output", s3.uri("preds", "digits"))
    assert result.exit_code == 0, result.output
    assert predicted["rows"] == raw["images"]
    assert "preds/digits/_SUCCESS" in s3.objects("preds/digits")
    table = read_store_table(s3, "preds/digits")
    assert table.num_rows == raw["images"]
    probabilities = np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    # --overwrite rebuilds in place; the run's outputs are untouched by it.
    result, rebuilt = cli("ingest", config, "--overwrite")
    assert result.exit_code == 0 and rebuilt["status"] == "written" and rebuilt["replaced"] == "dataset"

    # No secret in any object written, nor in anything the verbs printed.
    for key in s3.objects("datasets") + s3.objects("runs") + s3.objects("preds"):
        body = s3.read(key)
        assert s3.secret.encode() not in body and s3.access_key.encode() not in body, key
    for summary in (ingested, trained, scored, predicted, rebuilt):
        assert s3.secret not in json.dumps(summary) and s3.access_key not in json.dumps(summary)


def test_a_failed_train_on_the_store_leaves_nothing_eval_or_predict_accepts(s3, digits, tmp_path):
    from dltool.config.loader import load_config
    from dltool.errors import DltoolError
    from dltool.train.run import run_training

    config = load_config(digits[0], {"train.run_dir": s3.uri("runs", "failed"), "train.max_retries": 0})
    with pytest.raises(DltoolError, match="injected fault"):
        run_training(config, progress=False, fault={"rank": 0, "epoch": 1, "attempts": [0]})
    run = s3.objects("runs/failed")
    assert "runs/failed/run.json" in run and not [k for k in run if k.endswith("checkpoint.json") or "/model/" in k]
    args = ["--run-dir", s3.uri("runs", "failed")]
    for verb in (["eval", str(digits[0]), *args],
                 ["predict", str(digits[0]), *args, "--input", s3.uri("datasets", "digits"), "--output", s3.uri("preds", "failed")]):  # fmt: skip
        result = CliRunner().invoke(app, verb)
        assert result.exit_code == 2, result.output
        assert "no final model and no complete checkpoint" in result.stderr
    assert not s3.objects("preds/failed")


def test_audio_from_the_store_with_storage_options_on_the_command_line(spark, s3, raw, tmp_path):
    config = store_config(s3, tmp_path, "audio", "sounds", epochs=2)
    options = [arg for key, value in s3.storage.items() for arg in ("--storage-option", f"{key}={value}")]
    result, ingested = cli("ingest", config, *options)
    assert result.exit_code == 0, result.output
    assert ingested["counts"]["inputs"] == raw["audio"] and ingested["counts"]["ok"] >= raw["audio"] - 5
    result, described = cli("inspect", s3.uri("datasets", "sounds"), *options)
    assert result.exit_code == 0, result.output
    assert described["complete"] and described["counts"] == ingested["counts"]
    result, trained = cli("train", config, *options)
    assert result.exit_code == 0, result.output
    assert trained["epochs_done"] == 2
    result, scored = cli("eval", config, *options)
    assert result.exit_code == 0, result.output
    assert scored["dataset"] == s3.uri("datasets", "sounds") and scored["run_dir"] == s3.uri("runs", "sounds")
    assert 0 <= scored["checkpoints"][0]["metrics"]["accuracy"] <= 1
    assert json.loads(s3.read("runs/sounds/eval/test/eval.json"))["checkpoints"] == scored["checkpoints"]


def test_without_settings_the_store_is_a_storage_error_not_a_traceback(spark, s3, raw, tmp_path):
    config = store_config(s3, tmp_path, "images", "nowhere", epochs=1,
                          storage={"endpoint_url": "http://127.0.0.1:9", "anonymous": True})  # fmt: skip
    result = CliRunner().invoke(app, ["ingest", str(config)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dltool: error: {s3.uri('raw', 'images')}: cannot reach")


def test_a_table_without_the_s3a_connector_says_which_package_to_add(spark, s3, tmp_path):
    s3.upload(ROOT / "sample_data" / "tabular", "raw/tabular")
    data = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    data["spark"] = {"master": "local[2]"}
    data["storage"] = s3.storage
    data["ingest"]["input"] = s3.uri("raw", "tabular", data["ingest"]["input"].rsplit("/", 1)[-1])
    data["dataset"]["path"] = str(tmp_path / "churn")
    config = tmp_path / "csv.yaml"
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["ingest", str(config)])
    assert result.exit_code == 2, result.output
    assert "spark.jars.packages=org.apache.hadoop:hadoop-aws:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_killed_ingest_on_the_store_is_never_taken_as_complete(spark, s3, raw, tmp_path):
    """Staged beside the target (a store cannot rename, the commit copies): the kill leaves only a staging
    prefix; train finds no dataset; the rerun clears the prefix and completes. The subprocess has only the
    standard AWS_* variables."""
    import os

    config = store_config(s3, tmp_path, "images", "killed", epochs=1)
    env = {**os.environ, **s3.env}
    command = [sys.executable, "-m", "dltool.cli", "ingest", str(config), "--conf", "spark.ui.enabled=false"]
    process = subprocess.Popen(command, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        struck = _wait_for(lambda: any(k.startswith("datasets/killed.staging-") and k.endswith(".parquet")
                                       and "/_errors/" not in k for k in s3.objects("datasets")), 180, process)  # fmt: skip
    finally:
        _kill_tree(process)
    if not struck:
        pytest.fail("the ingest finished or failed before any shard was written; nothing was killed midway")
    assert not s3.objects("datasets/killed")
    result = subprocess.run([sys.executable, "-m", "dltool.cli", "train", str(config)], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr  # InputNotFoundError: no dataset appeared
    assert "dataset not found" in result.stderr
    result = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "written" and summary["counts"]["ok"] == raw["images"]
    assert "datasets/killed/_SUCCESS" in s3.objects("datasets/killed")
    assert not [k for k in s3.objects("datasets") if k.startswith("datasets/killed.")]  # the killed run's prefix swept


def test_csv_and_table_readers_read_s3_through_spark_s3a(s3, tmp_path):
    """Spark's own s3a connector (hadoop-aws 3.5.0 and the AWS SDK, from Maven: `.ci/hadoop s3a-jars`)
    reads a CSV file and a Parquet table on the store; the datasets go to the store too. The CLI runs in
    its own process: the jars must be on the JVM's classpath from its start."""
    import os

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from tests.conftest import hadoop_launcher

    jars = ",".join(hadoop_launcher().s3a_jars())
    customers = ROOT / "sample_data" / "tabular" / "customers.csv"
    s3.upload(customers.parent, "raw/s3a")
    with s3.fs().open_output_stream(f"{BUCKET}/raw/s3a/customers.parquet/part-0.parquet") as f:
        pq.write_table(pacsv.read_csv(customers), f)
    shipped = yaml.safe_load((ROOT / "configs" / "csv.yaml").read_text())
    table = {key: value for key, value in shipped["ingest"].items() if key not in ("header",)}
    table.update(reader="table", format="parquet", input=s3.uri("raw", "s3a", "customers.parquet"))
    for name, ingest in (("s3a_csv", {**shipped["ingest"], "input": s3.uri("raw", "s3a", customers.name)}),
                         ("s3a_table", table)):
        data = {**shipped, "spark": {"master": "local[2]"}, "ingest": ingest,
                "dataset": {**shipped["dataset"], "path": s3.uri("datasets", name)}}
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "dltool.cli", "ingest", str(config), "--json",
                               "--conf", f"spark.jars={jars}", "--conf", "spark.ui.enabled=false"],
                              capture_output=True, text=True, timeout=300, env={**os.environ, **s3.env})  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["counts"]["rows"] == summary["counts"]["inputs"] > 0, summary
        assert any(k.endswith("_manifest.json") for k in s3.objects(f"datasets/{name}"))

    # The table grows on the store: a new part file is read alone, into version 2 of the same dataset.
    with s3.fs().open_output_stream(f"{BUCKET}/raw/s3a/customers.parquet/part-1.parquet") as f:
        pq.write_table(pacsv.read_csv(customers).slice(0, 40), f)
    done = subprocess.run([sys.executable, "-m", "dltool.cli", "ingest", str(config), "--json", "--conf",
                           f"spark.jars={jars}", "--conf", "spark.ui.enabled=false"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **s3.env})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    grown = json.loads(done.stdout.strip().splitlines()[-1])
    assert grown["status"] == "updated" and grown["version"] == 2, grown
    assert sum(grown["changes"]["added"].values()) == 40 and grown["counts"]["rows"] == summary["counts"]["rows"] + 40
    assert not [k for k in s3.objects("datasets/s3a_table") if "/_typed/" in k]
