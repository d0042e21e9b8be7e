"""Locations on an S3-compatible server (moto's, on 127.0.0.1): settings, listing, commits, errors."""

from __future__ import annotations

import json

import pytest

from dltool.config.models import StorageSettings
from dltool.errors import ConfigError, InputNotFoundError, StorageError
from dltool.storage.commit import StagedFolder, renames_folders, unfinished
from dltool.storage.fs import list_files, open_location
from dltool.storage.manifest import Manifest
from dltool.storage.ownership import mark
from dltool.storage.stores import STORAGE_ENV, s3a_conf, storage_scope, storage_settings
from tests.conftest import BUCKET, make_manifest


def test_a_location_writes_reads_and_deletes_objects(s3):
    with storage_scope(s3.storage):
        location = open_location(s3.uri("unit", "rw", "a.json"))
        assert location.fs.type_name == "s3" and location.path == f"{BUCKET}/unit/rw/a.json"
        assert not location.exists()
        location.write_bytes(b'{"a": 1}')
        assert location.read_bytes() == b'{"a": 1}'
        assert open_location(s3.uri("unit", "rw")).is_dir()
        assert s3.objects("unit/rw") == ["unit/rw/a.json"]  # one PUT: no temp object left beside it
        location.delete()
        assert not location.exists()


def test_s3a_and_s3n_uris_name_the_same_objects(s3):
    s3.fs().open_output_stream(f"{BUCKET}/unit/spellings/x.bin").close()
    with storage_scope(s3.storage):
        for scheme in ("s3", "s3a", "s3n"):
            location = open_location(f"{scheme}://{BUCKET}/unit/spellings/x.bin")
            assert location.exists() and location.uri.startswith(scheme)


def test_listing_a_prefix_matches_patterns_and_counts_what_it_leaves_out(s3):
    for key in ("cat/1.png", "cat/2.PNG", "dog/3.jpg", "dog/notes.txt", "_SUCCESS", "dog/.DS_Store"):
        with s3.fs().open_output_stream(f"{BUCKET}/unit/listing/{key}") as f:
            f.write(b"x" * 3)
    with storage_scope(s3.storage):
        files, left_out = list_files(open_location(s3.uri("unit", "listing")), ["*.png", "*.jpg"])
    assert [f.relpath for f in files] == ["cat/1.png", "cat/2.PNG", "dog/3.jpg"]
    assert left_out == 3 and all(f.size == 3 for f in files)
    with storage_scope(s3.storage), pytest.raises(InputNotFoundError, match="input not found"):
        list_files(open_location(s3.uri("unit", "nothing-here")), ["*"])


def test_the_standard_aws_variables_are_enough(s3, monkeypatch):
    s3.fs().open_output_stream(f"{BUCKET}/unit/env/x.bin").close()
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    assert storage_settings() == {}
    assert open_location(s3.uri("unit", "env", "x.bin")).exists()


def test_tasks_and_workers_read_the_settings_from_their_environment(monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)  # no NameNode to add (storage/hdfs.py)
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    monkeypatch.setenv(STORAGE_ENV, json.dumps({"endpoint_url": "http://example.invalid:9000"}))
    assert storage_settings() == {"endpoint_url": "http://example.invalid:9000"}
    with storage_scope({"region": "eu-west-1", "profile": None}):  # the driver's scope wins, unset keys dropped
        assert storage_settings() == {"region": "eu-west-1"}


def test_spark_s3a_gets_the_same_endpoint_and_addressing():
    conf = s3a_conf({"endpoint_url": "http://minio:9000", "region": "eu-west-1", "path_style": True})
    assert conf == {"spark.hadoop.fs.s3a.endpoint": "http://minio:9000", "spark.hadoop.fs.s3a.path.style.access": "true",
                    "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"}  # fmt: skip


def test_a_missing_profile_is_one_line_naming_the_file(s3, tmp_path):
    with storage_scope({**s3.storage, "profile": "nope"}), pytest.raises(StorageError) as e:
        open_location(s3.uri("unit", "x"))
    assert str(e.value) == f"storage.profile 'nope': no [nope] section in {s3.credentials}"
    with storage_scope({**s3.storage, "credentials_file": str(tmp_path / "absent")}), pytest.raises(StorageError) as e:
        open_location(s3.uri("unit", "x"))
    assert "cannot read the credentials file" in str(e.value) and "\n" not in str(e.value)


def test_an_unreachable_endpoint_is_a_storage_error_naming_the_uri():
    with storage_scope({"endpoint_url": "http://127.0.0.1:9", "anonymous": True}), pytest.raises(StorageError) as e:
        open_location("s3://bucket/data").exists()
    assert str(e.value).startswith("s3://bucket/data: cannot reach storage:") and "\n" not in str(e.value)


def test_credentials_in_the_endpoint_are_refused():
    with pytest.raises(ValueError, match="must not hold credentials"):
        StorageSettings(endpoint_url="http://key:secret@minio:9000")


def test_on_a_store_a_failed_rewrite_keeps_the_old_folder_and_a_commit_copies_the_new_one_in(s3):
    with storage_scope(s3.storage):
        target = open_location(s3.uri("unit", "commit", "data"))
        assert not renames_folders(target)
        make_manifest(name="old").write(target)
        target.child("_SUCCESS").write_bytes(b"")
        with pytest.raises(ConfigError, match="dltool did not write this folder"), StagedFolder(target):
            pass  # a dataset-looking folder without dltool's marker is not cleared
        mark(target, "dataset")
        with pytest.raises(RuntimeError), StagedFolder(target) as staged:
            assert staged.location != target  # staged beside it: readers still see the old dataset
            staged.location.child("train", "part-00000.parquet").write_bytes(b"new")
            raise RuntimeError("the writer died")
        assert Manifest.read(target).name == "old"  # the failed rewrite displaced nothing
        assert not [k for k in s3.objects("unit/commit") if ".staging-" in k]  # and left nothing beside it
        with StagedFolder(target) as staged:
            staged.location.child("train", "part-00000.parquet").write_bytes(b"new")
            make_manifest(name="new").write(staged.location)
            staged.commit()
            assert not unfinished(target)
        target.child("_SUCCESS").write_bytes(b"")
        assert Manifest.read(target).name == "new" and target.child("train", "part-00000.parquet").read_bytes() == b"new"
        assert sorted(k.rsplit("/", 1)[1] for k in s3.objects("unit/commit/data")) == [
            "_DLTOOL", "_SUCCESS", "_manifest.json", "part-00000.parquet", "v00001.json"]


def test_a_local_read_error_fails_the_run_and_is_no_bad_record(tmp_path):
    from dltool.ingest.files import _read

    (tmp_path / "x.png").mkdir()  # a file the OS will not read (here: replaced by a folder after listing)
    with pytest.raises(StorageError, match=f"^{tmp_path / 'x.png'}: cannot read from the store: "):
        _read(open_location(str(tmp_path)).fs, str(tmp_path / "x.png"), 1 << 20)


def test_a_vanished_object_is_a_bad_record_and_an_unreachable_store_is_an_error(s3):
    from dltool.errors import RecordError
    from dltool.ingest.files import _read

    with storage_scope(s3.storage):
        fs = open_location(s3.uri("unit")).fs
    with pytest.raises(RecordError, match="disappeared|cannot read file"):
        _read(fs, f"{BUCKET}/unit/never-written.png", 1 << 20)
    with storage_scope({"endpoint_url": "http://127.0.0.1:9", "anonymous": True}):
        dead = open_location("s3://bucket/x").fs
    with pytest.raises(StorageError, match="^s3://bucket/x.png: cannot read from the store: "):
        _read(dead, "bucket/x.png", 1 << 20)


def test_the_run_dir_snapshot_of_the_config_hides_secret_spark_settings():
    from dltool.config.models import REDACTED, ExperimentConfig

    config = ExperimentConfig.model_validate({
        "name": "x", "dataset": {"path": "/d"}, "storage": {"endpoint_url": "http://minio:9000"},
        "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "s3cr3t", "spark.hadoop.fs.s3a.access.key": "AKIA1",
                           "spark.driver.memory": "2g"}}})  # fmt: skip
    snapshot = config.redacted()
    assert snapshot["spark"]["conf"] == {"spark.hadoop.fs.s3a.secret.key": REDACTED,
                                         "spark.hadoop.fs.s3a.access.key": REDACTED, "spark.driver.memory": "2g"}  # fmt: skip
    assert snapshot["storage"]["endpoint_url"] == "http://minio:9000" and "s3cr3t" not in json.dumps(snapshot)
