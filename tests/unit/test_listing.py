"""Listing inputs: patterns, hidden files, and symbolic links that loop, dangle or point twice at one file."""

from __future__ import annotations

import os

from dltool.storage.fs import list_files, open_location


def make_tree(root):
    """china/ holds two images, a link cycle, a dangling link and a pair of links that point at each other."""
    (root / "china").mkdir(parents=True)
    (root / "dogs").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (root / "china" / name).write_bytes(b"x" * 10)
    (root / "dogs" / "d.jpg").write_bytes(b"y" * 7)
    (root / "dogs" / ".DS_Store").write_bytes(b"z")
    os.symlink(".", root / "china" / "loop")  # china/loop/loop/... forever
    os.symlink("../dogs", root / "china" / "more_dogs")  # a second way into dogs/
    os.symlink("d.jpg", root / "dogs" / "same.jpg")  # the same file under another name
    os.symlink("missing.jpg", root / "china" / "gone.jpg")
    os.symlink("ping.jpg", root / "china" / "pong.jpg")
    os.symlink("pong.jpg", root / "china" / "ping.jpg")


def test_links_never_loop_and_each_file_is_listed_once(tmp_path):
    make_tree(tmp_path / "in")
    files, left_out = list_files(open_location(str(tmp_path / "in")), ["*.jpg"])
    readable = {f.relpath: f.size for f in files if f.problem is None}
    assert readable == {"china/a.jpg": 10, "china/b.jpg": 10, "dogs/d.jpg": 7}  # by their real paths
    problems = {f.relpath: f.problem for f in files if f.problem is not None}
    assert problems == {
        "china/gone.jpg": "dangling symbolic link to 'missing.jpg'",
        "china/ping.jpg": "symbolic link loop to 'pong.jpg'",
        "china/pong.jpg": "symbolic link loop to 'ping.jpg'",
    }
    assert left_out == 1  # dogs/.DS_Store, once


def test_links_to_outside_the_input_are_followed_once(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "s.jpg").write_bytes(b"s")
    os.symlink(tmp_path / "shared", tmp_path / "shared" / "again")  # a cycle outside the input
    (tmp_path / "in" / "cats").mkdir(parents=True)
    os.symlink(tmp_path / "shared", tmp_path / "in" / "cats" / "extra")
    os.symlink(tmp_path / "shared" / "s.jpg", tmp_path / "in" / "cats" / "t.jpg")
    files, _ = list_files(open_location(str(tmp_path / "in")), ["*.jpg"])
    assert [(f.relpath, f.problem) for f in files] == [("cats/t.jpg", None)]  # a folder's files before its subfolders


def test_a_plain_tree_lists_every_file_sorted_and_counts_hidden_ones(tmp_path):
    for rel in ("b/2.png", "a/1.png", "a/_SUCCESS", "a/.hidden.png", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"p")
    files, left_out = list_files(open_location(str(tmp_path)), ["*.png"])
    assert [f.relpath for f in files] == ["a/1.png", "b/2.png"] and left_out == 3
    assert all(f.problem is None and f.size == 1 for f in files)
