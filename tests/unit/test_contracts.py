"""The typed contracts between dltool's parts: their JSON keeps the documented keys, order and values."""

from __future__ import annotations

import json

import pytest

from dltool.config.loader import config_hash
from dltool.config.models import TrainSettings
from dltool.errors import InputNotFoundError
from dltool.evaluate.result import CheckpointScore, EvalResult, GateOutcome
from dltool.shards.codec import TensorSpec
from dltool.ingest.results import IngestPlan, IngestResult
from dltool.storage.fs import open_location
from dltool.storage.manifest import MANIFEST, SUCCESS, Counts, Label, Manifest, SplitEntry, Stats, manifest_hash
from dltool.train.job import TrainJob, WorkerSpec
from tests.conftest import make_manifest

# A manifest as `dltool ingest` writes it (docs/format.md), keys in the documented order.
WRITTEN = {
    "format": "dltool-dataset", "format_version": 1, "name": "digits", "created": "2026-11-29T10:00:00Z",
    "dltool_version": "0.1.0", "reader": "image", "source": "/data/digits",
    "features": {"column": "features", "shape": [8, 8, 1], "dtype": "uint8", "encoding": "binary", "names": None},
    "label": {"column": "label", "kind": "class", "vocabulary": ["0", "1"]}, "key": {"column": "key"},
    "passthrough": [],
    "splits": {
        "train": {"rows": 5, "files": ["train/part-00000.parquet", "train/part-00001.parquet"],
                  "per_class": {"0": 3, "1": 2}},
        "val": {"rows": 1, "files": ["val/part-00000.parquet"], "per_class": {"1": 1}},
        "test": {"rows": 0, "files": [], "per_class": {}},
    },
    "counts": {"inputs": 7, "ok": 6, "quarantined": 1, "augmented": 0, "rows": 6, "left_out_by_patterns": 2},
    "stats": {"axis": 2, "count": 320, "mean": [101.25], "std": [63.5]},
    "preprocess": None, "errors": "_errors", "config_hash": "0123456789abcdef", "input_fingerprint": "fedcba9876543210",
    "ingest": {"reader": "image", "size": [8, 8]}, "status": "ok", "warnings": [], "duplicates": None, "columns": None,
    "vocabulary": None,
}  # fmt: skip


def test_manifest_json_round_trip_keeps_keys_order_and_values():
    manifest = Manifest.from_json(WRITTEN)
    assert manifest.features == TensorSpec((8, 8, 1), "uint8")
    assert manifest.label == Label("class", ("0", "1")) and manifest.label.classes == 2
    assert manifest.splits["train"] == SplitEntry(5, ("train/part-00000.parquet", "train/part-00001.parquet"),
                                                  {"0": 3, "1": 2})  # fmt: skip
    assert manifest.counts.bad_fraction == pytest.approx(1 / 7)
    assert manifest.stats == Stats(2, 320, (101.25,), (63.5,))
    assert manifest.rows("val") == 1 and manifest.rows("nowhere") == 0
    assert json.dumps(manifest.to_json()) == json.dumps(WRITTEN)  # same keys, same order, same values
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json()))) == manifest


def test_manifest_hash_is_the_digest_runs_and_checkpoints_already_recorded():
    # Checkpoints compare it with the hash they recorded: it must not change with the typed manifest.
    before = config_hash({key: WRITTEN[key] for key in ("features", "label", "splits", "stats", "config_hash")})
    assert manifest_hash(Manifest.from_json(WRITTEN)) == before


def test_unlabelled_and_table_manifests_round_trip():
    unlabelled = {**WRITTEN, "label": {"column": "label", "kind": None}, "stats": None}
    assert json.dumps(Manifest.from_json(unlabelled).to_json()) == json.dumps(unlabelled)
    features = {"column": "features", "shape": [3], "dtype": "float32", "encoding": "list", "names": ["a", "b=x", "b=y"]}
    table = {**WRITTEN, "features": features, "passthrough": ["id"], "preprocess": "_preprocess"}
    assert Manifest.from_json(table).feature_names == ("a", "b=x", "b=y")
    assert json.dumps(Manifest.from_json(table).to_json()) == json.dumps(table)


def test_write_then_read_and_every_refusal_of_read(tmp_path):
    folder = open_location(str(tmp_path / "d"))
    with pytest.raises(InputNotFoundError, match="dataset not found"):
        Manifest.read(folder)
    (tmp_path / "d").mkdir()
    with pytest.raises(InputNotFoundError, match=r"dataset is incomplete \(no _SUCCESS\)"):
        Manifest.read(folder)
    with pytest.raises(InputNotFoundError, match="not a dltool dataset \\(no _manifest.json\\)"):
        Manifest.read(folder, require_success=False)
    shards = ["train/part-00000.parquet", "train/part-00001.parquet", "val/part-00000.parquet"]
    for i, name in enumerate(shards):
        (tmp_path / "d" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_bytes(b"x" * (10 + i))
    Manifest.from_json(WRITTEN).write(folder)
    (tmp_path / "d" / SUCCESS).write_text("")
    written = json.loads((tmp_path / "d" / MANIFEST).read_text())
    assert {k: v for k, v in written.items() if k != "shards"} == WRITTEN
    assert {name: entry["size"] for name, entry in written["shards"].items()} == dict(zip(shards, (10, 11, 12)))
    assert Manifest.read(folder) == Manifest.from_json(written)
    assert Manifest.read(folder).shard_problem(folder, shards[2], 12) is None
    assert "13 bytes, the manifest says 12" in Manifest.read(folder).shard_problem(folder, shards[2], 13)
    for data, message in [
        ({**WRITTEN, "format": "other"}, "not a dltool dataset \\(manifest format 'other'\\)"),
        ({**WRITTEN, "format_version": 2}, "manifest version 2 is newer than this dltool reads \\(1\\); upgrade dltool"),
        ({k: v for k, v in WRITTEN.items() if k != "counts"}, "corrupt manifest: no field 'counts'"),
    ]:
        (tmp_path / "d" / MANIFEST).write_text(json.dumps(data))
        with pytest.raises(InputNotFoundError, match=message):
            Manifest.read(folder)
    (tmp_path / "d" / MANIFEST).write_text("{not json")
    with pytest.raises(InputNotFoundError, match="corrupt manifest"):
        Manifest.read(folder)


def train_job(**fields) -> TrainJob:
    parts = {
        "train": TrainSettings.model_validate({"run_dir": "run", "epochs": 3}), "manifest": make_manifest(),
        "dataset": "/data/d", "run_dir": "/runs/r", "config_hash": "c" * 16, "dataset_hash": "d" * 16,
        "steps_per_epoch": 4, "global_batch": 8, "per_worker_batch": 4, "class_weights": [1.0, 2.0, 0.5],
        "train_units": [[["train/part-00000.parquet", 0, 0, 6]], [["train/part-00000.parquet", 0, 6, 12]]],
        "val_units": [[["val/part-00000.parquet", 0, 0, 2]], []], "global_batches": False,
        "job_group": "dltool-train-cccccccc", "threads": None,
    }  # fmt: skip
    return TrainJob(**{**parts, **fields})


def test_train_job_and_worker_spec_survive_their_trip_through_json():
    job = train_job(attempt=1, events={"host": "127.0.0.1", "port": 4000, "token": "t"}, resume_from="/runs/r/c/1",
                    fault={"rank": 1, "epoch": 2, "attempts": [0]})  # fmt: skip
    assert TrainJob.from_json(json.loads(json.dumps(job.to_json()))) == job
    spec = WorkerSpec.for_rank(job, 1, 2, task_cpus=3)
    assert (spec.rank, spec.workers, spec.threads, spec.chief) == (1, 2, 3, False)
    assert spec.train_units == job.train_units[1] and spec.val_units == []
    assert WorkerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    local = WorkerSpec.for_rank(train_job(threads=2, val_units=None), 0, 2, task_cpus=8)
    assert (local.threads, local.val_units, local.chief) == (2, None, True)


def test_ingest_result_json_has_the_keys_the_cli_always_printed():
    counts = Counts(inputs=7, ok=6, quarantined=1, augmented=0, rows=6, left_out_by_patterns=2)
    written = IngestResult("written", "/d", counts, replaced=None, seconds=1.5, splits={"train": 5, "val": 1, "test": 0},
                           labels=("0", "1"), errors=({"key": "x.png", "stage": "decode"},))  # fmt: skip
    assert written.to_json() == {
        "status": "written", "dataset": "/d", "replaced": None, "seconds": 1.5, "counts": WRITTEN["counts"],
        "splits": {"train": 5, "val": 1, "test": 0}, "labels": ["0", "1"],
        "errors": [{"key": "x.png", "stage": "decode"}], "warnings": [], "left_out": {},
    }  # fmt: skip
    keys = ["status", "dataset", "replaced", "seconds", "counts", "splits", "labels", "errors", "warnings", "left_out"]
    assert list(written.to_json()) == keys
    current = IngestResult("up_to_date", "/d", counts, message="/d is up to date")
    assert current.to_json() == {"status": "up_to_date", "dataset": "/d", "counts": WRITTEN["counts"],
                                 "message": "/d is up to date"}  # fmt: skip


def test_ingest_plan_json_for_file_and_table_readers():
    common = {"dataset": "/d", "source": "/in", "inputs": 2, "left_out_by_patterns": 0, "sample_inputs": ("a", "b"),
              "bytes": 10, "writes": ("/d/train/",), "existing": None}  # fmt: skip
    files = IngestPlan(**common, features=TensorSpec((2,), "float32"), labels=None, unlabelled=1, splits={"train": 1})
    assert list(files.to_json()) == ["status", "dataset", "source", "inputs", "left_out_by_patterns", "sample_inputs",
                                     "bytes", "features", "labels", "unlabelled", "splits", "writes", "existing"]
    assert files.to_json()["labels"] is None and files.to_json()["features"]["encoding"] == "list"
    table = IngestPlan(**common, columns={"numeric": ["a"], "categorical": [], "label": "y"})
    assert list(table.to_json())[7:] == ["columns", "writes", "existing"] and table.status == "dry_run"


def test_eval_result_writes_eval_json_without_where_and_how_long():
    scores = (CheckpointScore("/r/c/epoch-001", "epoch-001", 1, {"loss": 0.5}),
              CheckpointScore("/r/c/epoch-002", "epoch-002", 2, {"loss": 0.4}))  # fmt: skip
    result = EvalResult(split="test", dataset="/d", dataset_hash="h", run_dir="/r", checkpoints=scores, best=1,
                        monitor="loss", fail_under={"loss": 0.45},
                        gates=(GateOutcome("loss", "<=", 0.45, 0.4, True),), eval_dir="/r/eval/test", seconds=2.0)
    assert list(result.eval_json()) == ["split", "dataset", "dataset_hash", "dataset_version", "run_dir", "checkpoints",
                                        "best", "monitor", "fail_under", "gates", "passed", "mistakes"]  # fmt: skip
    assert result.to_json() == {**result.eval_json(), "eval_dir": "/r/eval/test", "seconds": 2.0, "quarantined": 0}
    assert result.eval_json()["checkpoints"][1] == {"checkpoint": "/r/c/epoch-002", "name": "epoch-002", "epoch": 2,
                                                    "metrics": {"loss": 0.4}, "runtime": "tensorflow",
                                                    "runtime_note": ""}  # fmt: skip
    assert result.eval_json()["gates"] == [{"metric": "loss", "rule": "<=", "threshold": 0.45, "value": 0.4,
                                            "passed": True}]  # fmt: skip
    assert result.passed and result.scored.name == "epoch-002"
    undefined = GateOutcome("r2", ">=", 0.1, None, False)
    assert undefined.describe() == "r2 is undefined on this split (needs >= 0.1)"
