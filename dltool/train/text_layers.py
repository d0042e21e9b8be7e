"""The raw-text serving model: strings in, the trained model's outputs out, with the fitted vocabulary baked in.

    text -> TextStandardize (Unicode lower-case, ASCII punctuation) -> TextVectorization (split,
         n-grams, the dataset's vocabulary; ids or TF-IDF) -> [LastTokens] -> the trained model

With character n-grams (`char_ngrams`), a `WordsAndSubwords` layer makes the tokens (words, word
n-grams, each word's character n-grams) and TextVectorization only counts them.

It gives the ids `dltool.transforms.text` wrote at ingest (a test holds the two to the same
outputs). Unicode normalisation (`normalize: NFC/NFKC`) has no TensorFlow op outside
tensorflow-text: with it set, pass normalised text to this model. Loading the `.keras` file
needs `dltool.train.text_layers` imported (its small layers); the SavedModel needs nothing.
"""

from __future__ import annotations

import json

import keras
import tensorflow as tf

from dltool.transforms.text import CHAR_MIN, CHAR_SPAN, CHAR_WORDS, PUNCTUATION

RAW_MODEL_FILE = "text_model.keras"
RAW_SAVED_MODEL = "text_saved_model"


@keras.saving.register_keras_serializable(package="dltool")
class TextStandardize(keras.layers.Layer):
    """Lower-cases (all of Unicode, as Python's str.lower) and strips ASCII punctuation, as the text reader does."""

    def __init__(self, lowercase: bool = True, strip_punctuation: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.lowercase, self.strip_punctuation = lowercase, strip_punctuation

    def call(self, inputs):
        x = inputs
        if self.lowercase:
            x = tf.strings.lower(x, encoding="utf-8")
        if self.strip_punctuation:
            x = tf.strings.regex_replace(x, PUNCTUATION.pattern, "")
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "lowercase": self.lowercase, "strip_punctuation": self.strip_punctuation}


@keras.saving.register_keras_serializable(package="dltool")
class LastTokens(keras.layers.Layer):
    """The last `length` ids of each ragged row, padded with 0 at the end (`truncate: start`)."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def call(self, inputs):
        return inputs[:, -self.length :].to_tensor(default_value=0, shape=[None, self.length])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.length)

    def get_config(self):
        return {**super().get_config(), "length": self.length}


@keras.saving.register_keras_serializable(package="dltool")
class WordsAndSubwords(keras.layers.Layer):
    """Each text's words, word n-grams up to `ngrams` and words' character n-grams up to `char_ngrams`, ragged: the
    tokens `Tokenizer.tokens` gives for whitespace splits (the same multiset; the order differs)."""

    def __init__(self, ngrams: int = 1, char_ngrams: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.ngrams, self.char_ngrams = ngrams, char_ngrams

    def call(self, inputs):
        words = tf.strings.split(inputs)
        tokens = tf.strings.ngrams(words, tuple(range(1, self.ngrams + 1)), separator=" ") if self.ngrams > 1 else words
        if not self.char_ngrams:
            return tokens
        marked = tf.ragged.map_flat_values(
            lambda w: tf.strings.substr(tf.strings.join(["<", w, ">"]), 0, CHAR_SPAN, unit="UTF8_CHAR"),
            words[:, :CHAR_WORDS])  # fmt: skip
        grams = tf.strings.ngrams(tf.strings.unicode_split(marked, "UTF-8"), tuple(range(CHAR_MIN, self.char_ngrams + 1)),
                                  separator="")  # fmt: skip
        grams = tf.ragged.map_flat_values(lambda g: tf.strings.join([" ", g]), grams.merge_dims(1, 2))
        return tf.concat([tokens, grams], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)

    def get_config(self):
        return {**super().get_config(), "ngrams": self.ngrams, "char_ngrams": self.char_ngrams}


def raw_text_model(model: keras.Model, fitted: dict) -> keras.Model:
    """`model` (token ids or TF-IDF in) behind the fitted tokenisation of `_preprocess.json` (strings in)."""
    tokenizer, length = fitted["tokenizer"], fitted["sequence_length"]
    inputs = keras.Input(shape=(), dtype="string", name="text")
    x = TextStandardize(tokenizer["lowercase"], tokenizer["strip_punctuation"], name="standardize")(inputs)
    options = {"sequence": {"output_mode": "int", "output_sequence_length": length}, "count": {"output_mode": "count"},
               "tf_idf": {"output_mode": "tf_idf", "idf_weights": (fitted["idf"] or [0.0])[1:]}}[fitted["output"]]
    if fitted["output"] == "sequence" and fitted["truncate"] == "start":
        options = {"output_mode": "int", "ragged": True}
    split, ngrams = tokenizer["split"], tokenizer["ngrams"] if tokenizer["ngrams"] > 1 else None
    if tokenizer.get("char_ngrams") and split == "whitespace":  # datasets from before char_ngrams have none
        x = WordsAndSubwords(tokenizer["ngrams"], tokenizer["char_ngrams"], name="tokens")(x)
        split, ngrams = None, None
    vectorize = keras.layers.TextVectorization(standardize=None, split=split, ngrams=ngrams,
                                               vocabulary=list(fitted["vocabulary"]), name="vectorize", **options)  # fmt: skip
    x = vectorize(x)
    if options.get("ragged"):
        x = LastTokens(length, name="last_tokens")(x)
    return keras.Model(inputs, model(x), name="raw_text")


def save_raw_text_model(model: keras.Model, preprocess_json: bytes, folder) -> None:
    """Write the raw-text model beside the trained one: `text_model.keras` and `text_saved_model/`."""
    raw = raw_text_model(model, json.loads(preprocess_json))
    raw.save(folder / RAW_MODEL_FILE)
    raw.export(str(folder / RAW_SAVED_MODEL), format="tf_saved_model", verbose=False)
