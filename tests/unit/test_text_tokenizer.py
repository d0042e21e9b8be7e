"""The text reader's tokeniser, vocabulary and config rules (no Spark, no TensorFlow)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from dltool.readers.text import TextReaderConfig, _binary_lines, _decode
from dltool.transforms.text import CHAR_WORDS, OOV, PAD, Tokenizer, Vocabulary, fit_vocabulary, idf_weights, token_counts

HOSTILE = ["  Leading and trailing  ", "ÉCOLE, Straße! don't «stop»", "!!!", "tab\there\r\nnew\x0bline\x0cfeed",
           "no\u00a0break\u2003space", "ﬁne Ｆｕｌｌ cafe\u0301", "émoji 🙂 ok", "a-b_c.d/e", "x", "МОСКВА Київ",
           " ".join(f"w{i}" for i in range(150))]


def test_standardize_lowercases_unicode_and_strips_ascii_punctuation_only():
    assert Tokenizer().tokens("ÉCOLE, Straße! don't «stop»") == ["école", "straße", "dont", "«stop»"]
    assert Tokenizer(lowercase=False, strip_punctuation=False).tokens("Hi, there.") == ["Hi,", "there."]


def test_unicode_normalisation_is_applied_first():
    text = "ﬁne Ｆｕｌｌ cafe\u0301"  # a ligature, full-width letters, a combining accent
    assert Tokenizer().tokens(text) == ["ﬁne", "ｆｕｌｌ", "cafe\u0301"]
    assert Tokenizer(normalize="NFKC").tokens(text) == ["fine", "full", "café"]
    assert Tokenizer(normalize="NFC").tokens(text) == ["ﬁne", "ｆｕｌｌ", "café"]


def test_splits_on_ascii_whitespace_runs_like_tf_strings_split():
    # A no-break space and an em space join words, as in tf.strings.split.
    assert Tokenizer().tokens("  a\tb\n\nc\r\nd\u00a0e\u2003f  ") == ["a", "b", "c", "d\u00a0e\u2003f"]
    assert Tokenizer().tokens(" \t\n") == []


@pytest.mark.parametrize("tokenizer", [Tokenizer(), Tokenizer(normalize="NFKC"), Tokenizer(normalize="NFC"),
                                       Tokenizer(lowercase=False, strip_punctuation=False), Tokenizer(ngrams=2),
                                       Tokenizer(ngrams=3), Tokenizer(ngrams=2, char_ngrams=4),
                                       Tokenizer(strip_punctuation=False, char_ngrams=3)])
def test_arrow_kernels_tokenise_as_the_python_rule(tokenizer):
    import pyarrow as pa

    lists = tokenizer.token_lists(pa.array(HOSTILE))
    assert lists.to_pylist() == [tokenizer.tokens(t) for t in HOSTILE]
    assert lists.to_pylist()[2][:1] == ([] if tokenizer.strip_punctuation else ["!!!"])


def test_token_counts_per_token_and_per_document():
    import pyarrow as pa

    lists = pa.array([["a", "b", "a"], [], ["b"]], pa.list_(pa.string()))
    assert token_counts(lists) == {"a": 2, "b": 2}
    assert token_counts(lists, per_document=True) == {"a": 1, "b": 2}


def test_ngrams_and_characters():
    assert Tokenizer(ngrams=2).tokens("a b c") == ["a", "b", "c", "a b", "b c"]
    assert Tokenizer(ngrams=3).tokens("a b") == ["a", "b", "a b"]
    assert Tokenizer(split="character", ngrams=2).tokens("ab c") == ["a", "b", " ", "c", "a b", "b  ", "  c"]


def test_character_ngrams_are_subwords_of_the_marked_word_apart_from_words():
    tokens = Tokenizer(ngrams=2, char_ngrams=3).tokens("Cat, ox")
    assert tokens[:3] == ["cat", "ox", "cat ox"]
    assert tokens[3:] == [" <c", " <o", " ca", " ox", " at", " x>", " t>", " <ca", " <ox", " cat", " ox>", " at>"]
    assert " ox" in tokens and "ox" in tokens  # the word and the subword are two tokens
    long = Tokenizer(char_ngrams=2).tokens("a" * 40)
    assert len(long) == 1 + 19 and long[-1] == " aa"  # the first 20 characters of "<aaa...>": no end marker
    assert Tokenizer(split="character", ngrams=2, char_ngrams=4).tokens("ab") == ["a", "b", "a b"]  # words only
    many = Tokenizer(char_ngrams=2).tokens(" ".join(f"w{i}" for i in range(CHAR_WORDS + 50)))
    pairs = sum(len(f"<w{i}>") - 1 for i in range(CHAR_WORDS))  # 2-grams of the first CHAR_WORDS words only
    assert len(many) == CHAR_WORDS + 50 + pairs


def test_tokenizer_defaults_give_a_bag_of_words_subwords_and_sequences_none():
    from dltool.readers.text import tokenizer_for

    cfg = TextReaderConfig(reader="text", input="x")
    assert (tokenizer_for(cfg, "tf_idf").ngrams, tokenizer_for(cfg, "tf_idf").char_ngrams) == (2, 4)
    assert (tokenizer_for(cfg, "sequence").ngrams, tokenizer_for(cfg, "sequence").char_ngrams) == (1, 0)
    assert tokenizer_for(cfg.model_copy(update={"char_ngrams": 0}), "count").char_ngrams == 0
    assert tokenizer_for(cfg.model_copy(update={"char_ngrams": 5}), "sequence").char_ngrams == 0


def test_subwords_get_their_share_of_the_vocabulary_and_leave_unused_slots_to_words():
    counts = Counter({" ab": 50, " bc": 40, " cd": 30, " de": 20, "w1": 5, "w2": 4, "w3": 3, "w4": 2})
    assert fit_vocabulary(counts, max_tokens=6, char_share=0.5) == ["w1", "w2", " ab", " bc"]  # words first
    assert fit_vocabulary(counts, max_tokens=6) == [" ab", " bc", " cd", " de"]  # one ranking crowds out the words
    few = Counter({" ab": 50, "w1": 5, "w2": 4, "w3": 3, "w4": 2})
    assert fit_vocabulary(few, max_tokens=6, char_share=0.5) == ["w1", "w2", "w3", " ab"]
    assert fit_vocabulary(Counter({" ab": 5, " bc": 4, "w1": 1}), max_tokens=6, char_share=0.5) == ["w1", " ab", " bc"]


def test_vocabulary_is_the_most_frequent_tokens_ties_by_token():
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1, "e": 1, "": 9, "[UNK]": 9})
    assert fit_vocabulary(counts, max_tokens=5) == ["c", "a", "b"]  # 5 ids: padding, OOV and three tokens
    assert fit_vocabulary(counts, max_tokens=100, min_count=2) == ["c", "a", "b"]
    assert fit_vocabulary(counts, max_tokens=100) == ["c", "a", "b", "d", "e"]


def test_sequences_map_unknown_tokens_to_oov_pad_at_the_end_and_truncate_either_side():
    vocabulary = Vocabulary(("the", "cat", "sat"))
    assert vocabulary.size == 5 and PAD == 0 and OOV == 1
    docs = [["the", "dog", "sat"], ["cat"], ["the", "cat", "sat", "on", "the", "mat"]]
    np.testing.assert_array_equal(vocabulary.sequences(docs, 4), [[2, 1, 4, 0], [3, 0, 0, 0], [2, 3, 4, 1]])
    np.testing.assert_array_equal(vocabulary.sequences(docs, 4, "start"), [[2, 1, 4, 0], [3, 0, 0, 0], [4, 1, 2, 1]])
    assert vocabulary.sequences(docs, 4).dtype == np.int32
    np.testing.assert_array_equal(vocabulary.sequences([[], ["cat"]], 2), [[0, 0], [3, 0]])


def test_counts_and_idf_follow_keras_tf_idf_layout():
    vocabulary = Vocabulary(("a", "b"))
    docs = [["a", "a", "zz"], ["b"], ["a"]]
    np.testing.assert_array_equal(vocabulary.counts(docs), [[1, 2, 0], [0, 0, 1], [0, 1, 0]])  # slot 0: OOV
    df = vocabulary.document_frequencies(docs)
    np.testing.assert_array_equal(df, [1, 2, 1])
    np.testing.assert_allclose(idf_weights(df, 3), np.log1p(3 / (1 + df)), rtol=1e-6)


def test_decode_drops_a_bom_and_names_the_offset_of_bad_bytes():
    from dltool.errors import RecordError

    assert _decode(b"\xef\xbb\xbfhello", "utf-8", "quarantine") == "hello"
    assert _decode("hé".encode("utf-16"), "utf-16", "quarantine") == "hé"
    with pytest.raises(RecordError, match="not valid utf-8 at offset 3"):
        _decode("caf\xe9".encode("latin-1"), "utf-8", "quarantine")
    assert _decode("caf\xe9".encode("latin-1"), "utf-8", "replace") == "caf\ufffd"
    assert _decode("caf\xe9".encode("latin-1"), "latin-1", "quarantine") == "café"


def test_a_document_in_another_encoding_is_read_in_its_own_where_the_config_names_none():
    from dltool.errors import RecordError
    from dltool.readers.text import _decoded

    left_out = TextReaderConfig(reader="text", input="x")
    named = TextReaderConfig(reader="text", input="x", encoding="utf-8")
    lines = TextReaderConfig(reader="text", input="x", format="lines")
    for text, encoding in (("café crème", "utf-8"), ("café, très bien\r\n", "utf-16"), ("déçu – 5 €", "cp1252")):
        assert _decoded(text.encode(encoding), left_out) == text
    assert isinstance(_decoded("déçu".encode("cp1252"), named), RecordError)  # named: that encoding, as before
    assert isinstance(_decoded("déçu".encode("cp1252"), lines), RecordError)  # a line alone: too little to tell
    binary = _decoded(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", left_out)  # NULs: not text
    assert isinstance(binary, RecordError) and "not valid utf-8 at offset 0" in str(binary)
    odd = _decoded(b"\xff\xfeh\x00\xe9", left_out)  # a UTF-16 mark, then an odd byte: the first error, returned
    assert isinstance(odd, RecordError) and "not valid utf-8 at offset 0" in str(odd)


def test_lines_are_read_a_chunk_at_a_time():
    import io

    data = b"one\r\ntwo\n\nthree" + b"\nfour" * 3
    for chunk in (1, 2, 4, 7, 1 << 20):
        assert list(_binary_lines(io.BytesIO(data), 100, chunk=chunk)) == [b"one", b"two", b"", b"three", b"four",
                                                                          b"four", b"four"]  # fmt: skip


def test_a_line_past_the_cap_is_skipped_and_never_held():
    import io
    import tracemalloc

    endless = io.BytesIO(b"ok\n" + b"x" * (64 << 20) + b"\nafter\nlast-is-long-" + b"y" * (2 << 20))
    tracemalloc.start()
    try:
        lines = list(_binary_lines(endless, 1 << 20, chunk=1 << 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == [b"ok", None, b"after", None]
    assert peak < 4 << 20  # a chunk and the cap, not the 64 MB line
    for chunk in (3, 5, 8):  # the cap holds wherever the chunks cut
        assert list(_binary_lines(io.BytesIO(b"abc\nabcdef\nab\nabcd"), 4, chunk=chunk)) == [b"abc", None, b"ab", b"abcd"]


def test_config_keeps_file_and_table_fields_apart():
    TextReaderConfig(reader="text", input="x", format="json", label_column="label")
    with pytest.raises(ValidationError, match="only for table formats"):
        TextReaderConfig(reader="text", input="x", label_column="label")
    with pytest.raises(ValidationError, match="label_column"):
        TextReaderConfig(reader="text", input="x", format="csv", label={"source": "parent_dir"})
    with pytest.raises(ValidationError, match="convert the files to UTF-8"):
        TextReaderConfig(reader="text", input="x", format="lines", encoding="UTF-16")
    with pytest.raises(ValidationError, match="max_tokens"):
        TextReaderConfig(reader="text", input="x", max_tokens=2)


def test_a_task_sends_the_driver_at_most_its_most_frequent_tokens(monkeypatch, tmp_path):
    from collections import Counter

    from dltool.ingest import text

    monkeypatch.setattr(text, "MIN_TOKENS_PER_TASK", 4)
    monkeypatch.setattr(text, "TOKENS_PER_TASK", 1)
    cfg = TextReaderConfig(reader="text", input=str(tmp_path), max_tokens=3, label={"source": "parent_dir"})
    docs = text._TypedDocs(cfg, str(tmp_path), 0, None, tfidf=True, labelled=True, tokenizer=Tokenizer())
    docs.tokens = Counter({f"t{i}": 100 - i for i in range(50)})  # a task that saw 50 distinct tokens
    docs.documents_with = Counter({f"t{i}": 1 for i in range(50)})
    tokens, documents_with = docs._top_tokens()
    assert tokens == Counter({"t0": 100, "t1": 99, "t2": 98, "t3": 97}) and set(documents_with) == set(tokens)
    docs.tokens = Counter({"a": 1, "b": 2})
    assert docs._top_tokens()[0] is docs.tokens  # under the cap: exact, unchanged


def test_auto_output_is_a_bag_of_words_for_short_documents_and_small_corpora():
    from dltool.ingest.text import auto_output

    assert auto_output(3000, {3: 400, 8: 500, 40: 100}) == "tf_idf"  # 3,000 sayings of median 8 words: 375
    assert auto_output(3000, {"8": 1000}) == "tf_idf"  # lengths as JSON sends them
    assert auto_output(300_000, {100: 10, 150: 10, 400: 1}) == "sequence"  # 300k reviews of ~150 words: 2,000
    assert auto_output(5, {0: 5}) == "tf_idf"  # empty token lists count as one word
