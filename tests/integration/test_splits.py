"""Split sources on a real local[2] Spark: folders that name the splits, a split column, groups, stratification."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import cv2
import numpy as np
import pytest

from tests.conftest import read_split
from tests.conftest import run_ingest_cli as ingest

SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def keys_by_split(out) -> dict[str, list[str]]:
    """Each split's keys (a split that received no rows has no folder)."""
    return {s: read_split(out, s).column("key").to_pylist() if (out / s).exists() else [] for s in ("train", "val", "test")}


def write_image(path, colour: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((8, 8, 3), colour, np.uint8)
    cv2.imwrite(str(path), image)


def test_train_and_test_folders_are_the_splits_and_val_is_carved_from_train(spark, tmp_path, write_config):
    root = tmp_path / "images"
    for split, n in (("train", 20), ("test", 4)):
        for c, colour in (("cat", 40), ("dog", 200)):
            for i in range(n):
                write_image(root / split / c / f"{c}{i:02d}.png", colour + i + (25 if split == "test" else 0))
    write_image(root / "misc" / "cat" / "stray.png", 10)  # no split folder: quarantined at stage split
    config = {
        "name": "folders", "dataset": {"path": str(tmp_path / "out"), "split": {"by": "path", "val_from_train": 0.25}},
        "ingest": {"reader": "image", "input": str(root), "size": [8, 8], "channels": 3, "resize": "stretch"},
    }  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    keys = keys_by_split(tmp_path / "out")
    assert sorted(keys["test"]) == sorted(f"test/{c}/{c}{i:02d}.png" for c in ("cat", "dog") for i in range(4))
    assert all(k.startswith("train/") for k in keys["train"] + keys["val"])
    per_class = Counter(k.split("/")[1] for k in keys["val"])
    assert per_class == {"cat": 5, "dog": 5}  # stratified: a quarter of each class's 20
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["label"]["vocabulary"] == ["cat", "dog"] and manifest["warnings"] == []
    assert summary["counts"]["quarantined"] == 1
    assert summary["errors"][0]["stage"] == "split" and "does not match" in summary["errors"][0]["message"]


def test_a_split_column_names_the_splits_and_unknown_names_are_quarantined(spark, tmp_path, write_config):
    rows = ["id,x,colour,fold,target"]
    for i in range(60):
        fold = "Train" if i < 40 else "holdout"
        rows.append(f"r{i},{i % 7},{'red' if i % 2 else 'blue'},{fold},{'a' if i % 3 else 'b'}")
    rows.append("r99,1,red,somewhere,a")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    config = {
        "name": "fold", "dataset": {"path": str(tmp_path / "out"), "max_bad_fraction": 0.1,
                                    "split": {"by": "column", "column": "fold", "names": {"holdout": "test"}}},
        "ingest": {"reader": "csv", "input": str(tmp_path / "t.csv"), "numeric": ["x"], "categorical": ["colour"],
                   "label": "target", "key_column": "id"},
    }  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    keys = keys_by_split(tmp_path / "out")
    assert sorted(keys["test"]) == sorted(f"r{i}" for i in range(40, 60))
    assert len(keys["val"]) == 4 and len(keys["train"]) == 36  # val_from_train 0.1 of the 40 train rows
    assert set(keys["val"]) <= {f"r{i}" for i in range(40)}
    assert summary["counts"]["quarantined"] == 1
    error = summary["errors"][0]
    assert error["key"] == "r99" and error["error_class"] == "UnknownSplit" and "'somewhere'" in error["message"]


def test_a_group_column_keeps_each_group_in_one_split_and_stratify_keeps_the_fractions(spark, tmp_path, write_config):
    rows = ["id,patient,x,target"]
    for p in range(60):
        for v in range(4):
            rows.append(f"p{p}v{v},P{p:02d},{p + v},{'sick' if p % 4 == 0 else 'well'}")
    (tmp_path / "visits.csv").write_text("\n".join(rows) + "\n")
    config = {
        "name": "visits", "dataset": {"path": str(tmp_path / "out"), "split": {"group": "patient", "stratify": True}},
        "ingest": {"reader": "csv", "input": str(tmp_path / "visits.csv"), "numeric": ["x"], "label": "target",
                   "key_column": "id", "passthrough": ["patient"]},
    }  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    splits_of = defaultdict(set)
    patients = defaultdict(Counter)
    for split in ("train", "val", "test"):
        table = read_split(tmp_path / "out", split)
        for patient in table.column("patient").to_pylist():
            splits_of[patient].add(split)
            patients[split][patient] += 1
    assert all(len(s) == 1 for s in splits_of.values())
    sick = {s: sum(1 for p in patients[s] if int(p[1:]) % 4 == 0) for s in patients}
    assert sick == {"train": 12, "val": 2, "test": 1} or sick == {"train": 12, "val": 1, "test": 2}  # 15 sick patients
    assert sum(len(patients[s]) for s in patients) == 60 and len(patients["train"]) == 48


def test_a_file_copied_into_train_and_test_is_reported_refused_or_dropped(spark, tmp_path, write_config):
    root = tmp_path / "images"
    for split in ("train", "val", "test"):
        for c, colour in (("cat", 40), ("dog", 200)):
            for i in range(6):
                write_image(root / split / c / f"{split}{i}.png", colour + i + 10 * SPLIT_OFFSET[split])
    (root / "test" / "cat" / "copy.png").write_bytes((root / "train" / "cat" / "train0.png").read_bytes())
    config = {
        "name": "leak", "dataset": {"path": str(tmp_path / "out"), "split": {"by": "path"}},
        "ingest": {"reader": "image", "input": str(root), "size": [8, 8], "channels": 3, "resize": "stretch"},
    }  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["duplicates"] == {"records": 2, "contents": 1, "dropped": 0,
                                      "examples": [{"splits": ["test", "train"],
                                                    "keys": ["test/cat/copy.png", "train/cat/train0.png"]}]}  # fmt: skip
    assert any("2 records have the same content" in w for w in summary["warnings"])
    from typer.testing import CliRunner

    from dltool.cli import app

    shown = CliRunner().invoke(app, ["inspect", str(tmp_path / "out"), "--json"])
    assert json.loads(shown.stdout)["duplicates"]["records"] == 2
    shown = CliRunner().invoke(app, ["inspect", str(tmp_path / "out")])
    assert "same content in test, train: test/cat/copy.png, train/cat/train0.png" in shown.stderr

    config["dataset"]["on_duplicates"] = "fail"
    result, summary = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 3 and "on_duplicates is fail" in summary["message"]

    config["dataset"]["on_duplicates"] = "drop_from_eval"
    result, summary = ingest(write_config(config), "--overwrite")
    assert result.exit_code == 0, result.output
    keys = keys_by_split(tmp_path / "out")
    assert "test/cat/copy.png" not in keys["test"] and "train/cat/train0.png" in keys["train"]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["duplicates"]["dropped"] == 1 and manifest["splits"]["test"]["per_class"] == {"cat": 6, "dog": 6}


@pytest.mark.parametrize("where", ["driver", "spark"])
def test_identical_table_rows_across_splits_are_found_after_normalising(spark, tmp_path, write_config, monkeypatch, where):
    from dltool.ingest import tables as table_ingest

    monkeypatch.setattr(table_ingest, "DRIVER_DUPLICATES", 1_000_000 if where == "driver" else 0)  # who counts: driver or Spark
    rows = ["id,x,colour,fold,target"] + [f"r{i},{i},red,{'train' if i < 30 else 'test'},a" for i in range(40)]
    rows += ["dup1, 3.0 ,red ,test,a", "dup2,3,red,val,a"]  # the same typed row as r3 (train)
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    config = {
        "name": "rows", "dataset": {"path": str(tmp_path / "out"), "on_duplicates": "drop_from_eval",
                                    "split": {"by": "column", "column": "fold"}},
        "ingest": {"reader": "csv", "input": str(tmp_path / "t.csv"), "numeric": ["x"], "categorical": ["colour"],
                   "label": "target", "key_column": "id"},
    }  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["duplicates"]["records"] == 3 and manifest["duplicates"]["dropped"] == 2
    assert sorted(manifest["duplicates"]["examples"][0]["keys"]) == ["dup1", "dup2", "r3"]
    keys = keys_by_split(tmp_path / "out")
    assert "dup1" not in keys["test"] and keys["val"] == [] and "r3" in keys["train"]
    assert manifest["counts"]["ok"] == 42 and manifest["counts"]["rows"] == 40


def test_a_kaggle_style_train_and_test_csv_pair_splits_by_file(spark, tmp_path, write_config):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    header = "id,x,colour,target\n"
    (folder / "train.csv").write_text(header + "".join(f"a{i},{i},{'red' if i % 2 else 'blue'},{'yn'[i % 2]}\n"
                                                       for i in range(50)))  # fmt: skip
    (folder / "test.csv").write_text(header + "".join(f"b{i},{i + 0.5},red,{'yn'[i % 2]}\n" for i in range(10))
                                     + "a3,99,red,y\n")  # an id that train has too: the row stays in test  # fmt: skip
    (folder / "extra.csv").write_text(header + "c0,1,red,y\n")  # names no split: its row is quarantined
    config = {
        "name": "kaggle", "dataset": {"path": str(tmp_path / "out"), "split": {"by": "path"}, "max_bad_fraction": 0.1},
        "ingest": {"reader": "csv", "input": str(folder), "numeric": ["x"], "categorical": ["colour"],
                   "label": "target", "key_column": "id"},
    }  # fmt: skip
    result, summary = ingest(write_config(config))
    assert result.exit_code == 0, result.output
    keys = keys_by_split(tmp_path / "out")
    assert sorted(keys["test"]) == sorted([*(f"b{i}" for i in range(10)), "a3"])
    assert len(keys["val"]) == 4 and len(keys["train"]) == 46  # val_from_train 0.1 of 25 y and of 25 n: 2 each
    assert summary["errors"][0]["message"] == "file 'extra.csv' names no split (train, val, test, or one of dataset.split.names)"
