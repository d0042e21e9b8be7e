"""The staged commit every writer uses: all of a folder or none of it, at each point a writer can die."""

from __future__ import annotations

import pytest

from dltool.errors import InputNotFoundError
from dltool.storage.commit import StagedFolder
from dltool.storage.fs import open_location
from dltool.storage.manifest import Manifest
from dltool.storage.ownership import mark
from tests.conftest import make_manifest


def write_dataset(folder, marker: str) -> None:
    """A folder that Manifest.read accepts, marked as dltool's: data, the manifest (named after `marker`), _SUCCESS last."""
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "part-00000.parquet").write_text(marker)
    make_manifest(name=marker).write(open_location(str(folder)))
    mark(open_location(str(folder)), "dataset")
    (folder / "_SUCCESS").write_text("")


def names(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_commit_replaces_the_target_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "data"
    write_dataset(target, "old")
    with StagedFolder(open_location(str(target))) as staged:
        assert staged.location.path != str(target) and (tmp_path / "data").exists()  # the old one stays readable
        write_dataset(tmp_path / staged.location.path.rsplit("/", 1)[-1], "new")
        staged.commit()
    assert (target / "train" / "part-00000.parquet").read_text() == "new"
    assert names(tmp_path) == ["data"]
    assert "_DLTOOL" in names(target)  # the committed folder carries dltool's marker


def test_a_failure_before_the_commit_keeps_the_old_folder_and_removes_the_staged_one(tmp_path):
    target = tmp_path / "data"
    write_dataset(target, "old")
    with pytest.raises(RuntimeError), StagedFolder(open_location(str(target))) as staged:
        (tmp_path / staged.location.path.rsplit("/", 1)[-1] / "half").write_text("partial")
        raise RuntimeError("the writer died")
    assert names(tmp_path) == ["data"] and (target / "train" / "part-00000.parquet").read_text() == "old"


def test_a_writer_killed_before_the_commit_leaves_the_old_dataset_or_none(tmp_path):
    """SIGKILL runs no clean-up: the staged folder stays beside the target, which is untouched."""
    target = open_location(str(tmp_path / "data"))
    staged = StagedFolder(target).__enter__()  # never committed, never exited: the process died
    (tmp_path / staged.location.path.rsplit("/", 1)[-1] / "_SUCCESS").write_text("")
    with pytest.raises(InputNotFoundError):
        Manifest.read(target)  # no dataset appeared: train refuses it
    write_dataset(tmp_path / "data", "old")
    StagedFolder(target).__enter__()  # killed again, with a dataset in place: it stays
    assert Manifest.read(target).name == "old"


def test_commit_elsewhere_leaves_the_target_alone(tmp_path):
    target = tmp_path / "data"
    write_dataset(target, "good")
    with StagedFolder(open_location(str(target))) as staged:
        write_dataset(tmp_path / staged.location.path.rsplit("/", 1)[-1], "bad")
        where = staged.commit(to=open_location(str(tmp_path / "data.failed")))
    assert where.path == str(tmp_path / "data.failed")
    assert Manifest.read(open_location(str(target))).name == "good"
    assert names(tmp_path) == ["data", "data.failed"]
