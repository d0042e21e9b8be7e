"""Keras models as Spark ML stages: `KerasClassifier`/`KerasRegressor` Estimators and their fitted Models.

`fit(df)` checks the columns (before any Spark job), writes the DataFrame as a dltool dataset
(`write_dataset`), trains it with dltool's barrier launcher into a run directory (checkpoints,
history, TensorBoard, best model kept) and returns a Model. `transform(df)` scores with an Arrow
UDF that loads the model once per Python worker: its checked ONNX copy in onnxruntime when it has
one (no TensorFlow start; `dltool.artefacts.scorer_for`), else the `.keras` file in TensorFlow.
Both save and load as Spark ML stages (params as JSON, the `.keras` file and its ONNX copy beside
them), inside a Pipeline too.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from abc import abstractmethod
from collections.abc import Iterator

import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasFeaturesCol,
    HasLabelCol,
    HasPredictionCol,
    HasProbabilityCol,
    HasRawPredictionCol,
    HasSeed,
)
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)

from dltool.errors import ConfigError
from dltool.ml.dataset import FeatureColumn, LabelColumn, label_metadata, write_dataset

__all__ = ["KerasClassificationModel", "KerasClassifier", "KerasRegressionModel", "KerasRegressor"]

MODEL_FILE = "model.keras"


def _train_text(value) -> str:
    """The `train` param as text: a dict is kept as JSON, a string (YAML or JSON) as it is."""
    if isinstance(value, dict):
        return json.dumps(value)
    return TypeConverters.toString(value)


class _FeatureParams(HasFeaturesCol, HasPredictionCol):
    featuresShape = Param(Params._dummy(), "featuresShape", "the tensor each features value holds, e.g. [32, 32, 3] "
                          "(needed for binary features; default: a flat vector)", TypeConverters.toListInt)  # fmt: skip
    predictBatchSize = Param(Params._dummy(), "predictBatchSize", "rows per model call in transform (bounds the "
                             "scoring tasks' memory)", TypeConverters.toInt)  # fmt: skip

    def getFeaturesShape(self) -> list[int] | None:
        return self.getOrDefault(self.featuresShape) if self.isDefined(self.featuresShape) else None


class _TrainParams(_FeatureParams, HasLabelCol, HasSeed):
    """What an Estimator trains with: the common train: settings as params, the rest in `train`."""

    train = Param(Params._dummy(), "train", "the train: section of a dltool config (YAML or JSON text, or a dict); "
                  "the params below win over it", _train_text)  # fmt: skip
    epochs = Param(Params._dummy(), "epochs", "epochs to train (train.epochs); unset, here and in `train`: sized "
                   "to the frame, with early stopping and a batch to match (dltool.train.sizing)", TypeConverters.toInt)
    batchSize = Param(Params._dummy(), "batchSize", "examples per step over all workers (train.global_batch_size)",
                      TypeConverters.toInt)  # fmt: skip
    learningRate = Param(Params._dummy(), "learningRate", "train.optimizer.learning_rate", TypeConverters.toFloat)
    workers = Param(Params._dummy(), "workers", "TensorFlow workers, one Spark barrier task each (train.workers)",
                    TypeConverters.toInt)  # fmt: skip
    patience = Param(Params._dummy(), "patience", "stop after this many epochs without improvement of train.monitor "
                     "(train.early_stopping.patience; unset: no early stopping)", TypeConverters.toInt)  # fmt: skip
    validationFraction = Param(Params._dummy(), "validationFraction", "fraction of rows held out for validation "
                               "(by a stable hash of the row)", TypeConverters.toFloat)  # fmt: skip
    workDir = Param(Params._dummy(), "workDir", "where each fit writes its dataset and run directory (a path or URI "
                    "every executor can read; default: the temp folder)", TypeConverters.toString)  # fmt: skip
    keepDataset = Param(Params._dummy(), "keepDataset", "keep the dataset each fit writes (else deleted after training)",
                        TypeConverters.toBoolean)  # fmt: skip
    verbose = Param(Params._dummy(), "verbose", "show training progress on stderr", TypeConverters.toBoolean)

    def __init__(self):
        super().__init__()
        self._setDefault(train="{}", workers=1, validationFraction=0.1, predictBatchSize=256,
                         keepDataset=False, verbose=False, seed=0)  # fmt: skip

    def train_section(self) -> dict:
        """The train: section this estimator trains with (params applied over the `train` text), unvalidated."""
        import yaml

        text = self.getOrDefault(self.train)
        try:
            section = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"train param: invalid YAML: {str(e).splitlines()[0]}") from e
        if not isinstance(section, dict):
            raise ConfigError("train param: expected a mapping of train: settings, e.g. {epochs: 5}")
        section = dict(section)
        for param, field in ((self.epochs, "epochs"), (self.workers, "workers"), (self.seed, "seed")):
            if not self.isDefined(param):
                continue  # unset here and in the text: training sizes it to the frame (dltool.train.sizing)
            if self.isSet(param) or field not in section:  # a default never overrides the train text
                section[field] = self.getOrDefault(param)
        if self.isDefined(self.batchSize):
            section["global_batch_size"] = self.getOrDefault(self.batchSize)
        if self.isDefined(self.learningRate):
            section["optimizer"] = {**section.get("optimizer", {}), "learning_rate": self.getOrDefault(self.learningRate)}
        if self.isDefined(self.patience):
            section["early_stopping"] = {**(section.get("early_stopping") or {}), "patience": self.getOrDefault(self.patience)}
        return section


class _KerasEstimator(Estimator, _TrainParams, DefaultParamsReadable, DefaultParamsWritable):
    task = "classification"

    def _fit(self, dataset):
        from dltool.spark.shipping import factory_modules
        from dltool.train.result import TrainResult
        from dltool.train.run import run_training

        feature = FeatureColumn.of(dataset.schema, self.getFeaturesCol(), self.getFeaturesShape())
        label = LabelColumn.of(dataset.schema, self.getLabelCol(), self.task)
        folder = self._fit_folder()
        config = self._config(folder)  # a bad train: section fails here, before any Spark job
        held_out = self.getOrDefault(self.validationFraction)
        if not 0 < held_out < 1:
            raise ConfigError(f"validationFraction {held_out:g}: must be between 0 and 1 (validation drives the kept model)")
        manifest = write_dataset(dataset, f"{folder}/dataset", feature.name, label.name, self.task, self.getFeaturesShape(),
                                 split=(1 - held_out, held_out, 0.0), name=self.uid)  # fmt: skip
        try:
            # Fits come in series (CrossValidator, a refit pipeline): each takes the worker process, TensorFlow
            # loaded, that the one before left (one CPU worker; see train.barrier).
            summary = run_training(config, progress=self.getOrDefault(self.verbose), quiet=not self.getOrDefault(self.verbose),
                                   check_model=False, reuse_workers=True)  # fmt: skip
        finally:
            if not self.getOrDefault(self.keepDataset):
                from dltool.storage.fs import open_location
                from dltool.storage.ownership import delete_owned

                delete_owned(open_location(f"{folder}/dataset"), "dataset")
        result = TrainResult.from_summary(config.train.run_dir, summary)
        model = self._model_class()()
        model._resetUid(self.uid.replace(type(self).__name__, type(model).__name__, 1) + f"_{uuid.uuid4().hex[:6]}")
        self._copyValues(model)
        model._set(modelPath=result.model, runDir=result.run_dir, inputShape=list(manifest.features.shape),
                   modules=factory_modules(config),
                   classes=list(manifest.label.vocabulary or ()))  # fmt: skip
        model.trainingSummary = result
        return model

    def setParams(self, **params):
        """Set the params given (None leaves one as it is); returns self."""
        return self._set(**{name: value for name, value in params.items() if value is not None})

    @abstractmethod
    def _model_class(self) -> type:
        """The Model class this estimator's fit returns."""

    def _fit_folder(self) -> str:
        import tempfile

        root = self.getOrDefault(self.workDir) if self.isDefined(self.workDir) else os.path.join(tempfile.gettempdir(), "dltool-ml")
        if "://" not in root:
            root = os.path.abspath(root)
        return f"{root.rstrip('/')}/{self.uid}/fit-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def _config(self, folder: str):
        """The experiment a fit trains (what the params and text leave unset, training sizes to the rows)."""
        from dltool.config.loader import build_config

        section = {**self.train_section(), "run_dir": f"{folder}/run"}
        return build_config({"name": self.uid, "dataset": {"path": f"{folder}/dataset"}, "train": section},
                            source="train param")  # fmt: skip


class KerasClassifier(_KerasEstimator, HasProbabilityCol, HasRawPredictionCol):
    """Trains a dltool Keras classifier on a DataFrame: features (vector, array or binary tensor) and a class index.

    Class names come from the label column's ML attributes (StringIndexer's output), else "0".."k-1".
    """

    task = "classification"

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction",
                 probabilityCol="probability", rawPredictionCol="rawPrediction", featuresShape=None, train=None,
                 epochs=None, batchSize=None, learningRate=None, workers=None, patience=None, validationFraction=None,
                 seed=None, workDir=None, keepDataset=None, verbose=None, predictBatchSize=None):  # fmt: skip
        super().__init__()
        self.setParams(**self._input_kwargs)

    def _model_class(self):
        return KerasClassificationModel


class KerasRegressor(_KerasEstimator):
    """Trains a dltool Keras regression model on a DataFrame: features and a numeric target."""

    task = "regression"

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction", featuresShape=None,
                 train=None, epochs=None, batchSize=None, learningRate=None, workers=None, patience=None,
                 validationFraction=None, seed=None, workDir=None, keepDataset=None, verbose=None,
                 predictBatchSize=None):  # fmt: skip
        super().__init__()
        self.setParams(**self._input_kwargs)

    def _model_class(self):
        return KerasRegressionModel


def _accessors(cls, names: tuple[str, ...]) -> None:
    """set<Name>/get<Name> for each param, as Spark ML stages have them (pyspark's shared params bring only getters)."""
    for name in names:
        camel = name[0].upper() + name[1:]
        setattr(cls, f"set{camel}", lambda self, value, _n=name: self._set(**{_n: value}))
        if not hasattr(cls, f"get{camel}"):
            setattr(cls, f"get{camel}", lambda self, _n=name: self.getOrDefault(getattr(self, _n)))


_accessors(_FeatureParams, ("featuresCol", "predictionCol", "featuresShape", "predictBatchSize"))
_accessors(_TrainParams, ("labelCol", "seed", "train", "epochs", "batchSize", "learningRate", "workers", "patience",
                          "validationFraction", "workDir", "keepDataset", "verbose"))  # fmt: skip
_accessors(KerasClassifier, ("probabilityCol", "rawPredictionCol"))


# ------------------------------------------------------------------------------------------- models


class _KerasModel(Model, _TrainParams, MLReadable, MLWritable):
    """A trained dltool model (with the params it was trained with); `transform` adds its predictions to every row,
    keeping every input column."""

    modelPath = Param(Params._dummy(), "modelPath", "the trained .keras file", TypeConverters.toString)
    runDir = Param(Params._dummy(), "runDir", "the run directory it was trained in (history, TensorBoard, checkpoints)",
                   TypeConverters.toString)  # fmt: skip
    inputShape = Param(Params._dummy(), "inputShape", "the tensor the model takes per row", TypeConverters.toListInt)
    classes = Param(Params._dummy(), "classes", "class names by index (classifiers)", TypeConverters.toListString)
    modules = Param(Params._dummy(), "modules", "modules imported before the model loads: a factory's, which registers "
                    "its custom layers", TypeConverters.toListString)  # fmt: skip

    regression = False

    def __init__(self):
        super().__init__()
        self._setDefault(classes=[], modules=[])
        self.trainingSummary = None  # the TrainResult of the fit that made this model (None once loaded)

    def history(self) -> list[dict]:
        """The training's per-epoch metrics (loss, accuracy, val_loss, ...) from its run directory."""
        from dltool.storage.fs import open_location
        from dltool.train.checkpoints import HISTORY_FILE

        log = open_location(self.getOrDefault(self.runDir)).child(HISTORY_FILE)
        return [json.loads(line) for line in log.read_bytes().decode().splitlines() if line.strip()] if log.exists() else []

    def write(self) -> MLWriter:
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ModelReader(cls)

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        from dltool.shards.codec import TensorSpec

        shape = self.getOrDefault(self.inputShape)
        feature = FeatureColumn.of(dataset.schema, self.getFeaturesCol(), self.getFeaturesShape() or shape)
        if feature.sized and feature.spec.size != _size(shape):
            raise ConfigError(f"features column {feature.name!r} holds {list(feature.spec.shape)} per row; the model "
                              f"takes {shape}")  # fmt: skip
        spec = TensorSpec(tuple(shape), "uint8" if feature.kind == "binary" else "float32")
        kind = "double" if self.regression else "struct<prediction double, probability array<float>, raw array<float>>"
        from dltool.artefacts import scorer_for
        from dltool.storage.fs import open_location

        # The model's checked ONNX copy when it has one: the tasks then start no TensorFlow (as in eval).
        gpus = bool(dataset.sparkSession.conf.get("spark.task.resource.gpu.amount", None))
        chosen = scorer_for(open_location(self.getOrDefault(self.modelPath)), gpus)
        scorer = _scorer(chosen.uri, self.getOrDefault(self.modules), spec, self.regression,
                         self.getOrDefault(self.predictBatchSize), uuid.uuid4().hex)  # fmt: skip
        score = F.arrow_udf(scorer, kind)
        scored = f"_dltool_{self.uid}"
        frame = dataset.withColumn(scored, score(feature.values()))
        if self.regression:
            return frame.withColumn(self.getPredictionCol(), F.col(scored)).drop(scored)
        classes = tuple(self.getOrDefault(self.classes))
        outputs = {
            self.getPredictionCol(): F.col(f"{scored}.prediction"),
            self.getOrDefault(self.probabilityCol): array_to_vector(F.col(f"{scored}.probability")),
            self.getOrDefault(self.rawPredictionCol): array_to_vector(F.col(f"{scored}.raw")),
        }  # fmt: skip
        for name, value in outputs.items():
            if name:  # Spark ML's convention: an empty column name leaves that output out
                frame = frame.withColumn(name, value)
        if self.getPredictionCol():  # the class names, for IndexToString and evaluators
            frame = frame.withMetadata(self.getPredictionCol(), label_metadata(classes, self.getPredictionCol()))
        return frame.drop(scored)


def _size(shape) -> int:
    total = 1
    for d in shape:
        total *= int(d)
    return total


_LOADED: dict = {}  # this Python worker's loaded model: {transform call's token: Predictor}


def _scorer(model_uri: str, modules: list[str], spec, regression: bool, batch_size: int, token: str):
    """The Arrow UDF body: batches of stored tensors (list<float> or uint8 bytes) in, predictions out.

    The model is loaded once per Python worker and kept for the tasks after (Spark reuses its
    workers); `token` is new at each transform call, so a retrained model at the same path is
    loaded afresh. Arrow arrays go to numpy without a per-row step (measured: 1.9x the rows/s of
    predict_batch_udf, whose pandas conversion makes an object per row; docs/benchmarks.md).
    """

    def score(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        import numpy as np
        import pyarrow as pa

        from dltool.shards.codec import decode_tensors

        predictor = _LOADED.get(token)
        if predictor is None:
            from dltool.artefacts import load_predictor, task_tensorflow_for
            from dltool.tfenv import task_threads

            _LOADED.clear()
            predictor = _LOADED[token] = load_predictor(task_tensorflow_for([model_uri]), model_uri, modules,
                                                        task_threads())  # fmt: skip
        dtype = np.dtype(predictor.dtype)
        for batch in batches:
            x = decode_tensors(batch, spec).astype(dtype, copy=False)
            outputs = np.concatenate([predictor.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) \
                if len(x) else np.zeros((0, 1))  # fmt: skip
            if regression:
                yield pa.array(outputs.reshape(-1).astype(np.float64))
                continue
            outputs = outputs.astype(np.float32)
            offsets = pa.array(np.arange(len(outputs) + 1, dtype=np.int32) * outputs.shape[1])
            probability = pa.ListArray.from_arrays(offsets, pa.array(outputs.reshape(-1)))
            # Log probabilities as rawPrediction: the logits up to a constant per row (evaluators rank by them).
            raw = pa.ListArray.from_arrays(offsets, pa.array(np.log(np.maximum(outputs, 1e-30)).reshape(-1)))
            prediction = pa.array(outputs.argmax(axis=1).astype(np.float64))
            yield pa.StructArray.from_arrays([prediction, probability, raw], names=["prediction", "probability", "raw"])

    return score


class KerasClassificationModel(_KerasModel, HasProbabilityCol, HasRawPredictionCol):
    """A trained classifier: adds `prediction` (the class index, named in its ML attributes), `probability` and
    `rawPrediction` (log probabilities) vectors."""

    def __init__(self):
        super().__init__()
        self._setDefault(probabilityCol="probability", rawPredictionCol="rawPrediction")

    @property
    def numClasses(self) -> int:
        return len(self.getOrDefault(self.classes))


class KerasRegressionModel(_KerasModel):
    """A trained regression model: adds `prediction`, the predicted value."""

    regression = True


_accessors(_KerasModel, ("modelPath", "runDir", "inputShape", "classes", "modules"))
_accessors(KerasClassificationModel, ("probabilityCol", "rawPredictionCol"))


class _ModelWriter(MLWriter):
    """Params as Spark ML's JSON metadata; the .keras file (and its ONNX copy) copied beside it (no pickles)."""

    def __init__(self, instance: _KerasModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        from dltool.storage.fs import open_location

        instance = self.instance
        params = {p.name: v for p, v in instance._paramMap.items() if p.name != "modelPath"}
        DefaultParamsWriter.saveMetadata(instance, path, self.sparkSession, paramMap=params)
        from dltool.artefacts import SCORING_COPY, beside

        source = open_location(instance.getOrDefault(instance.modelPath))
        _location(path).child(MODEL_FILE).write_bytes(source.read_bytes())
        for name in SCORING_COPY:  # its checked ONNX copy, which transform scores with
            extra = beside(source, name)
            if extra.exists():
                _location(path).child(name).write_bytes(extra.read_bytes())


class _ModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> _KerasModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._set(modelPath=_location(path).child(MODEL_FILE).uri)
        return instance


def _location(path: str):
    from dltool.storage.fs import open_location

    return open_location(path if "://" in path else os.path.abspath(path))
