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
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from dltool.config.base import Section
from dltool.errors import ConfigError, map_errors
from dltool.readers.base import TableReader, register

if TYPE_CHECKING:
    from dltool.transforms.table import RowRules


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


class ColumnTableReader(TableReader):
    """Numbers, keys and splits a table's rows; its fields are checked and typed in the tasks by `rules()`."""

    default_model = "mlp"
    spark_conf: dict[str, str] = {}  # Spark SQL settings the reader's queries need (set for the ingest only)
    corrupt_column: str | None = None  # the column where the source puts a row it could not split into fields

    def rows(self, spark, paths: list[str], relpaths: dict[str, str], split_settings):
        """The raw rows (used columns as text, vectors as arrays, the corrupt column) with `_file`, `_row` (1-based
        row within its file), `key` (key_column, else relpath:row) and `split`; and the number of rows.

        Lazy apart from counting rows per file piece: each later pass reads the source again,
        which costs less than caching parsed text (docs/benchmarks.md, "Tables").
        """
        from pyspark.sql import functions as F

        from dltool.spark.splits import with_split

        cfg = self.config
        extra = [c for c in (split_settings.column if split_settings.by == "column" else None, split_settings.group) if c]
        raw = self.read_raw(spark, paths, extra)
        raw = raw.withColumn("_file", F.input_file_name()).withColumn("_mid", F.monotonically_increasing_id())
        raw, inputs = _with_row_numbers(spark, raw, relpaths)
        self._sizes = _vector_sizes(raw, cfg.vector_columns())
        self._split_column = {"column": split_settings.column, "path": "_relpath"}.get(split_settings.by)
        row_key = F.concat_ws(":", "_relpath", F.col("_row").cast("string"))
        key = F.coalesce(F.col(cfg.key_column), row_key) if cfg.key_column else row_key
        raw = raw.withColumn("key", key.cast("string"))
        label = F.col(cfg.label) if cfg.label and cfg.task == "classification" else None
        raw = with_split(raw, F.col("key"), label, split_settings)
        unused = ["_mid", "_pid", "_first", "_start"] + ([] if split_settings.by == "path" else ["_relpath"])
        return raw.drop(*unused), inputs

    def rules(self) -> RowRules:
        """How the tasks check and type each field (call after `rows`, which finds the vector sizes)."""
        from dltool.transforms.table import RowRules

        cfg = self.config
        return RowRules(tuple(cfg.numeric), tuple(cfg.categorical), dict(self._sizes), tuple(cfg.passthrough),
                        cfg.label, cfg.task == "regression", cfg.key_column, tuple(cfg.na_values), cfg.non_finite,
                        self.encoding(), self.corrupt_column, self._split_column)  # fmt: skip

    def encoding(self) -> str:
        return "utf-8"

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

    def read_raw(self, spark, paths: list[str], extra: list[str]):
        from pyspark.ml.functions import vector_to_array
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        cfg = self.config
        source = spark.read.format(cfg.format).options(**cfg.options)
        # No such table, unknown format, unreadable schema: Spark's AnalysisException, a config error.
        with map_errors(f"ingest.input: reading {cfg.input!r} as {cfg.format}"):
            frame = spark.table(cfg.input) if cfg.format == "table" else source.load(paths)
        types = {f.name: f.dataType for f in frame.schema.fields}
        used = cfg.numeric + cfg.categorical + cfg.passthrough + [c for c in (cfg.label, cfg.key_column) if c] + extra
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
        return frame.select(*columns)


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
