"""dltool deletes or replaces only folders it marked as its own, and one command at a time writes an output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dltool.errors import ConfigError
from dltool.storage.commit import StagedFolder
from dltool.storage.fs import open_location
from dltool.storage.ownership import (
    OutputInUseError,
    OutputLock,
    check_replaceable,
    delete_owned,
    is_owned,
    mark,
    stale_siblings,
)


def user_folder(path, *files: str):
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("precious")
    return path


def test_absent_empty_and_marked_folders_may_be_replaced(tmp_path):
    check_replaceable(open_location(str(tmp_path / "new")))
    check_replaceable(open_location(str(user_folder(tmp_path / "empty"))))
    ours = open_location(str(user_folder(tmp_path / "ours", "part-0.parquet")))
    mark(ours, "dataset")
    assert is_owned(ours)
    delete_owned(ours)
    assert not (tmp_path / "ours").exists()


def test_a_folder_dltool_did_not_write_is_refused_with_what_it_holds(tmp_path):
    folder = user_folder(tmp_path / "photos", "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")
    with pytest.raises(ConfigError) as raised:
        delete_owned(open_location(str(folder)), "--output")
    message = str(raised.value)
    assert str(folder) in message and "a.jpg" in message and "1 more" in message and "\n" not in message
    assert len(list(folder.iterdir())) == 5
    (folder / "_DLTOOL").write_text("not json")  # a marker that is not dltool's is no marker
    with pytest.raises(ConfigError):
        check_replaceable(open_location(str(folder)))
    file = tmp_path / "notes.txt"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_replaceable(open_location(str(file)))


def test_root_home_current_folder_and_a_folder_holding_the_input_are_never_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for place, said in (("/", "root folder"), (os.path.expanduser("~"), "home folder"), (str(tmp_path), "current")):
        with pytest.raises(ConfigError, match=said):
            check_replaceable(open_location(place))
    data = user_folder(tmp_path / "work" / "raw", "x.csv")
    work = open_location(str(tmp_path / "work"))
    mark(work, "dataset")  # even marked
    with pytest.raises(ConfigError, match="input or config"):
        check_replaceable(work, "dataset", protected=[str(data / "x.csv")])


def test_staged_folders_are_marked_and_never_replace_a_foreign_folder(tmp_path):
    foreign = user_folder(tmp_path / "data", "thesis.tex")
    with pytest.raises(ConfigError), StagedFolder(open_location(str(foreign)), kind="dataset"):
        pass
    assert (foreign / "thesis.tex").read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    target = open_location(str(tmp_path / "fresh"))
    with StagedFolder(target, kind="dataset") as staged:
        assert json.loads(staged.location.child("_DLTOOL").read_bytes())["dltool"] == "dataset"
        other = user_folder(tmp_path / "fresh.failed", "keep.me")
        with pytest.raises(ConfigError):
            staged.commit(to=open_location(str(other)))
    assert (other / "keep.me").exists()


def test_the_sweep_takes_only_its_own_names_with_its_marker(tmp_path):
    target = open_location(str(tmp_path / "digits"))
    backup = user_folder(tmp_path / "digits.old-2023", "x")  # the user's backup: not dltool's name
    lookalike = user_folder(tmp_path / "digits.staging-abcdef12", "y")  # dltool's name, no marker
    for name in ("digits.staging-0123abcd", "digits.old-89abcdef", "digits.failed"):
        mark(open_location(str(user_folder(tmp_path / name, "z"))), "dataset")
    found = sorted(loc.path.rsplit("/", 1)[1] for loc in stale_siblings(target, (r"\.staging-[0-9a-f]{8}",
                                                                                  r"\.old-[0-9a-f]{8}", r"\.failed")))  # fmt: skip
    assert found == ["digits.failed", "digits.old-89abcdef", "digits.staging-0123abcd"]
    assert backup.exists() and lookalike.exists()


def test_a_second_writer_of_the_same_output_fails_at_once(tmp_path):
    target = open_location(str(tmp_path / "out"))
    with OutputLock(target):
        with pytest.raises(OutputInUseError, match="another dltool command is writing it") as raised:
            with OutputLock(target):
                pass
        assert raised.value.exit_code == 1
    assert not (tmp_path / "out.dltool-lock").exists()
    with OutputLock(target):  # released: the next command takes it
        pass


def test_a_lock_left_by_a_dead_command_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    lock = tmp_path / "out.dltool-lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout), "id": "x", "since": "then"}))
    with OutputLock(open_location(str(tmp_path / "out"))):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
