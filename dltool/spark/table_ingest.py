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
from contextlib import contextmanager

from dltool.errors import ConfigError
from dltool.shards.codec import TensorSpec
from dltool.shards.writer import ShardWriter, shard_schema
from dltool.spark.results import WrittenShards
from dltool.spark.splits import SPLITS
from dltool.storage.fs import open_location
from dltool.storage.manifest import Label, SplitEntry


def hadoop_uri(location) -> str:
    """The URI Spark's Hadoop filesystems want for a Location (a plain local path becomes file://)."""
    return spark_path(location.uri, location.path)


def spark_path(source_uri: str, path: str) -> str:
    """The Hadoop URI of a file that pyarrow listed under source_uri (pyarrow drops scheme and host)."""
    from urllib.parse import urlsplit

    if "://" not in source_uri:
        return "file://" + path
    parts = urlsplit(source_uri)
    scheme = {"s3": "s3a"}.get(parts.scheme, parts.scheme)
    if scheme in ("s3a", "gs", "gcs"):
        return f"{scheme}://{path}"  # pyarrow paths there are bucket/key
    return f"{scheme}://{parts.netloc}{path}"


def require_s3a(spark, *locations) -> None:
    """Stop before any job when Spark itself must read an s3:// location and lacks its s3a connector."""
    on_s3 = [loc.uri for loc in locations if loc.fs.type_name == "s3"]
    if not on_s3:
        return
    jvm = spark.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem", False,
                                    jvm.java.lang.Thread.currentThread().getContextClassLoader())  # fmt: skip
        return
    except Exception:  # noqa: BLE001 - py4j's Py4JJavaError wraps the ClassNotFoundException
        version = jvm.org.apache.hadoop.util.VersionInfo.getVersion()
    raise ConfigError(
        f"{on_s3[0]}: table readers read and stage through Spark, and this Spark has no s3a connector: add "
        f"--conf spark.jars.packages=org.apache.hadoop:hadoop-aws:{version} (its Hadoop version), or copy the table "
        "to a local or HDFS path first (image and audio readers need no connector)"
    )


def ingest_table(spark, config, reader, source, files, staging, parallelism, progress, preprocess=None) -> WrittenShards:
    """Check, type, fit and write the table; `preprocess` (a saved `_preprocess.json` URI) is applied instead of fitting."""
    import pickle

    from dltool.spark.progress import spark_progress
    from dltool.transforms.table import FitStats, Preprocess

    require_s3a(spark, source, staging)
    cfg = config.ingest
    classify = bool(cfg.label) and cfg.task == "classification"
    paths = [spark_path(source.uri, f.path) for f in files]
    relpaths = dict(zip(paths, (f.relpath for f in files), strict=True))
    with spark_progress(spark, f"ingest {config.name}: {len(files)} table file(s)", progress), \
            _scoped_conf(spark, reader.spark_conf):  # fmt: skip
        rows, inputs = reader.rows(spark, paths, relpaths, config.dataset.split)
        fitted = None if preprocess is None else Preprocess.from_json(json.loads(open_location(preprocess).read_bytes()))
        reader = reader.resolved(rows, fitted)
        cfg = reader.config
        rules = reader.rules()
        # Python UDFs resolve their input columns by name, so `a.b` would read as a field of `a`: the
        # task gets positional names and puts the source's back on each batch.
        names = rows.columns
        plain = rows.toDF(*[f"_c{i}" for i in range(len(names))])
        typed = plain.mapInArrow(_type_task(staging.uri, rules, reader.name, classify, names), TYPE_OUTPUT).collect()
        stats, quarantined, first_errors = FitStats(rules.numbers, rules.categorical, rules.vectors, rules.words), 0, []
        for row in typed:
            stats.merge(pickle.loads(row["stats"]))
            quarantined += row["errors"]
            first_errors += json.loads(row["first_errors"])[: max(0, 5 - len(first_errors))]
        if fitted is None:
            pre = stats.preprocess(_fills(spark, cfg, stats, staging), cfg.categorical_encoding, classify, cfg.scale,
                                   rules.dates, cfg.max_words)  # fmt: skip
        else:
            pre = fitted
        staging.child(PREPROCESS).write_bytes(json.dumps(pre.to_json(), indent=1).encode())
        label_kind = None if not cfg.label else "class" if classify else "regression"
        parts = sorted(r["typed"] for r in typed if r["typed"])
        duplicates, drop = _duplicates(spark, staging, config.dataset.on_duplicates, sum(stats.rows.values())) \
            if parts else (None, set())  # fmt: skip
        task = _shard_task(staging.uri, pre, label_kind, list(cfg.passthrough), config.dataset, drop)
        summaries = spark.sparkContext.parallelize(parts, max(1, len(parts))).flatMap(task).collect() if parts else []
    staging.child(TYPED).delete()
    shards = _combine(summaries, pre, label_kind, inputs, quarantined, first_errors, duplicates)
    columns = {"numeric": list(cfg.numeric), "categorical": list(cfg.categorical), "left_out": dict(reader.left_out)}
    columns.update({role: list(getattr(cfg, role)) for role in ("dates", "words") if getattr(cfg, role)})
    return dataclasses.replace(shards, columns=columns)


SMALL = 200_000  # typed rows the driver checks for duplicates itself: below this a Spark job costs more


def _duplicates(spark, staging, policy: str, rows: int):
    """Identical typed rows in more than one split (from `_typed/`), and with `drop_from_eval` the
    contents that val and test rows must not share with train. Up to SMALL rows the driver reads
    the three columns it needs with pyarrow; above, Spark aggregates them."""
    if rows <= SMALL:
        return _duplicates_here(staging, policy)
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from dltool.spark.splits import find_duplicates
    from dltool.storage.manifest import Duplicates

    typed = spark.read.parquet(hadoop_uri(staging.child(TYPED))).select("_content", "split", "key")
    spread = typed.groupBy("_content").agg(F.countDistinct("split").alias("splits"), F.count("*").alias("records"),
                                           F.max(F.col("split") == "train").alias("in_train")).where("splits > 1")  # fmt: skip
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
TYPED = "_typed"  # the typed rows between the passes; removed before the commit
TYPE_OUTPUT = "typed string, stats binary, errors long, first_errors string"


@contextmanager
def _scoped_conf(spark, conf: dict[str, str]):
    """Spark SQL settings the reader needs, for the duration of the ingest only (the session may be the user's)."""
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


def _type_task(staging_uri, rules, reader_name, classify, names: list[str]):
    """The mapInArrow function of the second pass: check and type the task's rows; quarantined ones
    to `_errors/part-NNNNN.parquet`, typed ones to `_typed/part-NNNNN.parquet`; one summary row."""

    content = [*rules.numbers, *rules.categorical, *rules.words, *rules.vectors, *(["_label"] if rules.label else [])]

    def run(batches):
        import pickle

        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        from dltool.transforms.table import FitStats, content_hashes

        part = TaskContext.get().partitionId()
        staging = open_location(staging_uri)
        target = staging.child(TYPED, f"part-{part:05d}.parquet")
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
                    writer = pq.ParquetWriter(target.path, typed.schema, filesystem=target.fs, compression="lz4")
                writer.write_table(typed)
        finally:
            if writer is not None:
                writer.close()
        quarantined, first = _write_errors(staging, part, errors, reader_name)
        yield pa.RecordBatch.from_pydict({"typed": [target.uri if writer is not None else None],
                                          "stats": [pickle.dumps(stats)], "errors": [quarantined],
                                          "first_errors": [json.dumps(first)]})  # fmt: skip

    return run


def _fills(spark, cfg, stats, staging) -> dict[str, float]:
    """Each numeric column's imputed value over train: the mean from the totals, else median or mode by Spark."""
    from pyspark.sql import functions as F

    from dltool.errors import ConfigError
    from dltool.spark.splits import column

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
    import pyarrow.dataset as pads

    typed = staging.child(TYPED)
    table = pads.dataset(typed.path, filesystem=typed.fs, format="parquet").to_table(
        columns=numbers, filter=pc.field("split") == "train")  # fmt: skip
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
    import pyarrow.dataset as pads

    from dltool.spark.splits import find_duplicates

    typed = staging.child(TYPED)
    table = pads.dataset(typed.path, filesystem=typed.fs, format="parquet").to_table(columns=["_content", "split", "key"])
    contents, splits = table.column("_content").to_pylist(), table.column("split").to_pylist()
    found = find_duplicates(zip(map(str, contents), splits, table.column("key").to_pylist()))
    if found is None or policy != "drop_from_eval":
        return found, set()
    in_train = {c for c, s in zip(contents, splits) if s == "train"}
    return found, {c for c, s in zip(contents, splits) if s != "train" and c in in_train}


def _combine(summaries, pre, label_kind, inputs, quarantined, first_errors, duplicates) -> WrittenShards:
    import numpy as np

    from dltool.spark.ingest import _stats

    splits = {s: {"rows": 0, "files": [], "per_class": Counter()} for s in SPLITS}
    moments, dropped = np.zeros((3, pre.width)), 0
    for row in summaries:
        if row["shard"] is None:  # the task's own line: the moments of the train features it wrote
            moments += row["moments"]
            dropped += row["dropped"]
            continue
        entry = splits[row["split"]]
        entry["rows"] += row["rows"]
        entry["files"].append(row["shard"])
        entry["per_class"].update(row["per_class"])
    vocabulary = tuple(pre.labels) if label_kind == "class" else None
    return WrittenShards(
        features=TensorSpec((pre.width,), "float32"), label=Label(label_kind, vocabulary),
        splits={name: _split_entry(entry, vocabulary) for name, entry in splits.items()},
        stats=_stats(moments, 0) if moments[0, 0] else None, inputs=inputs,
        ok=sum(entry["rows"] for entry in splits.values()) + dropped, quarantined=quarantined,
        first_errors=tuple(first_errors), feature_names=tuple(pre.names), preprocess=PREPROCESS,
        duplicates=None if duplicates is None else dataclasses.replace(duplicates, dropped=dropped),
    )  # fmt: skip


def _split_entry(entry: dict, vocabulary: tuple[str, ...] | None) -> SplitEntry:
    """Rows per class name (label index order; "all" for regression or no label) and sorted files of one split."""
    counts = entry["per_class"]
    if vocabulary is not None:
        per_class = {vocabulary[int(k)]: v for k, v in sorted(counts.items(), key=lambda kv: int(kv[0]))}
    else:
        per_class = {"all": sum(counts.values())} if counts else {}
    return SplitEntry(entry["rows"], tuple(sorted(entry["files"])), per_class)


def _shard_task(staging_uri, pre, label_kind, passthrough, dataset, drop: set[int]):
    """The third pass, one task per typed file: features, labels and keys into per-split shards (a new
    file every `shard_mb`); a summary per shard, and one for the task with its train moments."""
    spec = TensorSpec((pre.width,), "float32")
    max_rows = max(1, (dataset.shard_mb << 20) // spec.nbytes)

    def write(typed_uri):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from dltool.shards.codec import encode_tensors
        from dltool.transforms.table import moments

        source = open_location(typed_uri)
        part = int(source.path.rsplit("part-", 1)[1].split(".")[0])
        schema = shard_schema(spec, label_kind, passthrough)
        staging = open_location(staging_uri)
        shards = {s: _SplitShards(staging, s, part, schema, spec, max_rows, dataset, label_kind == "class")
                  for s in SPLITS}  # fmt: skip
        total, dropped = np.zeros((3, spec.shape[0])), 0
        with source.fs.open_input_file(source.path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
                batch, gone = without_copies(batch, drop)
                dropped += gone
                for split in SPLITS:
                    rows = batch.filter(pc.equal(batch.column("split"), split))
                    if not rows.num_rows:
                        continue
                    features = pre.features(rows)
                    if split == "train":
                        total += moments(features)
                    columns = {"features": encode_tensors(features, spec)}
                    if label_kind == "class":
                        columns["label"] = pa.array(pre.label_index(rows.column("_label")), pa.int32())
                    elif label_kind == "regression":
                        columns["label"] = rows.column("_label").cast(pa.float32())
                    columns["key"] = rows.column("key")
                    columns.update({c: rows.column(c) for c in passthrough})
                    shards[split].write(pa.table(columns))
        for split in SPLITS:
            for name, n, per_class in shards[split].close():
                yield {"split": split, "shard": name, "rows": n, "per_class": per_class}
        yield {"shard": None, "moments": total, "dropped": dropped}

    return write


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


def _write_errors(staging, part, tables, reader_name) -> tuple[int, list[dict]]:
    """The task's quarantined rows as one error file; their number and the first five."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dltool.spark.ingest import ERROR_FIELDS

    if not tables:
        return 0, []
    rows = pa.concat_tables(tables)
    table = rows.append_column("reader", pa.array([reader_name] * rows.num_rows, pa.string()))
    table = table.append_column("stage", pa.array(["parse"] * rows.num_rows, pa.string())).select(list(ERROR_FIELDS))
    target = staging.child("_errors", f"part-{part:05d}.parquet")
    target.fs.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, target.path, filesystem=target.fs, compression="zstd")
    return table.num_rows, table.slice(0, 5).to_pylist()


class _SplitShards:
    """The shard files one task writes for one split: `<split>/part-<task>-<n>.parquet`, each up to `max_rows`."""

    def __init__(self, staging, split, part, schema, spec, max_rows, dataset, classes: bool):
        self.staging, self.split, self.part, self.schema, self.spec = staging, split, part, schema, spec
        self.max_rows, self.dataset, self.classes = max_rows, dataset, classes
        self.done: list[tuple[str, int, dict]] = []
        self.writer, self.counts = None, Counter()

    def write(self, table) -> None:
        while table.num_rows:
            if self.writer is None:
                name = f"{self.split}/part-{self.part:05d}-{len(self.done):03d}.parquet"
                self.writer = ShardWriter(self.staging.child(*name.split("/")), self.schema, self.spec,
                                          self.dataset.row_group_mb, self.dataset.compression)  # fmt: skip
                self.name = name
            room = self.max_rows - self.writer.rows
            head, table = table.slice(0, room), table.slice(room)
            self.writer.write_table(head)
            if self.classes:
                self.counts.update(head.column("label").to_numpy().tolist())
            else:
                self.counts.update({"all": head.num_rows})
            if self.writer.rows >= self.max_rows:
                self._finish()

    def _finish(self) -> None:
        self.writer.close()
        self.done.append((self.name, self.writer.rows, {str(k): v for k, v in self.counts.items()}))
        self.writer, self.counts = None, Counter()

    def close(self) -> list[tuple[str, int, dict]]:
        if self.writer is not None:
            self._finish()
        return self.done
