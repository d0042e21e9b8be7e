"""Build the Keras model and optimizer that `train` describes, for one dltool dataset.

The model takes the raw stored tensors (uint8 images, float32 features) and carries its
preprocessing as built-in Keras layers, so a saved `.keras` file loads and predicts with
no dltool code and no custom objects:

    features -> [cast] -> normalisation (dataset stats, or the application's own)
             -> body (builtin | layers | application | factory) -> head ("output")

The head is float32 even under a mixed-precision policy; classification outputs
probabilities (softmax), regression one linear unit.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dltool.config.models import ModelSettings, TrainSettings
from dltool.errors import ConfigError, InputNotFoundError

if TYPE_CHECKING:
    import keras

    from dltool.storage.manifest import Manifest

__all__ = ["APPLICATIONS", "build_model", "build_optimizer", "describe_model"]

# Each keras.applications model's expected input preprocessing (what its preprocess_input does):
# tf: scale to [-1, 1]; torch: [0, 1] then ImageNet mean/std; caffe: RGB->BGR minus the BGR mean;
# included: the model rescales inside itself (include_preprocessing=True), so dltool adds nothing.
APPLICATIONS = {
    **dict.fromkeys(["MobileNet", "MobileNetV2", "InceptionV3", "InceptionResNetV2", "Xception", "NASNetMobile",
                     "NASNetLarge", "ResNet50V2", "ResNet101V2", "ResNet152V2"], "tf"),
    **dict.fromkeys(["DenseNet121", "DenseNet169", "DenseNet201"], "torch"),
    **dict.fromkeys(["ResNet50", "ResNet101", "ResNet152", "VGG16", "VGG19"], "caffe"),
    **dict.fromkeys([*(f"EfficientNetB{i}" for i in range(8)),
                     *(f"EfficientNetV2{s}" for s in ("B0", "B1", "B2", "B3", "S", "M", "L")),
                     *(f"ConvNeXt{s}" for s in ("Tiny", "Small", "Base", "Large", "XLarge")),
                     "MobileNetV3Small", "MobileNetV3Large"], "included"),
}  # fmt: skip
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# Constructor arguments dltool sets itself on an application.
APPLICATION_OWN_ARGS = {"include_top", "weights", "input_tensor", "input_shape", "pooling", "classes",
                        "classifier_activation"}  # fmt: skip
# Keras's MelSpectrogram clips at (max over the whole batch) - top_db, which would make one
# example's features depend on its batch mates; 1000 dB never clips (its floor is -100 dB).
NO_TOP_DB = 1000.0
# tabular: members of the ensemble when its args leave them out, up to ENSEMBLE_ROWS train rows (beyond, one MLP:
# every member is a pass through it, and on large tables a single MLP's variance is small), and as many as
# ENSEMBLE_WIDTH embedded values allow: 16 up to 256 values (any table of about 30 columns), 1 from 4,096 (a
# 784-column table of pixels: 16 members trained at 436 examples/s and scored 0.983, one at 2,772 and 0.983).
ENSEMBLE, ENSEMBLE_ROWS, ENSEMBLE_WIDTH = 16, 50_000, 4096
TABLE_DROPOUT = ((1_000, 0.3), (10_000, 0.1))  # (train rows, tabular's dropout) at both ends of its range
TF_IDF_SCALE = 4.0  # a unit-length TF-IDF vector's entries are small (0.3 for 10 words): x 4, near the 0/1 slots'
TF_IDF_WORDS = 5.0  # kept words per train row, on average, from which a free-text column also gets its TF-IDF


class _BuiltinArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConvNetArgs(_BuiltinArgs):
    """`train.model.args` of small_cnn and audio_cnn."""

    # Three blocks: a receptive field that spans a 32x32 image before the global pooling.
    filters: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    dense: int = Field(64, ge=0)  # 0: no hidden dense layer before the head
    dropout: float = Field(0.25, ge=0, lt=1)


class TextCnnArgs(_BuiltinArgs):
    """`train.model.args` of text_cnn."""

    embedding: int = Field(64, ge=1)  # the embedding's width
    filters: int = Field(128, ge=1)
    kernel_size: int = Field(5, ge=1)  # tokens each filter sees: n-grams up to this long
    dense: int = Field(64, ge=0)
    dropout: float = Field(0.3, ge=0, lt=1)


class TabularArgs(_BuiltinArgs):
    """`train.model.args` of tabular."""

    # Each numeric column's value -> `frequencies` ReLU units with their own slopes and breakpoints -> a
    # `embedding`-wide vector (0: the units as they are): a learnt piecewise-linear encoding per column.
    frequencies: int = Field(32, ge=1)
    embedding: int = Field(8, ge=0)
    units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256, 256])
    # None: by the train rows (`tabular_dropout`), 0.3 up to 1,000 rows, 0.1 from 10,000.
    dropout: float | None = Field(None, ge=0, lt=1)
    linear: bool = True  # the head also sees the standardised features: a linear model is one step away
    l2: float = Field(0.0, ge=0)  # L2 penalty on the dense layers' kernels
    # Members sharing the MLP's weights, each with its own random +-1 scaling of the MLP's input and its own head
    # (TabM-mini, Gorishniy et al. 2024); the prediction is their mean. None: ENSEMBLE members up to
    # ENSEMBLE_ROWS train rows (each costs a pass through the MLP), one beyond, fewer on wide tables
    # (ENSEMBLE_WIDTH). 1: one MLP.
    ensemble: int | None = Field(None, ge=1)
    # A free-text column's 0/1 word slots also as TF-IDF scaled to unit length (x TF_IDF_SCALE), as
    # scikit-learn's TfidfVectorizer gives logistic regression: a short text's few words weigh as much as a
    # long one's many, and a rare word more than a common one. Only for texts (TF_IDF_WORDS words a row or
    # more): on names of 2-3 words (a car's) it measured worse.
    tf_idf: bool = True
    # A text's word slots (and their TF-IDF) reach the head by the linear path only, not through the MLP (wide and
    # deep, Cheng et al. 2016). Through the MLP, thousands of sparse word slots let it tell each train row by its
    # words within a few epochs and leave the other columns unlearnt: Trump's tweets (13,590 train rows; the phone or
    # the web, from the text, the time and the counts) scored 0.897 so, 0.925 with the text left out, 0.933 with its
    # words on the linear path (docs/benchmarks.md). Names (`text_spans`) stay in the MLP: a car's maker is in its
    # name (0.950 on the linear path, 0.988 so); and so do texts with no number or category beside them (food
    # reviews beside their product's code: 0.753 on the linear path, 0.777 so). Needs `linear`.
    wide_words: bool = True


class TextMlpArgs(_BuiltinArgs):
    """`train.model.args` of text_mlp."""

    units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256])
    dropout: float = Field(0.5, ge=0, lt=1)


class MlpArgs(_BuiltinArgs):
    """`train.model.args` of mlp."""

    units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64, 32])
    dropout: float = Field(0.1, ge=0, lt=1)


def build_model(train: TrainSettings, manifest: Manifest, target_scale: list[float] | None = None) -> keras.Model:
    """The model of `train.model` for the dataset of `manifest`, with fresh weights seeded by `train.seed`.

    `target_scale` ([mean, std] of a regression's train labels): the head's output is rescaled to them.

    Call it inside the distribution strategy's scope. Every layer dltool creates has a
    fixed name, so repeated builds (in one process or many) give the same structure.
    """
    import keras

    shape, dtype = manifest.features.shape, manifest.features.dtype
    outputs = _output_units(manifest)
    spec = train.model
    if spec.kind == "application":
        _application_mode(spec.application.name)  # fail on an unknown name before building anything
    keras.utils.set_random_seed(train.seed)

    inputs = keras.Input(shape=shape, dtype=dtype, name="features")
    name = _builtin_name(spec, manifest) if spec.kind == "builtin" else None
    if spec.kind == "application" and manifest.reader == "image":
        x = _application_preprocessing(spec.application.name, inputs)
    else:
        # tabular takes one-hot and word slots as 0/1: standardised, a rare one would be a huge value.
        x = _normalise(inputs, manifest, numeric_slots(manifest) if name == "tabular" else None)

    if spec.kind == "factory":
        y = _factory_body(spec, x, shape, outputs, manifest)
        return keras.Model(inputs, y, name="factory")
    if spec.kind == "builtin":
        x = _builtin_body(name, spec.args, x, manifest, train.seed)
    elif spec.kind == "layers":
        name = "layers"
        x = _layers_body(spec.layers, x, shape)
    else:
        name = spec.application.name.lower()
        x = _application_body(spec, x, shape)
    if name == "tabular" and len(x.shape) == 3:  # an ensemble's members [members, features]
        return keras.Model(inputs, _members_head(x, outputs, manifest, target_scale), name=name)
    if len(x.shape) != 2:
        raise ConfigError(
            f"train.model.{spec.kind}: the body gives {_dims(x.shape)} per example, not one vector; "
            "end it with Flatten or a global pooling layer"
        )
    activation = "softmax" if manifest.label.kind == "class" else None
    y = keras.layers.Dense(outputs, activation=activation, dtype="float32", name="output")(x)
    if target_scale is not None and manifest.label.kind == "regression":
        mean, std = target_scale
        y = keras.layers.Rescaling(scale=std, offset=mean, dtype="float32", name="target_scale")(y)
    return keras.Model(inputs, y, name=name)


def describe_model(model) -> dict:
    """Parameter counts and input/output shapes (None for the batch), JSON-ready."""
    return {
        "params": int(model.count_params()),
        "trainable_params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
        "input_shape": list(model.input_shape),
        "output_shape": list(model.output_shape),
    }


def build_optimizer(train: TrainSettings, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer of `train.optimizer`, its learning rate following `train.schedule`.

    Schedule steps are optimizer iterations; `steps_per_epoch` turns the schedule's epochs
    into steps. Call it inside the distribution strategy's scope.
    """
    import keras

    from dltool.train.schedules import WarmupSchedule

    if steps_per_epoch < 1:
        raise ConfigError(f"steps per epoch must be at least 1, got {steps_per_epoch}")
    if train.epochs is None:
        raise ConfigError("train.epochs is unset: size the settings to the data first (dltool.train.sizing.sized)")
    settings, schedule = train.optimizer, train.schedule
    known = {
        name.lower(): cls
        for name, cls in vars(keras.optimizers).items()
        if isinstance(cls, type)
        and issubclass(cls, keras.optimizers.Optimizer)
        and name not in ("Optimizer", "LossScaleOptimizer", "MultiOptimizer")  # wrappers, not optimizers
    }
    cls = known.get(settings.name.lower())
    if cls is None:
        raise ConfigError(
            f"train.optimizer.name: unknown optimizer {settings.name!r}{_did_you_mean(settings.name.lower(), known)}; "
            f"expected one of {', '.join(sorted(known))}"
        )
    if "learning_rate" in settings.args:
        raise ConfigError(
            "train.optimizer.args.learning_rate: set train.optimizer.learning_rate (and train.schedule) instead"
        )
    rate = WarmupSchedule(
        peak=settings.learning_rate,
        kind=schedule.kind,
        warmup_steps=round(schedule.warmup_epochs * steps_per_epoch),
        total_steps=train.epochs * steps_per_epoch,
        step_size=round(schedule.step_epochs * steps_per_epoch),
        factor=schedule.factor,
        min_fraction=schedule.min_fraction,
    )
    kwargs = dict(settings.args)
    if settings.clip_norm is not None:
        kwargs["global_clipnorm"] = settings.clip_norm
    try:
        return cls(learning_rate=rate, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train.optimizer.args: {cls.__name__} rejects {kwargs}: {_one_line(e)}") from e


# --- the dataset --------------------------------------------------------------------------


def _output_units(manifest: Manifest) -> int:
    kind = manifest.label.kind
    if kind == "class":
        vocabulary = list(manifest.label.vocabulary or [])
        if len(vocabulary) < 2:
            raise ConfigError(f"dataset has {len(vocabulary)} class(es) {vocabulary}: a classifier needs at least 2")
        return len(vocabulary)
    if kind == "regression":
        return 1
    if kind is None:
        raise ConfigError("dataset has no labels: cannot train (ingest it with a label)")
    raise ConfigError(f"dataset label kind {kind!r} is not supported; expected class or regression")


def _dims(shape) -> list:
    return list(shape[1:])


# --- preprocessing ------------------------------------------------------------------------


def numeric_slots(manifest: Manifest) -> int:
    """How many of a flat feature vector's slots, from the first, hold numbers: a table's numeric columns and date
    parts (its one-hot and word slots follow); every slot of a vector without column roles (Spark ML's)."""
    from dltool.transforms.table import date_features

    width = math.prod(manifest.features.shape)
    columns, names = manifest.columns, manifest.feature_names
    if not columns or not names:
        return width
    numeric = set(columns.get("numeric", [])) | set(date_features(columns.get("dates", [])))
    return next((i for i, n in enumerate(names) if n not in numeric), len(names))


def _normalise(inputs, manifest: Manifest, scaled_slots: int | None = None):
    """Cast to float32 and standardise with the train split's stats along their axis (flat features: only the first
    `scaled_slots`, when given; the others pass as they are)."""
    import keras
    import numpy as np

    x = inputs
    if inputs.dtype == "int32":  # token ids go to an embedding as they are
        return x
    if inputs.dtype != "float32":
        x = keras.layers.Rescaling(1.0, dtype="float32", name="cast")(x)
    stats = manifest.stats
    if stats is None:
        return x
    shape = tuple(inputs.shape[1:])
    axis = stats.axis
    mean = np.asarray(stats.mean, dtype=np.float64)
    std = np.asarray(stats.std, dtype=np.float64)
    if not 0 <= axis < len(shape) or mean.shape != (shape[axis],) or std.shape != mean.shape:
        raise ConfigError(
            f"dataset manifest stats do not fit its features {list(shape)}: "
            f"{mean.size} means and {std.size} stds along axis {axis}"
        )
    # A feature that is constant over train (std 0) is only centred: dividing by 0 gives inf.
    std = np.where(std > 0, std, 1.0)
    if scaled_slots is not None and len(shape) == 1:
        mean[scaled_slots:], std[scaled_slots:] = 0.0, 1.0
    # dtype float32: under mixed precision, float16 would overflow on large raw values (income).
    return keras.layers.Normalization(
        axis=axis + 1, mean=mean.tolist(), variance=(std**2).tolist(), dtype="float32", name="normalise"
    )(x)


def _application_mode(name: str) -> str:
    import keras

    mode = APPLICATIONS.get(name)
    if mode is None or not hasattr(keras.applications, name):
        supported = sorted(n for n in APPLICATIONS if hasattr(keras.applications, n))
        raise ConfigError(
            f"train.model.application.name: unknown application {name!r}{_did_you_mean(name, supported)}; "
            f"supported: {', '.join(supported)}"
        )
    return mode


def _application_preprocessing(name: str, inputs):
    """The application's own preprocess_input, as serialisable layers on 0..255 RGB images."""
    import keras
    import numpy as np

    mode = _application_mode(name)
    shape = _dims(inputs.shape)
    if mode in ("torch", "caffe") and (len(shape) != 3 or shape[-1] != 3):
        raise ConfigError(
            f"train.model.application.name: {name} expects RGB images [height, width, 3]; "
            f"the dataset's features are {shape} (ingest with channels: 3)"
        )
    # dltool stores images as uint8 0..255 or as float32 scaled to [0, 1].
    scale = 255.0 if inputs.dtype == "float32" else 1.0
    if mode == "tf":
        return keras.layers.Rescaling(scale / 127.5, offset=-1.0, dtype="float32", name="preprocess")(inputs)
    if mode == "torch":
        x = keras.layers.Rescaling(scale / 255.0, dtype="float32", name="cast")(inputs)
        variance = [s * s for s in IMAGENET_STD_RGB]
        return keras.layers.Normalization(
            axis=-1, mean=list(IMAGENET_MEAN_RGB), variance=variance, dtype="float32", name="preprocess"
        )(x)
    x = keras.layers.Rescaling(scale, dtype="float32", name="cast")(inputs)
    if mode == "included":
        return x
    # caffe: a fixed 1x1 convolution is an exact, serialisable channel permutation plus bias.
    to_bgr = keras.layers.Conv2D(3, 1, trainable=False, dtype="float32", name="preprocess")
    x = to_bgr(x)
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for out, source in enumerate((2, 1, 0)):
        kernel[0, 0, source, out] = 1.0
    to_bgr.set_weights([kernel, -np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)])
    return x


# --- bodies -------------------------------------------------------------------------------


def _builtin_name(spec: ModelSettings, manifest: Manifest) -> str:
    name = spec.builtin or "auto"
    if name != "auto":
        return name
    from dltool.readers.base import default_model_for

    reader = manifest.reader
    builtin = default_model_for(reader, manifest.features)
    if builtin is None:
        raise ConfigError(
            f"train.model.builtin: auto cannot choose a model for reader {reader!r}; name small_cnn, audio_cnn, mlp, "
            "text_cnn or text_mlp"
        )
    return builtin


def _builtin_args(model: type[_BuiltinArgs], args: dict, builtin: str) -> Any:
    try:
        return model.model_validate(args)
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown argument for {builtin}; expected one of {', '.join(model.model_fields)}"
        raise ConfigError(f"train.model.args.{field}: {message}") from e


def _builtin_body(name: str, args: dict, x, manifest: Manifest, seed: int = 0):
    import keras

    if name == "text_cnn":
        return _text_cnn(_builtin_args(TextCnnArgs, args, name), x, manifest)
    if name == "tabular":
        return _tabular(_builtin_args(TabularArgs, args, name), x, manifest, seed)
    if name == "text_mlp" and manifest.vocabulary is not None and len(x.shape) == 2 and x.dtype == "float32":
        return _text_mlp(_builtin_args(TextMlpArgs, args, name), x, manifest.vocabulary)
    if name in ("mlp", "text_mlp"):
        options = _builtin_args(MlpArgs, args, name)
        if len(x.shape) > 2:
            x = keras.layers.Flatten(name="flatten")(x)
        return _relu_layers(x, options.units, options.dropout)

    options = _builtin_args(ConvNetArgs, args, name)
    if name == "audio_cnn" and len(x.shape) in (2, 3) and manifest.reader == "audio":
        x = _mel_frontend(x, manifest)
    if len(x.shape) != 4:
        wanted = "[frames, bins, channels] or a waveform" if name == "audio_cnn" else "[height, width, channels]"
        raise ConfigError(
            f"train.model.builtin: {name} needs features shaped {wanted}; the dataset's are {_dims(x.shape)} "
            "(mlp takes any shape)"
        )
    for i, filters in enumerate(options.filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        # Small datasets give few steps: a faster moving average makes inference statistics usable.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        # "same" pooling never shrinks a side to 0, whatever the input size and depth.
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return _dense_top(x, options.dense, options.dropout)


def _relu_layers(x, widths: list[int], dropout: float, l2: float = 0.0):
    """Dense ReLU layers `dense_i` of these widths, each followed by `dropout_i` (when dropout > 0)."""
    import keras

    for i, units in enumerate(widths):
        regulariser = keras.regularizers.L2(l2) if l2 else None
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regulariser, name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    return x


def _dense_top(x, dense: int, dropout: float):
    """The pooled features' hidden dense layer and dropout, before the head (either may be off)."""
    import keras

    if dense:
        x = keras.layers.Dense(dense, activation="relu", name="dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return x


def _text_cnn(options: TextCnnArgs, x, manifest: Manifest):
    """Embedding, one 1-D convolution over the token windows, global max pooling (Kim 2014, one width)."""
    import keras

    if manifest.vocabulary is None or x.dtype != "int32" or len(x.shape) != 2:
        raise ConfigError(f"train.model.builtin: text_cnn needs token-id sequences from the text reader (output: "
                          f"sequence); the dataset's features are {_dims(x.shape)} {x.dtype}")  # fmt: skip
    x = keras.layers.Embedding(len(manifest.vocabulary) + 2, options.embedding, name="embedding")(x)
    if options.dropout:
        x = keras.layers.SpatialDropout1D(options.dropout, name="embedding_dropout")(x)
    x = keras.layers.Conv1D(options.filters, options.kernel_size, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    return _dense_top(x, options.dense, options.dropout)


def _text_mlp(options: TextMlpArgs, x, vocabulary):
    """A bag of words (TF-IDF or counts, slot 0 the out-of-vocabulary tokens) -> unit length -> a wide ReLU layer.

    The OOV slot is left out: with a capped vocabulary of words and word pairs it holds a third of
    a short document's weight (measured), and would swamp the rest once each document is scaled to
    unit length, as TF-IDF with logistic regression does (scikit-learn's TfidfVectorizer). Words'
    character n-grams (the vocabulary's last tokens, each starting with a space) are scaled to unit
    length on their own: a document has many more of them than words, and scaled together they
    would drown the words (measured: docs/benchmarks.md).
    """
    import keras

    width = x.shape[1]
    subwords = sum(t.startswith(" ") for t in vocabulary) if width == len(vocabulary) + 1 else 0
    subwords = subwords if 0 < subwords < width - 1 else 0
    if width > 1:
        slots = keras.layers.Reshape((width, 1), name="slots")(x)
        words = width - 1 - subwords
        known = keras.layers.Cropping1D((1, subwords), name="without_oov")(slots)
        x = keras.layers.Reshape((words,), name="known")(known)
    x = keras.layers.UnitNormalization(name="unit_length")(x)
    if subwords:
        chars = keras.layers.Reshape((subwords,), name="subwords")(
            keras.layers.Cropping1D((1 + words, 0), name="subword_slots")(slots))
        chars = keras.layers.UnitNormalization(name="subwords_unit_length")(chars)
        x = keras.layers.Concatenate(name="words_and_subwords")([x, chars])
    return _relu_layers(x, options.units, options.dropout)


def _tabular(options: TabularArgs, x, manifest: Manifest, seed: int = 0):
    """An MLP over per-column numeric embeddings, with a linear path to the head (for tables and feature vectors);
    an ensemble of such MLPs sharing their weights (TabM-mini) up to ENSEMBLE_ROWS train rows, of fewer members on
    wide tables (ENSEMBLE_WIDTH).

    The numeric slots lead a table's features (numbers, then date parts; then gap, one-hot and word
    slots, which pass through as they are). Each numeric value gets its own `frequencies` ReLU
    units (EinsumDense: a slope and a breakpoint per unit and column), so the network can cut a
    column at learnt thresholds as trees do (embeddings for numerical features, Gorishniy et al.
    2022), mixed down to `embedding` values per column. The breakpoints start spread over the
    standardised values (at normal quantiles, each unit facing up or down at random), not all at 0.
    A text column's word slots and their TF-IDF skip the MLP where numbers or categories are beside
    them: the head sees them on the linear path (`wide_words`).

    With `ensemble` members, the embedded features are repeated per member and scaled by the
    member's own random +-1 vector before the shared MLP; each member has its own head and the
    model predicts their mean (`_members_head`). On small tables this lowers the variance a single
    MLP has (measured: docs/benchmarks.md). Standard Keras layers only: the saved model loads
    without dltool.
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="flatten")(x)
    width = x.shape[1]
    leading = numeric_slots(manifest)
    texts = sorted(text_spans(manifest).values()) if options.wide_words and options.linear else []
    words = tuple(f"{c}~" for c in (manifest.columns or {}).get("words", []))
    if not leading and all(n.startswith(words) for n in manifest.feature_names or []):
        texts = []  # texts and names alone: their words are what the MLP learns from
    features = [x]
    if leading or texts:
        column = keras.layers.Reshape((width, 1), name="slots")(x)
        bounds = [leading, *(b for span in texts for b in span), width]  # the slots between the texts go to the MLP
        spans = [(a, b) for a, b in zip(bounds[::2], bounds[1::2]) if b > a]
        names = ["other", *(f"other_{i}" for i in range(1, len(spans)))]
        features = [keras.layers.Flatten(name=name)(keras.layers.Cropping1D((a, width - b), name=f"{name}_slots")(
            column)) for name, (a, b) in zip(names, spans)]  # fmt: skip
    if leading:
        numbers = x
        if leading < width:
            numbers = keras.layers.Reshape((leading,), name="numeric")(
                keras.layers.Cropping1D((0, width - leading), name="numeric_slots")(column))
        embedding = keras.layers.EinsumDense("bn,nk->bnk", output_shape=(leading, options.frequencies),
                                             bias_axes="nk", name="numeric_embedding")  # fmt: skip
        e = keras.layers.ReLU(name="numeric_embedding_relu")(embedding(numbers))
        _spread_breakpoints(embedding, rng)
        if options.embedding:
            e = keras.layers.EinsumDense("bnk,nkd->bnd", output_shape=(leading, options.embedding), bias_axes="nd",
                                         name="numeric_embedding_mix")(e)  # fmt: skip
        features.insert(0, keras.layers.Flatten(name="numeric_embedded")(e))
    members = options.ensemble or (min(ENSEMBLE, max(1, ENSEMBLE_WIDTH // sum(f.shape[-1] for f in features)))
                                   if manifest.rows("train") <= ENSEMBLE_ROWS else 1)  # fmt: skip
    if options.tf_idf and (tf_idf := _tf_idf(x, manifest)):
        features += [] if texts else tf_idf
        x = keras.layers.Concatenate(name="with_tf_idf")([x, *tf_idf])
    h = features[0] if len(features) == 1 else keras.layers.Concatenate(name="embedded")(features)
    if members > 1:
        h = keras.layers.RepeatVector(members, name="members")(h)
        scale = keras.layers.EinsumDense("bmd,md->bmd", output_shape=(members, h.shape[-1]),
                                         kernel_initializer="ones", name="member_scale")  # fmt: skip
        h = scale(h)
        scale.kernel.assign(rng.choice([-1.0, 1.0], size=tuple(scale.kernel.shape)).astype("float32"))
        if options.linear:
            x = keras.layers.RepeatVector(members, name="members_linear")(x)
    dropout = tabular_dropout(manifest.rows("train")) if options.dropout is None else options.dropout
    h = _relu_layers(h, options.units, dropout, options.l2)
    return keras.layers.Concatenate(name="with_linear")([h, x]) if options.linear else h


def tabular_dropout(rows: int) -> float:
    """`tabular`'s dropout for a table of `rows` train rows: TABLE_DROPOUT's most up to its first row count, its
    least from its second, and log-linear between: a small table's MLP overfits in a few epochs (measured on the
    quality bench's tables of 250-1,000 rows: docs/benchmarks.md) where a large one's needs little."""
    import math

    (few, most), (many, least) = TABLE_DROPOUT
    share = (math.log10(max(rows, few)) - math.log10(few)) / (math.log10(many) - math.log10(few))
    return round(most - (most - least) * min(1.0, share), 3)


def text_spans(manifest: Manifest) -> dict[int, tuple[int, int]]:
    """The free-text columns of a table that hold texts, by their place among its `words` columns -> [start, stop) of
    their word slots (`column~word`). Columns of names (fewer than TF_IDF_WORDS kept words a train row on average,
    the sum of their slots' train means: a car's 2.2, a passenger's 2.8) are not texts."""
    import numpy as np

    names, stats, spans = manifest.feature_names or [], manifest.stats, {}
    if stats is None or len(names) != len(stats.mean):
        return spans
    for i, column in enumerate((manifest.columns or {}).get("words", [])):
        at = [j for j, n in enumerate(names) if n.startswith(f"{column}~")]
        if at and np.asarray(stats.mean[at[0]:at[-1] + 1], np.float64).sum() >= TF_IDF_WORDS:
            spans[i] = (at[0], at[-1] + 1)
    return spans


def _tf_idf(x, manifest: Manifest) -> list:
    """Each text's word slots (0/1, `text_spans`) as TF-IDF of unit length, x TF_IDF_SCALE: the slot times
    log(1 + N / (1 + df)), its document frequency df from the train split's stats (the slot's mean times N rows), as
    `idf_weights` for the text reader. Columns of names keep their 0/1 slots only."""
    import keras
    import numpy as np

    from dltool.transforms.text import idf_weights

    width, rows = x.shape[1], manifest.rows("train")
    if not rows:
        return []
    slots, texts = None, []
    for i, (start, stop) in text_spans(manifest).items():
        share = np.asarray(manifest.stats.mean[start:stop], np.float64)  # of the train rows holding each word
        frequency = np.rint(share * rows).astype(np.int64)
        weight = idf_weights(frequency, rows)
        slots = slots if slots is not None else keras.layers.Reshape((width, 1), name="tf_idf_slots")(x)
        words = keras.layers.Reshape((stop - start,), name=f"words_{i}")(
            keras.layers.Cropping1D((start, width - stop), name=f"word_slots_{i}")(slots))
        weighted = keras.layers.Normalization(mean=[0.0] * len(weight), variance=(1 / weight**2).tolist(),
                                              name=f"idf_{i}")(words)  # fmt: skip
        unit = keras.layers.UnitNormalization(name=f"tf_idf_{i}")(weighted)
        texts.append(keras.layers.Rescaling(TF_IDF_SCALE, name=f"tf_idf_scale_{i}")(unit))
    return texts


def _spread_breakpoints(embedding, rng) -> None:
    """Each numeric embedding unit relu(w * (x - t)): t at the standard normal's quantiles, w = +-1 at random.

    Keras's defaults (a zero bias) put every unit's breakpoint at 0, the column's mean, from where
    they move slowly; spread over the standardised range, the units can cut eras of a date or bands
    of a measurement from the first step.
    """
    from statistics import NormalDist

    columns, units = embedding.kernel.shape
    quantiles = [NormalDist().inv_cdf((i + 0.5) / units) for i in range(units)]
    slope = rng.choice([-1.0, 1.0], size=(columns, units))
    embedding.kernel.assign(slope.astype("float32"))
    embedding.bias.assign((-slope * quantiles).astype("float32"))


def _members_head(x, outputs: int, manifest: Manifest, target_scale: list[float] | None):
    """Each member's own head on [members, features] -> the mean of the members' outputs (classes: of their logits,
    then softmax; a regression's members each rescaled to the labels first)."""
    import keras

    members = x.shape[1]
    y = keras.layers.EinsumDense("bmh,mho->bmo", output_shape=(members, outputs), bias_axes="mo", dtype="float32",
                                 name="member_heads")(x)  # fmt: skip
    if manifest.label.kind != "class":
        if target_scale is not None and manifest.label.kind == "regression":
            mean, std = target_scale
            y = keras.layers.Rescaling(scale=std, offset=mean, dtype="float32", name="target_scale")(y)
        return keras.layers.GlobalAveragePooling1D(dtype="float32", name="output")(y)
    y = keras.layers.GlobalAveragePooling1D(dtype="float32", name="member_mean")(y)
    return keras.layers.Activation("softmax", dtype="float32", name="output")(y)


def training_view(model, manifest: Manifest):
    """For a model of ensemble members (`_members_head`): a model of the same layers giving [its prediction, each
    member's own prediction (batch, members, outputs: class probabilities, or values at the labels' scale)], so each
    member is trained on its own loss and the model predicts their mean, as TabM trains them. Trained on the loss of
    the mean instead, the members fit as one wider network and lose the ensemble's variance reduction (measured:
    docs/benchmarks.md). None: a model without members, trained on its prediction."""
    import keras

    names = {layer.name for layer in model.layers}
    if "member_heads" not in names or manifest.label.kind not in ("class", "regression"):
        return None
    if manifest.label.kind == "class":
        members = keras.layers.Activation("softmax", dtype="float32", name="member_probabilities")(
            model.get_layer("member_heads").output)
    else:
        members = model.get_layer("target_scale" if "target_scale" in names else "member_heads").output
    return keras.Model(model.inputs, [model.outputs[0], members], name=f"{model.name}_members")


def _mel_frontend(x, manifest: Manifest):
    """Waveforms [samples] or [samples, channels] to dB mel spectrograms [frames, mels, channels].

    Uses the ingest's sample rate and spectrogram settings (n_fft, hop_length, n_mels, fmin,
    fmax). Keras frames centred and in dB, so values differ from an ingest-time logmel; the
    batch normalisation after it learns their scale, per mel band like logmel stats.
    """
    import keras

    ingest = manifest.ingest
    rate = ingest.get("sample_rate")
    if not rate:
        raise ConfigError(
            "train.model.builtin: audio_cnn on waveforms needs the sample rate, which the dataset manifest "
            "lacks (ingest.sample_rate)"
        )
    from dltool.config.readers import AudioReaderConfig

    fields = AudioReaderConfig.model_fields
    mel = {k: ingest.get(k, fields[k].default) for k in ("n_fft", "hop_length", "n_mels", "fmin", "fmax")}
    if len(x.shape) == 2:
        x = keras.layers.Reshape((x.shape[1], 1), name="to_channels")(x)
    if x.shape[1] < mel["n_fft"]:
        raise ConfigError(
            f"train.model.builtin: audio_cnn: waveforms of {x.shape[1]} samples are shorter than n_fft {mel['n_fft']}"
        )
    x = keras.layers.Permute((2, 1), name="channels_first")(x)  # one spectrogram per channel
    spectrogram = keras.layers.MelSpectrogram(
        fft_length=mel["n_fft"],
        sequence_stride=mel["hop_length"],
        sampling_rate=rate,
        num_mel_bins=mel["n_mels"],
        min_freq=float(mel["fmin"]),
        max_freq=mel["fmax"],
        top_db=NO_TOP_DB,
        dtype="float32",
        name="mel",
    )
    x = keras.layers.TimeDistributed(spectrogram, dtype="float32", name="mel_spectrogram")(x)
    x = keras.layers.Permute((3, 2, 1), name="frames_mels_channels")(x)
    return keras.layers.BatchNormalization(axis=2, dtype="float32", name="mel_norm")(x)


def _keras_layer(name: str, where: str) -> type:
    import keras

    known = {
        n: cls
        for n, cls in vars(keras.layers).items()
        if isinstance(cls, type) and issubclass(cls, keras.layers.Layer) and n not in ("Layer", "InputLayer")
    }
    if name not in known:
        raise ConfigError(f"{where}: unknown Keras layer {name!r}{_did_you_mean(name, known)}")
    return known[name]


def _layers_body(entries: list[dict], x, shape: tuple[int, ...]):
    for i, entry in enumerate(entries):
        where = f"train.model.layers[{i}]"
        if len(entry) != 1:
            raise ConfigError(
                f"{where}: give one layer per entry, as {{LayerName: {{arguments}}}}; got {sorted(entry)}"
            )
        [(name, kwargs)] = entry.items()
        cls = _keras_layer(name, where)
        # A fixed name keeps the structure identical from build to build (weights files key on names).
        kwargs = {"name": f"layer_{i}", **(kwargs or {})}
        try:
            layer = cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}.{name}: {_one_line(e)}") from e
        try:
            x = layer(x)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"{where}.{name}: cannot take input shaped {_dims(x.shape)} (the dataset's features are "
                f"{list(shape)}): {_one_line(e)}"
            ) from e
    return x


def _application_body(spec: ModelSettings, x, shape: tuple[int, ...]):
    import keras

    app = spec.application
    path = Path(app.weights).expanduser() if app.weights else None
    if path is not None and not path.is_file():
        raise InputNotFoundError(
            f"train.model.application.weights: {path} not found (weights are read from a local file, never downloaded)"
        )
    own = sorted(set(spec.args) & APPLICATION_OWN_ARGS)
    if own:
        raise ConfigError(f"train.model.args.{own[0]}: set by dltool for applications; remove it")
    try:
        base = getattr(keras.applications, app.name)(
            include_top=False, weights=None, input_shape=shape, pooling=app.pooling, **spec.args
        )
    except TypeError as e:
        raise ConfigError(f"train.model.args: {app.name} rejects {spec.args}: {_one_line(e)}") from e
    except ValueError as e:
        raise ConfigError(
            f"train.model.application.name: {app.name} cannot take the dataset's features {list(shape)}: {_one_line(e)}"
        ) from e
    if path is not None:
        try:
            base.load_weights(str(path))
        except Exception as e:  # h5py, Keras and OS errors all mean the file does not fit
            raise ConfigError(
                f"train.model.application.weights: cannot load {path} into {app.name}: {_one_line(e)}"
            ) from e
    if app.freeze_base:
        base.trainable = False
        # training=False keeps the base's BatchNorm on its stored statistics while the head trains.
        x = base(x, training=False)
    else:
        x = base(x)
    if app.dropout:
        x = keras.layers.Dropout(app.dropout, name="dropout")(x)
    return x


def _factory_body(spec: ModelSettings, x, shape: tuple[int, ...], outputs: int, manifest: Manifest):
    import keras

    where = "train.model.factory"
    module_name, function_name = spec.factory.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any error while importing the user's module is a config problem
        raise ConfigError(f"{where}: cannot import {module_name!r}: {type(e).__name__}: {_one_line(e)}") from e
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"{where}: {module_name} has no function {function_name!r}")
    try:
        # The factory gets the manifest as its JSON (a user contract), a copy it may change freely.
        model = function(shape, outputs, copy.deepcopy(manifest.to_json()), **spec.args)
    except Exception as e:  # the user's code failed; say where, keep the cause chained
        raise ConfigError(f"{where}: {spec.factory} failed: {type(e).__name__}: {_one_line(e)}") from e
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{where}: {spec.factory} returned {type(model).__name__}, not a keras.Model")
    try:
        y = model(x)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{where}: the model from {spec.factory} cannot take the dataset's features {list(shape)}: {_one_line(e)}"
        ) from e
    if not hasattr(y, "shape") or tuple(y.shape) != (None, outputs):
        got = list(y.shape) if hasattr(y, "shape") else type(y).__name__
        raise ConfigError(f"{where}: the model from {spec.factory} outputs {got}; expected [None, {outputs}]")
    if y.dtype != "float32":
        # Under mixed precision the loss must see float32, like dltool's own head.
        y = keras.layers.Activation("linear", dtype="float32", name="output")(y)
    return y


# --- messages -----------------------------------------------------------------------------


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
