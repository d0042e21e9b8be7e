"""CSV ingest on a real local[2] Spark: parsing, per-field quarantine, Spark ML preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pads

from dltool.shards.codec import TensorSpec, decode_tensors
from tests.conftest import ROOT, read_split
from tests.conftest import run_ingest_cli as ingest


def test_csv_config_ingests_with_fitted_preprocessing(spark, tmp_path):
    out = tmp_path / "churn"
    result, summary = ingest(ROOT / "configs" / "csv.yaml", "--output", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["counts"]["inputs"] == 400 and manifest["counts"]["quarantined"] == 0
    assert manifest["label"]["vocabulary"] == ["no", "yes"]
    names = manifest["features"]["names"]
    assert names[:5] == ["age", "income", "tenure_months", "monthly_spend", "support_calls"]
    assert "plan=basic" in names and "region=west" in names
    spec = TensorSpec.from_json(manifest["features"])
    assert spec.shape == (len(names),)
    train = read_split(out, "train")
    features = decode_tensors(train.column("features"), spec)
    assert np.isfinite(features).all()  # missing values were imputed
    # the sample's gaps are at random (4-6% of each numeric column): no `=<missing>` slot says which were
    assert names[5] == "plan=basic" and "gaps" not in json.loads((out / "_preprocess.json").read_text())
    # One-hot slots of each categorical sum to 1 per row.
    plan = [i for i, n in enumerate(names) if n.startswith("plan=")]
    np.testing.assert_array_equal(features[:, plan].sum(axis=1), 1.0)
    # Stats are the train split's per-feature mean.
    np.testing.assert_allclose(manifest["stats"]["mean"], features.mean(axis=0), rtol=1e-4)
    # Keys are the id column; splits partition the rows.
    keys = [k for s in ("train", "val", "test") for k in read_split(out, s).column("key").to_pylist()]
    assert len(keys) == len(set(keys)) == 400 and keys[0].startswith("C")
    # The fitted preprocessing is saved: medians of the train split's observed values, train vocabularies.
    pre = json.loads((out / "_preprocess.json").read_text())
    assert list(pre["numeric"]) == names[:5] and "basic" in pre["categorical"]["plan"]
    import csv
    import math

    train_keys = set(train.column("key").to_pylist())
    with open(ROOT / "sample_data" / "tabular" / "customers.csv", newline="") as f:
        ages = sorted(float(r["age"]) for r in csv.DictReader(f) if r["customer_id"] in train_keys and r["age"])
    assert pre["numeric"]["age"] == ages[math.ceil(len(ages) / 2) - 1]  # Spark's percentile_approx: the lower median


HOSTILE = (
    "\ufeffid,x,y,colour,target\n"
    "r1,1.5,2,red,a\n"
    "r2,2.5,,blue,b\n"  # missing y: imputed
    "r3,3.5,4\n"  # ragged: too few fields
    "r4,4.5,5,red,a,extra\n"  # ragged: too many fields
    'r5,"5,5",6,red,a\n'  # quoted value that is not a number
    "r6,six,6,red,b\n"  # not a number
    "r7,7.5,7,gr\xe9en,a\n"  # latin-1 byte in a UTF-8 file
    "r8,8.5,8,red,\n"  # missing label
    'r9,9.5,9,"light ""blue""",b\n'  # escaped quotes: fine
)


def test_hostile_csv_rows_are_quarantined_with_field_and_row(spark, tmp_path, write_config):
    good = "".join(f"g{i},{i},{i * 2},{'red' if i % 2 else 'blue'},{'a' if i % 3 else 'b'}\n" for i in range(40))
    data = (HOSTILE + good).encode("utf-8").replace("gr\xe9en".encode("utf-8"), b"gr\xe9en")
    (tmp_path / "rows.csv").write_bytes(data)
    config = {
        "name": "hostile_csv",
        "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.2},
        "ingest": {"reader": "csv", "input": str(tmp_path / "rows.csv"), "numeric": ["x", "y"],
                   "categorical": ["colour"], "label": "target"},  # fmt: skip
    }
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["inputs"] == 49
    assert manifest["counts"]["quarantined"] == 6 and manifest["counts"]["ok"] == 43
    errors = {e["key"]: e for e in pads.dataset(str(tmp_path / "out" / "_errors"), format="parquet").to_table().to_pylist()}
    assert set(errors) == {"rows.csv:3", "rows.csv:4", "rows.csv:5", "rows.csv:6", "rows.csv:7", "rows.csv:8"}
    assert errors["rows.csv:3"]["error_class"] == "MalformedRow"
    assert errors["rows.csv:4"]["error_class"] == "MalformedRow"
    assert errors["rows.csv:5"]["message"] == "field x: '5,5' is not a number (a decimal comma? name the column in ingest.decimal_comma)"
    assert errors["rows.csv:6"]["message"] == "field x: 'six' is not a number"
    assert errors["rows.csv:7"]["error_class"] == "EncodingError" and "colour" in errors["rows.csv:7"]["message"]
    assert errors["rows.csv:8"]["message"] == "field target: missing label"
    assert all(e["path"].endswith(f"rows.csv:{e['key'].split(':')[1]}") for e in errors.values())
    kept = [k for s in ("train", "val", "test") for k in read_split(tmp_path / "out", s).column("key").to_pylist()]
    assert {"rows.csv:1", "rows.csv:2", "rows.csv:9"} <= set(kept) and len(kept) == 43
    assert manifest["label"]["vocabulary"] == ["a", "b"]


def test_csv_regression_and_quality_gate(spark, tmp_path, write_config):
    rows = "".join(f"{i},{i % 5},{'x' if i % 2 else 'y'},{i * 0.5}\n" for i in range(60))
    (tmp_path / "t.csv").write_text("a,b,c,value\n" + rows + "bad,1,x,2\n" * 10)
    config = {
        "name": "reg",
        "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.05},
        "ingest": {"reader": "csv", "input": str(tmp_path / "t.csv"), "numeric": ["a", "b"],
                   "categorical": ["c"], "categorical_encoding": "index", "label": "value", "task": "regression",
                   "scale": True},  # fmt: skip
    }
    result, summary = ingest(write_config(config))
    assert result.exit_code == 3 and "10 of 70 inputs quarantined" in result.stderr
    config["dataset"]["max_bad_fraction"] = 0.2
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["label"]["kind"] == "regression" and manifest["features"]["shape"] == [3]
    train = read_split(tmp_path / "out", "train")
    assert str(train.schema.field("label").type) == "float"
    features = decode_tensors(train.column("features"), TensorSpec((3,), "float32"))
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-5)  # scaled on train
    # Labels stay raw floats: value = a * 0.5, and a is recoverable from the scaled feature.
    model_mean, model_std = np.mean(features[:, 0]), np.std(features[:, 0])
    assert abs(model_mean) < 1e-5 and model_std > 0.5
    assert set(train.column("label").to_pylist()) <= {i * 0.5 for i in range(60)}


NON_FINITE = (
    "id,x,y,target\n"
    "n1,inf,0.2,1.0\n"
    "n2,0.3,-inf,2.0\n"
    "n3,NaN,Infinity,3.0\n"
    "n4,0.5,0.6,inf\n"  # a regression target is never imputed
)


def test_non_finite_numbers_are_missing_values_or_quarantined(spark, tmp_path, write_config):
    good = "".join(f"g{i},{i % 7},{i % 5},{i * 0.5}\n" for i in range(40))
    (tmp_path / "t.csv").write_text(NON_FINITE + good)
    config = {
        "name": "non_finite",
        "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.2},
        "ingest": {"reader": "csv", "input": str(tmp_path / "t.csv"), "numeric": ["x", "y"], "label": "target",
                   "task": "regression", "key_column": "id"},  # fmt: skip
    }
    result, _ = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["quarantined"] == 1  # n4, its target
    errors = pads.dataset(str(tmp_path / "out" / "_errors"), format="parquet").to_table().to_pylist()
    assert [(e["key"], e["error_class"], e["message"]) for e in errors] == [
        ("n4", "NonFinite", "field target: 'inf' is not a finite number")
    ]
    spec = TensorSpec.from_json(manifest["features"])
    rows = {}
    for split in ("train", "val", "test"):
        table = read_split(tmp_path / "out", split)
        rows.update(zip(table.column("key").to_pylist(), decode_tensors(table.column("features"), spec)))
    assert np.isfinite(np.stack(list(rows.values()))).all() and np.isfinite(manifest["stats"]["mean"]).all()
    # Imputed with the mean of the finite train values, like an empty field.
    assert rows["n1"][1] == np.float32(0.2) and rows["n2"][0] == np.float32(0.3)
    assert rows["n3"][0] == rows["n1"][0] and rows["n3"][1] == rows["n2"][1]

    config["ingest"]["non_finite"] = "quarantine"
    result, _ = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 0, result.output
    errors = pads.dataset(str(tmp_path / "out" / "_errors"), format="parquet").to_table().to_pylist()
    assert {e["key"]: e["message"] for e in errors} == {
        "n1": "field x: 'inf' is not a finite number",
        "n2": "field y: '-inf' is not a finite number",
        "n3": "field x: 'NaN' is not a finite number",
        "n4": "field target: 'inf' is not a finite number",
    }


def test_a_value_past_max_chars_per_value_is_one_line_naming_the_file(spark, tmp_path, write_config):
    rows = ["id,x,label"] + [f"{i},{i % 7},{'ab'[i % 2]}" for i in range(40)]
    rows.insert(10, '999,"' + "z" * 3000 + ',a')  # an unclosed quote: the rest of the file is one value
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    config = {"name": "h", "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.5},
              "ingest": {"reader": "csv", "input": str(tmp_path / "data.csv"), "numeric": ["x"], "label": "label",
                         "max_chars_per_value": 1024}}  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 3, result.output
    assert summary["message"].startswith(f"{tmp_path / 'data.csv'}: a value is longer than max_chars_per_value")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_file_s_delimiter_is_found_and_a_wrong_one_named_says_which(spark, tmp_path, write_config):
    (tmp_path / "data.csv").write_text("x;city;label\n" + "".join(f"{i};a, b;{'pq'[i % 2]}\n" for i in range(20)))
    config = {"name": "semi", "dataset": {"path": str(tmp_path / "out")},
              "ingest": {"reader": "csv", "input": str(tmp_path / "data.csv"), "numeric": ["x"], "label": "label"}}
    result, summary = ingest(write_config(config))  # no delimiter set: the file's own
    assert result.exit_code == 0 and summary["counts"]["rows"] == 20 and summary["counts"]["quarantined"] == 0, result.output
    config["ingest"]["delimiter"] = ","
    result, summary = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 2, result.output
    assert summary["message"].endswith("its fields are split by ';': set ingest.delimiter: ';'"), summary["message"]
    (tmp_path / "data.tsv").write_text("".join(f"{i}\ta, b\t{'pq'[i % 2]}\n" for i in range(20)))  # no header: tabs
    config["ingest"] = {**config["ingest"], "input": str(tmp_path / "data.tsv"), "header": False,
                        "columns": ["x", "city", "label"]}  # fmt: skip
    del config["ingest"]["delimiter"]
    result, summary = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 0 and summary["counts"]["rows"] == 20 and summary["counts"]["quarantined"] == 0, result.output
    # a note over two lines, quoted: multiline is found, and each record is one row
    (tmp_path / "data.csv").write_text("x;city;label\n" + "".join(f'{i};"a,\nb";{"pq"[i % 2]}\n' for i in range(20)))
    config["ingest"] = {"reader": "csv", "input": str(tmp_path / "data.csv"), "numeric": ["x"], "label": "label",
                        "passthrough": ["city"]}  # fmt: skip
    result, summary = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 0 and summary["counts"]["rows"] == 20 and summary["counts"]["quarantined"] == 0, result.output
    assert set(read_split(tmp_path / "out", "train").column("city").to_pylist()) == {"a,\nb"}


def test_a_table_whose_every_row_is_quarantined_says_why_in_one_line(spark, tmp_path, write_config):
    (tmp_path / "data.csv").write_text("x,label\n" + "".join(f"{i} m/s,{'pq'[i % 2]}\n" for i in range(20)))
    config = {"name": "none", "dataset": {"path": str(tmp_path / "out")},
              "ingest": {"reader": "csv", "input": str(tmp_path / "data.csv"), "numeric": ["x"], "label": "label"}}
    result, summary = ingest(write_config(config))
    assert result.exit_code == 2, result.output
    assert "no valid rows fall in the train split" in summary["message"] and "20 rows quarantined, the first" in \
        summary["message"] and "is not a number (a unit? name the column's unit in ingest.units: {x: m/s})" in \
        summary["message"], summary["message"]  # fmt: skip
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_windows_export_reads_in_its_encoding_and_a_repeated_column_is_numbered(spark, tmp_path, write_config):
    cities = ["Zürich", "Genève", "Bern"]
    rows = [f"{i},{i / 10},{cities[i % 3]},{i % 7},{'pq'[i % 2]}" for i in range(40)]
    text = ",x,city,x,label\r\n" + "\r\n".join(rows) + "\r\n"  # pandas' index first: a column with no name
    (tmp_path / "data.csv").write_bytes(text.encode("cp1252"))
    config = {"name": "win", "dataset": {"path": str(tmp_path / "out")},
              "ingest": {"reader": "csv", "input": str(tmp_path / "data.csv"), "numeric": "auto", "categorical": "auto",
                         "label": "label", "encoding": "utf-8"}}  # fmt: skip
    result, summary = ingest(write_config(config))  # read as UTF-8, as the config says: the first bad row says why
    assert result.exit_code == 3, result.output
    assert summary["message"].endswith("field city: bytes that are not valid utf-8 (a file in another encoding? set "
                                       "ingest.encoding, e.g. cp1252)"), summary["message"]  # fmt: skip
    # Left out, the encoding is the file's: cp1252, then Excel's "Unicode text" (UTF-16 with its mark, tabs)
    del config["ingest"]["encoding"]
    (tmp_path / "unicode.csv").write_bytes(text.replace(",", "\t").encode("utf-16"))
    # and a file whose first accent comes after a first MB of ASCII rows
    plain = "".join(f"{i},{i / 10},Bern,{i % 7},{'pq'[i % 2]}\r\n" for i in range(40, 80_000))  # 1.9 MB
    (tmp_path / "late.csv").write_bytes((",x,city,x,label\r\n" + plain + "\r\n".join(rows) + "\r\n").encode("cp1252"))
    for name in ("data.csv", "unicode.csv", "late.csv"):
        config["ingest"]["input"] = str(tmp_path / name)
        result, summary = ingest(write_config(config), "--overwrite")
        assert result.exit_code == 0 and summary["counts"]["quarantined"] == 0, result.output
        manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
        assert manifest["columns"]["numeric"] == ["x", "x_2"] and manifest["columns"]["categorical"] == ["city"]
        assert manifest["columns"]["left_out"]["_c0"].startswith("an id: ")  # named as Spark names it, not a feature
        pre = json.loads((tmp_path / "out" / "_preprocess.json").read_text())
        assert pre["categorical"]["city"] == sorted(cities)
        assert sum(summary["splits"].values()) == (40 if name != "late.csv" else 80_000), summary


def test_reports_with_a_title_above_their_header_are_read_from_each_files_header(spark, tmp_path, write_config):
    rows = lambda n, bad: "".join(f"{i},{i * 1.5 if i != bad else 'oops'},{'ab'[i % 2]}\n" for i in range(n))  # noqa: E731
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("Sales report,,\n,,\nid,amount,label\n" + rows(30, 7))
    (tmp_path / "in" / "b.csv").write_text("id,amount,label\n" + rows(20, 4))  # no title: its header is line 1
    (tmp_path / "in" / "c.csv").write_text("Another title\nid,amount,label\n" + rows(10, -1))  # one field
    (tmp_path / "in" / "d.csv").write_text(rows(5, -1))  # no header at all: every record is a row
    config = {"name": "report", "dataset": {"path": str(tmp_path / "out")},
              "ingest": {"reader": "csv", "input": str(tmp_path / "in"), "numeric": ["amount"], "label": "label"}}
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0 and summary["counts"]["inputs"] == 65, result.output
    assert sum(summary["splits"].values()) == 63 and summary["counts"]["quarantined"] == 2
    assert sorted(e["key"] for e in summary["errors"]) == ["a.csv:8", "b.csv:5"]  # rows numbered from each header
    assert any("a title above the header ('id,amount,label', record 3 of the first file)" in w
               for w in summary["warnings"]), summary["warnings"]  # fmt: skip
    config["ingest"]["input"] = str(tmp_path / "report.csv")
    (tmp_path / "report.csv").write_bytes(b"PK\x03\x04" + bytes(range(256)))  # a workbook, named .csv
    result, summary = ingest(write_config(config))
    assert result.exit_code == 2 and summary["message"].endswith("not text but a ZIP or Office file (a spreadsheet "
                                                                 "workbook?): save it as CSV"), summary  # fmt: skip


def test_a_label_of_many_numbers_is_a_regression_target_without_a_task(spark, tmp_path, write_config):
    (tmp_path / "data.csv").write_text("x,price,grade\n" + "".join(f"{i},{3.5 * i + 0.25},{i % 5}\n" for i in range(60)))
    config = {"name": "price", "dataset": {"path": str(tmp_path / "out")},
              "ingest": {"reader": "csv", "input": str(tmp_path / "data.csv"), "numeric": ["x"], "label": "price"}}
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["label"]["kind"] == "regression" and summary["labels"] is None
    assert manifest["columns"]["task"] == ("regression (auto: the label has 59 distinct numbers; set task: "
                                           "classification if they are classes)")  # the last line read may be cut
    config["ingest"]["label"] = "grade"  # 5 distinct integers: classes
    result, summary = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 0 and summary["labels"] == ["0", "1", "2", "3", "4"], result.output
