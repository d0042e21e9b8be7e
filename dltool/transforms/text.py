"""Text to tokens, a vocabulary fitted on train, and tokens to int32 id sequences or TF-IDF vectors.

The steps are those of Keras's `TextVectorization`, so a serving model that bakes the fitted
vocabulary into that layer (`dltool.train.text_layers`) gives the ids ingest wrote:

    normalise (NFC/NFKC) -> lower-case (Unicode) -> strip ASCII punctuation
    -> split on ASCII whitespace (or into characters) -> n-grams 1..n joined by " "
    -> ids: 0 padding, 1 out-of-vocabulary, 2.. the vocabulary, most frequent train token first

The ingest tasks work a batch at a time with Arrow compute kernels (`token_lists`,
`Vocabulary.sequences`); `Tokenizer.tokens` is the same rule for one document, in Python
(character splits and n-grams always take it).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


    def token_lists(self, texts: pa.Array) -> pa.ListArray:
        """The tokens of each text (non-null) as one list<string> array: Arrow kernels for word tokens and their
        n-grams, a Python loop over `tokens` for characters."""
        if self.split != "whitespace":
            return pa.array([self.tokens(t) for t in texts.to_pylist()], pa.list_(pa.string()))
        x = texts
        if self.normalize:  # in Python: pyarrow 25's utf8_normalize decomposes whatever the form
            x = pa.array([unicodedata.normalize(self.normalize, t) for t in x.to_pylist()], pa.string())
        if self.lowercase:
            x = pc.utf8_lower(x)
        if self.strip_punctuation:
            x = pc.replace_substring_regex(x, PUNCTUATION.pattern, "")
        parts = pc.split_pattern_regex(x, WHITESPACE.pattern)
        # A leading or trailing separator leaves an empty string: drop those and rebuild the offsets.
        flat, rows = pc.list_flatten(parts), pc.list_parent_indices(parts).to_numpy()
        keep = pc.not_equal(flat, "")
        counts = np.bincount(rows[keep.to_numpy(zero_copy_only=False)], minlength=len(parts))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        words = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(keep))
        return with_ngrams(words, self.ngrams)


def with_ngrams(words: pa.ListArray, ngrams: int) -> pa.ListArray:
    """Each list of words followed by its n-grams for n = 2..ngrams, joined by " " (the order `Tokenizer.tokens`
    gives), with Arrow kernels: each n-gram joins the words at positions i..i+n-1 of one document."""
    if ngrams == 1 or not len(words):
        return words
    flat = pc.list_flatten(words)
    lengths = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pieces, counts = [flat], [lengths]
    for n in range(2, ngrams + 1):
        per_doc = np.maximum(lengths - n + 1, 0)
        first = np.repeat(starts, per_doc) + (np.arange(per_doc.sum()) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc))
        grams = flat.take(pa.array(first))
        for k in range(1, n):
            grams = pc.binary_join_element_wise(grams, flat.take(pa.array(first + k)), " ")
        pieces.append(grams)
        counts.append(per_doc)
    # Per document: its words, then its 2-grams, ...: a stable sort by document keeps that order within each.
    documents = np.concatenate([np.repeat(np.arange(len(lengths)), c) for c in counts])
    order = np.argsort(documents, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(sum(counts))]).astype(np.int32)
    values = pa.concat_arrays([p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in pieces])
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(order)))


def token_counts(lists: pa.ListArray, per_document: bool = False) -> dict[str, int]:
    """How often each token occurs in `lists` (per_document: in how many of the lists)."""
    flat = pc.list_flatten(lists)
    if per_document:
        pairs = pa.table({"row": pc.list_parent_indices(lists), "token": flat}).group_by(["row", "token"]).aggregate([])
        flat = pairs.column("token")
    counted = pc.value_counts(flat)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))


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

    def _flat_ids(self, documents) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ids of every token of `documents` (a list<string> array or lists of tokens), each token's
        document, and each document's first token's position in the flat ids."""
        lists = documents if isinstance(documents, (pa.ListArray, pa.LargeListArray)) else \
            pa.array(list(documents), pa.list_(pa.string()))  # fmt: skip
        found = pc.index_in(pc.list_flatten(lists), value_set=pa.array(self.tokens, pa.string()))
        ids = pc.fill_null(pc.add(found, 2), OOV).to_numpy().astype(np.int32)
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
        rows = np.repeat(np.arange(len(lists)), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lists) else np.zeros(0, np.int64)
        return ids, rows, starts

    def sequences(self, documents, length: int, truncate: str = "end") -> np.ndarray:
        """[n, length] int32 ids; a longer document loses its end (`truncate: end`) or its start, a shorter one
        is padded with 0 at the end."""
        ids, rows, starts = self._flat_ids(documents)
        n = len(starts)
        position = np.arange(ids.size) - starts[rows] if ids.size else np.zeros(0, np.int64)
        if truncate == "start":
            lengths = np.bincount(rows, minlength=n)
            position = position - np.maximum(lengths - length, 0)[rows]
        keep = (position >= 0) & (position < length)
        out = np.zeros((n, length), np.int32)
        out[rows[keep], position[keep]] = ids[keep]
        return out

    def counts(self, documents) -> np.ndarray:
        """[n, size - 1] float32 token counts; slot 0 is OOV, slot i the token with id i + 1 (TextVectorization's
        layout for count and tf_idf outputs, which have no padding slot)."""
        ids, rows, starts = self._flat_ids(documents)
        out = np.zeros((len(starts), self.size - 1), np.float32)
        np.add.at(out, (rows, ids - 1), 1.0)
        return out

    def document_frequencies(self, documents) -> np.ndarray:
        """[size - 1] number of documents each slot (OOV first) occurs in."""
        ids, rows, _ = self._flat_ids(documents)
        pairs = np.unique(rows.astype(np.int64) * self.size + ids)  # each (document, id) once
        return np.bincount(pairs % self.size - 1, minlength=self.size - 1)


def idf_weights(document_frequency: np.ndarray, documents: int) -> np.ndarray:
    """log(1 + N / (1 + df)) per slot, the smoothed IDF Keras's TF-IDF output uses."""
    return np.log1p(documents / (1.0 + document_frequency)).astype(np.float32)
