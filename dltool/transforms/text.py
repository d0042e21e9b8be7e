"""Text to tokens, a vocabulary fitted on train, and tokens to int32 id sequences or TF-IDF vectors.

The steps are those of Keras's `TextVectorization`, so a serving model that bakes the fitted
vocabulary into that layer (`dltool.train.text_layers`) gives the ids ingest wrote:

    normalise (NFC/NFKC) -> lower-case (Unicode) -> strip ASCII punctuation
    -> split on ASCII whitespace (or into characters) -> n-grams 1..n joined by " "
    [-> each word's character n-grams (`char_ngrams`), as " " + a slice of "<word>"]
    -> ids: 0 padding, 1 out-of-vocabulary, 2.. the vocabulary, most frequent train token first
       (with subwords: the words', then the subwords')

Character n-grams are fastText's subwords (Bojanowski et al. 2017): a short text's misspelt,
inflected or compound words still share features with the words the model saw. Their tokens start
with a space, which no word or word n-gram does, so the two kinds share one vocabulary and never
collide; each kind gets its own share of it (`fit_vocabulary`).

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
CHAR_MIN = 2  # character n-grams are 2 to `char_ngrams` characters long
CHAR_SPAN = 20  # characters of "<word>" they are taken from: a longer word (a URL, a hash) gives only its start's
# Words of a document whose character n-grams are taken: its first ones. Subwords serve short texts, and this bounds
# their tokens (up to 51 a word) whatever the document: 8,192 documents of 16 MB give at most 42M, not billions.
CHAR_WORDS = 100


@dataclass(frozen=True)
class Tokenizer:
    """How a document becomes tokens; the same settings in ingest, predict and the serving model."""

    lowercase: bool = True
    strip_punctuation: bool = True
    normalize: str | None = None  # "NFC", "NFKC" or None
    split: str = "whitespace"  # or "character"
    ngrams: int = 1  # all n-grams from 1 to this
    char_ngrams: int = 0  # and each word's character n-grams of CHAR_MIN to this many characters (0: none)

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
        grams = list(words)
        for n in range(2, self.ngrams + 1):
            grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        if self.char_ngrams and self.split == "whitespace":  # by length, then start, then word (the Arrow kernels' order)
            marked = [f"<{word}>"[:CHAR_SPAN] for word in words[:CHAR_WORDS]]
            grams += [" " + m[i : i + n] for n in range(CHAR_MIN, self.char_ngrams + 1) for i in range(CHAR_SPAN)
                      for m in marked if i + n <= len(m)]  # fmt: skip
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
        tokens = with_ngrams(words, self.ngrams)
        return with_char_ngrams(tokens, words, self.char_ngrams) if self.char_ngrams else tokens


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
    # Per document: its words, then its 2-grams, ...
    return _by_document(pieces, [np.repeat(np.arange(len(lengths)), c) for c in counts], len(lengths))


def _by_document(pieces: list, owners: list[np.ndarray], documents: int) -> pa.ListArray:
    """The values of `pieces` (arrays of tokens; `owners`: each value's document) as one list per document, in the
    order of the pieces within each (a stable sort by document keeps it)."""
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=documents))]).astype(np.int32)
    values = pa.concat_arrays([p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in pieces])
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(order)))


def with_char_ngrams(tokens: pa.ListArray, words: pa.ListArray, longest: int) -> pa.ListArray:
    """Each list of `tokens` followed by the character n-grams of its first CHAR_WORDS `words` (`Tokenizer.tokens`'
    rule), with Arrow kernels: one slice of every long enough "<word>" per n-gram length and start."""
    parents = pc.list_parent_indices(words).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=len(words)))[:-1]]).astype(np.int64)
    first = np.arange(len(parents)) - starts[parents] < CHAR_WORDS  # each document's first CHAR_WORDS words
    flat, parents = pc.list_flatten(words).filter(pa.array(first)), parents[first]
    marked = pc.utf8_slice_codeunits(pc.binary_join_element_wise("<", flat, ">", ""), 0, CHAR_SPAN)
    lengths = pc.utf8_length(marked).to_numpy(zero_copy_only=False)
    pieces, owners = [pc.list_flatten(tokens)], [pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)]
    for n in range(CHAR_MIN, longest + 1):
        for start in range(0, int(lengths.max(initial=0)) - n + 1):
            long_enough = lengths >= start + n
            grams = pc.utf8_slice_codeunits(marked.filter(pa.array(long_enough)), start, start + n)
            pieces.append(pc.binary_join_element_wise(" ", grams, ""))
            owners.append(parents[long_enough])
    return _by_document(pieces, owners, len(tokens))  # per document: its tokens, then its words' n-grams


def token_counts(lists: pa.ListArray, per_document: bool = False) -> dict[str, int]:
    """How often each token occurs in `lists` (per_document: in how many of the lists)."""
    flat = pc.list_flatten(lists)
    if per_document:
        pairs = pa.table({"row": pc.list_parent_indices(lists), "token": flat}).group_by(["row", "token"]).aggregate([])
        flat = pairs.column("token")
    counted = pc.value_counts(flat)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))


def fit_vocabulary(counts: Counter, max_tokens: int, min_count: int = 1, char_share: float = 0.0) -> list[str]:
    """The tokens that get ids 2..: the `max_tokens - 2` most frequent with at least `min_count`
    occurrences, ties broken by the token (so a refit on the same data gives the same ids).

    `char_share`: the part of those slots kept for character n-grams (tokens starting with a space), the rest for
    words and word n-grams, so that the many frequent short n-grams do not crowd out the words; a kind that needs
    fewer slots leaves them to the other. The words come first, then the character n-grams (`text_mlp` scales
    each block to unit length on its own)."""
    ranked = sorted((t for t, n in counts.items() if n >= min_count and t and t != OOV_TOKEN), key=lambda t: (-counts[t], t))
    slots = max(0, max_tokens - 2)
    if not char_share:
        return ranked[:slots]
    chars = [t for t in ranked if t[0] == " "]
    words = [t for t in ranked if t[0] != " "]
    n_chars = min(len(chars), max(slots - len(words), int(slots * char_share)))
    return words[: slots - n_chars] + chars[:n_chars]


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
