"""A file dataset that grows: each ingest of new, changed or removed files adds a version; old ones stay readable."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from dltool.cli import app
from dltool.storage.fs import open_dataset
from dltool.storage.manifest import Manifest
from tests.conftest import ROOT
from tests.conftest import run_ingest_cli as ingest


def _config(write_config, tmp_path, **dataset) -> str:
    return str(write_config({
        "name": "grow", "spark": {"master": "local[2]", "conf": {"spark.ui.enabled": False}},
        "dataset": {"path": str(tmp_path / "ds"), "split": {"train": 0.7, "val": 0.15, "test": 0.15, "stratify": True},
                    **dataset},
        "ingest": {"reader": "image", "input": str(tmp_path / "imgs"), "label": {"source": "parent_dir"},
                   "size": [16, 16], "channels": 3, "augment": {"copies": 1, "rotate": 10}},
    }))  # fmt: skip


def _version(dataset) -> dict[str, tuple[str, bytes]]:
    """key -> (split, feature bytes) of every row of a version, read from the shards its manifest names."""
    location = open_dataset(str(dataset))
    manifest = Manifest.read(location)
    rows = {}
    for split, entry in manifest.splits.items():
        for file in entry.files:
            table = pq.read_table(location.child(file).path, columns=["key", "features"])
            rows.update((k, (split, f)) for k, f in zip(table.column("key").to_pylist(), table.column("features").to_pylist()))
    assert len(rows) == manifest.counts.rows
    return rows


def _new_image(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))


def test_a_dataset_grows_in_three_steps_and_every_version_stays_as_it_was(spark, tmp_path, write_config):
    shutil.copytree(ROOT / "sample_data" / "images", tmp_path / "imgs")
    config = _config(write_config, tmp_path)
    result, first = ingest(config)
    assert result.exit_code == 0, result.output
    assert first["status"] == "written" and first["version"] == 1
    v1 = _version(tmp_path / "ds")

    # 1. New files, in every class: decoded alone, into shards of version 2.
    for i in range(40):
        _new_image(tmp_path / "imgs" / str(i % 10) / f"new-{i:03d}.png", seed=i)
    result, grown = ingest(config)
    assert result.exit_code == 0, result.output
    assert grown["status"] == "updated" and grown["version"] == 2
    assert sum(grown["changes"]["added"].values()) == 40 and not grown["changes"]["changed"] and not grown["changes"]["removed"]
    assert grown["counts"]["inputs"] == grown["counts"]["ok"] == 640
    v2 = _version(tmp_path / "ds")
    assert {k: v for k, v in v2.items() if k in v1} == v1  # every old row as it was, split included
    assert sum(1 for k in v2 if k.startswith(tuple(f"{c}/new-" for c in "0123456789")) and "#" not in k) == 40
    new_files = {f for e in Manifest.read(open_dataset(str(tmp_path / "ds"))).splits.values() for f in e.files} - \
        {f for e in Manifest.read(open_dataset(f"{tmp_path / 'ds'}@1")).splits.values() for f in e.files}  # fmt: skip
    assert new_files and all("/part-v00002-" in f for f in new_files)

    # 2. A changed file: decoded again, its rows replaced, its split kept.
    changed = next(k for k, (split, _) in v1.items() if "#" not in k and split == "train" and k.endswith(".png"))
    _new_image(tmp_path / "imgs" / changed, seed=99)
    os.utime(tmp_path / "imgs" / changed, ns=(1, 10**18))
    result, step = ingest(config)
    assert result.exit_code == 0, result.output
    assert step["version"] == 3 and step["changes"]["changed"] == {"train": 1} and not step["changes"]["added"]
    v3 = _version(tmp_path / "ds")
    assert v3[changed][0] == "train" and v3[changed][1] != v1[changed][1]
    assert {k: v for k, v in v3.items() if not k.startswith(changed)} == {k: v for k, v in v2.items() if not k.startswith(changed)}

    # 3. Removed files: their rows (augmented copies too) leave; the rest stays.
    removed = sorted(k for k in v1 if "#" not in k and k != changed)[:5]
    for key in removed:
        (tmp_path / "imgs" / key).unlink()
    result, step = ingest(config)
    assert result.exit_code == 0, result.output
    assert step["version"] == 4 and sum(step["changes"]["removed"].values()) == 5
    assert step["counts"]["inputs"] == step["counts"]["ok"] == 635
    v4 = _version(tmp_path / "ds")
    assert not [k for k in v4 if k.split("#")[0] in removed]
    assert {k: v for k, v in v4.items()} == {k: v for k, v in v3.items() if k.split("#")[0] not in removed}
    manifest = Manifest.read(open_dataset(str(tmp_path / "ds")))
    for split, entry in manifest.splits.items():  # the counts per split and class add up to the rows
        assert sum(entry.per_class.values()) == entry.rows == sum(1 for s, _ in v4.values() if s == split)
    assert manifest.counts.augmented == sum(1 for k in v4 if "#aug" in k)

    # Every version reads as it was: @1 has exactly the first ingest's keys and tensors.
    assert _version(f"{tmp_path / 'ds'}@1") == v1 and _version(f"{tmp_path / 'ds'}@2") == v2
    from dltool.api import load_dataset

    assert load_dataset(f"{tmp_path / 'ds'}@1", split=None, spark=spark).count() == len(v1)
    inspected = CliRunner().invoke(app, ["inspect", str(tmp_path / "ds"), "--json"])
    versions = json.loads(inspected.stdout)["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3, 4] and json.loads(inspected.stdout)["version"] == 4
    assert [sum(v["added"].values()) for v in versions] == [600, 40, 0, 0]
    missing = CliRunner().invoke(app, ["inspect", f"{tmp_path / 'ds'}@7"])
    assert missing.exit_code != 0 and "versions 1 to 4" in missing.output

    # Nothing changed: nothing to do. A new class: refused (the models cannot learn it), or quarantined.
    result, same = ingest(config)
    assert same["status"] == "up_to_date"
    _new_image(tmp_path / "imgs" / "extra" / "x.png", seed=7)
    result, _ = ingest(config)
    assert result.exit_code == 2 and "new class 'extra'" in result.output
    result, step = ingest(_config(write_config, tmp_path, new_classes="quarantine"))
    assert result.exit_code == 0, result.output
    assert step["version"] == 5 and step["changes"]["quarantined"] == 1 and step["counts"]["quarantined"] == 1
    assert step["labels"] == [str(d) for d in range(10)]

    # gc keeps the newest versions readable and removes what only older ones used.
    collected = CliRunner().invoke(app, ["gc", str(tmp_path / "ds"), "--keep", "2", "--json"])
    assert collected.exit_code == 0, collected.output
    gone = json.loads(collected.stdout)
    assert gone["kept"] == [4, 5] and gone["removed_versions"] == [1, 2, 3] and gone["files"] > 0
    assert _version(f"{tmp_path / 'ds'}@4") == v4
    assert CliRunner().invoke(app, ["inspect", str(tmp_path / "ds"), "--verify"]).exit_code == 0
    old = CliRunner().invoke(app, ["inspect", f"{tmp_path / 'ds'}@2"])
    assert old.exit_code != 0 and "was removed (by `dltool gc`" in old.output
    versions = json.loads(CliRunner().invoke(app, ["inspect", str(tmp_path / "ds"), "--json"]).stdout)["versions"]
    assert [v["readable"] for v in versions] == [False, False, False, True, True]
    (tmp_path / "theirs").mkdir()
    refused = CliRunner().invoke(app, ["gc", str(tmp_path / "theirs")])
    assert refused.exit_code == 2 and "not a folder dltool wrote" in refused.output

    # --refit learns the new class: every shard rewritten as version 6, every record in the split it had.
    v5 = _version(tmp_path / "ds")
    result, step = ingest(config, "--refit")
    assert result.exit_code == 0, result.output
    assert step["version"] == 6 and step["labels"] == [*map(str, range(10)), "extra"]
    v6 = _version(tmp_path / "ds")
    assert {k: s for k, (s, _) in v6.items() if k in v5} == {k: s for k, (s, _) in v5.items()}
    assert sum(1 for k in v6 if k.startswith("extra/")) >= 1
    entry = Manifest.read(open_dataset(str(tmp_path / "ds"))).versions[-1]
    assert entry["refit"] is True and sum(entry["added"].values()) == 1


def test_a_failed_growth_keeps_the_last_version_and_the_rerun_completes(spark, tmp_path, write_config):
    shutil.copytree(ROOT / "sample_data" / "images", tmp_path / "imgs")
    config = _config(write_config, tmp_path, max_bad_fraction=0.01)
    assert ingest(config)[0].exit_code == 0
    before = _version(tmp_path / "ds")
    for i in range(20):
        _new_image(tmp_path / "imgs" / str(i % 10) / f"new-{i}.png", seed=i)
    for i in range(10):  # more broken files than max_bad_fraction allows: the new version is not made
        (tmp_path / "imgs" / str(i) / f"broken-{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    result, _ = ingest(config)
    assert result.exit_code == 3, result.output
    assert Manifest.read(open_dataset(str(tmp_path / "ds"))).version == 1 and _version(tmp_path / "ds") == before
    for i in range(10):
        (tmp_path / "imgs" / str(i) / f"broken-{i}.png").unlink()
    result, step = ingest(config)
    assert result.exit_code == 0, result.output
    assert step["version"] == 2 and sum(step["changes"]["added"].values()) == 20
    augmented = step["changes"]["added"].get("train", 0)  # a train file has an augmented copy
    assert len(_version(tmp_path / "ds")) == len(before) + 20 + augmented


def _rows(n: int, start: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(f"{start + i},{rng.normal():.4f},{'abc'[i % 3]},{'yes' if i % 2 else 'no'}\n" for i in range(n))


def test_a_table_grows_by_files_and_keeps_its_rows_splits_and_preprocessing(spark, tmp_path, write_config):
    folder = tmp_path / "tab"
    folder.mkdir()
    (folder / "a.csv").write_text("id,x,c,y\n" + _rows(60, 0, 1) + "999,oops,a,no\n")  # one row quarantined
    (folder / "b.csv").write_text("id,x,c,y\n" + _rows(60, 100, 2))
    table = {"name": "t", "spark": {"master": "local[2]", "conf": {"spark.ui.enabled": False}},
             "dataset": {"path": str(tmp_path / "ds"), "split": {"stratify": True}, "max_bad_fraction": 0.05},
             "ingest": {"reader": "csv", "input": str(folder), "label": "y", "numeric": ["x"], "categorical": ["c"]}}
    config = write_config(table)
    result, first = ingest(config)
    assert result.exit_code == 0, result.output
    assert first["version"] == 1 and first["counts"]["rows"] == 120 and first["counts"]["quarantined"] == 1
    v1 = _version(tmp_path / "ds")
    preprocess = (tmp_path / "ds" / "_preprocess.json").read_bytes()

    # 1. A new file: only its rows are read, encoded by the fitted preprocessing (an unseen category is <other>).
    (folder / "c.csv").write_text("id,x,c,y\n" + _rows(30, 200, 3).replace(",b,", ",zz,"))
    result, step = ingest(config)
    assert result.exit_code == 0, result.output
    assert step["status"] == "updated" and step["version"] == 2 and sum(step["changes"]["added"].values()) == 30
    assert [w for w in step["warnings"] if w.startswith("column c: 1 value(s)") and "'zz'" in w and "--refit" in w]
    v2 = _version(tmp_path / "ds")
    assert {k: v for k, v in v2.items() if k in v1} == v1 and len(v2) == 150
    assert (tmp_path / "ds" / "_preprocess.json").read_bytes() == preprocess
    manifest = Manifest.read(open_dataset(str(tmp_path / "ds")))
    assert manifest.versions[-1]["files"] == {"added": 1, "changed": 0, "removed": 0}

    # 2. Rows appended to a file: the file is read again; its old rows keep their keys, splits and values.
    with (folder / "b.csv").open("a") as f:
        f.write(_rows(6, 300, 4))
    result, step = ingest(config)
    assert result.exit_code == 0, result.output
    assert step["version"] == 3 and sum(step["changes"]["added"].values()) == 66
    assert sum(step["changes"]["removed"].values()) == 60
    v3 = _version(tmp_path / "ds")
    assert {k: v for k, v in v3.items() if k in v2} == v2 and len(v3) == 156

    # 3. A removed file: its rows leave, and so does its quarantined row from the counts.
    (folder / "a.csv").unlink()
    result, step = ingest(config)
    assert result.exit_code == 0, result.output
    assert step["version"] == 4 and sum(step["changes"]["removed"].values()) == 60
    assert step["counts"]["quarantined"] == 0 and step["counts"]["rows"] == 96
    v4 = _version(tmp_path / "ds")
    assert v4 == {k: v for k, v in v3.items() if not k.startswith("a.csv:")}
    manifest = Manifest.read(open_dataset(str(tmp_path / "ds")))
    for split, entry in manifest.splits.items():
        assert sum(entry.per_class.values()) == entry.rows == sum(1 for s, _ in v4.values() if s == split)
    assert _version(f"{tmp_path / 'ds'}@1") == v1

    # A new class is refused, or quarantined.
    (folder / "d.csv").write_text("id,x,c,y\n1000,0.5,a,maybe\n" + _rows(4, 1001, 5))
    result, _ = ingest(config)
    assert result.exit_code == 2 and "1 new row(s) of a class" in result.output and "'maybe'" in result.output
    table["dataset"]["new_classes"] = "quarantine"
    result, step = ingest(write_config(table))
    assert result.exit_code == 0, result.output
    assert step["version"] == 5 and step["changes"]["quarantined"] == 1 and step["counts"]["rows"] == 100
    v5 = _version(tmp_path / "ds")

    # --refit: the preprocessing fitted again (the new class and category learnt), every row in its split.
    result, step = ingest(config, "--refit")
    assert result.exit_code == 0, result.output
    assert step["version"] == 6 and step["labels"] == ["maybe", "no", "yes"] and step["counts"]["rows"] == 101
    v6 = _version(tmp_path / "ds")
    assert {k: s for k, (s, _) in v6.items() if k in v5} == {k: s for k, (s, _) in v5.items()}
    assert (tmp_path / "ds" / "_preprocess.json").read_bytes() != preprocess
    assert ingest(config, "--refit", "--overwrite")[0].exit_code == 2
    old = CliRunner().invoke(app, ["inspect", f"{tmp_path / 'ds'}@5"])
    assert old.exit_code != 0 and "--refit" in old.output


def test_a_text_dataset_grows_by_files_and_keeps_its_vocabulary(spark, tmp_path, write_config):
    folder = tmp_path / "text"
    shutil.copytree(ROOT / "sample_data" / "text", folder)
    config = write_config({"name": "x", "spark": {"master": "local[2]", "conf": {"spark.ui.enabled": False}},
                           "dataset": {"path": str(tmp_path / "ds")},
                           "ingest": {"reader": "text", "input": str(folder), "label": {"source": "parent_dir"}}})  # fmt: skip
    assert ingest(config)[0].exit_code == 0
    v1 = _version(tmp_path / "ds")
    vocabulary = (tmp_path / "ds" / "vocabulary.txt").read_bytes()
    (folder / "positive" / "new-1.txt").write_text("A wonderful zyzzyva of a phone.")  # a word never seen: out of vocabulary
    (folder / "negative" / "new-2.txt").write_text("It broke again.")
    changed, removed = sorted(k for k in v1 if k.startswith("positive/"))[:2]
    (folder / changed).write_text("The screen was not really great.")
    os.utime(folder / changed, ns=(1, 10**18))
    (folder / removed).unlink()
    result, step = ingest(config)
    assert result.exit_code == 0, result.output
    assert step["version"] == 2 and sum(step["changes"]["added"].values()) == 3  # the new ones and the changed one
    assert Manifest.read(open_dataset(str(tmp_path / "ds"))).versions[-1]["files"] == {"added": 2, "changed": 1,
                                                                                        "removed": 1}  # fmt: skip
    v2 = _version(tmp_path / "ds")
    assert {k: v for k, v in v2.items() if k in v1 and k != changed} == \
        {k: v for k, v in v1.items() if k not in (changed, removed)}  # fmt: skip
    assert v2[changed][0] == v1[changed][0] and v2[changed][1] != v1[changed][1]
    assert "positive/new-1.txt" in v2 and (tmp_path / "ds" / "vocabulary.txt").read_bytes() == vocabulary
    (folder / "neutral").mkdir()
    (folder / "neutral" / "x.txt").write_text("It is a phone.")
    result, _ = ingest(config)
    assert result.exit_code == 2 and "'neutral' is not one of the 2" in result.output
    result, step = ingest(config, "--refit")  # the vocabulary and classes fitted again; the splits as they were
    assert result.exit_code == 0, result.output
    assert step["version"] == 3 and step["labels"] == ["negative", "neutral", "positive"]
    assert {k: s for k, (s, _) in _version(tmp_path / "ds").items() if k in v2} == {k: s for k, (s, _) in v2.items()}


def test_a_stratified_group_split_takes_new_rows_of_old_groups_in_with_refit(spark, tmp_path, write_config):
    folder = tmp_path / "tab"
    folder.mkdir()
    rows = lambda start, n: "".join(f"{i},{i % 7},g{i % 12},{'ab'[i % 2]}\n" for i in range(start, start + n))  # noqa: E731
    (folder / "a.csv").write_text("id,x,g,y\n" + rows(0, 120))
    config = write_config({
        "name": "t", "spark": {"master": "local[2]", "conf": {"spark.ui.enabled": False}},
        "dataset": {"path": str(tmp_path / "ds"), "split": {"stratify": True, "group": "g", "train": 0.5, "val": 0.25,
                                                            "test": 0.25}},
        "ingest": {"reader": "csv", "input": str(folder), "label": "y", "numeric": ["x"]},
    })  # fmt: skip
    assert ingest(config)[0].exit_code == 0
    v1 = _version(tmp_path / "ds")
    group_split = {}
    for key, (split, _) in v1.items():  # a.csv:<row>, row r holds id r - 1, of group g{(r - 1) % 12}
        group_split.setdefault(f"g{(int(key.split(':')[1]) - 1) % 12}", set()).add(split)
    assert all(len(s) == 1 for s in group_split.values())
    # New rows of the old groups g0 and g1, most of them of the other class: ranked afresh, each group
    # would be cut among the other class's groups; it keeps the split its old rows had.
    flipped = "".join(f"{i},{i % 7},g{i % 2},{'ba'[i % 2]}\n" for i in range(120, 156))
    (folder / "b.csv").write_text("id,x,g,y\n" + flipped)
    result, _ = ingest(config)
    assert result.exit_code == 2 and "--refit" in result.output
    result, step = ingest(config, "--refit")
    assert result.exit_code == 0, result.output
    v2 = _version(tmp_path / "ds")
    assert {k: s for k, (s, _) in v2.items() if k in v1} == {k: s for k, (s, _) in v1.items()}
    for key, (split, _) in v2.items():
        if key.startswith("b.csv:"):
            assert {split} == group_split[f"g{(119 + int(key.split(':')[1])) % 2}"]


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "history.jsonl").read_text().splitlines()]


def _cli(*args) -> tuple[int, dict | None, str]:
    result = CliRunner().invoke(app, [*map(str, args), "--json"])
    return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else None), result.output


def test_training_continues_from_the_parent_on_the_next_version_and_is_gated_against_it(spark, tmp_path, write_config):
    shutil.copytree(ROOT / "sample_data" / "images", tmp_path / "imgs")
    config = _config(write_config, tmp_path)
    data = yaml.safe_load(open(config))
    data["train"] = {"run_dir": str(tmp_path / "day1"), "epochs": 5, "global_batch_size": 32, "seed": 3, "workers": 1, "model": {"builtin": "small_cnn"},
                     "optimizer": {"name": "adam", "learning_rate": 0.003}}  # fmt: skip
    config = write_config(data)
    result, _ = ingest(config)
    assert result.exit_code == 0, result.output
    code, parent, output = _cli("train", config, "--run-dir", tmp_path / "day1")
    assert code == 0, output
    for i in range(30):
        _new_image(tmp_path / "imgs" / str(i % 10) / f"new-{i}.png", seed=100 + i)
    assert ingest(config)[1]["version"] == 2

    # Two workers start from day one's weights: the first epoch's loss is where the parent ended, not where
    # it began; run.json names the parent and the version each was trained on.
    code, child, output = _cli("train", config, "--run-dir", tmp_path / "day2", "--warm-start", tmp_path / "day1",
                               "--epochs", 2, "--workers", 2)  # fmt: skip
    assert code == 0, output
    first, last = _losses(tmp_path / "day1")[0], parent["final"]["loss"]
    assert first - last > 0.3  # the parent learned
    assert abs(_losses(tmp_path / "day2")[0] - last) < 0.25 * (first - last)
    assert child["parent"]["model"] == str(tmp_path / "day1" / "model" / "model.keras")
    assert child["parent"]["dataset_version"] == parent["dataset_version"] == 1 and child["dataset_version"] == 2
    assert child["parent"]["logs"]["loss"] == last

    # Eval gates against the parent, scored in the same job on the same version-2 test rows.
    code, scored, output = _cli("eval", config, "--run-dir", tmp_path / "day2", "--fail-under", "accuracy>=parent-0.5")
    assert code == 0, output
    assert scored["dataset_version"] == 2 and scored["parent"]["model"] == child["parent"]["model"]
    gate = scored["gates"][0]
    assert gate["threshold"] == pytest.approx(scored["parent"]["metrics"]["accuracy"] - 0.5) and gate["passed"]
    code, _, output = _cli("eval", config, "--run-dir", tmp_path / "day1", "--fail-under", "accuracy=parent")
    assert code == 2 and "has no parent model" in output

    # A parent trained on data of another meaning (here: 8x8 images) is refused before anything runs.
    data["dataset"]["path"], data["ingest"]["size"] = str(tmp_path / "small"), [8, 8]
    other = write_config(data, "other.yaml")
    assert ingest(other)[0].exit_code == 0
    code, _, output = _cli("train", other, "--run-dir", tmp_path / "other", "--warm-start", tmp_path / "day1")
    assert code == 2 and "other features, classes, train statistics or ingest settings" in output
    assert not (tmp_path / "other" / "run.json").exists()
