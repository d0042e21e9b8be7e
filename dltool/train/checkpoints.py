"""The run directory: config snapshot, epoch checkpoints written atomically, history, final model.

Layout (all under `train.run_dir`):

    run.json                    status, config hash, dataset, best checkpoint, attempts
    config.json                 the resolved experiment config of the run
    history.jsonl               one line per finished epoch (train and val metrics)
    checkpoints/epoch-003/      model.keras, state.npz (variables + optimizer), checkpoint.json
    tensorboard/{train,val}/    TensorBoard scalars
    model/model.keras, model/saved_model/
    STOP                        written by anyone (dltool tune's pruner, a person): stop after this epoch
    tune/                       dltool tune's study and trials (kept when a training is overwritten)

A checkpoint is complete when its `checkpoint.json` exists: it is written last,
into a hidden temporary folder that is then renamed into place, so a worker
killed mid-save never leaves a checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from dltool.config.redaction import redact
from dltool.errors import ConfigError, DltoolError, InputNotFoundError
from dltool.storage.commit import StagedFolder
from dltool.storage.fs import Location, file_digest, open_location
from dltool.storage.ownership import check_replaceable, is_owned

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FILE = "checkpoint.json"
STATE_FILE = "state.npz"
MODEL_FILE = "model.keras"
STOP_FILE = "STOP"
TUNE_DIR = "tune"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    location: Location

    @property
    def name(self) -> str:
        return f"epoch-{self.epoch:03d}"

    def meta(self) -> dict:
        return json.loads(self.location.child(CHECKPOINT_FILE).read_bytes())


def epoch_dir_name(epoch: int) -> str:
    return f"epoch-{epoch:03d}"


def list_checkpoints(run_dir: Location) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    folder = run_dir.child(CHECKPOINTS)
    if not folder.exists():
        return []
    found = []
    for info in folder.fs.get_file_info(pafs.FileSelector(folder.path)):
        match = _EPOCH_DIR.match(info.base_name)
        if match and info.type == pafs.FileType.Directory:
            location = folder.child(info.base_name)
            if location.child(CHECKPOINT_FILE).exists():
                found.append(Checkpoint(int(match.group(1)), location))
    return sorted(found, key=lambda c: c.epoch)


def newest_checkpoint(run_dir: Location) -> Checkpoint | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def newest_intact_checkpoint(run_dir: Location, warn) -> Checkpoint | None:
    """The newest checkpoint whose files match the sizes and hashes in its checkpoint.json; `warn(line)` is told
    of each damaged one passed over (a resume then repeats the epochs after the intact one)."""
    for checkpoint in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        warn(f"{checkpoint.location.uri}: damaged ({problem}); passed over for an older checkpoint")
    return None


def checkpoint_problem(checkpoint: Checkpoint) -> str | None:
    """What is wrong with a checkpoint's files, or None (checkpoints written before checksums are taken as they are)."""
    try:
        files = checkpoint.meta().get("files")
    except (OSError, ValueError) as e:
        return f"{CHECKPOINT_FILE} unreadable: {e}"
    for name, want in (files or {}).items():
        location = checkpoint.location.child(name)
        try:
            size, digest = file_digest(location)
        except OSError as e:
            return f"{name} unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        if size != want["size"]:
            return f"{name} is {size} bytes, {want['size']} were written"
        if digest != want["blake2b"]:
            return f"{name} does not match its checksum"
    return None


def read_json(location: Location) -> dict | None:
    if not location.exists():
        return None
    try:
        return json.loads(location.read_bytes())
    except json.JSONDecodeError as e:
        raise DltoolError(f"{location.uri}: corrupt JSON: {e}") from e


def write_json(location: Location, data: dict) -> None:
    """Every JSON file of a run (run.json, config.json, checkpoint.json, eval.json), secrets redacted."""
    location.write_bytes((json.dumps(redact(data), indent=2) + "\n").encode())


def upload_tree(local: Path, target: Location) -> None:
    """Copy a local folder (model files) to the run directory's filesystem."""
    if isinstance(target.fs, pafs.LocalFileSystem):
        shutil.copytree(local, target.path, dirs_exist_ok=True)
        return
    pafs.copy_files(str(local), target.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=target.fs)


def commit_checkpoint(run_dir: Location, epoch: int, local: Path, meta: dict) -> Checkpoint:
    """Move a checkpoint prepared in a local folder into the run dir; checkpoint.json last.

    A retried epoch's newer save replaces the older one. Scratch folders are `.tmp-*`, which
    `prune_checkpoints` clears after a crash.
    """
    folder = run_dir.child(CHECKPOINTS)
    final = folder.child(epoch_dir_name(epoch))
    token = uuid.uuid4().hex[:8]
    scratch = lambda kind: folder.child(f".tmp-{epoch_dir_name(epoch)}-{kind}-{token}")  # noqa: E731
    files = {}
    for path in sorted(p for p in local.iterdir() if p.is_file()):
        size, digest = file_digest(open_location(str(path)))
        files[path.name] = {"size": size, "blake2b": digest}  # resume checks them (checkpoint_problem)
    with StagedFolder(final, staging=scratch("staging"), old=scratch("old"), kind="checkpoint") as staged:
        upload_tree(local, staged.location)
        write_json(staged.location.child(CHECKPOINT_FILE), {**meta, "files": files})
        staged.commit()
    return Checkpoint(epoch, final)


def prune_checkpoints(run_dir: Location, keep: int | None, best_epoch: int | None) -> None:
    """Delete all but the newest `keep` checkpoints (and the best); also leftovers of killed saves."""
    folder = run_dir.child(CHECKPOINTS)
    if not folder.exists():
        return
    for info in folder.fs.get_file_info(pafs.FileSelector(folder.path)):
        if info.base_name.startswith(".tmp-"):
            folder.child(info.base_name).delete()
    if keep is None:
        return
    for checkpoint in list_checkpoints(run_dir)[:-keep]:
        if checkpoint.epoch != best_epoch:
            checkpoint.location.delete()


def write_history(run_dir: Location, history: list[dict]) -> None:
    run_dir.child(HISTORY_FILE).write_bytes("".join(json.dumps(row) + "\n" for row in history).encode())


def clear_run(run_dir: Location) -> None:
    """Delete a run dir's training (train --overwrite), keeping a study that tune/ holds."""
    if not run_dir.exists():
        return
    for entry in run_dir.fs.get_file_info(pafs.FileSelector(run_dir.path)):
        if entry.base_name != TUNE_DIR:
            run_dir.child(entry.base_name).delete()


def check_run_dir_is_ours(run_dir: Location, protected: list[str] = ()) -> None:
    """Refuse to write into (or clear) a folder that has files but that dltool did not mark as its own.

    A run dir holding only the study of `dltool tune` (tune/, marked) is the tuner's and is used as it is.
    """
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir.uri}: run dir is a file")
    entries = run_dir.fs.get_file_info(pafs.FileSelector(run_dir.path))
    if [entry.base_name for entry in entries] == [TUNE_DIR] and is_owned(run_dir.child(TUNE_DIR)):
        return
    check_replaceable(run_dir, "run dir", protected)


def parent_model(uri: str) -> tuple[Location, dict]:
    """The model a run warm-starts from (`--warm-start`), with what it recorded (run.json or checkpoint.json):
    a run dir (its final model, else its newest checkpoint), a checkpoint folder or a .keras file."""
    location = open_location(uri)
    if not location.exists():
        raise InputNotFoundError(f"{location.uri}: --warm-start: no run dir, checkpoint or .keras file there")
    if location.is_dir() and location.child(RUN_FILE).exists():
        run = read_json(location.child(RUN_FILE)) or {}
        final = location.child("model", MODEL_FILE)
        if run.get("status") == "completed" and final.exists():
            return final, run
        newest = newest_checkpoint(location)
        if newest is None:
            raise InputNotFoundError(f"{location.uri}: --warm-start: the run has no final model and no checkpoint")
        location = newest.location
    if location.is_dir():
        meta = read_json(location.child(CHECKPOINT_FILE))
        if meta is None or not location.child(MODEL_FILE).exists():
            raise InputNotFoundError(f"{location.uri}: --warm-start: not a run dir or a complete checkpoint folder")
        return location.child(MODEL_FILE), meta
    if not location.path.endswith(".keras"):
        raise ConfigError(f"{location.uri}: --warm-start takes a run dir, a checkpoint folder or a .keras file")
    return location, {}
