"""Ingest a table reader's rows: Spark parses and numbers them, pyarrow and numpy do the rest in the tasks.

Three passes: Spark counts the rows of each file piece (for row numbers); then each task checks
and types its rows (`RowRules`), writes the quarantined ones to `_errors/` and the typed ones
to a temporary `_typed/` file, and adds up the fit (`FitStats`); last, one task per typed file
computes the features (`Preprocess`) and writes the shards. Every source field is parsed once
(docs/benchmarks.md, "Tables", has the measurements behind this design).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

from dltool.errors import ConfigError
from dltool.readers.table import scoped_conf
from dltool.spark.paths import hadoop_uri, require_s3a, spark_path
from dltool.shards.codec import TensorSpec
from dltool.shards.sink import ERROR_FIELDS, FIRST_ERRORS, Moments, SplitShards, TaskResult, WrittenShards, on_write_complete, write_errors
from dltool.shards.writer import shard_schema
from dltool.storage.fs import open_location
from dltool.storage.manifest import SPLITS, Label


def ingest_table(spark, config, reader, source, files, staging, parallelism, progress, preprocess=None, prefix="part",
                 known: dict[str, str] | None = None) -> WrittenShards:  # fmt: skip
    """Check, type, fit and write the table; `preprocess` (a saved `_preprocess.json` URI) is applied instead of fitting.

    A dataset's later version (ingest/grow.py) writes into the dataset itself: its shard and error files
    are named `<prefix>-*`, the dataset's `_preprocess.json` is applied and kept, and `known` gives the
    splits of the rows it already held (reader.rows)."""
    import pickle

    from dltool.spark.progress import spark_progress
    from dltool.splits import column
    from dltool.transforms.table import FitStats, Preprocess

    require_s3a(spark, source, staging)
    cfg = config.ingest
    paths = [spark_path(source.uri, f.path) for f in files]
    relpaths = dict(zip(paths, (f.relpath for f in files), strict=True))
    with spark_progress(spark, f"ingest {config.name}: {len(files)} table file(s)", progress), \
            scoped_conf(spark, reader.spark_conf):  # fmt: skip
        fitted = None if preprocess is None else Preprocess.from_json(json.loads(open_location(preprocess).read_bytes()))
        reader = reader.with_task(spark, paths, fitted)
        classify = bool(reader.config.label) and reader.config.task == "classification"
        rows, inputs = reader.rows(spark, paths, relpaths, config.dataset.split, known)
        reader = reader.resolved(rows, fitted)
        cfg = reader.config
        rules = reader.rules()
        # Python UDFs resolve their input columns by name, so `a.b` would read as a field of `a`: the
        # task gets positional names and puts the source's back on each batch. Columns no rule reads stay in
        # the JVM (a CSV's are still parsed there, each row's fields counted).
        names = rules.inputs()
        plain = rows.select(*[column(c).alias(f"_c{i}") for i, c in enumerate(names)])
        type_rows = _type_task(staging.uri, rules, reader.name, classify, names, prefix)
        typed = plain.mapInArrow(type_rows, TYPE_OUTPUT).collect()
        stats, quarantined, first_errors = FitStats(rules.numbers, rules.categorical, rules.vectors, rules.words), 0, []
        for row in typed:
            stats.merge(pickle.loads(row["stats"]))
            quarantined += row["errors"]
            first_errors += json.loads(row["first_errors"])[: max(0, FIRST_ERRORS - len(first_errors))]
        if fitted is None and not stats.rows["train"] and first_errors:  # say why, with the first row's problem
            first = first_errors[0]
            raise ConfigError(f"{cfg.input}: no valid rows fall in the train split; nothing to fit preprocessing on "
                              f"({quarantined} rows quarantined, the first {first['key']}: {first['message']})")
        if fitted is None:
            pre = stats.preprocess(_fills(spark, cfg, stats, staging), cfg.categorical_encoding, classify, cfg.scale,
                                   rules.dates, cfg.max_words, rules.date_formats, rules.missing_values,
                                   rules.decimal_comma, rules.units)  # fmt: skip
        else:
            pre = fitted
        if prefix == "part":  # a later version applies the dataset's own, which stays as it is
            staging.child(PREPROCESS).write_bytes(json.dumps(pre.to_json(), indent=1).encode())
        label_kind = None if not cfg.label else "class" if classify else "regression"
        parts = sorted(r["typed"] for r in typed if r["typed"])
        duplicates, drop = typed_duplicates(spark, staging, config.dataset.on_duplicates, sum(stats.rows.values())) \
            if parts else (None, set())  # fmt: skip
        task = _shard_task(staging.uri, pre, label_kind, list(cfg.passthrough), config.dataset, drop)
        results = spark.sparkContext.parallelize(parts, max(1, len(parts))).map(task).collect() if parts else []
    staging.child(TYPED).delete()
    columns = {"numeric": list(cfg.numeric), "categorical": list(cfg.categorical), "left_out": dict(reader.left_out)}
    columns.update({role: list(getattr(cfg, role)) for role in ("dates", "words") if getattr(cfg, role)})
    columns.update({"task": f"{cfg.task} ({reader.task_reason})"} if reader.task_reason else {})
    columns.update({key: getattr(cfg, key) for key in ("date_formats", "missing_values", "decimal_comma", "units")
                    if getattr(cfg, key)})
    columns.update({"logarithms": sorted(pre.log)} if pre.log else {})  # long tails (FitStats._long_tails)
    label = Label(label_kind, tuple(pre.labels) if label_kind == "class" else None)
    written = on_write_complete(results, TensorSpec((pre.width,), "float32"), label, inputs, quarantined=quarantined,
                                first_errors=first_errors, stats_axis=0, duplicates=duplicates,
                                feature_names=tuple(pre.names), preprocess=PREPROCESS, columns=columns)  # fmt: skip
    said = reader.skipped()
    if fitted is not None and prefix != "part":  # a later version of the dataset: say what its vocabulary lacks
        said += unseen_categories(stats, pre)
    if fitted is None and label_kind == "class":
        said += text_table(cfg, pre)
    return dataclasses.replace(written, warnings=tuple(said)) if said else written


def text_table(cfg, pre) -> list[str]:
    """A warning where the table's one feature is free text: the text reader serves texts and their class better
    (subwords, TF-IDF; docs/benchmarks.md, "Texts in a table go to the text reader"). A text column that kept no word
    (a product code in every row, each once) is no feature."""
    texts = [c for c in cfg.words if pre.words.get(c)]
    if len(texts) != 1 or cfg.numeric or cfg.categorical or cfg.dates or cfg.vector_columns():
        return []
    return [f"column {texts[0]} is free text and the table's one feature: the text reader reads texts and their "
            f"class better (reader: text, format: {getattr(cfg, 'format', 'csv')}, text_column: {texts[0]}, "
            f"label: {cfg.label}; 3.6 and 5.2 points more on two real sets)"]  # fmt: skip


def unseen_categories(stats, pre) -> list[str]:
    """A warning per categorical column whose new train rows hold values outside the fitted vocabulary
    (encoded as `<other>` like a missing value), with the most frequent ones."""
    from dltool.transforms.table import category_key

    said = []
    for column, counts in stats.categories.items():
        vocab = pre.categorical.get(column, ())
        key = category_key(vocab)
        known = {key(v) for v in vocab}
        new = Counter({value: n for value, n in counts.items() if value is not None and key(value) not in known})
        if new:
            shown = ", ".join(f"{value!r} ({n} rows)" for value, n in new.most_common(3))
            said.append(f"column {column}: {len(new)} value(s) the dataset's categories lack, encoded as <other>: "
                        f"{shown}; `dltool ingest --refit` learns them")  # fmt: skip
    return said


SMALL = 200_000  # train rows whose median or mode the driver finds itself: below this a Spark job costs more
# Typed rows the driver checks for duplicates itself: it sorts their content hashes (16 bytes a row at the peak;
# about 30 where most rows repeat: 60 MB at this bound) where a Spark job costs 1-2 s (docs/benchmarks.md, "Tables").
DRIVER_DUPLICATES = 2_000_000


def typed_duplicates(spark, staging, policy: str, rows: int):
    """Identical typed rows in more than one split (from `_typed/`), and with `drop_from_eval` the
    contents that val and test rows must not share with train. Up to DRIVER_DUPLICATES rows the driver
    reads the columns it needs with pyarrow; above, Spark aggregates them."""
    if rows <= DRIVER_DUPLICATES:
        return _duplicates_here(staging, policy)
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from dltool.splits import find_duplicates
    from dltool.storage.manifest import Duplicates

    typed = spark.read.parquet(hadoop_uri(staging.child(TYPED))).select("_content", "split", "key")
    spread = typed.groupBy("_content").agg(F.min("split").alias("low"), F.max("split").alias("high"),
                                           F.count("*").alias("records"), F.max(F.col("split") == "train").alias("in_train"))
    spread = spread.where("low != high")  # in more than one split
    totals = spread.agg(F.count("*").alias("contents"), F.sum("records").alias("records")).first()
    if not totals["contents"]:
        return None, set()
    shown = spread.orderBy("_content").limit(20).select("_content")
    first = Window.partitionBy("_content", "split").orderBy("key")
    examples = (typed.join(F.broadcast(shown), "_content").withColumn("_n", F.row_number().over(first))
                .where("_n <= 2").collect())  # fmt: skip
    found = find_duplicates((str(r["_content"]), r["split"], r["key"]) for r in examples)
    found = found if found is not None else Duplicates(0, 0)
    duplicates = dataclasses.replace(found, records=int(totals["records"]), contents=int(totals["contents"]))
    drop = set()
    if policy == "drop_from_eval":
        drop = {r["_content"] for r in spread.where("in_train").select("_content").collect()}
    return duplicates, drop


PREPROCESS = "_preprocess.json"
TYPED = "_typed"  # the typed rows (or token lists) between the passes; removed before the commit
TYPE_OUTPUT = "typed string, stats binary, errors long, first_errors string"


def _type_task(staging_uri, rules, reader_name, classify, names: list[str], prefix: str):
    """The mapInArrow function of the second pass: check and type the task's rows; quarantined ones
    to `_errors/<prefix>-NNNNN.parquet`, typed ones to `_typed/<prefix>-NNNNN.parquet`; one summary row."""

    content = [*rules.numbers, *rules.categorical, *rules.words, *rules.vectors, *(["_label"] if rules.label else [])]
    # Dictionary pages for the columns of few values only: for numbers and keys they cost a third of the write.
    coded = ["split", *rules.categorical, *(["_label"] if rules.label and not rules.regression else [])]

    def run(batches):
        import pickle

        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        from dltool.transforms.table import FitStats, content_hashes

        part = TaskContext.get().partitionId()
        staging = open_location(staging_uri)
        target = staging.child(TYPED, f"{prefix}-{part:05d}.parquet")
        stats = FitStats(rules.numbers, rules.categorical, rules.vectors, rules.words)
        errors, writer = [], None
        try:
            for batch in batches:
                typed, bad = rules.check(pa.RecordBatch.from_arrays(batch.columns, names=names))
                if bad.num_rows:
                    errors.append(bad)
                if not typed.num_rows:
                    continue
                stats.add(typed, classify)
                typed = typed.append_column("_content", content_hashes(typed, content))
                if writer is None:
                    target.fs.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
                    writer = pq.ParquetWriter(target.path, typed.schema, filesystem=target.fs, compression="lz4",
                                              use_dictionary=coded, write_statistics=False)  # fmt: skip
                writer.write_table(typed)
        finally:
            if writer is not None:
                writer.close()
        quarantined, first = _write_errors(staging, f"{prefix}-{part:05d}", errors, reader_name)
        yield pa.RecordBatch.from_pydict({"typed": [target.uri if writer is not None else None],
                                          "stats": [pickle.dumps(stats)], "errors": [quarantined],
                                          "first_errors": [json.dumps(first)]})  # fmt: skip

    return run


def _fills(spark, cfg, stats, staging) -> dict[str, float]:
    """Each numeric column's imputed value over train: the mean from the totals, else median or mode by Spark."""
    from pyspark.sql import functions as F

    from dltool.splits import column

    if not stats.rows["train"]:
        raise ConfigError(f"{cfg.input}: no valid rows fall in the train split; nothing to fit preprocessing on")
    means = stats.means()
    empty = [c for c, mean in means.items() if mean is None]
    if empty:
        raise ConfigError(f"{cfg.input}: numeric column(s) {empty} have no values in the train split; nothing to impute")
    numbers = list(stats.numeric)  # the numeric columns and the date features
    if not numbers or cfg.impute == "mean":
        return means
    if stats.rows["train"] <= SMALL:
        return _fills_here(cfg, numbers, staging)
    train = spark.read.parquet(hadoop_uri(staging.child(TYPED))).where(F.col("split") == "train")
    if cfg.impute == "median":  # as Spark ML's Imputer: approximate, relative error 0.001
        row = train.agg(*[F.percentile_approx(column(c), 0.5, 1000) for c in numbers]).first()
    else:  # the most frequent value; ties go to the smallest
        row = train.agg(*[F.mode(column(c), deterministic=True) for c in numbers]).first()
    return {c: float(value) for c, value in zip(numbers, row)}


def _fills_here(cfg, numbers: list[str], staging) -> dict[str, float]:
    """_fills for up to SMALL train rows, read by the driver with pyarrow: no Spark job (three, with the schema read).

    The median is the lower median, the value percentile_approx gives when it is exact; the mode
    is the most frequent value, ties to the smallest, as F.mode(deterministic=True).
    """
    import math

    import pyarrow.compute as pc

    table = _typed_rows(staging, ["split", *numbers], lambda rows: pc.equal(rows.column("split"), "train"))
    fills = {}
    for c in numbers:
        values = table.column(c).drop_null()
        if cfg.impute == "median":
            ordered = pc.sort_indices(values)
            fills[c] = float(values.take(ordered)[math.ceil(len(values) / 2) - 1].as_py())
        else:
            counts = pc.value_counts(values)
            table_counts = counts.flatten()
            most = pc.max(table_counts[1]).as_py()
            fills[c] = float(pc.min(pc.filter(table_counts[0], pc.equal(table_counts[1], most))).as_py())
    return fills


def _duplicates_here(staging, policy: str):
    """typed_duplicates on the driver, holding little more than 16 bytes per row at its peak: the content hashes are
    sorted to find those met more than once (few, most often none); only those rows' splits are read, and the keys
    of the first 20 contents found in more than one split, for the examples (as Spark's way: the smallest hashes)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from dltool.splits import find_duplicates
    from dltool.storage.manifest import Duplicates

    def among(contents):
        return lambda rows: pc.is_in(rows.column("_content"), value_set=pa.array(contents))

    ordered = np.sort(_typed_rows(staging, ["_content"]).column("_content").to_numpy())
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if not len(repeated):
        return None, set()
    table = _typed_rows(staging, ["_content", "split"], among(repeated))
    order = np.argsort(table.column("_content").to_numpy(), kind="stable")
    contents = table.column("_content").to_numpy()[order]
    splits = pc.index_in(table.column("split"), value_set=pa.array(SPLITS)).to_numpy(zero_copy_only=False)[order]
    starts = np.flatnonzero(np.r_[True, contents[1:] != contents[:-1]])
    low, high = np.minimum.reduceat(splits, starts), np.maximum.reduceat(splits, starts)
    spread = low != high  # contents in more than one split
    if not spread.any():
        return None, set()
    heads, sizes = contents[starts], np.diff(np.r_[starts, len(contents)])
    rows = _typed_rows(staging, ["_content", "split", "key"], among(heads[spread][:20]))
    found = find_duplicates(zip(map(str, rows.column("_content").to_pylist()), rows.column("split").to_pylist(),
                                rows.column("key").to_pylist())) or Duplicates(0, 0)  # fmt: skip
    found = dataclasses.replace(found, records=int(sizes[spread].sum()), contents=int(spread.sum()))
    in_train = heads[spread & (low == SPLITS.index("train"))]
    return found, set(in_train.tolist()) if policy == "drop_from_eval" else set()


def _typed_rows(staging, columns: list[str], where=None):
    """`columns` of the typed rows, file by file, keeping the rows `where(rows)` marks (all without it).
    pyarrow.parquet file by file rather than pyarrow.dataset, whose libraries add 45 MB to the driver."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow.fs import FileSelector

    typed = staging.child(TYPED)
    parts = []
    for info in sorted(typed.fs.get_file_info(FileSelector(typed.path)), key=lambda i: i.path):
        if info.path.endswith(".parquet"):
            with typed.fs.open_input_file(info.path) as f:
                rows = pq.ParquetFile(f).read(columns=columns)
            parts.append(rows if where is None else rows.filter(where(rows)))
    return pa.concat_tables(parts)


def _shard_task(staging_uri, pre, label_kind, passthrough, dataset, drop: set[int]):
    """The third pass, one task per typed file: features, labels and keys into per-split shards (a new
    file every `shard_mb`), with the moments of the train features it wrote."""
    spec = TensorSpec((pre.width,), "float32")

    def encode(rows):
        import pyarrow as pa

        columns = {}
        if label_kind == "class":
            columns["label"] = pa.array(pre.label_index(rows.column("_label")), pa.int32())
        elif label_kind == "regression":
            columns["label"] = rows.column("_label").cast(pa.float32())
        columns["key"] = rows.column("key")
        columns.update({c: rows.column(c) for c in passthrough})
        return pre.features(rows), columns

    def write(typed_uri) -> TaskResult:
        return write_typed(typed_uri, staging_uri, spec, label_kind, passthrough, dataset, drop, encode, moments=True)

    return write


def write_typed(typed_uri: str, staging_uri: str, spec: TensorSpec, label_kind: str | None, passthrough: list[str],
                dataset, drop: set[int], encode, moments: bool = False, batch_rows: int = 65536) -> TaskResult:  # fmt: skip
    """The last pass of a table or text ingest, in the task of one typed file: each split's rows as shard rows,
    a new file every `shard_mb`, leaving out the val and test rows whose content is in `drop`. `encode(rows)`
    gives the rows' features and their other shard columns (label, key, passthrough, in the shard's order);
    with `moments`, the result holds the train features' moments."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dltool.shards.codec import encode_tensors

    source = open_location(typed_uri)
    part = source.path.rsplit("/", 1)[1].split(".")[0]
    schema = shard_schema(spec, label_kind, passthrough)
    staging = open_location(staging_uri)
    max_rows = max(1, (dataset.shard_mb << 20) // spec.nbytes)
    shards = {s: SplitShards(staging, s, part, schema, spec, dataset.row_group_mb, dataset.compression, max_rows)
              for s in SPLITS}  # fmt: skip
    stats, result = Moments(0) if moments else None, TaskResult()
    with source.fs.open_input_file(source.path) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            batch, gone = without_copies(batch, drop)
            result.dropped += gone
            for split in SPLITS:
                rows = batch.filter(pc.equal(batch.column("split"), split))
                if not rows.num_rows:
                    continue
                features, columns = encode(rows)
                if stats is not None and split == "train":
                    stats.add_batch(features)
                shards[split].write(pa.table({"features": encode_tensors(features, spec), **columns}))
    result.shards = [shard for split in SPLITS for shard in shards[split].close()]
    result.ok = sum(shard.rows for shard in result.shards) + result.dropped
    result.moments = stats.result() if stats is not None else None
    return result


def without_copies(batch, drop: set[int]):
    """The batch without its val and test rows whose `_content` train holds (on_duplicates: drop_from_eval),
    and how many those were."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not drop:
        return batch, 0
    gone = pc.and_(pc.is_in(batch.column("_content"), pa.array(list(drop), pa.int64())),
                   pc.not_equal(batch.column("split"), "train"))  # fmt: skip
    return batch.filter(pc.invert(gone)), pc.sum(gone).as_py() or 0


def _write_errors(staging, name: str, tables, reader_name) -> tuple[int, list[dict]]:
    """The task's quarantined rows as one error file; their number and the first few."""
    import pyarrow as pa

    if not tables:
        return 0, []
    rows = pa.concat_tables(tables)
    table = rows.append_column("reader", pa.array([reader_name] * rows.num_rows, pa.string()))
    table = table.append_column("stage", pa.array(["parse"] * rows.num_rows, pa.string()))
    write_errors(staging.child("_errors", f"{name}.parquet"), table)
    return table.num_rows, table.slice(0, FIRST_ERRORS).select(list(ERROR_FIELDS)).to_pylist()
