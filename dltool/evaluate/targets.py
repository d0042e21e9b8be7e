"""Which saved models `dltool eval` scores, and whether they fit the dataset, decided without TensorFlow.

`resolve_targets` turns `--checkpoint` (nothing, `all`, or paths) into `EvalTarget`s;
`check_target` compares each with the dataset before Spark starts: the dataset hash the run
recorded, that the `.keras` file is a readable zip, and the input and output the model's saved
config declares. `check_signature` is the same comparison the scoring task repeats on the
loaded model, where the config could not say (subclassed models, non-Dense heads).
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from dataclasses import dataclass

from dltool.errors import ConfigError, DltoolError, InputNotFoundError
from dltool.storage.fs import Location, open_location
from dltool.storage.manifest import Manifest, preprocessing_hash
from dltool.train import checkpoints as ckpt

__all__ = ["EvalTarget", "check_signature", "check_target", "model_target", "resolve_targets"]

FINAL = "final"  # the label of the run's final model, run_dir/model/model.keras


@dataclass(frozen=True)
class EvalTarget:
    """One model to score: where it was named, its .keras file, and what its run recorded about it."""

    label: str  # short name for tables: "final", "epoch-003", or the file name
    location: Location  # the checkpoint folder or .keras file, as resolved
    model: Location  # the .keras file
    epoch: int | None
    meta: dict  # checkpoint.json, or run.json for a final model; {} when there is none


def resolve_targets(run_dir: Location, checkpoint: str | None = None) -> list[EvalTarget]:
    """The models `--checkpoint` names: None = the final model (or best, or newest checkpoint), `all`, or paths.

    Paths are checkpoint folders or .keras files, comma-separated; a bare name such as
    `epoch-003` is looked up in the run's checkpoints folder.
    """
    if not run_dir.is_dir():
        raise InputNotFoundError(
            f"{run_dir.uri}: run dir not found; train first (dltool train) or point --run-dir at a run"
        )
    if checkpoint is None:
        return [_default_target(run_dir)]
    if checkpoint.strip() == "all":
        found = ckpt.list_checkpoints(run_dir)
        if not found:
            raise InputNotFoundError(f"{run_dir.uri}: the run has no complete checkpoint to score")
        return [_checkpoint_target(c.location) for c in found]
    parts = [part.strip() for part in checkpoint.split(",") if part.strip()]
    if not parts:
        raise ConfigError("--checkpoint: expected 'all' or one or more comma-separated checkpoint paths")
    return [_named_target(run_dir, part) for part in parts]


def model_target(uri: str) -> EvalTarget:
    """`--model PATH`: a .keras, .tflite or .onnx file or a SavedModel folder, scored as it is."""
    from dltool.artefacts import artefact_kind

    location = open_location(uri)
    if not location.exists():
        raise InputNotFoundError(f"{location.uri}: model not found")
    artefact_kind(location)  # a ConfigError for anything else
    return EvalTarget(posixpath.basename(location.path.rstrip("/")), location, location, None, {})


def _default_target(run_dir: Location) -> EvalTarget:
    run = ckpt.read_json(run_dir.child(ckpt.RUN_FILE)) or {}
    final = run_dir.child("model", ckpt.MODEL_FILE)
    if run.get("status") == "completed" and final.exists():
        return EvalTarget(FINAL, final, final, run.get("epochs_done"), run)
    newest = ckpt.newest_checkpoint(run_dir)
    if newest is None:
        raise InputNotFoundError(f"{run_dir.uri}: the run has no final model and no complete checkpoint; train first")
    best = run.get("best") or newest.meta().get("best") or {}
    if best.get("epoch") is not None:
        folder = run_dir.child(ckpt.CHECKPOINTS, ckpt.epoch_dir_name(best["epoch"]))
        if folder.child(ckpt.CHECKPOINT_FILE).exists():
            return _checkpoint_target(folder)
    return _checkpoint_target(newest.location)


def _named_target(run_dir: Location, name: str) -> EvalTarget:
    location = open_location(name)
    if not location.exists() and "://" not in name and "/" not in name:
        location = run_dir.child(ckpt.CHECKPOINTS, name)
    if not location.exists():
        raise InputNotFoundError(f"{name}: checkpoint not found (give a checkpoint folder or a .keras file)")
    if location.is_dir():
        if not location.child(ckpt.MODEL_FILE).exists():
            raise InputNotFoundError(f"{location.uri}: not a checkpoint folder (no {ckpt.MODEL_FILE})")
        if _is_model_folder(location):
            return _final_target(location.child(ckpt.MODEL_FILE))
        return _checkpoint_target(location)
    if not location.path.endswith(".keras"):
        raise ConfigError(f"{location.uri}: not a checkpoint folder or a .keras file")
    folder = _parent(location)
    if folder.child(ckpt.CHECKPOINT_FILE).exists():
        return _checkpoint_target(folder)
    if _is_model_folder(folder):
        return _final_target(location)
    return EvalTarget(posixpath.basename(location.path), location, location, None, {})


def _checkpoint_target(folder: Location) -> EvalTarget:
    meta = ckpt.read_json(folder.child(ckpt.CHECKPOINT_FILE))
    if meta is None:
        raise InputNotFoundError(
            f"{folder.uri}: incomplete checkpoint (no {ckpt.CHECKPOINT_FILE}): its save did not finish; pick another"
        )
    model = folder.child(ckpt.MODEL_FILE)
    if not model.exists():
        raise InputNotFoundError(f"{folder.uri}: checkpoint has no {ckpt.MODEL_FILE}")
    return EvalTarget(posixpath.basename(folder.path.rstrip("/")), folder, model, meta.get("epoch"), meta)


def _final_target(model: Location) -> EvalTarget:
    run = ckpt.read_json(_parent(_parent(model)).child(ckpt.RUN_FILE)) or {}
    return EvalTarget(FINAL, model, model, run.get("epochs_done"), run)


def _is_model_folder(folder: Location) -> bool:
    """run_dir/model: the final model, next to the run's run.json."""
    return posixpath.basename(folder.path.rstrip("/")) == "model" and _parent(folder).child(ckpt.RUN_FILE).exists()


def _parent(location: Location) -> Location:
    path = location.path.rstrip("/")
    uri = location.uri.rstrip("/")
    return Location(uri.rsplit("/", 1)[0], location.fs, posixpath.dirname(path))


def expected_signature(manifest: Manifest) -> tuple[list[int], str, int]:
    """The input shape (no batch), input dtype and output width a model for this dataset has."""
    outputs = manifest.label.classes if manifest.label.kind == "class" else 1
    return list(manifest.features.shape), manifest.features.dtype, outputs


def check_target(target: EvalTarget, manifest: Manifest, dataset_hash: str) -> None:
    """Stop before Spark when a model cannot be read or does not fit the dataset (ConfigError, exit 2)."""
    recorded = target.meta.get("dataset_hash")
    same_meaning = target.meta.get("preprocessing_hash") == preprocessing_hash(manifest)  # another version of it
    if recorded and recorded != dataset_hash and not same_meaning:
        raise ConfigError(
            f"{target.location.uri}: trained on another dataset (manifest hash {recorded}, this dataset "
            f"{dataset_hash}); pass --data with the dataset the run was trained on"
        )
    if target.model.path.endswith(".keras"):  # other formats are checked by the task that loads them
        shape, dtype, outputs = _saved_signature(target.model)
        check_signature(target.location.uri, shape, dtype, outputs, manifest)


def check_signature(where: str, shape, dtype: str | None, outputs: int | None, manifest: Manifest) -> None:
    """Compare a model's input shape (no batch; None = any size), input dtype and output width with the dataset."""
    want_shape, want_dtype, want_outputs = expected_signature(manifest)
    if shape is not None:
        shape = list(shape)
        fits = len(shape) == len(want_shape) and all(d is None or int(d) == w for d, w in zip(shape, want_shape))
        if not fits:
            raise ConfigError(
                f"{where}: the model takes inputs of shape {_dims(shape)}, the dataset's features are "
                f"{_dims(want_shape)}: the checkpoint belongs to another model or dataset"
            )
    if dtype is not None and str(dtype) != want_dtype:
        raise ConfigError(
            f"{where}: the model takes {dtype} inputs, the dataset stores {want_dtype}: "
            "the checkpoint belongs to another dataset"
        )
    if outputs is not None and int(outputs) != want_outputs:
        what = f"{want_outputs} classes" if manifest.label.kind == "class" else "1 regression target"
        raise ConfigError(
            f"{where}: the model has {outputs} outputs, the dataset has {what}: "
            "the checkpoint was trained on another label set"
        )


def _dims(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _saved_signature(model: Location) -> tuple[list | None, str | None, int | None]:
    """Input shape, input dtype and output width from a .keras file's config.json (None where it cannot tell)."""
    try:
        with model.fs.open_input_file(model.path) as f, zipfile.ZipFile(f) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DltoolError(
            f"{model.uri}: damaged model file ({why}); re-save it or score another checkpoint"
        ) from e
    body = config.get("config") if isinstance(config, dict) else None
    layers = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(layers, list):
        return None, None, None  # a subclassed model: the scoring task checks it once loaded
    by_name = {layer.get("name") or layer.get("config", {}).get("name"): layer for layer in layers}
    inputs = [layer for layer in layers if layer.get("class_name") == "InputLayer"]
    shape = dtype = None
    if len(inputs) == 1:
        settings = inputs[0].get("config", {})
        batch_shape = settings.get("batch_shape") or settings.get("batch_input_shape")
        shape = list(batch_shape[1:]) if isinstance(batch_shape, list) else None
        dtype = settings.get("dtype") if isinstance(settings.get("dtype"), str) else None
    if config.get("class_name") == "Sequential":
        head = layers[-1] if layers else None
    else:
        names = body.get("output_layers") or []
        if names and isinstance(names[0], str):  # one output is saved as [name, 0, 0]
            names = [names]
        head = by_name.get(names[0][0]) if len(names) == 1 else None
    units = None
    if head and head.get("class_name") == "Dense":
        units = head.get("config", {}).get("units")
    return shape, dtype, units
