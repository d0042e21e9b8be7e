"""A saved model of any format dltool writes as one batch predict function: .keras, SavedModel, TFLite, ONNX.

Eval and export score them all with the same Spark job: each task loads the artefact once
(`load_predictor`) and feeds its share of the split through `Predictor.predict`, numpy in,
numpy out. TFLite runs in TensorFlow's own interpreter, ONNX in onnxruntime.

The final model of a run also gets an ONNX copy, checked against Keras when train writes it
(`write_scoring_copy`); eval and predict score that copy (`scorer_for`), so their tasks do
not start TensorFlow.
"""

from __future__ import annotations

import math
import posixpath
import shutil
import warnings
from dataclasses import dataclass
from typing import Callable

from dltool.errors import ConfigError, DltoolError
from dltool.storage.fs import Location, open_location

__all__ = ["KINDS", "Predictor", "SCORING_COPY", "Scorer", "artefact_kind", "beside", "graph_predict", "load_model",
           "load_predictor", "scorer_for", "task_tensorflow_for", "to_onnx", "write_scoring_copy"]

KINDS = ("keras", "savedmodel", "tflite", "onnx")


@dataclass
class Predictor:
    """A loaded model: its input (shape without the batch, dtype), output width, and predict(x) -> outputs."""

    predict: Callable
    shape: list
    dtype: str
    outputs: int | None


def artefact_kind(location: Location) -> str:
    """Which format a path holds, by its name (a SavedModel is a folder holding saved_model.pb)."""
    name = location.path.rstrip("/").lower()
    for suffix, kind in ((".keras", "keras"), (".tflite", "tflite"), (".onnx", "onnx")):
        if name.endswith(suffix):
            return kind
    if location.child("saved_model.pb").exists():
        return "savedmodel"
    raise ConfigError(
        f"{location.uri}: not a model dltool can score: expected a .keras, .tflite or .onnx file, or a SavedModel "
        "folder (holding saved_model.pb)"
    )


def task_tensorflow_for(uris) -> object | None:
    """TensorFlow, started as Spark tasks start it, for a task that loads these artefacts; None when every one is
    an ONNX file (onnxruntime needs no TensorFlow: the point of the final model's ONNX copy)."""
    if all(artefact_kind(open_location(uri)) == "onnx" for uri in uris):
        return None
    from dltool.tfenv import task_tensorflow

    return task_tensorflow()


def load_predictor(tf, uri: str, modules: list[str] = (), threads: int = 1) -> Predictor:
    """Load the artefact at uri (copied here first when remote) as a Predictor."""
    location = open_location(uri)
    kind = artefact_kind(location)
    if kind == "keras":
        import keras

        model = load_model(keras, uri, modules)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ConfigError(f"{uri}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                              "dltool scores models with one features input and one output")  # fmt: skip
        shape, dtype = list(model.inputs[0].shape[1:]), str(model.inputs[0].dtype)
        run = graph_predict(tf, model, tf.TensorSpec([None, *shape], model.inputs[0].dtype))
        return Predictor(lambda x: run(x).numpy(), shape, dtype, model.outputs[0].shape[-1])
    with _local_copy(location) as path:
        try:
            return {"savedmodel": _savedmodel, "tflite": _tflite, "onnx": _onnx}[kind](tf, path, threads)
        except (ConfigError, DltoolError):
            raise
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types for a damaged file
            raise DltoolError(f"{uri}: cannot load the {kind} model ({type(e).__name__}: {_first_line(e)})") from e


def _savedmodel(tf, path: str, threads: int) -> Predictor:
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures.get("serving_default")
    if serve is None:
        raise ConfigError(f"{path}: the SavedModel has no serving_default signature")
    inputs = serve.structured_input_signature[1]
    if len(inputs) != 1:
        raise ConfigError(f"{path}: the SavedModel takes {len(inputs)} inputs; dltool scores models with one")
    (name, spec), = inputs.items()
    output = next(iter(serve.structured_outputs))

    def predict(x):
        return serve(**{name: tf.convert_to_tensor(x)})[output].numpy()

    predict.loaded = loaded  # keep the trackable objects alive as long as the function
    return Predictor(predict, list(spec.shape[1:]), spec.dtype.name, serve.structured_outputs[output].shape[-1])


def tflite_interpreter(tf, path: str, threads: int = 1):
    """TensorFlow's TFLite interpreter (deprecated for LiteRT from TF 2.20, still shipped; its warning is silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=path, num_threads=threads)


def _tflite(tf, path: str, threads: int) -> Predictor:
    import numpy as np

    interpreter = tflite_interpreter(tf, path, threads)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [int(d) for d in source["shape"][1:]]
    sized = {"batch": None}

    def predict(x):
        if sized["batch"] != len(x):
            interpreter.resize_tensor_input(source["index"], [len(x), *shape])
            interpreter.allocate_tensors()
            sized["batch"] = len(x)
        scale, zero = source["quantization"]
        if source["dtype"] != x.dtype and scale:  # an integer input of a quantized model
            x = np.round(x / scale + zero)
        interpreter.set_tensor(source["index"], np.asarray(x, dtype=source["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(target["index"])
        scale, zero = target["quantization"]
        return (y.astype(np.float32) - zero) * scale if scale else y

    return Predictor(predict, shape, np.dtype(source["dtype"]).name, int(target["shape"][-1]))


def _onnx(tf, path: str, threads: int) -> Predictor:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise DltoolError("scoring an .onnx model needs onnxruntime: pip install tf2onnx onnxruntime") from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    source, target = session.get_inputs()[0], session.get_outputs()[0]
    if len(session.get_inputs()) != 1:
        raise ConfigError(f"{path}: the ONNX model takes {len(session.get_inputs())} inputs; dltool scores models with one")
    element = source.type.removeprefix("tensor(").removesuffix(")")
    dtype = {"float": "float32", "double": "float64"}.get(element, element)
    outputs = target.shape[-1] if isinstance(target.shape[-1], int) else None

    def predict(x):
        return session.run([target.name], {source.name: x})[0]

    return Predictor(predict, [d if isinstance(d, int) else None for d in source.shape[1:]], dtype, outputs)


class _local_copy:
    """The artefact as a local path: itself when local, else a copy in a scratch folder removed afterwards."""

    def __init__(self, location: Location):
        self.location, self.scratch = location, None

    def __enter__(self) -> str:
        import pyarrow.fs as pafs

        from dltool.storage.fs import local_scratch

        if isinstance(self.location.fs, pafs.LocalFileSystem):
            return self.location.path
        self.scratch = local_scratch("model")
        path = str(self.scratch / posixpath.basename(self.location.path.rstrip("/")))
        if self.location.is_dir():
            pafs.copy_files(self.location.path, path, source_filesystem=self.location.fs,
                            destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        else:
            with open(path, "wb") as f:
                f.write(self.location.read_bytes())
        return path

    def __exit__(self, *exc) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def graph_predict(tf, model, signature):
    """The model as a graph function traced once for any batch size; predict() per batch is far slower."""

    @tf.function(input_signature=[signature])
    def predict(x):
        return model(x, training=False)

    return predict


def load_model(keras, uri: str, modules: list[str] = ()):
    """keras.models.load_model from a local copy when the file is remote; one line when it is damaged.

    `modules` are imported first: a factory's module registers the custom layers its models use.
    """
    import importlib

    for module in modules:
        importlib.import_module(module)
    with _local_copy(open_location(uri)) as path:
        try:
            return keras.models.load_model(path, compile=False)
        except Exception as e:  # zip, h5py and Keras errors for a damaged file
            raise DltoolError(f"{uri}: cannot load the model ({type(e).__name__}: {_first_line(e)}); "
                              "the file is damaged or from another Keras version") from e  # fmt: skip


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------ scoring copy

SCORING_FILE = "scoring.json"  # beside the final model.keras: whether model.onnx scores it, and how it was checked
ONNX_COPY = "model.onnx"
ONNX_TOLERANCE = 1e-5  # largest difference to Keras allowed, per unit of the largest output (probabilities: absolute)
CHECK_ROWS = 64
SCORING_COPY = (SCORING_FILE, ONNX_COPY)  # the files that travel with a .keras model when it is copied (Spark ML save)


def to_onnx(tf, model, shape, dtype: str, path: str) -> None:
    """Convert a Keras model to ONNX with tf2onnx (opset 17), input named `features`; one line when it cannot."""
    try:
        import tf2onnx
    except ImportError as e:
        raise DltoolError("ONNX conversion needs tf2onnx and onnxruntime: pip install tf2onnx onnxruntime") from e
    spec = (tf.TensorSpec([None, *shape], dtype, name="features"),)
    try:
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
    except Exception as e:  # noqa: BLE001 - tf2onnx raises many types, naming the op it cannot map
        raise DltoolError(f"onnx: the model cannot be converted: {converter_message(e)}") from e


def converter_message(error: Exception) -> str:
    """The line of a converter's error that names the op or layer (they print pages of MLIR)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "op" in line.lower() or "layer" in line.lower() or "not supported" in line.lower()]
    text = (named or lines or [type(error).__name__])[0]
    return text if len(text) <= 300 else text[:299] + "…"


def write_scoring_copy(tf, folder, sample, modules: list[str] = ()) -> dict:
    """Beside folder/model.keras (a local folder): model.onnx when the model converts and onnxruntime gives its
    outputs on `sample` (real rows) within ONNX_TOLERANCE; and scoring.json, which says so or why not.

    Eval and predict score with the copy (no TensorFlow start in their tasks) while scoring.json
    names the .keras file's digest; a model that does not convert is scored by TensorFlow, and
    eval says why. Never raises: a copy that cannot be made costs the run nothing.
    """
    import hashlib
    import json
    from pathlib import Path

    import numpy as np

    folder = Path(folder)
    keras_file, copy = folder / "model.keras", folder / ONNX_COPY
    record = {"keras_sha256": hashlib.sha256(keras_file.read_bytes()).hexdigest()}
    try:
        import keras

        model = load_model(keras, str(keras_file), modules)
        to_onnx(tf, model, sample.shape[1:], sample.dtype.name, str(copy))
        expected = np.asarray(model(sample, training=False), dtype=np.float64)
        got = np.asarray(_onnx(tf, str(copy), 1).predict(sample), dtype=np.float64)
        difference = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else math.inf
        allowed = ONNX_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
        if not difference <= allowed:
            raise DltoolError(f"its outputs differ from Keras by {difference:.2g} on {len(sample)} rows "
                              f"(allowed {allowed:.2g})")  # fmt: skip
        record.update(runtime="onnxruntime", file=ONNX_COPY, bytes=copy.stat().st_size, rows_checked=len(sample),
                      max_difference=difference)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - any failure means TensorFlow scores this model, for the reason recorded
        copy.unlink(missing_ok=True)
        record.update(runtime="tensorflow", reason=f"no ONNX copy: {_first_line(e)}")
    (folder / SCORING_FILE).write_text(json.dumps(record, indent=2))
    return record


@dataclass(frozen=True)
class Scorer:
    """What scores a model in eval and predict tasks: its ONNX copy (no TensorFlow start) or the model itself."""

    uri: str  # the file the tasks load
    runtime: str  # "onnxruntime" or "tensorflow"
    note: str  # how the copy was checked, or why TensorFlow scores it

    def in_threads(self, threads: int) -> Scorer:
        """This scorer, its note saying it scores in this process's threads instead of Spark tasks (spark/local.py)."""
        return Scorer(self.uri, self.runtime, f"{self.note}; in {threads} thread{'s' if threads > 1 else ''} of this "
                                              "process (a local master: no Spark tasks to start)")  # fmt: skip


def scorer_for(model: Location, gpus: bool = False) -> Scorer:
    """The ONNX copy train wrote beside a .keras model when it is there and of this very file, else the model."""
    import hashlib
    import json

    kind = artefact_kind(model)
    if kind != "keras":
        return Scorer(model.uri, "onnxruntime" if kind == "onnx" else "tensorflow", f"a {kind} model, scored as it is")
    if gpus:
        return Scorer(model.uri, "tensorflow", "the tasks have GPUs: TensorFlow scores on them")
    try:
        record = json.loads(beside(model, SCORING_FILE).read_bytes())
    except (OSError, ValueError):  # none (a checkpoint's model, an older run), or not readable
        record = None
    if not isinstance(record, dict):
        return Scorer(model.uri, "tensorflow", "no ONNX copy beside it (dltool train writes one beside the final model)")
    if record.get("runtime") != "onnxruntime":
        return Scorer(model.uri, "tensorflow", str(record.get("reason") or "no ONNX copy"))
    if hashlib.sha256(model.read_bytes()).hexdigest() != record.get("keras_sha256"):
        return Scorer(model.uri, "tensorflow", f"{posixpath.basename(model.path)} changed after its ONNX copy was made")
    copy = beside(model, ONNX_COPY)  # the name train writes, whatever scoring.json says
    size = copy.info().size
    if size is None or size != record.get("bytes"):  # gone, or not the file that was checked
        state = "is gone" if size is None else f"has {size} bytes, not the {record.get('bytes')} checked"
        return Scorer(model.uri, "tensorflow", f"its ONNX copy {ONNX_COPY} {state}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return Scorer(model.uri, "tensorflow", "onnxruntime is not installed (pip install tf2onnx onnxruntime)")
    checked = record.get("max_difference"), record.get("rows_checked")
    how = f"within {checked[0]:.1g} of Keras on {checked[1]} rows" if isinstance(checked[0], float) else "checked"
    return Scorer(copy.uri, "onnxruntime", f"{ONNX_COPY}, {how}")


def beside(location: Location, name: str) -> Location:
    """The file `name` in the folder holding `location`."""
    folder = posixpath.dirname(location.path.rstrip("/"))
    return Location(location.uri.rstrip("/").rsplit("/", 1)[0] + "/" + name, location.fs, posixpath.join(folder, name))
