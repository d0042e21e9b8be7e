"""The text reader on a real local[2] Spark: hostile files, table columns, lines, train-only vocabularies,
the raw-string serving model against the token-id model, predict on a raw folder, and text_cnn learning."""

from __future__ import annotations

import csv
import json
import shutil
import unicodedata

import numpy as np
import pyarrow.dataset as pads
import pytest
import yaml

from tests.conftest import ROOT, read_split, run_ingest_cli

WORDS = "the a battery screen price sound is was very not great awful fine poor fast slow".split()


def _docs(folder, classes=("good", "bad"), per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            words = rng.choice(WORDS, int(rng.integers(3, 12)))
            (folder / name / f"doc_{i:02d}.txt").write_text(f"{name.upper()}! " + " ".join(words) + ".\n")


def _config(write_config, tmp_path, ingest: dict, name="experiment.yaml", **dataset):
    data = {"name": "text", "spark": {"master": "local[2]"},
            "dataset": {"path": str(tmp_path / "dataset"), "split": {"train": 0.6, "val": 0.2, "test": 0.2}, **dataset},
            "ingest": {"reader": "text", "output": "sequence", **ingest}}  # fmt: skip
    return write_config(data, name)


def _ingest(config, *args):
    result, summary = run_ingest_cli(config, *args)
    return result, summary


def _rows(dataset):
    """Every split's rows (a split with no rows has no folder)."""
    return pads.dataset([str(p) for p in dataset.glob("*/part-*.parquet") if p.parent.name != "_errors"],
                        format="parquet").to_table()  # fmt: skip


def _errors(dataset) -> list[dict]:
    return pads.dataset(str(dataset / "_errors"), format="parquet").to_table().to_pylist()


def test_class_folders_read_latin1_and_quarantine_empty_binary_and_oversized_files(spark, tmp_path, write_config):
    raw = tmp_path / "raw"
    _docs(raw)
    (raw / "good" / "latin1.txt").write_bytes("très bon café, great".encode("latin-1"))
    (raw / "good" / "empty.txt").write_bytes(b"")
    (raw / "bad" / "picture.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with open(raw / "bad" / "huge.txt", "wb") as f:  # 50 MB: rejected by its listed size, never read
        f.write(b"awful " * (50 * (1 << 20) // 6))
    (raw / "good" / "notes.md").write_text("not a .txt file: left out by the include patterns")
    config = _config(write_config, tmp_path, {"input": str(raw), "max_file_mb": 1}, max_bad_fraction=0.5)

    result, summary = _ingest(config)
    assert result.exit_code == 0, result.output
    assert summary["counts"]["inputs"] == 28 and summary["counts"]["quarantined"] == 3
    assert summary["counts"]["left_out_by_patterns"] == 1
    reasons = {e["key"].split("/")[-1]: e["message"] for e in _errors(tmp_path / "dataset")}
    assert reasons["empty.txt"] == "empty document"
    assert "picture.txt" in reasons and reasons["picture.txt"].startswith(("bytes that are not valid", "binary data"))
    assert "over max_file_mb 1" in reasons["huge.txt"]
    assert summary["labels"] == ["bad", "good"]
    assert "good/latin1.txt" in _rows(tmp_path / "dataset").column("key").to_pylist()  # the encoding left out: its own

    # Named, the encoding is every file's: the Latin-1 review is quarantined, or its bad bytes replaced.
    named = {"input": str(raw), "max_file_mb": 1, "encoding": "utf-8"}
    result, summary = _ingest(_config(write_config, tmp_path, named, max_bad_fraction=0.5), "--overwrite")
    assert result.exit_code == 0 and summary["counts"]["quarantined"] == 4, result.output
    reasons = {e["key"].split("/")[-1]: e["message"] for e in _errors(tmp_path / "dataset")}
    assert "not valid utf-8 at offset 2" in reasons["latin1.txt"]
    config = _config(write_config, tmp_path, {**named, "decode_errors": "replace"}, max_bad_fraction=0.5)
    result, summary = _ingest(config, "--overwrite")
    assert result.exit_code == 0, result.output
    assert summary["counts"]["quarantined"] == 3
    assert "good/latin1.txt" in _rows(tmp_path / "dataset").column("key").to_pylist()


def test_vocabulary_is_fitted_on_train_only(spark, tmp_path, write_config):
    raw = tmp_path / "raw"
    for i in range(40):  # every document has a word of its own, seen nowhere else
        (raw / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        (raw / ("a" if i % 2 else "b") / f"d{i}.txt").write_text(f"common words here only{i}")
    config = _config(write_config, tmp_path, {"input": str(raw), "sequence_length": 6})
    result, summary = _ingest(config)
    assert result.exit_code == 0, result.output
    dataset = tmp_path / "dataset"
    manifest = json.loads((dataset / "_manifest.json").read_text())
    vocabulary = manifest["vocabulary"]
    lines = (dataset / "vocabulary.txt").read_text().split("\n")
    assert lines[:2] == ["", "[UNK]"] and lines[2:-1] == vocabulary  # line i is id i
    assert vocabulary[:3] == ["common", "here", "words"]  # most frequent first, ties by token
    train_keys = read_split(dataset, "train").column("key").to_pylist()
    assert sorted(vocabulary[3:]) == sorted(f"only{k.split('d')[-1].split('.')[0]}" for k in train_keys)
    test = read_split(dataset, "test")
    assert test.num_rows and manifest["features"] == {"column": "features", "shape": [6], "dtype": "int32",
                                                      "encoding": "list", "names": None}  # fmt: skip
    for ids in test.column("features").to_pylist():
        assert ids == [2, 4, 3, 1, 0, 0]  # "common words here", the unseen word as OOV, padding
    from typer.testing import CliRunner

    from dltool.cli import app

    shown = json.loads(CliRunner().invoke(app, ["inspect", str(dataset), "--json"]).stdout)
    assert shown["vocabulary"] == {"size": len(vocabulary), "most_frequent": vocabulary[:20]}
    assert shown["sample"]["tokens"].startswith("common words here only")


def test_a_jsonl_text_column_and_lines_of_files(spark, tmp_path, write_config):
    rows = [{"id": f"r{i}", "body": f"review number {i} was {'good' if i % 2 else 'bad'}",
             "stars": "5" if i % 2 else "1", "shop": f"s{i % 3}"} for i in range(30)]  # fmt: skip
    rows[3]["body"] = "   "
    table = tmp_path / "reviews.jsonl"
    table.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = _config(write_config, tmp_path, {"input": str(table), "format": "json", "text_column": "body",
                                              "label_column": "stars", "key_column": "id", "passthrough": ["shop"]},
                     max_bad_fraction=0.1)  # fmt: skip
    result, summary = _ingest(config)
    assert result.exit_code == 0, result.output
    assert summary["counts"] == {**summary["counts"], "inputs": 30, "quarantined": 1}
    assert summary["labels"] == ["1", "5"]
    assert [e["key"] for e in _errors(tmp_path / "dataset")] == ["r3"]
    shards = _rows(tmp_path / "dataset")
    got = dict(zip(shards.column("key").to_pylist(), shards.column("shop").to_pylist()))
    assert len(got) == 29 and got["r4"] == "s1"

    # the same rows as a CSV export: a review over two lines, with "quotes" inside, is one document
    rows[5]["body"] = 'first line\nthen "zebra" said twice'
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "body", "stars", "shop"])
        writer.writeheader()
        writer.writerows(rows)
    config = _config(write_config, tmp_path, {"input": str(tmp_path / "reviews.csv"), "format": "csv",
                                              "text_column": "body", "label_column": "stars", "key_column": "id"},
                     "csv.yaml", max_bad_fraction=0.1, path=str(tmp_path / "csv_dataset"))  # fmt: skip
    result, summary = _ingest(config)
    assert result.exit_code == 0, result.output
    assert summary["counts"] == {**summary["counts"], "inputs": 30, "quarantined": 1}
    assert sorted(_rows(tmp_path / "csv_dataset").column("key").to_pylist()) == sorted(f"r{i}" for i in range(30) if i != 3)

    lines = tmp_path / "lines" / "pos"
    lines.mkdir(parents=True)
    (lines / "many.txt").write_bytes(b"\xef\xbb\xbffirst line\r\n\nsecond line\ncaf\xe9 line\nlast")
    config = _config(write_config, tmp_path, {"input": str(tmp_path / "lines"), "format": "lines"}, "lines.yaml",
                     max_bad_fraction=0.5, path=str(tmp_path / "lines_dataset"))  # fmt: skip
    result, summary = _ingest(config)
    assert result.exit_code == 0, result.output
    assert summary["counts"]["inputs"] == 4 and summary["counts"]["quarantined"] == 1  # the blank line is no document
    assert [e["key"] for e in _errors(tmp_path / "lines_dataset")] == ["pos/many.txt:4"]
    keys = sorted(_rows(tmp_path / "lines_dataset").column("key").to_pylist())
    assert keys == ["pos/many.txt:1", "pos/many.txt:3", "pos/many.txt:5"]


@pytest.mark.parametrize("settings", [
    {"output": "sequence", "sequence_length": 8, "truncate": "start", "ngrams": 2},
    {"output": "tf_idf", "lowercase": False, "split": "character"},
    {"output": "count", "normalize": "NFKC", "min_count": 2},
    {"output": "auto"},  # a tiny corpus of short documents: TF-IDF of words and word pairs
])  # fmt: skip
def test_the_raw_string_layers_give_the_ingested_features(spark, tmp_path, write_config, settings):
    """Keras's TextVectorization, fed the fitted vocabulary, computes from raw text what ingest stored."""
    import keras

    from dltool.train.text_layers import raw_text_model

    raw = tmp_path / "raw"
    _docs(raw, per_class=15, seed=3)
    (raw / "good" / "accents.txt").write_text("Ünïcode ÉCOLE – straße, TAB\there; new\nline")
    config = _config(write_config, tmp_path, {"input": str(raw), **settings})
    result, _ = _ingest(config)
    assert result.exit_code == 0, result.output
    dataset = tmp_path / "dataset"
    fitted = json.loads((dataset / "_preprocess.json").read_text())
    shards = _rows(dataset)
    stored = np.asarray(shards.column("features").to_pylist())
    texts = [(raw / k).read_text() for k in shards.column("key").to_pylist()]
    inputs = keras.Input(shape=stored.shape[1:], dtype="int32" if settings["output"] == "sequence" else "float32")
    if settings.get("normalize"):  # TensorFlow cannot normalise: the raw model is given normalised text
        texts = [unicodedata.normalize(settings["normalize"], t) for t in texts]
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))
    computed = raw_text_model(identity, fitted).predict(np.array(texts, dtype=object), verbose=0)
    np.testing.assert_allclose(computed, stored, rtol=1e-6, atol=1e-6)


def test_the_subword_layer_makes_the_tokens_the_tokenizer_makes():
    from collections import Counter

    from dltool.train.text_layers import WordsAndSubwords
    from dltool.transforms.text import Tokenizer

    tokenizer = Tokenizer(ngrams=2, char_ngrams=4)
    texts = ["école straße «stop»", "émoji 🙂 ok", "x", "", "supercalifragilisticexpialidocious end",
             " ".join(f"w{i}" for i in range(150))]  # past CHAR_WORDS words: subwords of the first ones only
    made = WordsAndSubwords(2, 4)(np.array([tokenizer.standardize(t) for t in texts], dtype=object)).to_list()
    for text, tokens in zip(texts, made):
        assert Counter(t.decode() for t in tokens) == Counter(tokenizer.tokens(text))


@pytest.fixture(scope="module")
def reviews(spark, tmp_path_factory):
    """configs/text.yaml ingested and trained (10 epochs, one worker) once for this module."""
    from typer.testing import CliRunner

    from dltool.cli import app

    folder = tmp_path_factory.mktemp("reviews")
    data = yaml.safe_load((ROOT / "configs" / "text.yaml").read_text())
    data["ingest"]["input"] = str(ROOT / "sample_data" / "text")
    data["dataset"]["path"] = str(folder / "dataset")
    data["spark"] = {"master": "local[2]"}
    data["train"].update(run_dir=str(folder / "run"), epochs=10, workers=1)
    config = folder / "text.yaml"
    config.write_text(yaml.safe_dump(data))
    for verb in ("ingest", "train"):
        result = CliRunner().invoke(app, [verb, str(config), "--json"])
        assert result.exit_code == 0, result.output
    return config, folder


def test_text_cnn_learns_the_reviews_well_above_chance(reviews):
    from dltool.config.loader import load_config
    from dltool.evaluate.score import run_eval

    config, folder = reviews
    result = run_eval(load_config(config), progress=False)
    accuracy = result.checkpoints[0].metrics["accuracy"]
    assert accuracy >= 0.75  # two balanced classes: chance is 0.5


def test_the_raw_string_model_and_saved_model_equal_the_token_id_model(reviews):
    import keras
    import tensorflow as tf

    import dltool.train.text_layers  # noqa: F401 - registers the layers the raw-text .keras file holds

    _, folder = reviews
    test = read_split(folder / "dataset", "test")
    texts = [(ROOT / "sample_data" / "text" / k).read_text(encoding="utf-8-sig") for k in test.column("key").to_pylist()]
    ids = np.asarray(test.column("features").to_pylist(), np.int32)
    model = folder / "run" / "model"
    expected = keras.models.load_model(model / "model.keras").predict(ids, verbose=0)
    raw = keras.models.load_model(model / "text_model.keras").predict(np.array(texts, dtype=object), verbose=0)
    np.testing.assert_allclose(raw, expected, atol=1e-6)
    serve = tf.saved_model.load(str(model / "text_saved_model")).signatures["serving_default"]
    (saved,) = serve(tf.constant(texts)).values()
    np.testing.assert_allclose(saved.numpy(), expected, atol=1e-6)


def test_predict_on_a_raw_folder_tokenises_with_the_training_vocabulary(reviews, tmp_path):
    from dltool.config.loader import load_config
    from dltool.evaluate.predict import run_predict

    config, folder = reviews
    raw = tmp_path / "new"
    raw.mkdir()
    test = read_split(folder / "dataset", "test").slice(0, 6)
    for key in test.column("key").to_pylist():
        shutil.copy(ROOT / "sample_data" / "text" / key, raw / key.replace("/", "_"))
    (raw / "unseen.txt").write_text("Zyzzyva quux blorf.")  # no training token at all: all OOV, still scored
    summary = run_predict(load_config(config), str(raw), str(tmp_path / "preds"), progress=False, keep=[])
    got = pads.dataset(str(tmp_path / "preds"), format="parquet", exclude_invalid_files=True).to_table()
    assert summary["rows"] == 7 and summary["quarantined"] == 0
    split = run_predict(load_config(config), str(folder / "dataset"), str(tmp_path / "split"), progress=False, keep=[])
    assert split["rows"] == read_split(folder / "dataset", "test").num_rows
    expected = pads.dataset(str(tmp_path / "split"), format="parquet").to_table().to_pandas().set_index("key")
    frame = got.to_pandas().set_index("key")
    for key in test.column("key").to_pylist():
        np.testing.assert_allclose(frame.loc[key.replace("/", "_"), "probabilities"],
                                   expected.loc[key, "probabilities"], atol=1e-6)  # fmt: skip


def test_eval_on_labelled_raw_folders_scores_with_the_training_vocabulary(reviews, tmp_path):
    from dltool.config.loader import load_config
    from dltool.evaluate.predict import run_predict
    from dltool.evaluate.score import run_eval

    config, folder = reviews
    test = read_split(folder / "dataset", "test").slice(0, 20)
    for key in test.column("key").to_pylist():
        (tmp_path / "held_out" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "sample_data" / "text" / key, tmp_path / "held_out" / key)
    result = run_eval(load_config(config), input_uri=str(tmp_path / "held_out"), progress=False)
    run_predict(load_config(config), str(folder / "dataset"), str(tmp_path / "split"), progress=False, keep=[])
    split = pads.dataset(str(tmp_path / "split"), format="parquet").to_table().to_pandas().set_index("key")
    picked = split.loc[test.column("key").to_pylist()]
    assert result.checkpoints[0].metrics["accuracy"] == pytest.approx(float((picked["predicted"] == picked["label"]).mean()))


def test_copies_of_a_document_across_splits_are_found_and_can_be_dropped(spark, tmp_path, write_config):
    raw = tmp_path / "raw"
    _docs(raw, per_class=20, seed=5)
    for i in range(20):  # the same review again, shouting: same tokens once lower-cased and stripped
        text = (raw / "good" / f"doc_{i:02d}.txt").read_text()
        (raw / "good" / f"copy_{i:02d}.txt").write_text(text.upper().replace(".", "!!"))
    config = _config(write_config, tmp_path, {"input": str(raw)}, on_duplicates="fail")
    result, _ = _ingest(config)
    assert result.exit_code == 3 and "same content as a record of another split" in result.output

    config = _config(write_config, tmp_path, {"input": str(raw)}, on_duplicates="drop_from_eval")
    result, summary = _ingest(config, "--overwrite")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "dataset" / "_manifest.json").read_text())
    dropped = manifest["duplicates"]["dropped"]
    assert dropped > 0 and manifest["counts"]["rows"] == 60 - dropped and manifest["counts"]["ok"] == 60
    keys = {s: read_split(tmp_path / "dataset", s).column("key").to_pylist() for s in ("train", "val", "test")}
    in_train = {k.split("_")[-1] for k in keys["train"] if k.startswith("good/")}  # "07.txt": a review and its copy
    assert not [k for k in keys["val"] + keys["test"] if k.startswith("good/") and k.split("_")[-1] in in_train]
