"""Table rows in the tasks, without Spark: field checks and typing, the fit's totals, the features."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest

from dltool.shards.sink import Moments
from dltool.transforms.table import FitStats, Preprocess, RowRules

NA = ("", "NA", "NaN", "null")


def rules(**overrides) -> RowRules:
    base = dict(numeric=("x", "y"), categorical=("colour",), vectors={}, passthrough=("note",), label="target",
                regression=False, key_column="id", na_values=NA, non_finite="missing", encoding="utf-8",
                corrupt="_corrupt_record")  # fmt: skip
    return RowRules(**{**base, **overrides})


def batch(rows: list[dict]) -> pa.RecordBatch:
    """Raw rows as Spark hands them to a task: text fields, file, row number, key and split."""
    columns = ["id", "x", "y", "colour", "note", "target", "_corrupt_record"]
    data = {c: pa.array([r.get(c) for r in rows], pa.string()) for c in columns}
    data["_file"] = pa.array(["file:///d/t.csv"] * len(rows), pa.string())
    data["_row"] = pa.array(range(1, len(rows) + 1), pa.int64())
    data["key"] = pa.array([r.get("id") or f"t.csv:{i + 1}" for i, r in enumerate(rows)], pa.string())
    data["split"] = pa.array([r.get("split", "train") for r in rows], pa.string())
    return pa.RecordBatch.from_pydict(data)


GOOD = {"id": "g", "x": " 1.5 ", "y": "2", "colour": " red ", "note": "n", "target": "a"}


def test_each_row_is_quarantined_at_its_first_problem_and_named_by_file_row_and_field():
    raw = batch([
        GOOD,
        {**GOOD, "id": "m", "_corrupt_record": "m,1,2,red,n,a,extra"},
        {**GOOD, "id": "NA"},
        {**GOOD, "id": "l", "target": " "},
        {**GOOD, "id": "b", "x": "5,5", "y": "six"},  # both bad: the first field is reported
        {**GOOD, "id": "e", "colour": "gr\ufffden"},
        {**GOOD, "id": "i", "x": "inf", "y": "NaN"},  # non-finite: missing values by default
    ])  # fmt: skip
    typed, errors = rules().check(raw)
    found = {e["path"]: (e["key"], e["error_class"], e["message"]) for e in errors.to_pylist()}
    assert found == {
        "file:///d/t.csv:2": ("m", "MalformedRow", "malformed row (wrong number of fields or bad quoting): m,1,2,red,n,a,extra"),
        "file:///d/t.csv:3": ("NA", "MissingKey", "field id: missing key"),
        "file:///d/t.csv:4": ("l", "MissingLabel", "field target: missing label"),
        "file:///d/t.csv:5": ("b", "BadValue", "field x: '5,5' is not a number (a decimal comma? name the column in ingest.decimal_comma)"),
        "file:///d/t.csv:6": ("e", "EncodingError", "field colour: bytes that are not valid utf-8 (a file in another encoding? set "
                                                   "ingest.encoding, e.g. cp1252)"),
    }  # fmt: skip
    assert typed.column("key").to_pylist() == ["g", "i"]
    assert typed.column("x").to_pylist() == [1.5, None] and typed.column("y").to_pylist() == [2.0, None]
    assert typed.column("colour").to_pylist() == ["red", "red"] and typed.column("_label").to_pylist() == ["a", "a"]


def test_non_finite_values_can_quarantine_and_a_regression_target_always_does():
    raw = batch([GOOD | {"target": "1"}, GOOD | {"id": "i", "x": "-inf", "target": "2"},
                 GOOD | {"id": "t", "target": "inf"}, GOOD | {"id": "n", "target": "nan"}])  # fmt: skip
    typed, errors = rules(regression=True, non_finite="quarantine").check(raw)
    assert {e["key"]: e["message"] for e in errors.to_pylist()} == {
        "i": "field x: '-inf' is not a finite number",
        "t": "field target: 'inf' is not a finite number",
        "n": "field target: 'nan' is not a finite number",
    }
    assert typed.column("_label").to_pylist() == [1.0]


def test_vectors_must_have_their_size_and_finite_values():
    vec = pa.array([[1.0, 2.0], [1.0], None, [1.0, float("nan")], [3.0, 4.0]], pa.list_(pa.float64()))
    raw = batch([GOOD | {"id": k} for k in "abcde"]).append_column("emb", vec)
    typed, errors = rules(vectors={"emb": 2}).check(raw)
    assert {e["key"]: (e["error_class"], e["message"]) for e in errors.to_pylist()} == {
        "b": ("BadValue", "field emb: 1 values, expected 2"),
        "c": ("MissingValue", "field emb: missing vector"),
        "d": ("NonFinite", "field emb: null, NaN or infinite values"),
    }
    assert typed.column("key").to_pylist() == ["a", "e"]


@pytest.mark.parametrize("encoding", ["onehot", "index"])
def test_the_fit_and_its_scaling_come_from_totals_that_match_the_features(encoding):
    rng = np.random.default_rng(0)
    # x is missing in every 7th row, and those rows are b's: its gaps tell of the label
    rows = [{"id": f"r{i}", "x": "" if i % 7 == 0 else f"{rng.normal(3, 2):.3f}", "y": f"{rng.normal():.3f}",
             "colour": ["RED" if i % 24 == 0 else "red", "blue", "", "green"][i % 4], "note": "", "target": "b" if i % 7 == 0 else "ab"[i % 2],
             "split": "train" if i % 5 else "val"} for i in range(200)]  # fmt: skip
    check = rules(vectors={"emb": 3})
    vectors = pa.array([list(rng.normal(size=3)) for _ in rows], pa.list_(pa.float64()))
    typed, errors = check.check(batch(rows).append_column("emb", vectors))
    assert errors.num_rows == 0
    halves = (FitStats(check.numeric, check.categorical, check.vectors),
              FitStats(check.numeric, check.categorical, check.vectors))  # fmt: skip
    halves[0].add(typed.slice(0, 90), classify=True)
    halves[1].add(typed.slice(90), classify=True)
    stats = halves[0]
    stats.merge(halves[1])  # what the driver does with the tasks' totals
    assert stats.rows == {"train": 160, "val": 40}
    train = typed.filter(pa.compute.equal(typed.column("split"), "train"))
    observed = [v for v in train.column("x").to_pylist() if v is not None]
    assert stats.means()["x"] == pytest.approx(np.mean(observed))

    raw_pre = stats.preprocess(stats.means(), encoding, classify=True, scale=False)
    assert raw_pre.labels == ["a", "b"] and raw_pre.categorical == {"colour": ["blue", "green", "red"]}  # RED is red
    # x's gaps get a 0/1 slot after the numbers; y has none
    assert raw_pre.gaps == ["x"] and raw_pre.names[:3] == ["x", "y", "x=<missing>"]
    assert len(raw_pre.names) == raw_pre.width == (3 + 4 + 3 if encoding == "onehot" else 3 + 1 + 3)
    features = raw_pre.features(train)
    assert features[:, 2].tolist() == [float(v is None) for v in train.column("x").to_pylist()]
    written = Moments(0)
    written.add_batch(features)  # what the shard tasks add up: the fit's moments must match them
    np.testing.assert_allclose(stats._moments(raw_pre), written.result(), rtol=1e-5, atol=1e-6)

    scaled = stats.preprocess(stats.means(), encoding, classify=True, scale=True)
    standard = scaled.features(train)
    np.testing.assert_allclose(standard.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(standard.std(0), 1, atol=1e-4)
    assert Preprocess.from_json(scaled.to_json()) == scaled  # what _preprocess.json holds


def test_a_long_tailed_column_is_read_as_a_logarithm_of_its_scale():
    rng = np.random.default_rng(0)
    counts = np.floor(rng.lognormal(2, 1.5, 300))  # most rows small, a few in the thousands
    rows = [{"id": f"r{i}", "x": f"{counts[i]:.0f}", "y": f"{rng.normal(50, 5):.3f}", "colour": "red", "note": "",
             "target": "ab"[i % 2], "split": "train"} for i in range(300)]  # fmt: skip
    rows[0]["y"] = "0"  # y has no negative value but is not skewed
    check = rules()
    typed, _ = check.check(batch(rows))
    stats = FitStats(check.numeric, check.categorical, check.vectors)
    stats.add(typed, classify=True)
    pre = stats.preprocess(stats.means(), "onehot", classify=True, scale=False)
    scale = max(counts.min(), counts.mean() / 100)  # its least value, or a hundredth of its mean
    assert pre.log == {"x": pytest.approx(scale)}
    np.testing.assert_allclose(pre.features(typed)[:, 0], np.log1p(counts / scale), rtol=1e-6)
    unseen = pa.table({"x": pa.array([-30.0]), "y": pa.array([1.0]), "colour": pa.array(["red"])})
    assert pre.features(unseen)[0, 0] == pytest.approx(-np.log1p(30 / scale))  # its sign kept
    assert Preprocess.from_json(pre.to_json()) == pre
    assert stats.preprocess(stats.means(), "onehot", classify=True, scale=True).log == {}  # moments of raw values
    flags = FitStats(("f",), (), {})
    flags.add(pa.table({"f": pa.array([1.0] + [0.0] * 99), "split": pa.array(["train"] * 100)}), classify=False)
    assert flags.preprocess({"f": 0.0}, "onehot", classify=False, scale=False).log == {}  # 0/1: skewed, not a tail


def test_unseen_and_missing_categories_take_the_other_slot():
    pre = Preprocess({"x": 0.5}, {"colour": ["blue", "red"]}, "onehot", {})
    typed = pa.table({"x": pa.array([None, 2.0]), "colour": pa.array(["purple", None], pa.string())})
    assert pre.names == ["x", "colour=blue", "colour=red", "colour=<other>"]
    np.testing.assert_array_equal(pre.features(typed), [[0.5, 0, 0, 1], [2.0, 0, 0, 1]])


def test_spellings_of_a_category_that_differ_in_case_are_one_category():
    from collections import Counter

    from dltool.transforms.table import category_names

    assert category_names(Counter({"Basic": 5, "basic": 2, "BASIC": 1, "pro": 3, "Pro": 3, None: 4})) == ["Basic", "Pro"]
    pre = Preprocess({}, {"plan": ["Basic", "Pro"]}, "onehot", {})
    typed = pa.table({"plan": pa.array(["basic", "PRO", "Basic", "Gold"], pa.string())})
    np.testing.assert_array_equal(pre.features(typed), [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    before = Preprocess({}, {"plan": ["A", "a"]}, "onehot", {})  # fitted before variants were merged: as written
    np.testing.assert_array_equal(before.features(pa.table({"plan": pa.array(["a", "A"], pa.string())})),
                                  [[0, 1, 0], [1, 0, 0]])  # fmt: skip


def test_rows_that_differ_only_in_spelling_hash_alike():
    from dltool.transforms.table import content_hashes

    raw = batch([GOOD | {"x": "1.50"}, GOOD | {"id": "h", "x": " 1.5", "colour": "red "}, GOOD | {"id": "o", "x": "2"},
                 GOOD | {"id": "z", "x": "-0.0", "y": "", "colour": ""}, GOOD | {"id": "p", "x": "0", "y": "NA", "colour": "NA"},
                 GOOD | {"id": "q", "x": "0", "y": "NA", "colour": "red"}, GOOD | {"id": "s", "x": "2", "target": "b"}])  # fmt: skip
    typed, _ = rules().check(raw)
    hashes = content_hashes(typed, ["x", "y", "colour", "_label"]).to_pylist()
    assert hashes[0] == hashes[1] != hashes[2]
    assert hashes[3] == hashes[4] != hashes[5]  # -0 and 0, missing and missing, alike; a missing colour is not red
    assert len(set(hashes)) == 5 and hashes[6] != hashes[2]  # the label counts
    # A batch whose text column is all missing (a sparse column, a batch of 10k rows) hashes as missing values do.
    gaps = pa.table({"remark": pa.array([None, None], pa.string())})
    missing = typed.slice(3, 2).select(["colour"]).rename_columns(["remark"])  # "" and "NA": missing colours
    assert content_hashes(gaps, ["remark"]).to_pylist() == content_hashes(missing, ["remark"]).to_pylist()


def test_string_hashes_read_the_bytes_in_place_alike_for_every_layout():
    from dltool.transforms.table import MISSING_HASH, string_hashes

    values = pa.array(["red", "", None, "blue", "red", "é", "a" * 1000, "red ", None], pa.string())
    hashes = string_hashes(values)
    assert hashes[0] == hashes[4] and hashes[2] == hashes[8] == MISSING_HASH
    assert len(set(hashes.tolist())) == 7  # the rest differ: "" from a missing value, "red " from "red"
    for same in (values.cast(pa.large_string()), pa.chunked_array([values]).combine_chunks()):
        np.testing.assert_array_equal(string_hashes(same), hashes)
    np.testing.assert_array_equal(string_hashes(values.slice(3)), hashes[3:])  # a slice: offsets not from 0
    np.testing.assert_array_equal(string_hashes(values, chunk_bytes=2), hashes)  # a chunk at a time, or one value
    keys = string_hashes(pa.array([f"C{i:08d}" for i in range(20_000)]))
    assert len(np.unique(keys)) == 20_000


def test_a_categorical_column_or_label_past_the_distinct_cap_is_a_one_line_config_error(monkeypatch):
    from dltool.errors import ConfigError
    from dltool.transforms import table

    monkeypatch.setattr(table, "MAX_DISTINCT", 5)
    check = rules()
    ids = [{**GOOD, "id": f"r{i}", "colour": f"c{i}", "target": "ab"[i % 2]} for i in range(8)]
    typed, _ = check.check(batch(ids))
    with pytest.raises(ConfigError, match=r"^ingest.categorical: column colour has more than 5 distinct train values"):
        FitStats(check.numeric, check.categorical, check.vectors).add(typed, classify=True)
    labels = [{**GOOD, "id": f"r{i}", "target": f"t{i}"} for i in range(8)]
    typed, _ = check.check(batch(labels))
    with pytest.raises(ConfigError, match=r"^ingest.label: more than 5 distinct classes"):
        FitStats(check.numeric, check.categorical, check.vectors).add(typed, classify=True)


def test_dates_become_numeric_parts_and_a_bad_date_is_quarantined_naming_the_field():
    rows = [GOOD | {"id": "d", "note": "2024-03-02"}, GOOD | {"id": "t", "note": "2024-03-02T18:30:00+02:00"},
            GOOD | {"id": "m", "note": "NA"}, GOOD | {"id": "b", "note": "next tuesday"}]  # fmt: skip
    typed, errors = rules(numeric=("x",), passthrough=(), dates=("note",)).check(batch(rows))
    assert [(e["key"], e["error_class"]) for e in errors.to_pylist()] == [("b", "BadValue")]
    assert "field note: 'next tuesday' is not a date" in errors.column("message")[0].as_py()
    # 2024-03-02 is a Saturday (weekday 5), day 19784 since 1970; the zone offset is dropped (local time).
    parts = {c.split(":")[1]: typed.column(c).to_pylist() for c in typed.column_names if c.startswith("note:")}
    assert parts == {"days": [19784.0, 19784 + 18.5 / 24, None], "month": [3.0, 3.0, None], "day": [2.0, 2.0, None],
                     "weekday": [5.0, 5.0, None], "hour": [0.0, 18.0, None]}  # fmt: skip
    stats = FitStats(("x", *(f"note:{p}" for p in parts)), (), {})
    stats.add(typed, classify=True)
    pre = stats.preprocess({c: 0.0 for c in stats.numeric}, "onehot", True, False, dates=("note",))
    assert pre.source_numeric == ["x"] and Preprocess.from_json(pre.to_json()) == pre
    assert pre.features(typed)[:, 1].tolist() == pytest.approx([19784.0, 19784 + 18.5 / 24, 0.0])  # missing: the fill
    assert pre.width == 6  # one gap in three rows tells nothing of the label: no slot for it


def test_gaps_that_tell_of_the_label_get_a_0_1_slot_and_gaps_at_random_none():
    from dltool.transforms.table import informative_gap, label_summary

    rng = np.random.default_rng(0)
    # Of 60 rows (odd ones b's), x is missing in 15 and the date in 15, all b's: their gaps tell of the label;
    # y is missing in 15 rows at random (8 b's, 7 a's).
    random_gaps = (3, 8, 14, 19, 22, 27, 33, 36, 41, 44, 50, 53, 57, 58, 59)
    rows = [GOOD | {"id": f"r{i}", "x": "" if i % 4 == 1 else f"{rng.normal():.3f}", "y": "" if i in random_gaps else "1",
                    "note": "" if i % 4 == 3 else "2024-03-02", "target": "ab"[i % 2]} for i in range(60)]  # fmt: skip
    typed, errors = rules(passthrough=(), dates=("note",)).check(batch(rows))
    assert errors.num_rows == 0
    numbers = ("x", "y", *(c for c in typed.column_names if c.startswith("note:")))
    stats, other = FitStats(numbers, (), {}), FitStats(numbers, (), {})
    stats.add(typed.slice(0, 25), classify=True)
    other.add(typed.slice(25), classify=True)
    stats.merge(other)  # two tasks' totals
    pre = stats.preprocess({c: 0.0 for c in numbers}, "onehot", True, False, dates=("note",))
    # one slot for the date: its five parts are missing together
    assert pre.gaps == ["x", "note:days"] and pre.names[7:] == ["x=<missing>", "note:days=<missing>"]
    np.testing.assert_array_equal(pre.features(typed)[:, 7:], [[i % 4 == 1, i % 4 == 3] for i in range(60)])
    # a regression target: gaps where it is high are telling; gaps at random, or too few (under MIN_GAPS), are not
    target = pa.array(rng.normal(size=200))
    everyone, high = label_summary(target, False), pa.compute.greater(target, 0.5)
    assert informative_gap(label_summary(target.filter(high), False), everyone, False)
    assert not informative_gap(label_summary(target.slice(0, 50), False), everyone, False)
    assert not informative_gap(label_summary(target.filter(high).slice(0, 5), False), everyone, False)


def test_a_free_text_column_keeps_its_words_in_two_or_more_train_rows_as_0_1_slots():
    notes = ["Blue Car, fast", "blue car", "red car!", "the BLUE one", None]
    raw = batch([GOOD | {"id": f"r{i}", "note": n} for i, n in enumerate(notes)])
    typed, _ = rules(passthrough=(), words=("note",)).check(raw)
    stats = FitStats(("x", "y"), ("colour",), {}, ("note",))
    half = typed.slice(0, 2), typed.slice(2)  # two tasks' totals merge
    stats.add(half[0], classify=True)
    other = FitStats(("x", "y"), ("colour",), {}, ("note",))
    other.add(half[1], classify=True)
    stats.merge(other)
    assert stats.word_counts["note"]["blue"] == 3 and stats.word_counts["note"]["car"] == 3  # rows, not occurrences
    pre = stats.preprocess({"x": 0.0, "y": 0.0}, "onehot", True, True, max_words=1)
    assert pre.words == {"note": ["blue"]}  # ties by the word: blue before car
    full = stats.preprocess({"x": 0.0, "y": 0.0}, "onehot", True, False, max_words=10)
    assert full.words == {"note": ["blue", "car"]} and full.names[-2:] == ["note~blue", "note~car"]
    assert full.features(typed)[:, -2:].tolist() == [[1, 1], [1, 1], [0, 1], [1, 0], [0, 0]]
    assert Preprocess.from_json(json.loads(json.dumps(full.to_json()))) == full
    assert pre.scale["mean"][-1] == pytest.approx(3 / 5)  # the slot's train mean, from the word's row count
    assert stats.preprocess({"x": 0.0, "y": 0.0}, "onehot", True, False).words == full.words  # left out: 5,000


def test_a_free_text_column_keeps_fewer_words_as_rows_grow():
    from dltool.transforms.table import MAX_WORDS, MIN_WORDS, WORD_CELLS, default_words

    assert default_words(5) == default_words(10_000) == MAX_WORDS == 5000
    assert default_words(100_000) == 500 and default_words(100_000) * 100_000 <= WORD_CELLS
    assert default_words(10_000_000) == MIN_WORDS


def test_a_date_dressed_in_a_weekday_or_a_zone_s_name_reads_as_the_date():
    rows = [GOOD | {"id": "a", "note": "Wed, 03 Jul 2019 10:30:00 GMT"}, GOOD | {"id": "b", "note": "Sunday, 7 Jul 2019"}]
    typed, errors = rules(numeric=("x",), passthrough=(), dates=("note",), date_formats={"note": "%d %b %Y"}).check(batch(rows))
    assert errors.num_rows == 0 and typed.column("note:weekday").to_pylist() == [2.0, 6.0]
    assert typed.column("note:hour").to_pylist() == [10.0, 0.0] and typed.column("note:day").to_pylist() == [3.0, 7.0]
    typed, errors = rules(numeric=("x",), passthrough=(), dates=("note",)).check(batch([GOOD | {"note": "2019-07-03 10:30:00 UTC"}]))
    assert errors.num_rows == 0 and typed.column("note:days").to_pylist() == [18080 + 10.5 / 24]  # 2019-07-03: day 18080


def test_dates_take_the_forms_spark_finds_dates_by():
    rows = [GOOD | {"id": "a", "note": "2024-3-2 18:30"}, GOOD | {"id": "b", "note": "2024-03"},
            GOOD | {"id": "c", "note": "2024-02-30"}]  # fmt: skip
    typed, errors = rules(numeric=("x",), passthrough=(), dates=("note",)).check(batch(rows))
    assert typed.column("note:days").to_pylist() == [19784 + 18.5 / 24, 19783.0]  # 2024-03-01 is day 19783
    assert [(e["key"], e["error_class"]) for e in errors.to_pylist()] == [("c", "BadValue")]


def test_formatted_numbers_and_dates_in_a_given_format_read_as_their_values():
    rows = [GOOD | {"id": "a", "x": "$1,234.50", "y": "12.5%", "note": "31/12/2020"},
            GOOD | {"id": "b", "x": "-€ 30", "y": "1,250,000", "note": "1/2/2021 13:45"},
            GOOD | {"id": "c", "x": "1,5", "note": "01/02/2021"},  # a decimal comma is no number
            GOOD | {"id": "d", "note": "2021-02-01"}]  # fmt: skip
    check = rules(passthrough=(), dates=("note",), date_formats={"note": "%d/%m/%Y"})
    typed, errors = check.check(batch(rows))
    assert typed.column("x").to_pylist() == [1234.5, -30.0] and typed.column("y").to_pylist() == [12.5, 1_250_000.0]
    assert [(e["key"], e["error_class"], e["message"]) for e in errors.to_pylist()] == [
        ("c", "BadValue", "field x: '1,5' is not a number (a decimal comma? name the column in ingest.decimal_comma)"),
        ("d", "BadValue", "field note: '2021-02-01' is not a date or time (expected the format %d/%m/%Y)")]
    # 2020-12-31 is day 18627 since 1970; 2021-02-01 (a Monday) day 18659.
    assert typed.column("note:days").to_pylist() == [18627.0, 18659 + 13.75 / 24]
    assert typed.column("note:weekday").to_pylist() == [3.0, 0.0]
    stats = FitStats(check.numbers, (), {})
    stats.add(typed, classify=True)
    pre = stats.preprocess(dict.fromkeys(check.numbers, 0.0), "onehot", True, False, ("note",),
                           date_formats=check.date_formats)  # fmt: skip
    assert Preprocess.from_json(json.loads(json.dumps(pre.to_json()))).date_formats == {"note": "%d/%m/%Y"}


def test_accountants_negatives_numbers_with_a_unit_and_clock_times_read_as_their_values():
    rows = [GOOD | {"id": "a", "x": "(1,234.50)", "y": "12 kg"}, GOOD | {"id": "b", "x": "($30)", "y": "3.5KGS"},
            GOOD | {"id": "c", "x": "(5", "y": "7"}, GOOD | {"id": "d", "x": "5 kg", "y": "2 lb"},
            GOOD | {"id": "e", "y": "kg"}, GOOD | {"id": "f", "y": "600 g"}, GOOD | {"id": "g", "y": "3 min"}]  # fmt: skip
    typed, errors = rules(passthrough=(), units={"y": "kg"}).check(batch(rows))
    assert typed.column("x").to_pylist() == [-1234.5, -30.0, 1.5] and typed.column("y").to_pylist() == [12.0, 3.5, 0.6]
    assert [(e["key"], e["message"]) for e in errors.to_pylist()] == [
        ("c", "field x: '(5' is not a number"),
        ("d", "field x: '5 kg' is not a number (a unit? name the column's unit in ingest.units: {x: kg})"),
        ("e", "field y: 'kg' is not a number in kg or another of its kind (mg, g, kg, lb, oz) (ingest.units)"),
        ("g", "field y: '3 min' is not a number in kg or another of its kind (mg, g, kg, lb, oz) (ingest.units)")]
    # units of one kind mixed in a column: each value in the column's unit (m alone is metres or millions: no mixing)
    for unit, written, values in (("MB", ["1.2 GB", "500 mb", "2,048 MB", "12"], [1200.0, 500.0, 2048.0, 12.0]),
                                  ("k", ["19M", "201k", "1.5 bn"], [19e3, 201.0, 1.5e6]),
                                  ("km", ["5 km", "250 m", "3 mi"], [5.0, 0.25, 4.828032])):  # fmt: skip
        typed, errors = rules(passthrough=(), units={"y": unit}).check(batch([GOOD | {"y": w} for w in written]))
        np.testing.assert_allclose(typed.column("y").to_pylist(), values, rtol=1e-9)
        assert errors.num_rows == 0, errors.to_pylist()
    typed, errors = rules(passthrough=()).check(batch([GOOD | {"x": "13:45", "y": "1:30:00"}, GOOD | {"x": "1:45 pm"},
                                                       GOOD | {"x": "12:30 AM", "y": "0:00:36"}]))  # fmt: skip
    assert typed.column("x").to_pylist() == [13.75, 13.75, 0.5] and typed.column("y").to_pylist() == [1.5, 2.0, 0.01]
    typed, errors = rules(passthrough=()).check(batch([GOOD | {"x": "10,000+", "y": "+5"}, GOOD | {"x": "5+"}]))
    assert typed.column("x").to_pylist() == [10000.0, 5.0] and typed.column("y").to_pylist() == [5.0, 2.0]  # at least
    typed, errors = rules(passthrough=(), decimal_comma=("x",)).check(batch([GOOD | {"x": "(1.234,50 €)"}]))
    assert typed.column("x").to_pylist() == [-1234.5] and errors.num_rows == 0
    # thousands grouped by apostrophes (Swiss) or by spaces, no-break ones too (French), one mark throughout
    typed, errors = rules(passthrough=()).check(batch([GOOD | {"x": "1'234'567.50", "y": "1 234"},
                                                       GOOD | {"x": "CHF 1’250", "y": "-12\u202f500 €"}]))  # fmt: skip
    assert errors.to_pylist()[0]["message"] == "field x: 'CHF 1’250' is not a number"
    assert typed.column("x").to_pylist() == [1234567.5] and typed.column("y").to_pylist() == [1234.0]
    typed, errors = rules(passthrough=(), decimal_comma=("x",)).check(batch([GOOD | {"x": "1\u00a0234,56 €"}]))
    assert typed.column("x").to_pylist() == [1234.56] and errors.num_rows == 0
    typed, errors = rules(passthrough=()).check(batch([GOOD | {"x": "12 34"}, GOOD | {"x": "1,234 567"}]))
    assert typed.num_rows == 0 and errors.num_rows == 2  # groups of three, by one mark


def test_a_column_s_own_missing_words_are_missing_there_only():
    rows = [GOOD | {"id": "a", "x": "unknown", "y": "3"}, GOOD | {"id": "b", "x": "4", "y": "unknown"}]
    typed, errors = rules(passthrough=(), missing_values={"x": ["unknown"]}).check(batch(rows))
    assert typed.column("x").to_pylist() == [None] and typed.column("y").to_pylist() == [3.0]  # x: imputed later
    assert [(e["key"], e["message"]) for e in errors.to_pylist()] == [("b", "field y: 'unknown' is not a number")]


def test_month_names_read_with_or_without_commas_periods_and_dashes():
    from dltool.transforms.table import strptime_dates

    stamps = strptime_dates(pa.array(["31-Dec-20", "1 Jan. 21", "2 FEBRUARY 2021", "Smarch 3 21", None]), "%d-%b-%y")
    assert stamps.to_pylist()[:3] == [datetime(2020, 12, 31), datetime(2021, 1, 1), None]  # %y is not 2021
    assert stamps.to_pylist()[3:] == [None, None]
    assert strptime_dates(pa.array(["Dec 31, 2020 18:30"]), "%b %d, %Y").to_pylist() == [datetime(2020, 12, 31, 18, 30)]


def test_a_day_the_month_lacks_is_no_date_and_twelve_hour_clocks_read():
    from dltool.transforms.table import strptime_dates

    texts = ["02/30/2020", "2/29/2020 1:30 PM", "12/31/2020 12:05am", "4/31/2021 9:00 p.m.", "4/30/2021 11:59:59 PM"]
    assert strptime_dates(pa.array(texts), "%m/%d/%Y").to_pylist() == [
        None, datetime(2020, 2, 29, 13, 30), datetime(2020, 12, 31, 0, 5), None, datetime(2021, 4, 30, 23, 59, 59)]
    assert strptime_dates(pa.array(["30-Feb-21", "28-Feb-21", "Jun 31, 2021"]), "%d-%b-%y").to_pylist() == [
        None, datetime(2021, 2, 28), None]  # fmt: skip


@pytest.mark.parametrize("shape, first, second, form", [
    ("/4", 12, 31, "%m/%d/%Y"), ("/4", 31, 12, "%d/%m/%Y"), ("/4", 12, 12, "%m/%d/%Y"),  # slashes: month first
    (".4", 12, 12, "%d.%m.%Y"), ("-4", 5, 30, "%m-%d-%Y"), ("/2", 1, 28, "%m/%d/%y"), ("bd4", None, None, "%b %d %Y"),
    ("/4", 13, 13, None), ("/4", 40, 1, None), (".2", 1, 2, None),  # two days, a 40th, a version number
])  # fmt: skip
def test_auto_reads_day_and_month_order_from_the_train_values(shape, first, second, form):
    from dltool.readers.table import date_format

    assert date_format(shape, first, second) == form


def test_a_repeated_header_name_is_numbered_and_encodings_take_java_s_names():
    from dltool.readers.csv import header_names, java_charset, unique_names

    assert unique_names(["x", "x", "x_2", "x", ""]) == ["x", "x_3", "x_2", "x_4", ""]
    # A pandas index written without a name, and an empty field further on, are named by position as Spark does.
    assert header_names(["\ufeff", "x", " x ", ""]) == ["_c0", "x", "x_2", "_c3"]
    assert [java_charset(e) for e in ("latin-1", "cp1252", "UTF8", "utf-16-le", "utf-8-sig")] == \
        ["ISO-8859-1", "cp1252", "utf-8", "UTF-16LE", "UTF-8"]  # fmt: skip


def test_a_file_s_delimiter_is_the_first_that_splits_its_lines_alike():
    from dltool.readers.csv import sniff_delimiter

    found = [sniff_delimiter(head, '"', {}) for head in (
        "a;b;c\n1,5;2;x\n3,5;4;y\n",  # decimal commas: each line has commas, the header none
        "a\tb\n1\t2\n3\t4\n", "a|b\n1|2\n", 'a,b,c\n1,"x;y",3\n2,"p\nq",4\n',  # a quoted newline is one record
        "onlyone\n1\n2\n", "a,b,c\n1,2\n3,4,5\n",  # no delimiter splits them alike: None (the default ,)
        "a;b\n1;2\n3;4\n5;",  # the last line may be cut
        "1\ta, b\tp\n2\tc, d\tq\n3\te, f\tp\n",  # no header, a comma in every line: the tabs split more
    )]  # fmt: skip
    assert found == [";", "\t", "|", ",", None, None, ";", "\t"]


def test_a_files_encoding_is_found_from_its_first_bytes():
    from dltool.readers.csv import sniff_encoding, wide

    text = "Kunde;Umsatz €;Straße\n"
    assert [sniff_encoding(text.encode(e)) for e in ("utf-8", "utf-8-sig", "cp1252", "utf-16")] == \
        ["utf-8", "utf-8", "cp1252", "utf-16"]  # fmt: skip
    assert sniff_encoding("Straße".encode("latin-1")) == "cp1252"  # latin-1's letters are cp1252's
    assert sniff_encoding(b"id,name\n1,plain ascii\n") == "utf-8"
    assert sniff_encoding("a,é".encode()[:-1]) == "utf-8"  # a character cut where the head stops
    assert sniff_encoding(b"a,\x81\x8d\n") == "latin-1"  # bytes cp1252 leaves undefined
    assert sniff_encoding("Zürich,München\n".encode() * 3 + b"Z\xfcrich\n") == "utf-8"  # UTF-8 with a stray byte
    assert sniff_encoding("like Debussy's R\ufffdverie\n".encode()) == "utf-8"  # a U+FFFD in the text is UTF-8's
    assert wide("utf-16") and wide("UTF-32LE") and not wide("cp1252") and not wide("utf-8")


def test_a_file_whose_first_mb_is_ascii_is_told_by_its_first_other_byte():
    import io

    from dltool.readers.csv import HEAD_BYTES, encoding_sample, sniff_encoding

    plain = b"1,Bern,p\n" * (HEAD_BYTES // 9 + 100)  # more than the head, all ASCII
    for expected in ("cp1252", "utf-8"):
        stream = io.BytesIO(plain + "2,Genève,q\n".encode(expected))
        sample = encoding_sample(stream, stream.read(HEAD_BYTES))
        assert sample.startswith("ève".encode(expected)) and sniff_encoding(sample) == expected
    stream = io.BytesIO(plain)
    assert encoding_sample(stream, stream.read(HEAD_BYTES)) == plain[:HEAD_BYTES]  # none: the head
    short = "a,Genève\n".encode("cp1252")
    assert encoding_sample(io.BytesIO(b""), short) == short  # the head holds the whole file


def test_a_title_above_the_header_is_found():
    from dltool.readers.csv import header_row

    table = [["id", "amount", "label", ""], ["1", "2.5", "a", ""], ["2", "3.5", "b", ""]]
    assert header_row(table) == 0
    assert header_row([["Sales 2024", "", "", ""], ["", "", "", ""], *table]) == 2
    assert header_row([["", "x", "y"], ["0", "1.5", "2"], ["1", "2.5", "3"]]) == 0  # pandas' unnamed index column
    assert header_row([["Sales 2024", "", ""], ["1", "2.5", "3"], ["2", "3.5", "4"]]) == 0  # no later header: as is
    assert header_row([["Quarterly sales"], [], ["Generated 2024-05-01"], *table]) == 3  # one-field lines above
    assert header_row([["text"], ["hello"], ["world"]]) == 0  # one column: its values are no header
    assert header_row([["x;city;label"], ["0;a", " b;p"], ["1;a", " b;q"]]) == 0  # a `;` file split by commas
    assert header_row([table[0], table[1], ["x", "y", "z", "w", "v"], ["p", "q", "r", "s", "t"]]) == 0  # wider rows
