"""The `table` reader on a real local[2] Spark: Parquet with vector and array columns, ORC, JSON lines, a catalog table."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pads
import pytest

from dltool.shards.codec import TensorSpec, decode_tensors
from dltool.ingest.results import IngestResult
from tests.conftest import read_split


def people(spark, rows: int = 40):
    """A small typed table: numbers (one NaN, one inf), a boolean, a category, an ML vector, an array, a label."""
    from pyspark.ml.linalg import Vectors

    data = []
    for i in range(rows):
        age = float("nan") if i == 3 else float("inf") if i == 4 else float(20 + i)
        array = [0.5 * i, -1.0] if i != 7 else [1.0]  # row 7: the wrong length
        data.append((f"p{i:03d}", age, i % 2 == 0, ["red", "blue", "green"][i % 3], Vectors.dense([i, 2.0 * i, 1.0]),
                     array, "yes" if i % 4 == 0 else "no"))  # fmt: skip
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("id", T.StringType()), T.StructField("age", T.DoubleType()),
        T.StructField("member", T.BooleanType()), T.StructField("colour", T.StringType()),
        T.StructField("emb", VectorUDT()), T.StructField("arr", T.ArrayType(T.DoubleType())),
        T.StructField("churn", T.StringType()),
    ])  # fmt: skip
    return spark.createDataFrame(data, schema)


def ingest(config: dict) -> IngestResult:
    from dltool.config.models import ExperimentConfig
    from dltool.ingest.run import run_ingest

    return run_ingest(ExperimentConfig.model_validate(config), progress=False)


def rows_by_key(out) -> dict[str, np.ndarray]:
    manifest = json.loads((out / "_manifest.json").read_text())
    spec = TensorSpec.from_json(manifest["features"])
    rows = {}
    for split in ("train", "val", "test"):
        table = read_split(out, split)
        rows.update(zip(table.column("key").to_pylist(), decode_tensors(table.column("features"), spec)))
    return rows


def table_config(tmp_path, source: str, fmt: str, **extra) -> dict:
    return {
        "name": "people",
        "dataset": {"path": str(tmp_path / f"out-{fmt}"), "max_bad_fraction": 0.1},
        "ingest": {"reader": "table", "format": fmt, "input": source, "numeric": ["age", "member"],
                   "categorical": ["colour"], "vectors": ["emb", "arr"], "label": "churn", "key_column": "id", **extra},
    }  # fmt: skip


def test_parquet_with_vector_and_array_columns_becomes_feature_slots(spark, tmp_path):
    people(spark).write.parquet(str(tmp_path / "people.parquet"))
    ingest(table_config(tmp_path, str(tmp_path / "people.parquet"), "parquet"))
    out = tmp_path / "out-parquet"
    manifest = json.loads((out / "_manifest.json").read_text())
    names = manifest["features"]["names"]
    assert names[:2] == ["age", "member"] and names[-5:] == ["emb[0]", "emb[1]", "emb[2]", "arr[0]", "arr[1]"]
    assert "colour=red" in names and manifest["label"]["vocabulary"] == ["no", "yes"]
    assert manifest["counts"]["inputs"] == 40 and manifest["counts"]["quarantined"] == 1
    errors = pads.dataset(str(out / "_errors"), format="parquet").to_table().to_pylist()
    assert [(e["key"], e["reader"], e["message"]) for e in errors] == [("p007", "table", "field arr: 1 values, expected 2")]
    rows = rows_by_key(out)
    assert len(rows) == 39 and np.isfinite(np.stack(list(rows.values()))).all()
    np.testing.assert_array_equal(rows["p010"][-5:], [10.0, 20.0, 1.0, 5.0, -1.0])
    assert rows["p010"][1] == 1.0 and rows["p011"][1] == 0.0  # booleans are 0/1
    assert rows["p003"][0] == rows["p004"][0]  # NaN and inf are missing values, imputed alike
    assert rows["p003"][0] == pytest.approx(manifest["stats"]["mean"][0], rel=1e-5)


@pytest.mark.parametrize("fmt", ["orc", "json"])
def test_orc_and_json_lines_give_the_parquet_features(spark, tmp_path, fmt):
    from pyspark.ml.functions import vector_to_array

    frame = people(spark)
    frame = frame.withColumn("emb", vector_to_array("emb"))  # ML vectors are Spark-only: an array in ORC and JSON
    getattr(frame.write, fmt)(str(tmp_path / f"people.{fmt}"))
    frame.write.parquet(str(tmp_path / "people.parquet"))
    ingest(table_config(tmp_path, str(tmp_path / f"people.{fmt}"), fmt))
    ingest(table_config(tmp_path, str(tmp_path / "people.parquet"), "parquet"))
    got, expected = rows_by_key(tmp_path / f"out-{fmt}"), rows_by_key(tmp_path / "out-parquet")
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)


def test_nested_json_becomes_columns_by_path_and_a_list_of_tags_words(spark, tmp_path):
    lines = [{"id": i, "user": {"age": 20 + i % 9, "home": {"country": "de" if i % 3 else None}},
              "tags": [["sale"], ["new", "sale"], [], ["sale", "new"]][i % 4], "label": "ab"[i % 2]} for i in range(40)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = {"name": "events", "dataset": {"path": str(tmp_path / "out")},
              "ingest": {"reader": "table", "format": "json", "input": str(tmp_path / "events.jsonl"), "numeric": "auto",
                         "categorical": "auto", "label": "label", "key_column": "id"}}  # fmt: skip
    ingest(config)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    names = manifest["features"]["names"]
    assert names == ["user.age", "user.home.country=de", "user.home.country=<other>", "tags~new", "tags~sale"], names
    assert manifest["columns"]["left_out"] == {}
    rows = rows_by_key(tmp_path / "out")
    np.testing.assert_array_equal(rows["1"][-2:], [1.0, 1.0])  # new and sale, in either order
    np.testing.assert_array_equal(rows["2"][-2:], [0.0, 0.0])
    assert rows["2"][0] == 22.0 and rows["3"][1:3].tolist() == [0.0, 1.0]  # row 3 has no country


def test_a_catalog_table_by_name(spark, tmp_path):
    people(spark).createOrReplaceTempView("dltool_people")
    ingest(table_config(tmp_path, "dltool_people", "table"))
    manifest = json.loads((tmp_path / "out-table" / "_manifest.json").read_text())
    assert manifest["counts"]["ok"] == 39 and manifest["features"]["shape"] == [len(manifest["features"]["names"])]


def test_unknown_columns_and_wrong_vector_types_are_config_errors(spark, tmp_path):
    from dltool.errors import ConfigError

    people(spark).write.parquet(str(tmp_path / "people.parquet"))
    source = str(tmp_path / "people.parquet")
    with pytest.raises(ConfigError, match=r"columns \['height'\] named in ingest are not in the data"):
        ingest(table_config(tmp_path, source, "parquet", numeric=["height"]))
    with pytest.raises(ConfigError, match="ingest.vectors: column colour is string, not an array of numbers"):
        ingest(table_config(tmp_path, source, "parquet", categorical=[], vectors=["colour"]))
    with pytest.raises(ConfigError, match=r"ingest.numeric: column arr is array<double>, .*list it under `vectors:`"):
        ingest(table_config(tmp_path, source, "parquet", numeric=["age", "arr"], vectors=["emb"]))


@pytest.mark.parametrize("impute", ["median", "mode"])
def test_fills_computed_on_the_driver_equal_sparks(spark, tmp_path, impute):
    """Small tables impute on the driver with pyarrow; the values must be Spark's percentile_approx and mode."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from dltool.ingest.tables import TYPED, _fills_here
    from dltool.storage.fs import open_location

    rng = np.random.default_rng(3)
    n = 501
    x = rng.integers(0, 7, n).astype(float)  # many ties: the mode's tie rule matters
    x[rng.random(n) < 0.1] = np.nan
    table = pa.table({"x": pa.array(x, from_pandas=True), "a.b": rng.normal(size=n).round(2),
                      "split": rng.choice(["train", "train", "val"], n)})  # fmt: skip
    (tmp_path / TYPED).mkdir()
    pq.write_table(table.slice(0, 250), tmp_path / TYPED / "part-00000.parquet")
    pq.write_table(table.slice(250), tmp_path / TYPED / "part-00001.parquet")

    class Settings:
        pass

    Settings.impute = impute
    here = _fills_here(Settings, ["x", "a.b"], open_location(str(tmp_path)))
    train = spark.read.parquet(str(tmp_path / TYPED)).where(F.col("split") == "train")
    columns = [F.col("x"), F.col("`a.b`")]
    if impute == "median":
        row = train.agg(*[F.percentile_approx(c, 0.5, 1000) for c in columns]).first()
    else:
        row = train.agg(*[F.mode(c, deterministic=True) for c in columns]).first()
    assert here == {"x": float(row[0]), "a.b": float(row[1])}
