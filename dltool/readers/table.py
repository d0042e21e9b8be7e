"""The `table` reader: rows from any Spark source, columns validated by role, Spark ML preprocessing fitted on train.

`ColumnTableReader` holds what every table reader does with a DataFrame of rows: row
numbers, per-field validation and quarantine, labels, the hash split, the fitted
Imputer/StringIndexer/OneHotEncoder/VectorAssembler pipeline and its stats. A table reader
only says how to read its raw rows (`read_raw`): the `csv` reader parses text, the
`table` reader reads any Spark source (Parquet, ORC, JSON lines, CSV, Delta, a catalog table).
"""

from __future__ import annotations

import time
from collections import Counter
from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from dltool.config.base import Section
from dltool.errors import ConfigError
from dltool.readers.base import TableReader, register
from dltool.storage.manifest import Stats

CORRUPT = "_corrupt_record"  # the column holding a row the source could not parse (CSV only)


class ColumnRoles(Section):
    """What each column of a table is for; shared by the `table` and `csv` readers."""

    numeric: list[str] = Field(default_factory=list, description="Numeric feature columns (booleans become 0/1).")
    categorical: list[str] = Field(default_factory=list, description="Categorical feature columns.")
    categorical_encoding: Literal["onehot", "index"] = Field(
        "onehot", description="One-hot slots per category (plus one for missing/unseen), or the category index."
    )
    impute: Literal["mean", "median", "mode"] = Field("mean", description="Fills missing numeric values.")
    non_finite: Literal["missing", "quarantine"] = Field(
        "missing", description="NaN, inf and -inf in numeric columns: treat as missing (imputed) or quarantine the row."
    )
    scale: bool = Field(False, description="Standardise features at ingest (else the model does it).")
    label: str | None = Field(None, description="Label column.")
    task: Literal["classification", "regression"] = Field(
        "classification", description="classification: label is a class name; regression: a number."
    )
    key_column: str | None = Field(None, description="Unique id column; default: file:row.")
    passthrough: list[str] = Field(default_factory=list, description="Columns copied to the shards as strings.")

    def vector_columns(self) -> list[str]:
        return []

    @model_validator(mode="after")
    def _roles_consistent(self):
        if not self.numeric and not self.categorical and not self.vector_columns():
            raise ValueError("name at least one feature column in 'numeric', 'categorical' or 'vectors'")
        roles = (self.numeric + self.categorical + self.vector_columns() + ([self.label] if self.label else [])
                 + self.passthrough)  # fmt: skip
        dupes = sorted({c for c in roles if roles.count(c) > 1})
        if dupes:
            raise ValueError(f"columns used twice: {', '.join(dupes)}")
        return self


FORMAT_PATTERNS = {"parquet": ["*.parquet"], "orc": ["*.orc"], "json": ["*.json", "*.jsonl", "*.ndjson"],
                   "csv": ["*.csv", "*.tsv", "*.txt", "*.csv.gz", "*.csv.bz2"], "delta": [], "table": []}  # fmt: skip


class TableReaderConfig(ColumnRoles):
    """Rows from any Spark source (Parquet, ORC, JSON lines, CSV, Delta, a catalog table); preprocessing fitted on train."""

    reader: Literal["table"] = Field(description="Selects this reader.")
    format: Literal["parquet", "orc", "json", "csv", "delta", "table"] = Field(
        description="Spark's data source; `table`: `input` names a catalog table (database.table)."
    )
    input: str = Field(description="A file or directory of the format (local path or URI), or a table name.")
    options: dict[str, str] = Field(default_factory=dict, description="Options passed to Spark's reader.")
    vectors: list[str] = Field(
        default_factory=list,
        description="Array or ML vector columns (precomputed embeddings): their values become feature slots.",
    )
    na_values: list[str] = Field(default_factory=list, description="Text values read as missing (nulls always are).")

    def vector_columns(self) -> list[str]:
        return list(self.vectors)


@dataclass
class TableBuild:
    """What a table reader hands the ingest job: good rows, quarantined rows, and what was fitted."""

    rows: object  # DataFrame: features array<float>, [label], key, split, passthrough...
    errors: object  # DataFrame with the error table's columns
    width: int
    feature_names: list[str]
    label_kind: str | None
    vocabulary: list[str] | None
    stats: Stats | None
    inputs: int
    preprocess: object  # the fitted PipelineModel (features only)
    split_rows: dict[str, int]  # good rows per split
    cached: list  # DataFrames the reader persisted; the job unpersists them when written


class ColumnTableReader(TableReader):
    """Validates and featurises a table's columns by their roles; a subclass reads the raw rows."""

    default_model = "mlp"

    def build(self, spark, paths: list[str], relpaths: dict[str, str], split_settings, fitted=None) -> TableBuild:
        """Parse, validate and featurise the files. `fitted` is a saved PipelineModel to apply
        instead of fitting one on the train split (predict on raw rows uses the training data's)."""
        from pyspark import StorageLevel
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        from dltool.spark.splits import split_column

        cfg = self.config
        raw = self.read_raw(spark, paths)
        raw = raw.withColumn("_file", F.input_file_name()).withColumn("_mid", F.monotonically_increasing_id())
        raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
        raw, inputs = _with_row_numbers(spark, raw, relpaths)
        self._sizes = _vector_sizes(raw, cfg.vector_columns())
        if cfg.key_column:
            raw = raw.withColumn("key", F.col(cfg.key_column))
        else:
            raw = raw.withColumn("key", F.concat_ws(":", "_relpath", F.col("_row").cast("string")))
        error_class, message = self._validation(raw)
        raw = raw.withColumn("_error_class", error_class).withColumn("_message", message)
        errors = raw.where(F.col("_error_class").isNotNull()).select(
            F.coalesce("key", F.concat_ws(":", "_relpath", F.col("_row").cast("string"))).alias("key"),
            F.concat_ws(":", "_file", F.col("_row").cast("string")).alias("path"), F.lit(self.name).alias("reader"),
            F.lit("parse").alias("stage"), F.col("_error_class").alias("error_class"), F.col("_message").alias("message"),
        )  # fmt: skip
        good = raw.where(F.col("_error_class").isNull())
        good = good.select(
            *[self._number(F.col(c)).alias(c) for c in cfg.numeric],
            *[array_to_vector(c).alias(c) for c in cfg.vector_columns()],
            *[F.when(self._missing(F.col(c)), None).otherwise(F.trim(c)).alias(c) for c in cfg.categorical],
            *[F.col(c).alias(c) for c in cfg.passthrough],
            *([self._label(F.col(cfg.label)).alias("_label")] if cfg.label else []),
            "key", split_column(F.col("key"), split_settings).alias("split"),
        ).persist(StorageLevel.MEMORY_AND_DISK)  # fmt: skip
        classify = cfg.label and cfg.task == "classification"
        groups = good.groupBy("split", *(["_label"] if classify else [])).count().collect()
        label_kind, vocabulary = None, None
        if classify:
            label_kind = "class"
            vocabulary = sorted({r["_label"] for r in groups})
            good = good.withColumn("label", F.array_position(F.array(*map(F.lit, vocabulary)), F.col("_label")) - 1)
        elif cfg.label:
            label_kind = "regression"
            good = good.withColumn("label", F.col("_label").cast("float"))
        split_rows = Counter()
        for r in groups:
            split_rows[r["split"]] += r["count"]
        train = good.where(F.col("split") == "train")
        if fitted is None and not split_rows["train"]:
            raise ConfigError(f"{paths[0]}: no valid rows fall in the train split; nothing to fit preprocessing on")
        model = fitted if fitted is not None else self._pipeline().fit(train)
        feature_names = self.feature_names(model)
        rows = model.transform(good)
        stats = _feature_stats(rows.where(F.col("split") == "train")) if split_rows["train"] else None
        keep = ["label"] if label_kind else []
        rows = rows.select(
            _to_array("_vec").alias("features"), *[F.col(c).cast("int" if label_kind == "class" else "float") for c in keep],
            F.col("key").cast("string"), *[F.col(c).cast("string") for c in cfg.passthrough], "split",
        )  # fmt: skip
        return TableBuild(rows, errors, len(feature_names), feature_names, label_kind, vocabulary, stats, inputs, model,
                          split_rows=dict(split_rows), cached=[raw, good])  # fmt: skip

    def _missing(self, col):
        from pyspark.sql import functions as F

        return col.isNull() | F.trim(col).isin(self.config.na_values)

    def _number(self, col):
        """The field as a finite double, or null: missing, and NaN/inf (which Spark's cast accepts)."""
        from pyspark.sql import functions as F

        value = F.trim(col).try_cast("double")
        return F.when(self._missing(col) | self._non_finite(col), None).otherwise(value)

    @staticmethod
    def _non_finite(col):
        from pyspark.sql import functions as F

        value = F.trim(col).try_cast("double")
        return F.coalesce(F.isnan(value) | F.abs(value).eqNullSafe(float("inf")), F.lit(False))

    def _label(self, col):
        from pyspark.sql import functions as F

        return self._number(col) if self.config.task == "regression" else F.trim(col)

    def _validation(self, raw):
        """Two columns, the error class and message of the row's first problem (null when it is good)."""
        from pyspark.sql import functions as F

        cfg = self.config
        checks = [(F.col(CORRUPT).isNotNull(), "MalformedRow",
                   F.concat(F.lit("malformed row (wrong number of fields or bad quoting): "),
                            F.substring(CORRUPT, 1, 120)))]  # fmt: skip
        for c in cfg.vector_columns():
            size = self._sizes[c]
            checks.append((F.col(c).isNull(), "MissingValue", F.lit(f"field {c}: missing vector")))
            checks.append((F.size(c) != size, "BadValue",
                           F.concat(F.lit(f"field {c}: "), F.size(c).cast("string"), F.lit(f" values, expected {size}"))))
            finite = F.forall(c, lambda v: v.isNotNull() & ~F.isnan(v) & (F.abs(v) != float("inf")))
            checks.append((~finite, "NonFinite", F.lit(f"field {c}: null, NaN or infinite values")))
        if cfg.key_column:
            checks.append((self._missing(F.col(cfg.key_column)), "MissingKey", F.lit(f"field {cfg.key_column}: missing key")))
        if cfg.label:
            checks.append((self._missing(F.col(cfg.label)), "MissingLabel", F.lit(f"field {cfg.label}: missing label")))
        target = [cfg.label] if cfg.label and cfg.task == "regression" else []
        for c in cfg.numeric + target:
            bad = ~self._missing(F.col(c)) & F.trim(F.col(c)).try_cast("double").isNull()
            checks.append((bad, "BadValue", F.concat(F.lit(f"field {c}: '"), F.substring(F.col(c), 1, 60), F.lit("' is not a number"))))
        # A regression target is never imputed; a feature only when the config says so.
        for c in (cfg.numeric if cfg.non_finite == "quarantine" else []) + target:
            checks.append((self._non_finite(F.col(c)), "NonFinite",
                           F.concat(F.lit(f"field {c}: '"), F.trim(F.col(c)), F.lit("' is not a finite number"))))
        for c in cfg.categorical + ([cfg.label] if cfg.label else []) + cfg.passthrough:
            checks.append((F.col(c).contains("\ufffd"), "EncodingError",
                           F.lit(f"field {c}: bytes that are not valid {self.encoding()}")))  # fmt: skip
        error_class, message = F.lit(None).cast("string"), F.lit(None).cast("string")
        for condition, name, text in reversed(checks):  # the first failing check wins
            error_class = F.when(condition, F.lit(name)).otherwise(error_class)
            message = F.when(condition, text).otherwise(message)
        return error_class, message

    def _pipeline(self):
        """Imputer, StringIndexer/OneHotEncoder, VectorAssembler (and StandardScaler) for the features."""
        from pyspark.ml import Pipeline
        from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

        cfg = self.config
        stages, inputs, names = [], [], []
        if cfg.numeric:
            imputed = [f"_imp_{c}" for c in cfg.numeric]
            stages.append(Imputer(inputCols=cfg.numeric, outputCols=imputed, strategy=cfg.impute))
            inputs += imputed
            names += cfg.numeric
        if cfg.categorical:
            indexed = [f"_idx_{c}" for c in cfg.categorical]
            stages.append(StringIndexer(inputCols=cfg.categorical, outputCols=indexed, handleInvalid="keep",
                                        stringOrderType="alphabetAsc"))  # fmt: skip
            if cfg.categorical_encoding == "onehot":
                encoded = [f"_ohe_{c}" for c in cfg.categorical]
                stages.append(OneHotEncoder(inputCols=indexed, outputCols=encoded, dropLast=False, handleInvalid="keep"))
                inputs += encoded
            else:
                inputs += indexed
        inputs += cfg.vector_columns()
        target = "_vec_raw" if cfg.scale else "_vec"
        stages.append(VectorAssembler(inputCols=inputs, outputCol=target, handleInvalid="error"))
        if cfg.scale:
            stages.append(StandardScaler(inputCol=target, outputCol="_vec", withMean=True, withStd=True))
        return Pipeline(stages=stages)

    def feature_names(self, model) -> list[str]:
        """Names of the fitted vector's slots: numeric columns, then category=value slots."""
        from pyspark.ml.feature import OneHotEncoderModel, StringIndexerModel

        cfg = self.config
        names = list(cfg.numeric)
        indexer = next((s for s in model.stages if isinstance(s, StringIndexerModel)), None)
        encoder = next((s for s in model.stages if isinstance(s, OneHotEncoderModel)), None)
        if indexer is None:
            pass
        elif encoder is None:
            names += list(cfg.categorical)
        else:
            for column, vocab, size in zip(cfg.categorical, indexer.labelsArray, encoder.categorySizes):
                # StringIndexer's "keep" bucket and OneHotEncoder's own invalid slot follow the vocabulary.
                extra = size + 1 - len(vocab)
                names += [f"{column}={v}" for v in vocab] + [f"{column}=<other>"] + [f"{column}=<unused>"] * (extra - 1)
        return names + [f"{c}[{i}]" for c in cfg.vector_columns() for i in range(self._sizes[c])]

    def encoding(self) -> str:
        return "utf-8"

    @abstractmethod
    def read_raw(self, spark, paths: list[str]):
        """The rows as a DataFrame: the used scalar columns as strings, vectors as array<double>, and CORRUPT."""


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

    def read_raw(self, spark, paths: list[str]):
        from pyspark.ml.functions import vector_to_array
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        cfg = self.config
        from pyspark.errors import AnalysisException

        source = spark.read.format(cfg.format).options(**cfg.options)
        try:
            frame = spark.table(cfg.input) if cfg.format == "table" else source.load(paths)
        except AnalysisException as e:  # no such table, unknown format, unreadable schema
            raise ConfigError(f"ingest.input: Spark cannot read {cfg.input!r} as {cfg.format}: "
                              f"{str(e).strip().splitlines()[0]}") from e  # fmt: skip
        types = {f.name: f.dataType for f in frame.schema.fields}
        used = cfg.numeric + cfg.categorical + cfg.passthrough + [c for c in (cfg.label, cfg.key_column) if c]
        missing = [c for c in used + cfg.vectors if c not in types]
        if missing:
            raise ConfigError(f"{cfg.input}: columns {missing} named in ingest are not in the data {sorted(types)}")
        columns = []
        for c in dict.fromkeys(used):
            value = F.col(c).cast("int") if isinstance(types[c], T.BooleanType) else F.col(c)
            columns.append(value.cast("string").alias(c))
        for c in cfg.vectors:
            kind = types[c]
            if isinstance(kind, VectorUDT):
                columns.append(vector_to_array(c, dtype="float64").alias(c))
            elif isinstance(kind, T.ArrayType) and isinstance(kind.elementType, T.NumericType):
                columns.append(F.col(c).cast("array<double>").alias(c))
            else:
                raise ConfigError(f"ingest.vectors: column {c} is {kind.simpleString()}, not an array of numbers or a vector")
        return frame.select(*columns, F.lit(None).cast("string").alias(CORRUPT))


def _to_array(column: str):
    from pyspark.ml.functions import vector_to_array

    return vector_to_array(column, dtype="float32")


def _feature_stats(train) -> Stats:
    from pyspark.ml.stat import Summarizer

    row = train.select(Summarizer.metrics("mean", "std", "count").summary(train["_vec"]).alias("s")).first()["s"]
    return Stats(axis=0, count=int(row["count"]), mean=tuple(round(float(v), 6) for v in row["mean"]),
                 std=tuple(round(float(v), 6) for v in row["std"]))  # fmt: skip


def _with_row_numbers(spark, raw, relpaths: dict[str, str]):
    """Add `_row` (1-based data row within its file) and `_relpath`; also return the row count.

    monotonically_increasing_id is (partition << 33) + index within the partition, and
    Spark keeps each file's splits in order, so offsets per (file, partition) give row
    numbers with one small aggregation instead of a sort of the whole table.
    """
    from pyspark.sql import functions as F

    pieces = (
        raw.groupBy("_file", (F.col("_mid") / (1 << 33)).cast("long").alias("_pid"))
        .agg(F.min("_mid").alias("_first"), F.count("*").alias("_n")).collect()
    )  # fmt: skip
    offsets, seen = [], {}
    for piece in sorted(pieces, key=lambda p: (p["_file"], p["_pid"], p["_first"])):
        start = seen.get(piece["_file"], 0)
        offsets.append((piece["_file"], piece["_pid"], piece["_first"], start, _relpath(piece["_file"], relpaths)))
        seen[piece["_file"]] = start + piece["_n"]
    table = spark.createDataFrame(offsets, "_file string, _pid long, _first long, _start long, _relpath string")
    raw = raw.withColumn("_pid", (F.col("_mid") / (1 << 33)).cast("long"))
    joined = raw.join(F.broadcast(table), ["_file", "_pid"])
    return joined.withColumn("_row", F.col("_mid") - F.col("_first") + F.col("_start") + 1), sum(seen.values())


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

    sizes = {}
    for c in columns:
        row = raw.where(F.col(c).isNotNull()).groupBy(F.size(c).alias("n")).count().orderBy(F.desc("count")).first()
        if row is None:
            raise ConfigError(f"ingest.vectors: column {c} has no values")
        sizes[c] = int(row["n"])
    return sizes
