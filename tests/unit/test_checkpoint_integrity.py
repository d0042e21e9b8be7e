"""Checkpoints carry their files' sizes and hashes; a damaged newest one is passed over on resume (no TensorFlow)."""

from __future__ import annotations

import json

from dltool.storage.fs import open_location
from dltool.train.checkpoints import checkpoint_problem, commit_checkpoint, newest_intact_checkpoint


def save(run_dir, tmp_path, epoch: int):
    local = tmp_path / f"local-{epoch}"
    local.mkdir()
    (local / "state.npz").write_bytes(bytes(range(256)) * 40 * epoch)
    (local / "model.keras").write_bytes(b"model" * 100)
    return commit_checkpoint(run_dir, epoch, local, {"epoch": epoch})


def test_a_damaged_newest_checkpoint_is_passed_over_with_a_warning(tmp_path):
    run_dir = open_location(str(tmp_path / "run"))
    first, second, third = (save(run_dir, tmp_path, epoch) for epoch in (1, 2, 3))
    meta = json.loads((tmp_path / "run" / "checkpoints" / "epoch-003" / "checkpoint.json").read_text())
    assert meta["files"]["state.npz"]["size"] == 256 * 40 * 3 and len(meta["files"]["model.keras"]["blake2b"]) == 32
    assert checkpoint_problem(third) is None

    state = tmp_path / "run" / "checkpoints" / "epoch-003" / "state.npz"
    state.write_bytes(state.read_bytes()[:1000])  # a copy cut short
    model = tmp_path / "run" / "checkpoints" / "epoch-002" / "model.keras"
    model.write_bytes(b"MODEL" + model.read_bytes()[5:])  # same size, other bytes
    warnings = []
    assert newest_intact_checkpoint(run_dir, warnings.append).epoch == 1
    assert "epoch-003: damaged (state.npz is 1000 bytes, 30720 were written)" in warnings[0]
    assert "epoch-002: damaged (model.keras does not match its checksum)" in warnings[1]
    assert checkpoint_problem(first) is None and checkpoint_problem(second) is not None
