"""`numeric: auto` and `categorical: auto` on a real local[2] Spark: roles from the train rows, reasons for the rest."""

from __future__ import annotations

import json
import re
from datetime import date
from types import SimpleNamespace

import numpy as np

from dltool.shards.codec import TensorSpec, decode_tensors
from tests.conftest import read_split
from tests.conftest import run_ingest_cli as ingest


def auto_ingest(tmp_path, write_config, lines: list[str], **settings) -> SimpleNamespace:
    """`lines` as a CSV ingested with `numeric: auto, categorical: auto` and `settings`, every row in (asserted).

    Gives the manifest, its `columns`, the `--json` summary, `_preprocess.json`, the train split's features by
    name, and `i`: each train row's index in the data lines (row r of the file is i = r - 1)."""
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    config = {"name": "auto", "dataset": {"path": str(tmp_path / "out")},
              "ingest": {"reader": "csv", "input": str(tmp_path / "t.csv"), "numeric": "auto", "categorical": "auto",
                         **settings}}  # fmt: skip
    result, summary = ingest(write_config(config))
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert result.exit_code == 0 and manifest["counts"]["quarantined"] == 0, result.output
    train = read_split(tmp_path / "out", "train")
    features = decode_tensors(train.column("features"), TensorSpec.from_json(manifest["features"]))
    return SimpleNamespace(
        manifest=manifest, columns=manifest["columns"], summary=summary, features=features,
        by_name=dict(zip(manifest["features"]["names"], features.T)),
        preprocess=json.loads((tmp_path / "out" / "_preprocess.json").read_text()),
        i=np.array([int(k.rsplit(":", 1)[1]) - 1 for k in train.column("key").to_pylist()]),
    )  # fmt: skip


def test_auto_roles_pick_numbers_categories_and_booleans_and_say_why_the_rest_is_out(spark, tmp_path, write_config):
    rng = np.random.default_rng(0)
    lines = ['row id,income (k),plan.name,is member,signed up,note,score,weight lb,account no,line,target']
    for i in range(120):
        note = f'"free text {rng.integers(1_000_000)}, with a comma"'
        member = "true" if i % 3 else "False"
        income = f"{rng.normal(50, 10):.2f}"
        income = "#N/A" if i % 10 == 4 else "None" if i % 15 == 7 else income  # gaps as pandas reads them
        lines.append(f"{1000 + i},{income},{['basic', 'pro', 'team'][i % 3]},{member},"
                     f"2024-01-{1 + i % 28:02d}T10:00:00,{note},{i % 7},{1500 + 29 * i},{rng.integers(10**9)},{i + 1},{'yn'[i % 2]}")  # fmt: skip
    found = auto_ingest(tmp_path, write_config, lines, label="target", exclude=["score"])
    columns, manifest, features = found.columns, found.manifest, found.features
    # A nearly unique measurement stays a number; ids are named like one or number the rows.
    assert columns["numeric"] == ["income (k)", "is member", "weight lb"] and columns["categorical"] == ["plan.name"]
    assert columns["dates"] == ["signed up"] and columns["words"] == ["note"]
    left_out = columns["left_out"]
    assert set(left_out) == {"row id", "account no", "line"} and all(r.startswith("an id:") for r in left_out.values())
    assert left_out["row id"].endswith("named like one") and left_out["account no"].endswith("named like one")
    assert re.fullmatch(r"an id: about \d+ distinct integers in \d+ rows, from \d+ to \d+", left_out["line"])
    assert found.summary["left_out"] == columns["left_out"]
    date_parts = [f"signed up:{p}" for p in ("days", "month", "day", "weekday", "hour")]
    # The note's words in 2+ train rows; its random numbers are in one row each.
    # The income's gaps are mostly y's (every i % 10 == 4 row): a slot says which rows had one.
    assert manifest["features"]["names"] == ["income (k)", "is member", "weight lb", *date_parts,
                                             "income (k)=<missing>", "plan.name=basic", "plan.name=pro", "plan.name=team",
                                             "plan.name=<other>", "note~a", "note~comma", "note~free", "note~text",
                                             "note~with"]  # fmt: skip
    assert set(np.unique(features[:, 1])) == {0.0, 1.0}  # true/false became 1/0
    # Row r (1-based) signed up on 2024-01-(1 + (r - 1) % 28) at 10:00; 2024-01-01 is a Monday, day 19723 since 1970.
    offset = found.i % 28
    expected = np.stack([19723 + offset + 10 / 24, np.ones_like(offset), 1 + offset, offset % 7, np.full_like(offset, 10)], 1)
    np.testing.assert_allclose(features[:, 3:8], expected, rtol=1e-6)
    assert (features[:, -5:] == 1).all()  # every note has each of the five words
    pre = found.preprocess
    assert list(pre["numeric"]) == ["income (k)", "is member", "weight lb", *date_parts] and pre["dates"] == ["signed up"]
    assert pre["words"] == {"note": ["a", "comma", "free", "text", "with"]}


def test_auto_reads_formatted_numbers_and_the_common_date_forms(spark, tmp_path, write_config):
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    lines = ["price,sold,opened,listed,share,version,prix,preis,mailed,target"]
    for i in range(60):  # row r = i + 1: day 1 + i % 28 of month 1 + i % 12
        day, month = 1 + i % 28, 1 + i % 12
        clock = f"{1 + i % 12}:05 {'AP'[i % 2]}M"  # sold on a 12-hour clock
        french = f"{1000 + 37 * i:,}".replace(",", "\u202f")  # 1 037 €: thousands by a narrow no-break space
        swiss = f"{1000 + 37 * i:,}.50".replace(",", "'")  # 1'037.50
        mailed = date(2022, month, day).strftime("%a, %d %b %Y 08:15:00 GMT")  # as an e-mail's header has it
        lines.append(f'"${1000 + 37 * i:,}.50",{month}/{day}/2020 {clock},{day:02d}.{month:02d}.2019,"{months[month - 1]} {day}, '
                     f'2021",{i % 50}%,{month}.{day}.{10 + i % 3},{french} €,{swiss},"{mailed}",{"yn"[i % 3 == 0]}')  # fmt: skip
    found = auto_ingest(tmp_path, write_config, lines, max_categories=100, label="target")
    columns, x, i = found.columns, found.by_name, found.i
    assert found.summary["left_out"] == {} and columns["numeric"] == ["price", "share", "prix", "preis"]
    np.testing.assert_allclose(x["prix"], 1000 + 37 * i)
    np.testing.assert_allclose(x["preis"], 1000.5 + 37 * i)
    assert columns["categorical"] == ["version"]  # 1.2.10: no date
    assert columns["dates"] == ["sold", "opened", "listed", "mailed"]
    assert columns["date_formats"] == {"sold": "%m/%d/%Y", "opened": "%d.%m.%Y", "listed": "%b %d %Y", "mailed": "%d %b %Y"}
    np.testing.assert_allclose(x["mailed:hour"], 8)
    assert found.preprocess["date_formats"] == columns["date_formats"]  # predict reads new rows the same way
    day, month = 1 + i % 28, 1 + i % 12
    np.testing.assert_allclose(x["price"], 1000.5 + 37 * i)
    np.testing.assert_allclose(x["share"], i % 50)
    hour = (1 + i % 12) % 12 + 12 * (i % 2)  # 12:05 AM is 0:05
    np.testing.assert_allclose(x["sold:hour"], hour)
    for column, year in (("sold", 2020), ("opened", 2019), ("listed", 2021)):
        assert (x[f"{column}:day"] == day).all() and (x[f"{column}:month"] == month).all(), column
        days = np.array([(date(year, m, d) - date(1970, 1, 1)).days for m, d in zip(month, day)])
        days = days + (hour + 5 / 60) / 24 if column == "sold" else days
        np.testing.assert_allclose(x[f"{column}:days"], days)


def test_a_measurement_with_a_few_words_stays_numeric_and_the_words_read_as_missing(spark, tmp_path, write_config):
    lines = ["weight kg,size,class,target"]
    for i in range(120):
        weight = "unknown" if i % 25 == 3 else "-" if i % 40 == 7 else f"{50 + 0.37 * i:.2f}"
        # an app's size as a store lists it, a fifth of them a phrase: 19M, 201k, Varies with device
        size = "Varies with device" if i % 5 == 1 else f"{(10 + i) * 1000}k" if i % 3 == 0 else f"{10 + i}M"
        target = "y" if i % 5 == 1 else "yn"[i % 2]  # an app whose size varies is a y: that gap tells
        lines.append(f"{weight},{size},{'crew' if i % 10 == 0 else 1 + i % 3},{target}")  # a code with a word: a category
    found = auto_ingest(tmp_path, write_config, lines, label="target")
    columns, i = found.columns, found.i
    assert columns["numeric"] == ["weight kg", "size"] and columns["categorical"] == ["class"]
    assert columns["missing_values"] == {"weight kg": ["-", "unknown"], "size": ["Varies with device"]}
    assert columns["units"] == {"size": "k"}  # never M where units mix (M is also metres)
    pre = found.preprocess
    assert pre["missing_values"] == columns["missing_values"]  # predict reads new rows the same way
    weights = found.by_name["weight kg"]
    word = (i % 25 == 3) | (i % 40 == 7)
    np.testing.assert_allclose(weights[~word], 50 + 0.37 * i[~word], rtol=1e-5)
    np.testing.assert_allclose(weights[word], pre["numeric"]["weight kg"], rtol=1e-5)  # the imputed train mean
    assert word.any() and abs(pre["numeric"]["weight kg"] - (50 + 0.37 * i[~word]).mean()) < 1e-3
    varies = i % 5 == 1
    np.testing.assert_allclose(found.by_name["size"][~varies], (10 + i[~varies]) * 1000, rtol=1e-5)
    # a gap that tells of the target also gets a 0/1 slot, which keeps what the word said; the weight's are at random
    assert pre["gaps"] == ["size"] and "weight kg=<missing>" not in found.by_name
    np.testing.assert_array_equal(found.by_name["size=<missing>"], varies)


def test_a_table_whose_one_feature_is_text_says_the_text_reader_serves_it_better(spark, tmp_path, write_config):
    words = ["disk", "full", "printer", "jammed", "invoice", "late", "refund", "please", "login", "fails"]
    # A product code in every row, each once (an Amazon review's ASIN), keeps no word: it is no second feature.
    lines = ["product,body,queue"] + [f'B{i * 7919 % 100003:08d}Q,"{" ".join(words[(i * k) % 10] for k in range(1, 4 + i % 5))} '
                                      f'case {i}",{"ab"[i % 2]}' for i in range(80)]  # fmt: skip
    # Titles that Spark reads as numbers no long holds (the film "Infinity"): the integer count overflowed.
    lines[1:3] = ["B00000001Q,Infinity,a", "B00000002Q,1e19,b"]
    found = auto_ingest(tmp_path, write_config, lines, label="queue")
    assert found.columns["words"] == ["product", "body"] and found.columns["numeric"] == found.columns["categorical"] == []
    assert list(found.preprocess["words"]["product"]) == []
    said = [w for w in found.manifest["warnings"] if "text reader" in w]
    assert said and "reader: text, format: csv, text_column: body, label: queue" in said[0]


def test_auto_reads_numbers_written_with_a_decimal_comma(spark, tmp_path, write_config):
    lines = ["gewicht;preis;miete;km;stück;ziel"]  # a European export: semicolons, decimal commas, dots group thousands
    for i in range(60):
        price = f"{1000 + 37 * i:,}".replace(",", ".")
        rent = f"{900 + i} €" if i % 3 == 0 else f"{price} €"  # 1.037 € alone: no comma anywhere in the column
        lines.append(f"{i // 4},{i % 4 * 25:02d};{price},50 €;{rent};{1 + i / 1000:.3f};{1000 + 137 * i:,};{'jn'[i % 2]}")
    found = auto_ingest(tmp_path, write_config, lines, delimiter=";", label="ziel")
    columns, x, i = found.columns, found.by_name, found.i
    # 1,137 alone could be either: a comma grouping thousands, as before. 1.037,50 € is a European price, and so is
    # 1.037 € (its dot groups thousands); 1.037 without the euro sign stays a decimal point (kilometres).
    assert columns["numeric"] == ["gewicht", "preis", "miete", "km", "stück"]
    assert columns["decimal_comma"] == found.preprocess["decimal_comma"] == ["gewicht", "preis", "miete"]
    np.testing.assert_allclose(x["gewicht"], i // 4 + i % 4 * 0.25)
    np.testing.assert_allclose(x["preis"], 1000.5 + 37 * i)
    np.testing.assert_allclose(x["miete"], np.where(i % 3 == 0, 900 + i, 1000 + 37 * i))
    np.testing.assert_allclose(x["km"], 1 + i / 1000, rtol=1e-6)
    np.testing.assert_allclose(x["stück"], 1000 + 137 * i)


def test_auto_reads_units_and_accountants_negatives_as_numbers(spark, tmp_path, write_config):
    lines = ["weight,engine,balance,place,size,target"]
    for i in range(60):  # a weight with its unit (any case, plural, a few bare), an engine in cc, a negative in ()
        weight = f"{40 + i / 4:g}" if i % 10 == 3 else f"{40 + i / 4:g} {'KGS' if i % 7 == 0 else 'kg'}"
        balance = f'"({37 * i:,}.50)"' if i % 2 else f'"{37 * i:,}.50"'
        size = f"{i / 10:g}M" if i % 3 == 0 else f"{i * 10}k"  # an app's size as a store lists it: 201k, 1.5M
        lines.append(f"{weight},{1000 + 10 * i}cc,{balance},{1 + i % 3}{['st', 'nd', 'rd'][i % 3]},{size},{'yn'[i % 2]}")
    found = auto_ingest(tmp_path, write_config, lines, label="target")
    columns, x, i = found.columns, found.by_name, found.i
    assert columns["numeric"] == ["weight", "engine", "balance", "size"] and columns["categorical"] == ["place"]  # 1st: a code
    assert columns["units"] == {"weight": "kg", "engine": "cc", "size": "k"} and found.preprocess["units"] == columns["units"]
    np.testing.assert_allclose(x["size"], np.where(i % 3 == 0, i * 100, i * 10))  # in k, the most common
    np.testing.assert_allclose(x["weight"], 40 + i / 4)
    np.testing.assert_allclose(x["engine"], 1000 + 10 * i)
    np.testing.assert_allclose(x["balance"], (37 * i + 0.5) * np.where(i % 2, -1, 1))


def test_a_date_column_with_a_few_words_stays_dates_and_the_words_read_as_missing(spark, tmp_path, write_config):
    lines = ["opened,signed,target"]
    for i in range(80):  # day 1 + i % 28 of month 1 + i % 12; a few rows say unknown or n/a
        day, month = 1 + i % 28, 1 + i % 12
        opened = "unknown" if i % 20 == 5 else f"{day:02d}/{month:02d}/2019"
        signed = "not yet" if i % 25 == 7 else f"2020-{month:02d}-{day:02d}"
        lines.append(f"{opened},{signed},{'yn'[i % 2]}")
    found = auto_ingest(tmp_path, write_config, lines, label="target")
    columns, i = found.columns, found.i
    assert columns["dates"] == ["opened", "signed"] and columns["date_formats"] == {"opened": "%d/%m/%Y"}
    assert columns["missing_values"] == {"opened": ["unknown"], "signed": ["not yet"]}
    months, known = found.by_name["opened:month"], i % 20 != 5
    np.testing.assert_allclose(months[known], 1 + i[known] % 12)
    np.testing.assert_allclose(months[~known], (1 + i[known] % 12).mean(), rtol=1e-5)  # the imputed train mean
    assert (~known).any()


def test_auto_reads_times_of_day_as_hours_and_months_with_their_year_as_dates(spark, tmp_path, write_config):
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    lines = ["opens,billed,stamped,due,target"]
    for i in range(60):  # Spark's cast reads 13:45 alone as today's time: it must stay a number of hours
        lines.append(f"{i % 24}:{i % 4 * 15:02d},{months[i % 12]} {2000 + i % 5},2020-01-{1 + i % 28:02d}T09:30:00Z,"
                     f"{1 + i % 28}/{1 + i % 12}/2022,{'yn'[i % 2]}")  # fmt: skip
    # due is named a date column with no format: its form is found as auto's are
    found = auto_ingest(tmp_path, write_config, lines, dates=["due"], label="target")
    columns, x, i = found.columns, found.by_name, found.i
    assert columns["numeric"] == ["opens"] and columns["dates"] == ["due", "billed", "stamped"]
    assert columns["date_formats"] == {"billed": "%b %Y", "due": "%d/%m/%Y"}
    np.testing.assert_allclose(x["opens"], i % 24 + i % 4 / 4)
    np.testing.assert_allclose(x["billed:month"], 1 + i % 12)
    np.testing.assert_allclose(x["stamped:hour"], 9)
    np.testing.assert_allclose(x["due:day"], 1 + i % 28)


def test_a_named_date_column_gets_its_written_form_found(spark, tmp_path, write_config):
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    lines = ["size,listed,signed,target"]
    for i in range(40):  # listed as `Mar 5 2021`; signed in ISO 8601 (no format needed)
        lines.append(f"{i},{months[i % 12]} {1 + i % 28} 2021,2020-{1 + i % 12:02d}-01,{'yn'[i % 2]}")
    found = auto_ingest(tmp_path, write_config, lines, numeric=["size"], categorical=[], dates=["listed", "signed"],
                        label="target")  # fmt: skip
    assert found.columns["date_formats"] == {"listed": "%b %d %Y"} and found.preprocess["date_formats"] == {"listed": "%b %d %Y"}
    np.testing.assert_allclose(found.by_name["listed:month"], 1 + found.i % 12)
    np.testing.assert_allclose(found.by_name["listed:day"], 1 + found.i % 28)
    np.testing.assert_allclose(found.by_name["signed:month"], 1 + found.i % 12)


def test_a_wide_table_gets_its_roles_from_one_grouped_aggregation(spark, tmp_path, write_config):
    # 300 pixel columns (a digits table as CSV): one query with each column's own expressions ran the driver out of memory
    pixels = [f"p{j}" for j in range(300)]
    lines = [",".join(["label", *pixels, "shade"])]
    for i in range(30):
        lines.append(",".join([str(i % 3), *(str(i * j % 17) for j in range(300)), ["dark", "light"][i % 2]]))
    found = auto_ingest(tmp_path, write_config, lines, label="label")
    assert found.columns["numeric"] == pixels and found.columns["categorical"] == ["shade"]
    np.testing.assert_allclose(found.by_name["p299"], found.i * 299 % 17)


def test_an_id_column_of_hundreds_of_rows_is_told_by_its_distinct_values(spark, tmp_path, write_config):
    # Spark's default estimate of distinct values (5%) counts 298 of these 324 train ids: under the 95% that tells
    # an id, so it was a feature (25 of 301 such runs of 400 ids were missed so; none with DISTINCT_RSD)
    lines = ["ID,score,target"] + [f"{65802 + i},{i % 17},{'yn'[i % 3 == 0]}" for i in range(400)]
    found = auto_ingest(tmp_path, write_config, lines, label="target")
    assert found.columns["numeric"] == ["score"] and found.columns["left_out"]["ID"].startswith("an id: ")
