"""Text to tokens, a vocabulary fitted on train, and tokens to int32 id sequences or TF-IDF vectors.

The steps are those of Keras's `TextVectorization`, so a serving model that bakes the fitted
vocabulary into that layer (`dltool.train.text_layers`) gives the ids ingest wrote:

    normalise (NFC/NFKC) -> lower-case (Unicode) -> strip ASCII punctuation
    -> split on ASCII whitespace (or into characters) -> n-grams 1..n joined by " "
    -> ids: 0 padding, 1 out-of-vocabulary, 2.. the vocabulary, most frequent train token first

Pure Python and numpy: the ingest tasks run it, and so can a user's own code.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import numpy as np

PAD, OOV = 0, 1
OOV_TOKEN = "[UNK]"  # TextVectorization's name for it
# TextVectorization's DEFAULT_STRIP_REGEX (ASCII punctuation) and tf.strings.split's whitespace.
PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
WHITESPACE = re.compile(r"[ \t\n\x0b\x0c\r]+")


@dataclass(frozen=True)
class Tokenizer:
    """How a document becomes tokens; the same settings in ingest, predict and the serving model."""

    lowercase: bool = True
    strip_punctuation: bool = True
    normalize: str | None = None  # "NFC", "NFKC" or None
    split: str = "whitespace"  # or "character"
    ngrams: int = 1  # all n-grams from 1 to this

    def standardize(self, text: str) -> str:
        if self.normalize:
            text = unicodedata.normalize(self.normalize, text)
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            text = PUNCTUATION.sub("", text)
        return text

    def tokens(self, text: str) -> list[str]:
        text = self.standardize(text)
        words = list(text) if self.split == "character" else [w for w in WHITESPACE.split(text) if w]
        if self.ngrams == 1:
            return words
        grams = list(words)
        for n in range(2, self.ngrams + 1):
            grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        return grams


def fit_vocabulary(counts: Counter, max_tokens: int, min_count: int = 1) -> list[str]:
    """The tokens that get ids 2..: the `max_tokens - 2` most frequent with at least `min_count`
    occurrences, ties broken by the token (so a refit on the same data gives the same ids)."""
    ranked = sorted((t for t, n in counts.items() if n >= min_count and t and t != OOV_TOKEN), key=lambda t: (-counts[t], t))
    return ranked[: max(0, max_tokens - 2)]


@dataclass(frozen=True)
class Vocabulary:
    """Token -> id lookups over a fitted vocabulary (ids 0 and 1 are padding and out-of-vocabulary)."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "_index", {t: i + 2 for i, t in enumerate(self.tokens)})

    @property
    def size(self) -> int:
        """Ids in use, padding and OOV included: the embedding's input dimension."""
        return len(self.tokens) + 2

    def ids(self, tokens: list[str]) -> list[int]:
        index = self._index
        return [index.get(t, OOV) for t in tokens]

    def sequences(self, documents: Iterable[list[str]], length: int, truncate: str = "end") -> np.ndarray:
        """[n, length] int32 ids; a longer document loses its end (`truncate: end`) or its start; a shorter is padded at the end."""
        documents = list(documents)
        out = np.zeros((len(documents), length), np.int32)
        for row, tokens in enumerate(documents):
            ids = self.ids(tokens[:length] if truncate == "end" else tokens[-length:])
            out[row, : len(ids)] = ids
        return out

    def counts(self, documents: Iterable[list[str]]) -> np.ndarray:
        """[n, size - 1] float32 token counts; slot 0 is OOV, slot i the token with id i + 1 (TextVectorization's
        layout for count and tf_idf outputs, which have no padding slot)."""
        documents = list(documents)
        out = np.zeros((len(documents), self.size - 1), np.float32)
        for row, tokens in enumerate(documents):
            ids = np.asarray(self.ids(tokens), np.int64) - 1
            np.add.at(out[row], ids, 1.0)
        return out

    def document_frequencies(self, documents: Iterable[list[str]]) -> np.ndarray:
        """[size - 1] number of documents each slot (OOV first) occurs in."""
        total = np.zeros(self.size - 1, np.int64)
        for tokens in documents:
            total[np.unique(np.asarray(self.ids(tokens), np.int64) - 1)] += 1
        return total


def idf_weights(document_frequency: np.ndarray, documents: int) -> np.ndarray:
    """log(1 + N / (1 + df)) per slot, the smoothed IDF Keras's TF-IDF output uses."""
    return np.log1p(documents / (1.0 + document_frequency)).astype(np.float32)
