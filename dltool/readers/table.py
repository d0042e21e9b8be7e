"""The `table` reader: rows from any Spark source, columns validated by role, preprocessing fitted on train.

`ColumnTableReader` holds what every table reader does with a DataFrame of rows: row
numbers, keys, the hash split, and the column roles its tasks check and type fields by
(`dltool.transforms.table.RowRules`). A table reader only says how to read its raw rows
(`read_raw`): the `csv` reader parses text, the `table` reader reads any Spark source
(Parquet, ORC, JSON lines, CSV, Delta, a catalog table).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dltool.config.readers import CORRUPT, RESERVED, ColumnRoles, TableReaderConfig, id_like, label_task  # noqa: F401  (re-exported)
from dltool.errors import ConfigError, map_errors
from dltool.readers.base import TableReader, register

if TYPE_CHECKING:
    from dltool.transforms.table import RowRules


FORMAT_PATTERNS = {"parquet": ["*.parquet"], "orc": ["*.orc"], "json": ["*.json", "*.jsonl", "*.ndjson"],
                   "csv": ["*.csv", "*.tsv", "*.txt", "*.csv.gz", "*.csv.bz2"], "delta": [], "table": []}  # fmt: skip


class ColumnTableReader(TableReader):
    """Numbers, keys and splits a table's rows; its fields are checked and typed in the tasks by `rules()`."""

    default_model = "tabular"
    spark_conf: dict[str, str] = {}  # Spark SQL settings the reader's queries need (set for the ingest only)
    corrupt_column: str | None = None  # the column where the source puts a row it could not split into fields

    def __init__(self, config):
        super().__init__(config)
        self.left_out: dict[str, str] = {}  # columns `auto` did not use, with the reason
        self.task_reason: str | None = None  # why `task: auto` became what it is
        self._available: list[str] = []  # the source's columns, as read_raw found them
        self.lists: list[str] = []  # columns that were lists of strings (tags), joined into one text (`flattened`)
        self.classes: tuple[str, ...] | None = None  # the fitted classes, when the preprocessing is given

    def grows(self) -> bool:
        return getattr(self.config, "format", "csv") not in ("table", "delta")  # those have no files to compare

    def with_task(self, spark, paths: list[str], preprocess=None) -> "ColumnTableReader":
        """This reader with `task: auto` decided: as the fitted preprocessing was (it has classes or not), else from
        the label's first values (`label_task`); the reason is `task_reason`."""
        import copy

        cfg = self.config
        if cfg.task != "auto":
            return self
        if not cfg.label:
            task, self.task_reason = "classification", None
        elif preprocess is not None:
            task = "classification" if preprocess.labels is not None else "regression"
        else:
            sample = self.label_sample(spark, paths)
            task, why = (sample, f"a {'float' if sample == 'regression' else 'non-number'} column") \
                if isinstance(sample, str) else label_task(sample, cfg.na_values)  # fmt: skip
            self.task_reason = f"auto: the label has {why}; set task: classification if they are classes" \
                if task == "regression" else None  # fmt: skip
        resolved = copy.copy(self)
        resolved.config = cfg.model_copy(update={"task": task})
        return resolved

    def header_record(self):
        """A Spark condition true for a file's header where the source reads it as a row (csv: a title above it)."""
        return None

    def skipped(self) -> list[str]:
        """What the read leaves out of the source, said as warnings (csv: a title above the header)."""
        return []

    def label_sample(self, spark, paths: list[str]) -> list | str:
        """The label's first values as text (at most LABEL_SAMPLE), or the task where the source's type says it."""
        from dltool.splits import column

        frame = self.read_raw(spark, paths, [])
        return [row[0] for row in frame.select(column(self.config.label)).limit(LABEL_SAMPLE).collect()]

    def rows(self, spark, paths: list[str], relpaths: dict[str, str], split_settings, known: dict[str, str] | None = None):
        """The raw rows (used columns as text, vectors as arrays, the corrupt column) with `_file`, `_row` (1-based
        row within its file), `key` (key_column, else relpath:row) and `split`; and the number of rows.
        `known`: key -> split of rows the dataset already held (a later version's), kept whatever the rules say.

        Lazy apart from counting rows per file piece: each later pass reads the source again,
        which costs less than caching parsed text (docs/benchmarks.md, "Tables").
        """
        from pyspark.sql import functions as F

        from dltool.splits import column, keep_known, with_split

        cfg = self.config
        extra = [c for c in (split_settings.column if split_settings.by == "column" else None, split_settings.group) if c]
        raw = self.read_raw(spark, paths, extra)
        raw = raw.withColumn("_file", F.input_file_name()).withColumn("_mid", F.monotonically_increasing_id())
        raw, inputs = with_row_numbers(spark, raw, relpaths, self.header_record())
        self._sizes = _vector_sizes(raw, cfg.vector_columns())
        self._split_column = {"column": split_settings.column, "path": "_relpath"}.get(split_settings.by)
        self._group = split_settings.group
        row_key = F.concat_ws(":", "_relpath", F.col("_row").cast("string"))
        key = F.coalesce(column(cfg.key_column), row_key) if cfg.key_column else row_key
        raw = raw.withColumn("key", key.cast("string"))
        label = column(cfg.label) if cfg.label and cfg.task == "classification" else None
        raw = keep_known(spark, with_split(raw, F.col("key"), label, split_settings), known, split_settings)
        unused = ["_mid"] + ([] if split_settings.by == "path" else ["_relpath"])
        return raw.drop(*unused), inputs

    def resolved(self, rows, preprocess=None) -> "ColumnTableReader":
        """This reader with `auto` roles decided: from the fitted preprocessing when one is given (predict
        keeps the training data's columns), else from the train rows of `rows`."""
        import copy

        cfg = self.config
        if preprocess is not None:
            numeric, categorical, left_out = preprocess.source_numeric, list(preprocess.categorical), {}
            dates, words, date_formats = list(preprocess.dates), list(preprocess.words), dict(preprocess.date_formats)
            missing_values, decimal_comma = dict(preprocess.missing_values), list(preprocess.decimal_comma)
            units = dict(preprocess.units)
            absent = [c for c in [*numeric, *categorical, *dates, *words] if c not in self._available]
            if absent:
                raise ConfigError(f"{cfg.input}: columns {absent} the model was trained on are not in the data")
        elif cfg.auto():
            (numeric, categorical, dates, words, left_out, date_formats, missing_values, decimal_comma,
             units) = self._infer_roles(rows)
        elif found := self._named_date_formats(rows):  # named columns, but a date column's form left to find
            resolved = copy.copy(self)
            resolved.config = cfg.model_copy(update={"date_formats": {**found, **cfg.date_formats}})
            return resolved
        else:
            return self
        resolved = copy.copy(self)
        resolved.config = cfg.model_copy(update={"numeric": numeric, "categorical": categorical, "dates": dates,
                                                 "words": words, "date_formats": date_formats,
                                                 "missing_values": missing_values, "decimal_comma": decimal_comma,
                                                 "units": units})  # fmt: skip
        if preprocess is not None:
            resolved._sizes = dict(preprocess.vectors)  # as trained, not the most common size of the new rows
            resolved.classes = None if preprocess.labels is None else tuple(preprocess.labels)
        resolved.left_out = {**self.left_out, **left_out}
        return resolved

    def _infer_roles(self, rows) -> tuple[list[str], list[str], list[str], list[str], dict[str, str], dict[str, str],
                                          dict[str, list[str]], list[str], dict[str, str]]:  # fmt: skip
        """numeric, categorical, date, free-text and left-out columns (with the reason) from the train split, in one
        aggregation; the strptime format of each date column found that is not ISO 8601; the words a numeric
        column holds besides its numbers (`_missing_words`), read as missing; the numeric columns written
        with a decimal comma; and the unit of those whose numbers are followed by one (`_units`)."""
        from pyspark.sql import functions as F

        from dltool.transforms.table import DECIMAL_COMMA_NUMBER, UNIT_NUMBER

        cfg = self.config
        taken = set(cfg.named()) | set(cfg.exclude) | set(self.left_out) | {self.corrupt_column, self._split_column,
                                                                             self._group} | RESERVED  # fmt: skip
        candidates = [c for c in self._available if c not in taken]
        train = rows.where(F.col("split") == "train")
        row = _value_counts(train, candidates, cfg.na_values, cfg.missing_values)

        values = self._column_values  # one column's values, for the second looks below

        # Where a column of too many values for a category is numbers, or a column is dates, but for a few words
        # (`unknown`, `n/k`, `-`): those words, its gaps. (A code of few values with a word, `1, 2, 3, crew`, stays
        # a category: the word is one too.) A second aggregation, only for such columns.
        mostly = lambda i, count: row[f"present{i}"] > count >= max(  # noqa: E731
            MIN_NUMBERS, (1 - MAX_WORD_SHARE) * row[f"present{i}"])
        kinds = {}  # column -> what its values but a few words are: number, unit (12 kg), time (ISO 8601) or datelike
        for i, c in enumerate(candidates):
            many = row[f"distinct{i}"] > cfg.max_categories
            if mostly(i, row[f"number{i}"]) and many:
                kinds[c] = "number"
            elif mostly(i, row[f"number{i}"] + row[f"unit{i}"]) and row[f"unit{i}"] >= row[f"number{i}"] and many:
                kinds[c] = "unit"
            elif kind := next((k for k in ("time", "datelike") if mostly(i, row[f"{k}{i}"])), None):
                kinds[c] = kind
        kind_of = {"number": lambda v: v["numberish"], "unit": lambda v: v["numberish"] | v["text"].rlike(UNIT_NUMBER),
                   "time": lambda v: v["time"], "datelike": lambda v: v["datelike"]}  # fmt: skip
        extra = _missing_words(train, {c: (v["text"], v["present"], kind_of[kind](v))
                                       for c, kind in kinds.items() for v in [values(c)]})  # fmt: skip
        with_words = lambda i, c, count, kind: row[f"present{i}"] and (  # noqa: E731
            count == row[f"present{i}"] or c in extra and kinds[c] == kind)
        iso = {c for i, c in enumerate(candidates) if with_words(i, c, row[f"time{i}"], "time")}
        # Where every train value of a column, but for those words, has one of the date forms: its shapes.
        found = _date_formats(train, {c: (v["dated"], v["present"] & ~v["text"].isin(extra[c]) if c in extra else v["present"])
                                      for i, c in enumerate(candidates) if c not in iso and
                                      with_words(i, c, row[f"datelike{i}"], "datelike")
                                      for v in [values(c)]})  # fmt: skip
        # And where numbers and numbers with a decimal comma (1,5) make up a column: whether every value is the latter.
        comma = _all_match(train, {c: (v["text"], v["present"]) for i, c in enumerate(candidates) if row[f"comma{i}"]
                                   and row[f"number{i}"] + row[f"comma{i}"] == row[f"present{i}"] for v in [values(c)]},
                           DECIMAL_COMMA_NUMBER)  # fmt: skip
        # And euro amounts whose dots group thousands (1.037 €) beside whole numbers only: a decimal comma too.
        comma |= {c for i, c in enumerate(candidates) if row[f"euro{i}"] and
                  row[f"euro{i}"] + row[f"integer{i}"] == row[f"present{i}"] == row[f"number{i}"]}  # fmt: skip
        # And where numbers with a unit after them (12 kg) and plain numbers make up a column: its one unit.
        found_units = _units(train, {c: (v["text"], v["present"]) for i, c in enumerate(candidates) if c not in comma
                                     and row[f"unit{i}"] and row[f"unit{i}"] >= row[f"number{i}"] and
                                     with_words(i, c, row[f"number{i}"] + row[f"unit{i}"], "unit")
                                     for v in [values(c)]})  # fmt: skip
        numeric, categorical, dates, words, left_out = [], [], list(cfg.dates), list(cfg.words), {}
        date_formats = {**self._named_date_formats(rows), **cfg.date_formats}
        missing_values, decimal_comma, units = dict(cfg.missing_values), list(cfg.decimal_comma), dict(cfg.units)
        for i, c in enumerate(candidates):
            present, distinct = row[f"present{i}"], row[f"distinct{i}"]
            if not present:
                left_out[c] = "no values in the train split"
            elif c in self.lists:  # tags: each word a slot, in any order
                words.append(c)
            elif c in comma:  # 3,5 and 1.234,56: a decimal comma
                numeric.append(c)
                decimal_comma.append(c)
            elif c in found_units:  # 12 kg, 3.5 kg
                numeric.append(c)
                units[c] = found_units[c]
                missing_values.update({c: extra[c]} if c in extra else {})
            elif c in extra and kinds[c] == "number":
                numeric.append(c)
                missing_values[c] = extra[c]
            elif row[f"number{i}"] == present:
                unique = row[f"integer{i}"] == present and present >= 20 and distinct >= 0.95 * present
                # Weights, prices and counts can be nearly unique too: an id is named like one or numbers the rows.
                consecutive = unique and row[f"max{i}"] - row[f"min{i}"] < 3 * present
                if unique and (id_like(c) or consecutive):
                    why = "named like one" if id_like(c) else f"from {row[f'min{i}']:.0f} to {row[f'max{i}']:.0f}"
                    # (approx_count_distinct can count a few more values than rows)
                    left_out[c] = f"an id: about {min(distinct, present)} distinct integers in {present} rows, {why}"
                else:
                    numeric.append(c)
            elif c in iso or c in found:
                dates.append(c)
                date_formats.update({c: found[c]} if c in found else {})
                missing_values.update({c: extra[c]} if c in extra else {})
            elif distinct <= cfg.max_categories:
                categorical.append(c)
            else:  # names, titles, notes: their frequent words
                words.append(c)
        if cfg.numeric != "auto":
            left_out.update({c: "numbers, but `numeric` is a list without it" for c in numeric})
            missing_values = {c: v for c, v in missing_values.items()
                              if kinds.get(c) not in ("number", "unit") or c not in extra}  # fmt: skip
            decimal_comma = [c for c in decimal_comma if c in cfg.decimal_comma]
            units = {c: u for c, u in units.items() if c in cfg.units}
            numeric = list(cfg.numeric)
        if cfg.categorical != "auto":
            left_out.update({c: "a category, but `categorical` is a list without it" for c in categorical})
            categorical = list(cfg.categorical)
        if not any((numeric, categorical, dates, words, cfg.vector_columns())):
            raise ConfigError(f"{cfg.input}: auto found no feature column ({'; '.join(f'{c}: {r}' for c, r in left_out.items())})")
        return numeric, categorical, dates, words, left_out, date_formats, missing_values, decimal_comma, units

    def _column_values(self, c: str) -> dict:
        """What `auto` asks of column `c`'s values (`_values`), its gaps (`na_values`, its `missing_values`) left out."""
        from pyspark.sql import functions as F

        from dltool.splits import column

        cfg = self.config
        text = F.trim(column(c).cast("string"))
        return _values(text, text.isNotNull() & ~text.isin([*cfg.na_values, *cfg.missing_values.get(c, [])]))

    def _named_date_formats(self, rows) -> dict[str, str]:
        """The strptime format of each column `dates` names and `date_formats` does not, where every train value of
        it has one date form other than ISO 8601 (`Jan 1 2000`, `31/12/2020`), found as `auto` finds a date
        column's, from the first NAMED_DATE_ROWS train rows: two small aggregations, only for such columns (a config
        that names its columns gets no scan of the whole table); ISO dates need no format."""
        from pyspark.sql import functions as F

        cfg = self.config
        texts = {c: self._column_values(c) for c in cfg.dates if c not in cfg.date_formats}
        if not texts:
            return {}
        train = rows.where(F.col("split") == "train").limit(NAMED_DATE_ROWS)
        other = train.agg(*(F.count_if(v["present"] & (v["time"] | ~v["datelike"])).alias(f"other{i}")
                            for i, v in enumerate(texts.values()))).first()  # fmt: skip
        return _date_formats(train, {c: (v["dated"], v["present"]) for i, (c, v) in enumerate(texts.items())
                                     if other[f"other{i}"] == 0})  # fmt: skip

    def rules(self) -> RowRules:
        """How the tasks check and type each field (call after `rows`, which finds the vector sizes)."""
        from dltool.transforms.table import RowRules

        cfg = self.config
        return RowRules(tuple(cfg.numeric), tuple(cfg.categorical), dict(self._sizes), tuple(cfg.passthrough),
                        cfg.label, cfg.task == "regression", cfg.key_column, tuple(cfg.na_values), cfg.non_finite,
                        self.encoding(), self.corrupt_column, self._split_column, self.classes,
                        tuple(cfg.dates), tuple(cfg.words), dict(cfg.date_formats), dict(cfg.missing_values),
                        tuple(cfg.decimal_comma), dict(cfg.units))  # fmt: skip

    def encoding(self) -> str:
        return "utf-8"

    def source_columns(self, spark, paths: list[str]) -> list[str]:
        """The columns the source has (predict checks whether raw rows carry the label)."""
        return self.read_raw(spark, paths, []).columns

    @abstractmethod
    def read_raw(self, spark, paths: list[str], extra: list[str]):
        """The rows as a DataFrame: the used scalar columns and `extra` (the split's column or group)
        as strings, vectors as array<double> (and `corrupt_column`, where the reader has one)."""


@register
class TableSourceReader(ColumnTableReader):
    """`reader: table`: any Spark source, its typed columns checked and featurised like CSV fields."""

    name = "table"
    config_model = TableReaderConfig

    def patterns(self) -> tuple[list[str], list[str]]:
        return FORMAT_PATTERNS[self.config.format], []

    def inputs(self):
        from dltool.storage.fs import InputFile, open_location

        cfg = self.config
        if cfg.format == "table":  # a catalog table has no files to fingerprint: every ingest reads it afresh
            return [InputFile(f"table:{cfg.input}", cfg.input, 0, time.time_ns())], 0
        if cfg.format == "delta":  # a Delta table is its folder (its log says which files are live)
            folder = open_location(cfg.input)
            return [InputFile(folder.path, folder.path.rsplit("/", 1)[-1], 0, time.time_ns())], 0
        return super().inputs()

    def source_columns(self, spark, paths: list[str]) -> list[str]:
        return self._frame(spark, paths).columns

    def label_sample(self, spark, paths: list[str]) -> list | str:
        from pyspark.sql import types as T

        frame = self._frame(spark, paths)
        if self.config.label not in frame.columns:
            return super().label_sample(spark, paths)  # its message names the missing column
        kind = frame.schema[self.config.label].dataType
        if isinstance(kind, (T.FloatType, T.DoubleType, T.DecimalType)):
            return "regression"
        if not isinstance(kind, (T.IntegralType, T.StringType)):
            return "classification"
        return super().label_sample(spark, paths)

    def _frame(self, spark, paths: list[str]):
        cfg = self.config
        source = spark.read.format(cfg.format).options(**cfg.options)
        # No such table, unknown format, unreadable schema: Spark's AnalysisException, a config error.
        with map_errors(f"ingest.input: reading {cfg.input!r} as {cfg.format}"):
            frame, self.lists = flattened(spark.table(cfg.input) if cfg.format == "table" else source.load(paths))
        return frame

    def read_raw(self, spark, paths: list[str], extra: list[str]):
        from pyspark.ml.functions import vector_to_array
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql import types as T

        from dltool.splits import column

        cfg = self.config
        frame = self._frame(spark, paths)
        types = {f.name: f.dataType for f in frame.schema.fields}
        used = [c for c in cfg.named() if c not in cfg.vectors] + extra
        missing = [c for c in used + cfg.vectors if c not in types]
        if missing:
            raise ConfigError(f"{cfg.input}: columns {missing} named in ingest are not in the data {sorted(types)}")
        nested = (T.ArrayType, VectorUDT)
        for role in ("numeric", "categorical"):
            named = getattr(cfg, role)
            for c in named if named != "auto" else ():
                if isinstance(types[c], nested):
                    raise ConfigError(f"ingest.{role}: column {c} is {types[c].simpleString()}, a list of numbers in "
                                      "each row: list it under `vectors:` instead")  # fmt: skip
        if cfg.auto():  # every other scalar column is a candidate; nested ones are left out
            scalar = (T.NumericType, T.BooleanType, T.StringType, T.DateType, T.TimestampType)
            for c, kind in types.items():
                if c in used or c in cfg.vectors or c in cfg.exclude:
                    continue
                if isinstance(kind, scalar):
                    used.append(c)
                elif isinstance(kind, (T.ArrayType, VectorUDT)):
                    self.left_out[c] = f"a {kind.simpleString()} column (list array columns in `vectors`)"
                else:
                    self.left_out[c] = f"a {kind.simpleString()} column: no feature dltool reads"
        self._available = list(dict.fromkeys(used))
        columns = []
        for c in dict.fromkeys(used):
            value = column(c).cast("int") if isinstance(types[c], T.BooleanType) else column(c)
            columns.append(value.cast("string").alias(c))
        for c in cfg.vectors:
            kind = types[c]
            if isinstance(kind, VectorUDT):
                columns.append(vector_to_array(column(c), dtype="float64").alias(c))
            elif isinstance(kind, T.ArrayType) and isinstance(kind.elementType, T.NumericType):
                columns.append(column(c).cast("array<double>").alias(c))
            else:
                raise ConfigError(f"ingest.vectors: column {c} is {kind.simpleString()}, not an array of numbers or a vector")
        return frame.select(*columns)


def flattened(frame):
    """`frame` with each struct's fields as columns of their own, named by their path (`user.age`), and each array
    of strings joined by spaces into one text (`tags`: `red sale`): JSON's nesting, in columns auto roles read.
    Returns that frame and the names of the joined lists (`auto` reads them as words)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from dltool.splits import column

    lists = []

    def columns(name: str, value, kind) -> list:
        if isinstance(kind, T.StructType):
            return [c for f in kind.fields for c in columns(f"{name}.{f.name}", value.getField(f.name), f.dataType)]
        if isinstance(kind, T.ArrayType) and isinstance(kind.elementType, T.StringType):
            lists.append(name)
            return [F.concat_ws(" ", value).alias(name)]
        return [value.alias(name)]

    if not any(isinstance(f.dataType, T.StructType) or (isinstance(f.dataType, T.ArrayType) and isinstance(
            f.dataType.elementType, T.StringType)) for f in frame.schema.fields):  # fmt: skip
        return frame, []
    return frame.select(*(c for f in frame.schema.fields for c in columns(f.name, column(f.name), f.dataType))), lists


# Dates as people write them, found by `auto` in the train values (Java regexes, for Spark): day and month in
# numbers (12/31/2020, 31.12.2020, 31-12-2020, 12/31/20), the year first with slashes, or the month's name
# (Dec 31, 2020; 31 Dec 2020; 31-Dec-20). A time of day may follow (13:45, 1:45:30 PM, 1:45pm), and the date be
# dressed in a weekday and a zone's name (DATE_DRESSING: dropped before these are matched).
_CLOCK = r"(?: \d{1,2}:\d{2}(?::\d{2})?(?: ?[AaPp]\.?[Mm]\.?)?)?"
NUMERIC_DATE = rf"^(\d{{1,2}})([/.-])(\d{{1,2}})\2(\d{{4}}|\d{{2}}){_CLOCK}$"
YEAR_FIRST_DATE = rf"^\d{{4}}/\d{{1,2}}/\d{{1,2}}{_CLOCK}$"
_MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:tember)?|oct(?:ober)?" \
         r"|nov(?:ember)?|dec(?:ember)?)\.?"  # fmt: skip
MONTH_FIRST_DATE = rf"(?i)^{_MONTH} \d{{1,2}},? (\d{{4}}|\d{{2}}){_CLOCK}$"
DAY_FIRST_DATE = rf"(?i)^\d{{1,2}}[ -]{_MONTH}[ -](\d{{4}}|\d{{2}}){_CLOCK}$"
MONTH_YEAR_DATE = rf"(?i)^{_MONTH},? (\d{{4}})$"  # Jan 2020, January 2020: the month's first day
# Any of them, in one regex (NUMERIC_DATE first: its back-reference counts its own groups).
DATE_LIKE = "(?i)" + "|".join(f"(?:{p.removeprefix('(?i)')})" for p in (NUMERIC_DATE, YEAR_FIRST_DATE, MONTH_FIRST_DATE,
                                                                      DAY_FIRST_DATE, MONTH_YEAR_DATE))  # fmt: skip


# task: auto decides from the label's first values: at most this many.
LABEL_SAMPLE = 10_000


# auto: a column of numbers with a few words besides stays numeric, the words read as missing in it alone.
MAX_MISSING_WORDS, MAX_WORD_SHARE, MIN_NUMBERS = 3, 0.5, 20


def _values(text, present) -> dict:
    """What `auto` asks of each value `text` (a trimmed string Spark column; `present`: not missing), as Spark columns:
    its number (1,250, $3.50, (5), 13:45), whether it is one (or true/false), an ISO 8601 time as the tasks read it
    (Spark's cast also takes forms they do not: 13:45 alone, as today's), or one of the date forms of DATE_LIKE."""
    from pyspark.sql import functions as F

    from dltool.transforms.table import DATE_DRESSING, FORMATTED_NUMBER, ISO_TIME, NEGATIVE, NUMBER_SIGNS

    formatted = F.when(text.rlike(FORMATTED_NUMBER), F.regexp_replace(F.regexp_replace(text, NUMBER_SIGNS, ""), NEGATIVE, "-"))
    number = F.coalesce(text.try_cast("double"), formatted.try_cast("double"), _clock_hours(text))
    dated = F.regexp_replace(text, DATE_DRESSING, "")  # Wed, 03 Jul 2019 10:00:00 GMT: the date
    return {"text": text, "present": present, "number": number,
            "numberish": number.isNotNull() | F.lower(text).isin("true", "false"),
            "time": number.isNull() & dated.rlike(ISO_TIME) & dated.try_cast("timestamp").isNotNull(),
            "datelike": number.isNull() & dated.rlike(DATE_LIKE), "dated": dated}  # fmt: skip


NAMED_DATE_ROWS = 10_000  # train rows a named date column's format is found from
# The distinct values' estimate (HyperLogLog++) within about 1%: Spark's default, 5%, counted 307 of an id column's
# 327 values, under the 95% that tells an id.
DISTINCT_RSD = 0.01
COUNTS = ("present", "number", "comma", "euro", "unit", "integer", "time", "distinct", "datelike")


def _value_counts(train, columns: list[str], na_values, missing_values: dict) -> dict:
    """For each column i of `columns`, over the train rows: its present values (`present{i}`), numbers, decimal-comma
    numbers, numbers with a unit, integers, ISO times, distinct values, dates of the other forms, and its largest and
    smallest number (`max{i}`, `min{i}`).

    One aggregation, of the values unpivoted into (column, value) rows and grouped by column: its plan is the same for
    3 columns or 785. A query with each column's own expressions grows with the columns: a 785-column table's took
    minutes to plan and ran the driver out of memory, and so did a 27-column table of 15,402 rows (R's hotel_rates);
    on 1M rows of 13 columns it took 27-30 s where the unpivoted rows took 17-19 s (docs/benchmarks.md)."""
    from pyspark.sql import functions as F

    from dltool.splits import column

    row = {f"{key}{i}": (None if key in ("max", "min") else 0) for i in range(len(columns)) for key in (*COUNTS, "max", "min")}
    if not columns:
        return row
    names = [f"_v{i}" for i in range(len(columns))]
    wide = train.select(*(F.trim(column(c).cast("string")).alias(n) for c, n in zip(columns, names)))
    long = wide.unpivot([], names, "_column", "_text")
    text, missing = F.col("_text"), F.col("_text").isin(list(na_values))
    for name, c in zip(names, columns):
        if missing_values.get(c):
            missing = missing | ((F.col("_column") == name) & text.isin(missing_values[c]))
    aggregates = _aggregates(_values(text, text.isNotNull() & ~missing))
    for found in long.groupBy("_column").agg(*(a.alias(name) for name, a in aggregates.items())).collect():
        i = int(found["_column"][2:])
        row.update({f"{key}{i}": found[key] for key in aggregates})
    return row


def _aggregates(v: dict) -> dict:
    """The aggregates of `_value_counts` over the values `v` (`_values`), by name."""
    from pyspark.sql import functions as F

    from dltool.transforms.table import DECIMAL_COMMA_NUMBER, EURO_THOUSANDS, UNIT_NUMBER

    text, present, number, numberish = v["text"], v["present"], v["number"], v["numberish"]
    # floor gives a long: past 2^63 (a title "1e19", "Infinity") it overflows and fails the query. Past 2^53 every
    # double is whole; NaN and the infinities are not (null: neither whole nor not).
    whole = F.when(F.abs(number) < 2.0**53, number == F.floor(number)).when(F.abs(number) < float("inf"), True)
    return {
        "present": F.count(F.when(present, 1)), "number": F.count(F.when(present & numberish, 1)),
        "comma": F.count(F.when(present & ~numberish & text.rlike(DECIMAL_COMMA_NUMBER), 1)),
        "euro": F.count(F.when(present & numberish & text.contains("€") & ~whole & text.rlike(EURO_THOUSANDS), 1)),
        "unit": F.count(F.when(present & ~numberish & text.rlike(UNIT_NUMBER), 1)),
        "integer": F.count(F.when(present & whole, 1)),
        "time": F.count(F.when(present & v["time"], 1)),
        "distinct": F.approx_count_distinct(F.when(present, text), rsd=DISTINCT_RSD),
        "datelike": F.count(F.when(present & v["datelike"], 1)),
        "max": F.max(F.when(present, number)), "min": F.min(F.when(present, number)),
    }  # fmt: skip


def _missing_words(train, texts: dict) -> dict[str, list[str]]:
    """The words of each column of `texts` ({column: (text, present, numberish) Spark columns}) that are not numbers,
    where there are at most MAX_MISSING_WORDS of them: counted in one aggregation, collected in a second for the
    columns that have so few (a set of every word would not be bounded)."""
    from pyspark.sql import functions as F

    if not texts:
        return {}
    words = {c: F.when(present & ~numberish, text) for c, (text, present, numberish) in texts.items()}
    row = train.agg(*(F.approx_count_distinct(w).alias(f"n{i}") for i, w in enumerate(words.values()))).first()
    few = [c for i, c in enumerate(words) if row[f"n{i}"] <= MAX_MISSING_WORDS]
    if not few:
        return {}
    row = train.agg(*(F.slice(F.collect_set(words[c]), 1, MAX_MISSING_WORDS + 1).alias(f"w{i}") for i, c in enumerate(few))).first()
    return {c: sorted(row[f"w{i}"]) for i, c in enumerate(few) if 0 < len(row[f"w{i}"]) <= MAX_MISSING_WORDS}


def _all_match(train, texts: dict, pattern: str) -> set[str]:
    """The columns of `texts` ({column: (text, present) Spark columns}) whose every present train value matches
    `pattern`; one aggregation."""
    from pyspark.sql import functions as F

    if not texts:
        return set()
    row = train.agg(*(F.count(F.when(present & ~text.rlike(pattern), 1)).alias(f"x{i}")
                      for i, (text, present) in enumerate(texts.values()))).first()  # fmt: skip
    return {c for i, c in enumerate(texts) if row[f"x{i}"] == 0}


def _clock_hours(text):
    """A Spark column of the hours a time of day or duration is (13:45 is 13.75, 1:45 PM 13.75, 1:30:00 1.5; as
    `_parse_numbers` reads it), null where the text is none."""
    from pyspark.sql import functions as F

    from dltool.transforms.table import CLOCK

    clock = CLOCK.replace("?P<", "?<")  # Java names its groups so
    part = lambda group: F.regexp_extract(text, clock, group)  # noqa: E731
    hours, noon = part(1).cast("double"), F.lower(part(4))
    hours = F.when(noon == "", hours).otherwise(hours % 12 + F.when(noon == "p", 12).otherwise(0))
    seconds = F.when(part(3) == "", 0).otherwise(part(3).cast("double"))
    return F.when(text.rlike(clock), hours + part(2).cast("double") / 60 + seconds / 3600)


def _units(train, texts: dict) -> dict[str, str]:
    """The unit of each column of `texts` ({column: (text, present) Spark columns}) whose values with a unit (UNIT_NUMBER)
    all name the same one, in any case and with or without a plural s (kg, KG, kgs: kg; years alone: years), or units
    of one kind (12 MB and 1.2 GB; 201k and 19M: UNIT_KINDS), then the most common of them; one aggregation."""
    from pyspark.sql import functions as F

    from dltool.transforms.table import MIXED_AMBIGUOUS, PLURAL, UNIT_KINDS, UNIT_NUMBER, unit_kind

    if not texts:
        return {}
    known = sorted({u for kind in UNIT_KINDS for u in kind})
    aggregates = []
    for i, (text, present) in enumerate(texts.values()):
        written = F.when(present & text.rlike(UNIT_NUMBER), F.lower(F.regexp_extract(text, UNIT_NUMBER, 2)))
        singular = F.regexp_replace(written, PLURAL, "$1")
        aggregates += [F.min(singular).alias(f"first{i}"), F.max(singular).alias(f"last{i}"), F.min(written).alias(f"unit{i}"),
                       F.count_if(~singular.isin(known)).alias(f"unknown{i}"),
                       F.collect_set(F.when(singular.isin(known), singular)).alias(f"kinds{i}"),
                       F.mode(F.when(singular.isin(known) & ~singular.isin(list(MIXED_AMBIGUOUS)), singular)).alias(f"most{i}")]  # fmt: skip
    row = train.agg(*aggregates).first()
    found = {}
    for i, c in enumerate(texts):
        if row[f"first{i}"] and row[f"first{i}"] == row[f"last{i}"]:
            found[c] = row[f"unit{i}"]
        elif row[f"first{i}"] and not row[f"unknown{i}"] and unit_kind(row[f"kinds{i}"]) and row[f"most{i}"]:
            found[c] = row[f"most{i}"]  # units of one kind: each value read in the most common
    return found


def _date_formats(train, texts: dict) -> dict[str, str]:
    """The strptime format of each column of `texts` ({column: (text, present) Spark columns}), all of whose
    train values look like dates, where they share one shape that says the format (`date_format`); one aggregation."""
    from pyspark.sql import functions as F

    if not texts:
        return {}
    aggregates = []
    for i, (text, present) in enumerate(texts.values()):
        shape, first, second = _date_shape(text)
        aggregates += [F.min(F.when(present, shape)).alias(f"shape{i}"), F.max(F.when(present, shape)).alias(f"last{i}"),
                       F.max(F.when(present, first)).alias(f"first{i}"), F.max(F.when(present, second)).alias(f"second{i}")]
    row = train.agg(*aggregates).first()
    found = {}
    for i, c in enumerate(texts):
        if row[f"shape{i}"] == row[f"last{i}"] and (form := date_format(row[f"shape{i}"], row[f"first{i}"], row[f"second{i}"])):
            found[c] = form
    return found


def _date_shape(text):
    """Spark columns of each value's date shape (`/4`: numbers split by slashes, a 4-digit year; `ymd`; `bd2`:
    the month's name first, a 2-digit year; `db4`...; null: none) and, for the numeric shapes, its first two
    numbers (day and month in some order)."""
    from pyspark.sql import functions as F

    separator = F.regexp_extract(text, NUMERIC_DATE, 2)
    year_digits = lambda pattern, group: F.length(F.regexp_extract(text, pattern, group)).cast("string")  # noqa: E731
    shape = F.when(separator != "", F.concat(separator, year_digits(NUMERIC_DATE, 4))) \
        .when(text.rlike(YEAR_FIRST_DATE), F.lit("ymd")) \
        .when(text.rlike(MONTH_FIRST_DATE), F.concat(F.lit("bd"), year_digits(MONTH_FIRST_DATE, 1))) \
        .when(text.rlike(DAY_FIRST_DATE), F.concat(F.lit("db"), year_digits(DAY_FIRST_DATE, 1))) \
        .when(text.rlike(MONTH_YEAR_DATE), F.lit("by4"))  # fmt: skip
    number = lambda group: F.when(separator != "", F.regexp_extract(text, NUMERIC_DATE, group).cast("int"))  # noqa: E731
    return shape, number(1), number(3)


def date_format(shape: str, first: int | None, second: int | None) -> str | None:
    """The strptime format of a column whose train values all have one date shape (`_date_shape`), or None.

    Day and month in numbers: the one above 12 is the day; where neither is, slashes put the month first (12/31
    is American) and dots or dashes the day (31.12, 31-12). A 2-digit year only with slashes (1.2.10 is more
    likely a version than a date)."""
    if shape in ("/4", "/2", ".4", "-4"):
        if first is None or second is None or max(first, second) > 31 or min(first, second) > 12:
            return None
        separator, year = shape[0], "%Y" if shape[1] == "4" else "%y"
        day_first = first > 12 or (second <= 12 and separator != "/")
        return separator.join(("%d", "%m", year) if day_first else ("%m", "%d", year))
    return {"ymd": "%Y/%m/%d", "bd4": "%b %d %Y", "bd2": "%b %d %y", "db4": "%d %b %Y", "db2": "%d %b %y",
            "by4": "%b %Y"}.get(shape)  # fmt: skip


def with_row_numbers(spark, raw, relpaths: dict[str, str], header=None):
    """Add `_row` (1-based data row within its file) and `_relpath`; also return the row count.

    monotonically_increasing_id is (partition << 33) + index within the partition, and
    Spark keeps each file's splits in order, so offsets per (file, partition) give row
    numbers with one small aggregation instead of a sort of the whole table.

    `header`: a condition true for a file's header record, read as a row (a title above it); in each file
    the rows up to the first one among its first HEADER_WITHIN records are left out, and the rest numbered
    from the one after it.
    """
    from pyspark.sql import functions as F

    # Counting reads no field: a CSV parser that skips them all finds the same records (a line each, or each
    # record of a multiLine file) in half the time, or less. (A header's condition reads the fields it names.)
    found = [] if header is None else [F.min(F.when(header, F.col("_mid"))).alias("_header")]
    with scoped_conf(spark, {"spark.sql.csv.parser.columnPruning.enabled": "true"}):
        pieces = (
            raw.groupBy("_file", (F.col("_mid") / (1 << 33)).cast("long").alias("_pid"))
            .agg(F.min("_mid").alias("_first"), F.count("*").alias("_n"), *found).collect()
        )  # fmt: skip
    offsets, seen, headers = {}, {}, {}
    for piece in sorted(pieces, key=lambda p: (p["_file"], p["_pid"], p["_first"])):
        start = seen.get(piece["_file"], 0)
        offsets[(piece["_file"], piece["_pid"])] = start - piece["_first"]
        seen[piece["_file"]] = start + piece["_n"]
        at = None if header is None or piece["_header"] is None else piece["_header"] - piece["_first"] + start + 1
        if at is not None and at <= HEADER_WITHIN and piece["_file"] not in headers:
            headers[piece["_file"]] = at  # the header's record number in its file
    # Literals rather than a join: no broadcast job. A partition that reads one file piece (a large file's)
    # finds its offset by index; where a partition reads several files, by file in a map.
    literal = lambda mapping: F.create_map(*[F.lit(v) for pair in mapping.items() for v in pair])  # noqa: E731
    pid = (F.col("_mid") / (1 << 33)).cast("long")
    pieces_in = Counter(p for _, p in offsets)  # partition -> the file pieces it reads
    alone = {p: offset for (_, p), offset in offsets.items() if pieces_in[p] == 1}
    shared = {f"{f}#{p}": offset for (f, p), offset in offsets.items() if pieces_in[p] > 1}
    by_index = F.lit(None).cast("long")
    if alone:
        by_index = F.try_element_at(F.array(*[F.lit(alone.get(p)).cast("long") for p in range(max(alone) + 1)]),
                                    (pid + 1).cast("int"))  # fmt: skip
    offset = F.coalesce(by_index, F.element_at(literal(shared), F.concat_ws("#", "_file", pid.cast("string")))) \
        if shared else by_index  # fmt: skip
    raw = raw.withColumn("_row", F.col("_mid") + offset + 1)
    if headers:
        raw = raw.withColumn("_row", F.col("_row") - F.coalesce(F.element_at(literal(headers), F.col("_file")), F.lit(0)))
        raw = raw.where(F.col("_row") > 0)
    raw = raw.withColumn("_relpath", F.element_at(literal({f: _relpath(f, relpaths) for f in seen}), F.col("_file")))
    return raw, sum(seen.values()) - sum(headers.values())


HEADER_WITHIN = 20  # the records of a file searched for its header below a title (csv.SNIFF_LINES)


@contextmanager
def scoped_conf(spark, conf: dict[str, str]):
    """Spark SQL settings for the length of a block only: the session may be the user's."""
    before = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def _relpath(file_uri: str, relpaths: dict[str, str]) -> str:
    """The input-relative path of a file Spark names by URI (file:/x and file:///x are one file)."""
    from urllib.parse import unquote

    uri = unquote(file_uri)
    if uri.startswith("file:"):
        uri = "file://" + "/" + uri[len("file:"):].lstrip("/")
    return relpaths.get(uri, uri.rsplit("/", 1)[-1])


def _vector_sizes(raw, columns: list[str]) -> dict[str, int]:
    """Each vector column's size: the most common size among its rows (the others are quarantined)."""
    from pyspark.sql import functions as F

    from dltool.splits import column

    sizes = {}
    for c in columns:
        row = raw.where(column(c).isNotNull()).groupBy(F.size(column(c)).alias("n")).count().orderBy(F.desc("count")).first()
        if row is None:
            raise ConfigError(f"ingest.vectors: column {c} has no values")
        sizes[c] = int(row["n"])
    return sizes
