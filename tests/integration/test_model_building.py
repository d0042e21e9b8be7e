"""Model and optimizer building on TensorFlow (no Spark): shapes, preprocessing, save/load, errors, schedules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from dltool.config.models import TrainSettings
from dltool.errors import ConfigError, InputNotFoundError
from dltool.shards.codec import TensorSpec
from dltool.storage.manifest import Label, SplitEntry, Stats
from tests.conftest import ROOT, make_manifest

keras = pytest.importorskip("keras")

from dltool.train.metrics import members_loss, per_example_loss_fn
from dltool.train.model import build_model, build_optimizer, describe_model, training_view

CLASSES = Label("class", ("a", "b", "c"))


def manifest(reader="image", shape=(12, 12, 3), dtype="uint8", axis=None, mean=None, std=None, label=CLASSES, **extra):
    """A dataset manifest with the parts model building reads; stats default to mean 1, std 2."""
    axis = len(shape) - 1 if axis is None else axis
    size = shape[axis]
    stats = Stats(axis, 1, tuple(mean or [1.0] * size), tuple(std or [2.0] * size))
    fields = {"ingest": {"reader": reader}, **extra}
    return make_manifest(reader=reader, features=TensorSpec(tuple(shape), dtype), label=label, stats=stats, **fields)


WAVEFORM = manifest(
    "audio", (800, 1), "float32", mean=[0.0], std=[0.1],
    ingest={"reader": "audio", "sample_rate": 8000, "features": "waveform", "n_fft": 128, "hop_length": 64,
            "n_mels": 16, "fmin": 0.0, "fmax": None},
)  # fmt: skip


def train(model=None, **fields) -> TrainSettings:
    return TrainSettings.model_validate({"run_dir": "run", "model": model or {}, "epochs": 10, **fields})


def sample(m, n: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, *m.features.shape)
    if m.features.dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if m.features.dtype == "int32":  # token ids: padding, OOV and the vocabulary's
        return rng.integers(0, len(m.vocabulary) + 2, shape, dtype=np.int32)
    return rng.normal(size=shape).astype(np.float32)


def layer_output(model, name: str, x):
    return keras.Model(model.input, model.get_layer(name).output)(x).numpy()


# --- builtins and heads -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "builtin"),
    [
        (manifest("image", (12, 12, 3), "uint8"), "small_cnn"),
        (manifest("image", (12, 12, 1), "float32"), "small_cnn"),
        (manifest("audio", (20, 16, 1), "float32", axis=1), "audio_cnn"),
        (WAVEFORM, "audio_cnn"),
        (manifest("csv", (6,), "float32"), "tabular"),
        (manifest("text", (10,), "int32", vocabulary=("a", "b", "c", "d")), "text_cnn"),
        (manifest("text", (5,), "float32", vocabulary=("a", "b", "c", "d")), "text_mlp"),
    ],
    ids=["image-uint8", "image-float", "logmel", "waveform", "csv", "text-ids", "text-tfidf"],
)
def test_auto_builtin_outputs_probabilities(m, builtin):
    model = build_model(train({"builtin": "auto", "args": {"dense": 8} if "cnn" in builtin else {}}), m)
    assert model.name == builtin
    probabilities = model(sample(m)).numpy()
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("output").dtype_policy.name == "float32"


def test_text_cnn_embeds_every_id_and_refuses_other_features():
    m = manifest("text", (7,), "int32", vocabulary=tuple("abcdef"))
    model = build_model(train({"builtin": "text_cnn", "args": {"embedding": 6, "filters": 4}}), m)
    assert model.get_layer("embedding").input_dim == 8 and model.input.dtype == "int32"
    assert model(np.array([[7, 1, 0, 0, 0, 0, 0]], np.int32)).shape == (1, 3)
    with pytest.raises(ConfigError, match="text_cnn needs token-id sequences"):
        build_model(train({"builtin": "text_cnn"}), manifest("csv", (6,), "float32"))


def test_text_mlp_scales_words_and_subwords_to_unit_length_apart():
    import keras

    m = manifest("text", (6,), "float32", mean=[0.0] * 6, std=[1.0] * 6,
                 vocabulary=("a", "b", " <a", " a>", " <a>"))  # slots: OOV, 2 words, 3 subwords
    model = build_model(train({"builtin": "text_mlp"}), m)
    scaled = keras.Model(model.input, model.get_layer("words_and_subwords").output)
    out = scaled(np.array([[9, 3, 4, 1, 1, 1]], np.float32)).numpy()[0]  # the OOV slot (9) is left out
    np.testing.assert_allclose(out, [0.6, 0.8, *([3**-0.5] * 3)], rtol=1e-5)
    words_only = build_model(train({"builtin": "text_mlp"}), manifest("text", (3,), "float32", vocabulary=("a", "b")))
    assert "words_and_subwords" not in [layer.name for layer in words_only.layers]


def test_regression_head_is_one_linear_unit_and_mlp_flattens_images():
    m = manifest("image", (6, 6, 2), "uint8", label=Label("regression"))
    model = build_model(train({"builtin": "mlp", "args": {"units": [5], "dropout": 0}}), m)
    assert describe_model(model) == {
        "params": 6 * 6 * 2 * 5 + 5 + 5 + 1,
        "trainable_params": 6 * 6 * 2 * 5 + 5 + 5 + 1,
        "input_shape": [None, 6, 6, 2],
        "output_shape": [None, 1],
    }
    assert model.get_layer("output").get_config()["activation"] == "linear"


def test_tabular_embeds_each_numeric_column_and_passes_other_slots_and_a_linear_path(tmp_path):
    names = ("age", "day:days", "day:month", "day:day", "day:weekday", "day:hour", "plan=a", "plan=<other>", "name~x")
    columns = {"numeric": ["age"], "categorical": ["plan"], "dates": ["day"], "words": ["name"], "left_out": {}}
    m = manifest("csv", (9,), "float32", feature_names=names, columns=columns)
    model = build_model(train({"builtin": "tabular", "args": {"frequencies": 4, "embedding": 3, "units": [7]}}), m)
    assert model.name == "tabular"
    embedding = model.get_layer("numeric_embedding")
    assert embedding.kernel.shape == (6, 4)  # the number and the 5 date parts, 4 units each
    # each unit relu(+-(x - t)): breakpoints t spread over the standardised range, not all at 0
    breakpoints = -embedding.bias.numpy() / embedding.kernel.numpy()
    np.testing.assert_allclose(breakpoints[0], [-1.150, -0.319, 0.319, 1.150], atol=1e-3)
    assert set(np.abs(embedding.kernel.numpy()).ravel()) == {1.0}
    assert model.get_layer("numeric_embedded").output.shape == (None, 6 * 3)
    assert model.get_layer("other").output.shape == (None, 3)  # one-hot and word slots as they are
    # a small table: 16 members share the MLP, each with its own +-1 input scale and head; the output is their mean
    scale = model.get_layer("member_scale").kernel.numpy()
    assert scale.shape == (16, 6 * 3 + 3) and set(np.abs(scale).ravel()) == {1.0} and len({tuple(r) for r in scale}) == 16
    assert model.get_layer("with_linear").output.shape == (None, 16, 7 + 9)  # the hidden layer and the features
    assert model.get_layer("member_heads").output.shape == (None, 16, 3)
    assert model.output.shape == (None, 3)
    x = sample(m)
    np.testing.assert_allclose(model(x).numpy().sum(axis=1), 1.0, rtol=1e-5)
    before = model(x).numpy()
    model.save(tmp_path / "m.keras")  # standard Keras layers only: loads with no dltool code
    code = (f"import keras, numpy as np; m = keras.saving.load_model({str(tmp_path / 'm.keras')!r}); "
            f"np.save({str(tmp_path / 'out.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})).numpy())")
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), before, rtol=1e-5)
    vectors = build_model(train({"builtin": "tabular"}), manifest("csv", (5,), "float32"))  # no names: all numeric
    assert vectors.get_layer("numeric_embedding").kernel.shape == (5, 32)
    single = build_model(train({"builtin": "tabular", "args": {"ensemble": 1, "units": [7]}}), m)
    assert single.get_layer("with_linear").output.shape == (None, 7 + 9)
    assert not any(layer.name.startswith("member") for layer in single.layers)
    # wide tables get fewer members: 100 columns embed to 800 values (5 members), 600 pixel columns to 4,800 (one)
    wide = build_model(train({"builtin": "tabular"}), manifest("csv", (100,), "float32"))
    assert wide.get_layer("member_scale").kernel.shape == (4096 // 800, 800)
    pixels = build_model(train({"builtin": "tabular"}), manifest("csv", (600,), "float32"))
    assert not any(layer.name.startswith("member") for layer in pixels.layers)


def test_tabular_dropout_follows_the_train_rows_unless_set():
    def rates(rows: int, args=None) -> set[float]:
        splits = {"train": SplitEntry(rows, ("train/part-00000.parquet",), {"all": rows})}
        m = manifest("csv", (6,), "float32", splits=splits)
        model = build_model(train({"builtin": "tabular", "args": {"units": [7, 7], **(args or {})}}), m)
        return {round(layer.rate, 3) for layer in model.layers if isinstance(layer, keras.layers.Dropout)}

    assert rates(300) == {0.3} and rates(1_000) == {0.3}  # a small table overfits in a few epochs
    assert 0.1 < min(rates(3_000)) < 0.3 and rates(10_000) == {0.1} and rates(200_000) == {0.1}
    assert rates(300, {"dropout": 0.05}) == {0.05} and rates(300, {"dropout": 0}) == set()


def test_tabular_members_give_their_own_predictions_to_train_on_and_the_model_their_mean():
    m = manifest("csv", (5,), "float32")
    model = build_model(train({"builtin": "tabular", "args": {"units": [7]}}), m)
    x = sample(m, 6)
    prediction, members = (t.numpy() for t in training_view(model, m)(x))
    assert members.shape == (6, 16, 3)
    np.testing.assert_allclose(members.sum(axis=2), 1.0, rtol=1e-5)  # each member's own class probabilities
    np.testing.assert_allclose(prediction, model(x).numpy(), rtol=1e-5)
    # the model predicts the softmax of the members' mean logits, i.e. of their mean log-probabilities
    mean = np.exp(np.log(members).mean(axis=1))
    np.testing.assert_allclose(prediction, mean / mean.sum(axis=1, keepdims=True), rtol=1e-4)
    # the training loss: each member's own cross-entropy, averaged over the members
    labels = np.array([0, 1, 2, 0, 1, 2])
    own = members_loss(per_example_loss_fn("sparse_categorical_crossentropy", 3, 0.0), labels, members).numpy()
    np.testing.assert_allclose(own, -np.log(members[np.arange(6), :, labels]).mean(axis=1), rtol=1e-5)
    r = manifest("csv", (5,), "float32", label=Label("regression", None))
    regression = build_model(train({"builtin": "tabular", "args": {"units": [7]}}), r, target_scale=[100.0, 0.01])
    prediction, members = (t.numpy() for t in training_view(regression, r)(x))
    assert members.shape == (6, 16, 1)
    np.testing.assert_allclose(prediction, members.mean(axis=1), rtol=1e-5)  # the mean of values at the labels' scale
    assert np.all(np.abs(members - 100.0) < 1.0)  # around the labels' mean 100, std 0.01: not standardised
    single = build_model(train({"builtin": "tabular", "args": {"ensemble": 1}}), m)
    assert training_view(single, m) is None  # one MLP: trained on its prediction


def test_tabular_reads_a_text_column_also_as_unit_length_tf_idf_and_a_name_column_as_words_only():
    # a 2-word name (train rows hold 1.5 of its words on average) and a note of 6 words in 8 (6.4 on average)
    names = ("age", "name~ann", "name~bo", "name~cy", *(f"note~w{i}" for i in range(8)))
    mean = [40.0, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.7, 0.7]
    columns = {"numeric": ["age"], "categorical": [], "words": ["name", "note"], "left_out": {}}
    m = manifest("csv", (12,), "float32", mean=mean, std=[10.0] + [0.5] * 11, feature_names=names, columns=columns,
                 splits={"train": SplitEntry(100, (), {})})  # fmt: skip
    model = build_model(train({"builtin": "tabular", "args": {"units": [7], "ensemble": 1}}), m)
    assert not any(layer.name.endswith("_0") and "idf" in layer.name for layer in model.layers)  # the name: 0/1 only
    x = np.zeros((2, 12), np.float32)
    x[0, [4, 5]] = 1.0  # two common words (90 of 100 rows)
    x[1, [4, 10]] = 1.0  # a common and a rarer one (70 of 100 rows): the rarer weighs more
    tf_idf = layer_output(model, "tf_idf_scale_1", x)
    assert tf_idf.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(tf_idf, axis=1), 4.0, rtol=1e-5)  # unit length x TF_IDF_SCALE
    np.testing.assert_allclose(tf_idf[0, :2], 4.0 / np.sqrt(2), rtol=1e-5)
    idf = np.log1p(100 / np.array([1 + 90, 1 + 70]))
    np.testing.assert_allclose(tf_idf[1, [0, 6]], 4.0 * idf / np.linalg.norm(idf), rtol=1e-5)
    assert model.get_layer("with_linear").output.shape == (None, 7 + 12 + 8)  # the head sees them all
    assert model.get_layer("dense_0").input.shape == (None, 8 + 3)  # the MLP: the age's embedding and the name
    deep = build_model(train({"builtin": "tabular", "args": {"units": [7], "ensemble": 1, "wide_words": False}}), m)
    assert deep.get_layer("dense_0").input.shape == (None, 8 + 11 + 8)  # and the note's words and their TF-IDF
    words = manifest("csv", (11,), "float32", mean=mean[1:], std=[0.5] * 11, feature_names=names[1:],
                     columns={**columns, "numeric": []}, splits={"train": SplitEntry(100, (), {})})  # fmt: skip
    only_words = build_model(train({"builtin": "tabular", "args": {"units": [7], "ensemble": 1}}), words)
    assert only_words.get_layer("dense_0").input.shape == (None, 11 + 8)  # a name and a text alone: the MLP has them
    plain = build_model(train({"builtin": "tabular", "args": {"units": [7], "ensemble": 1, "tf_idf": False}}), m)
    assert plain.get_layer("with_linear").output.shape == (None, 7 + 12)


def test_mixed_precision_keeps_preprocessing_and_head_float32():
    m = manifest("csv", (3,), "float32", mean=[5e4, 0.0, 1.0], std=[2e4, 0.0, 1.0])
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(train(), m)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("dense_0").compute_dtype == "float16"
    assert model.get_layer("normalise").compute_dtype == "float32"
    out = model(np.array([[9e4, 0.0, 1.0]], np.float32))
    assert out.dtype == "float32" and np.isfinite(out.numpy()).all()


# --- normalisation ------------------------------------------------------------------------


def test_normalisation_is_exact_along_the_stats_axis_and_ignores_zero_std():
    mean, std = [1.0, -2.0, 3.0, 0.5], [2.0, 0.0, 0.5, 4.0]
    m = manifest("audio", (5, 4, 2), "float32", axis=1, mean=mean, std=std)
    model = build_model(train(), m)
    at_mean = np.broadcast_to(np.asarray(mean, np.float32)[None, None, :, None], (2, 5, 4, 2))
    np.testing.assert_array_equal(layer_output(model, "normalise", at_mean), 0.0)
    x = sample(m, 2)
    expected = (x - np.asarray(mean)[:, None]) / np.where(np.asarray(std) > 0, std, 1.0)[:, None]
    got = layer_output(model, "normalise", x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_uint8_images_are_cast_then_normalised_per_channel():
    m = manifest("image", (4, 4, 3), "uint8", mean=[10.0, 20.0, 30.0], std=[1.0, 2.0, 4.0])
    model = build_model(train(), m)
    x = np.full((1, 4, 4, 3), [10, 24, 38], np.uint8)
    np.testing.assert_array_equal(layer_output(model, "normalise", x)[0, 0, 0], [0.0, 2.0, 2.0])


def test_manifest_stats_that_do_not_fit_the_features_are_refused():
    m = manifest("image", (4, 4, 3), "uint8", mean=[1.0, 2.0], std=[1.0, 1.0])
    with pytest.raises(ConfigError, match=r"stats do not fit its features \[4, 4, 3\]"):
        build_model(train(), m)


# --- determinism and save/load ------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_another_seed_does_not():
    m = manifest()
    first, second = build_model(train(seed=7), m), build_model(train(seed=7), m)
    assert [w.path for w in first.weights] == [w.path for w in second.weights]  # fixed layer names
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = build_model(train(seed=8), m)
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])


@pytest.mark.parametrize("m", [manifest(), WAVEFORM], ids=["image", "waveform"])
def test_saved_model_loads_without_custom_objects_and_predicts_the_same(tmp_path, m):
    model = build_model(train(), m)
    x = sample(m)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.input.dtype == m.features.dtype
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_builds_and_trains_one_step_inside_a_distribution_strategy():
    import tensorflow as tf

    m = WAVEFORM
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_model(train(), m)
        # No warm-up: the default one starts at a rate of 0, and this step must move the weights.
        optimizer = build_optimizer(train(optimizer={"clip_norm": 1.0}, schedule={"warmup_epochs": 0}), steps_per_epoch=10)
    x, y = sample(m), np.array([0, 1, 2, 0])

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)

    before = [w.numpy() for w in model.trainable_weights]
    strategy.run(step, args=(x, y))
    assert int(optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights, strict=True))


# --- layer lists ----------------------------------------------------------------------------


def test_layer_list_model_gets_the_head_appended():
    layers = [{"Conv2D": {"filters": 4, "kernel_size": 3}}, {"GlobalAveragePooling2D": None}, {"Dense": {"units": 5}}]
    model = build_model(train({"layers": layers}), manifest())
    assert [layer.name for layer in model.layers[-4:]] == ["layer_0", "layer_1", "layer_2", "output"]
    assert model(sample(manifest())).numpy().shape == (4, 3)


@pytest.mark.parametrize(
    ("layers", "shape", "message"),
    [
        ([{"Conv3X": {}}], (8, 8, 3), r"train.model.layers\[0\]: unknown Keras layer 'Conv3X' \(did you mean Conv3D"),
        (
            [{"Flatten": None}, {"Conv2D": {"filters": 2, "kernel_size": 1, "filterz": 3}}],
            (8, 8, 3),
            r"train.model.layers\[1\].Conv2D: .*filterz",
        ),
        (
            [{"Conv2D": {"filters": 2, "kernel_size": 3}}],
            (16,),
            r"train.model.layers\[0\].Conv2D: cannot take input shaped \[16\] \(the dataset's features are \[16\]\)",
        ),
        ([{"Conv2D": {"filters": 2, "kernel_size": 1}}], (8, 8, 3), r"gives \[8, 8, 2\] per example, not one vector"),
        ([{"Flatten": None, "Dense": {"units": 2}}], (8, 8, 3), r"train.model.layers\[0\]: give one layer per entry"),
    ],
    ids=["unknown", "bad-kwargs", "shape", "not-a-vector", "two-in-one"],
)
def test_layer_list_errors_name_the_entry(layers, shape, message):
    with pytest.raises(ConfigError, match=message):
        build_model(train({"layers": layers}), manifest(shape=shape, dtype="float32"))


# --- factories ----------------------------------------------------------------------------

FACTORY = """
import keras

def build(input_shape, outputs, manifest, width=4):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, activation="softmax")(x))

def wrong_size(input_shape, outputs, manifest):
    return build(input_shape, outputs + 1, manifest)

def broken(input_shape, outputs, manifest):
    raise RuntimeError("boom")

not_a_function = 3
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "tiny_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tiny_factory"
    sys.modules.pop("tiny_factory", None)


def test_factory_model_gets_the_normalisation_in_front(factory_module):
    m = manifest(mean=[128.0] * 3, std=[64.0] * 3)
    model = build_model(train({"factory": f"{factory_module}:build", "args": {"width": 6}}), m)
    assert model.name == "factory" and model.get_layer("normalise") is not None
    probabilities = model(sample(m)).numpy()
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("factory", "args", "message"),
    [
        ("no_such_module:build", {}, r"train.model.factory: cannot import 'no_such_module': ModuleNotFoundError"),
        ("tiny_factory:not_a_function", {}, r"train.model.factory: tiny_factory has no function 'not_a_function'"),
        ("tiny_factory:wrong_size", {}, r"outputs \[None, 4\]; expected \[None, 3\]"),
        ("tiny_factory:broken", {}, r"train.model.factory: tiny_factory:broken failed: RuntimeError: boom"),
        ("tiny_factory:build", {"depth": 2}, r"failed: TypeError: .*depth"),
    ],
    ids=["import", "not-callable", "output-shape", "raises", "bad-args"],
)
def test_factory_errors(factory_module, factory, args, message):
    with pytest.raises(ConfigError, match=message):
        build_model(train({"factory": factory, "args": args}), manifest())


# --- applications -------------------------------------------------------------------------

MOBILENET = {"application": {"name": "MobileNetV2"}, "args": {"alpha": 0.35}}


def _base(model):
    [base] = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return base


def test_application_loads_local_weights_and_freezes_its_base(tmp_path):
    m = manifest(shape=(32, 32, 3))
    donor = _base(build_model(train(MOBILENET, seed=1), m))
    weights = tmp_path / "base.weights.h5"
    donor.save_weights(weights)

    app = {**MOBILENET, "application": {"name": "MobileNetV2", "weights": str(weights), "freeze_base": True}}
    model = build_model(train(app, seed=2), m)
    base = _base(model)
    for a, b in zip(donor.get_weights(), base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert base.trainable_weights == []
    head = model.get_layer("output")
    assert describe_model(model)["trainable_params"] == head.count_params() == 1280 * 3 + 3
    # tf-mode preprocessing: 0..255 to [-1, 1], exactly as the application's preprocess_input.
    x = sample(m, 2)
    expected = keras.applications.mobilenet_v2.preprocess_input(x.astype(np.float32))
    np.testing.assert_allclose(layer_output(model, "preprocess", x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model(x).numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_caffe_preprocessing_is_a_fixed_bgr_conversion(tmp_path):
    m = manifest(shape=(32, 32, 3), dtype="float32")  # float32 images are stored in [0, 1]
    model = build_model(train({"application": {"name": "ResNet50", "freeze_base": False}}), m)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    expected = keras.applications.resnet50.preprocess_input(x * 255.0)
    np.testing.assert_allclose(layer_output(model, "preprocess", x), expected, atol=1e-3)
    assert not model.get_layer("preprocess").trainable_weights
    assert _base(model).trainable_weights


@pytest.mark.parametrize(
    ("app", "shape", "error", "message"),
    [
        ({"name": "MobileNetV5"}, (32, 32, 3), ConfigError, r"application.name: unknown application 'MobileNetV5'"),
        (
            {"name": "MobileNetV2"},
            (16, 16, 3),
            ConfigError,
            r"application.name: MobileNetV2 cannot take .*\[16, 16, 3\]",
        ),
        ({"name": "ResNet50"}, (32, 32, 1), ConfigError, r"ResNet50 expects RGB images .*\[32, 32, 1\]"),
        ({"name": "MobileNetV2", "weights": "missing.h5"}, (32, 32, 3), InputNotFoundError, r"missing.h5 not found"),
    ],
    ids=["unknown", "too-small", "not-rgb", "missing-weights"],
)
def test_application_errors(app, shape, error, message):
    with pytest.raises(error, match=message):
        build_model(train({"application": app, "args": {"alpha": 0.35}}), manifest(shape=shape))


def test_application_weights_that_do_not_fit_are_a_config_error(tmp_path):
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match=r"application.weights: cannot load .*junk.weights.h5 into MobileNetV2"):
        build_model(
            train({**MOBILENET, "application": {"name": "MobileNetV2", "weights": str(junk)}}),
            manifest(shape=(32, 32, 3)),
        )


def test_application_arguments_dltool_owns_are_refused():
    with pytest.raises(ConfigError, match=r"train.model.args.include_top: set by dltool"):
        build_model(train({"application": {"name": "MobileNetV2"}, "args": {"include_top": True}}), manifest())


# --- other model errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "m", "message"),
    [
        ({}, manifest(label=Label(None)), r"^dataset has no labels: cannot train"),
        ({"builtin": "small_cnn", "args": {"filterz": [8]}}, manifest(), r"train.model.args.filterz: unknown argument"),
        ({"builtin": "small_cnn", "args": {"filters": [0]}}, manifest(), r"train.model.args.filters.0: "),
        ({"builtin": "small_cnn"}, manifest("csv", (6,), "float32"), r"small_cnn needs features shaped"),
        ({"builtin": "audio_cnn"}, replace(WAVEFORM, ingest={}), r"audio_cnn on waveforms needs the sample rate"),
    ],
    ids=["no-label", "unknown-arg", "bad-arg", "cnn-on-table", "no-sample-rate"],
)
def test_model_errors(model, m, message):
    with pytest.raises(ConfigError, match=message):
        build_model(train(model), m)


def test_args_are_for_builtins_applications_and_factories_not_layer_lists():
    from pydantic import ValidationError

    assert train({"application": {"name": "MobileNetV2"}, "args": {"alpha": 0.35}}).model.args == {"alpha": 0.35}
    with pytest.raises(ValidationError, match="args apply to builtin, application and factory models only"):
        train({"layers": [{"Flatten": None}], "args": {"units": 3}})


# --- optimizers and schedules -------------------------------------------------------------


def test_optimizer_by_case_insensitive_name_with_args_and_clipping():
    optimizer = build_optimizer(train(optimizer={"name": "SGD", "args": {"momentum": 0.9}, "clip_norm": 2.0}), 10)
    assert type(optimizer).__name__ == "SGD"
    assert optimizer.momentum == 0.9 and optimizer.global_clipnorm == 2.0
    assert type(build_optimizer(train(optimizer={"name": "adamw"}), 10)).__name__ == "AdamW"


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"name": "adamx"}, r"train.optimizer.name: unknown optimizer 'adamx' \(did you mean adam.*expected one of "),
        ({"args": {"momentun": 0.9}}, r"train.optimizer.args: Adam rejects .*momentun"),
        ({"args": {"learning_rate": 0.1}}, r"train.optimizer.args.learning_rate: set train.optimizer.learning_rate"),
    ],
    ids=["unknown", "bad-args", "rate-in-args"],
)
def test_optimizer_errors(optimizer, message):
    with pytest.raises(ConfigError, match=message):
        build_optimizer(train(optimizer=optimizer), 10)


def rates(schedule: dict, steps: list[int], epochs: int = 10, steps_per_epoch: int = 10) -> list[float]:
    optimizer = build_optimizer(
        train(epochs=epochs, optimizer={"learning_rate": 0.1}, schedule=schedule), steps_per_epoch
    )
    return [learning_rate_at(optimizer, step) for step in steps]


def learning_rate_at(optimizer, step: int) -> float:
    optimizer.iterations.assign(step)
    return float(optimizer.learning_rate)


def test_constant_schedule_with_warmup_rises_linearly_to_the_peak():
    assert rates({"kind": "constant", "warmup_epochs": 2}, [0, 10, 20, 99]) == pytest.approx([0.0, 0.05, 0.1, 0.1])


def test_step_schedule_multiplies_at_epoch_boundaries():
    got = rates({"kind": "step", "warmup_epochs": 0, "step_epochs": 3, "factor": 0.5}, [0, 29, 30, 60, 90])
    assert got == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.0125])


def test_cosine_schedule_decays_from_the_end_of_warmup_to_the_floor():
    got = rates({"kind": "cosine", "warmup_epochs": 2, "min_fraction": 0.1}, [10, 20, 60, 100, 150])
    assert got == pytest.approx([0.05, 0.1, 0.1 * (0.1 + 0.9 * 0.5), 0.01, 0.01])


def test_default_schedule_warms_up_for_an_epoch_then_decays_to_zero():
    got = rates({}, [0, 5, 10, 55, 100])
    assert got == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-6)


def test_schedule_serialises_with_the_optimizer():
    optimizer = build_optimizer(train(schedule={"kind": "cosine", "warmup_epochs": 1}), 10)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    for step in (0, 5, 50):
        assert learning_rate_at(restored, step) == learning_rate_at(optimizer, step)


def test_importing_the_module_loads_no_heavy_library():
    code = "import sys, dltool.train.model; print([m for m in ('tensorflow', 'keras') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
