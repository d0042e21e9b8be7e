"""Write a table reader's DataFrame as shards: one pyarrow ShardWriter per Spark task, in mapInArrow."""

from __future__ import annotations

import json
from collections import Counter

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


def ingest_table(spark, config, reader, source, files, staging, parallelism, progress,
                 preprocess=None) -> WrittenShards:  # fmt: skip
    """Build the table and write it; `preprocess` (a saved `_preprocess/` URI) is applied instead of fitting."""
    from dltool.spark.progress import spark_progress

    paths = [spark_path(source.uri, f.path) for f in files]
    relpaths = dict(zip(paths, (f.relpath for f in files), strict=True))
    with spark_progress(spark, f"ingest {config.name}: {len(files)} CSV file(s)", progress):
        fitted = None
        if preprocess is not None:
            from pyspark.ml import PipelineModel

            fitted = PipelineModel.load(hadoop_uri(open_location(preprocess)))
        built = reader.build(spark, paths, relpaths, config.dataset.split, fitted=fitted)
        try:
            return _write_table(config, built, staging, parallelism)
        finally:
            for frame in built.cached:
                frame.unpersist()


def _write_table(config, built, staging, parallelism) -> WrittenShards:
    from pyspark.sql import functions as F

    from dltool.spark.ingest import ERROR_FIELDS, plan_shards

    built.errors.select(*ERROR_FIELDS).repartition(1).write.mode("overwrite").option("compression", "zstd").parquet(
        hadoop_uri(staging.child("_errors"))
    )
    built.preprocess.write().overwrite().save(hadoop_uri(staging.child("_preprocess")))
    spec = TensorSpec((built.width,), "float32")
    rows = built.rows
    per_split = built.split_rows
    total = sum(per_split.values())
    summaries = []
    for split in SPLITS:
        n = plan_shards(per_split.get(split, 0), spec.nbytes, config.dataset.shard_mb, parallelism,
                        per_split.get(split, 0) / max(1, total))  # fmt: skip
        if n == 0:
            continue
        writer = _shard_task(staging.uri, split, spec, built.label_kind, list(config.ingest.passthrough),
                             config.dataset.row_group_mb, config.dataset.compression)  # fmt: skip
        part = rows.where(F.col("split") == split).drop("split").repartition(n)
        summaries += part.mapInArrow(writer, "shard string, rows long, per_class string").collect()
    quarantined = built.inputs - total
    first_errors = tuple(r.asDict() for r in built.errors.limit(5).collect()) if quarantined else ()
    splits = {s: {"rows": 0, "files": [], "per_class": Counter()} for s in SPLITS}
    for row in summaries:
        split = row["shard"].split("/", 1)[0]
        splits[split]["rows"] += row["rows"]
        splits[split]["files"].append(row["shard"])
        splits[split]["per_class"].update(json.loads(row["per_class"]))
    vocabulary = None if built.vocabulary is None else tuple(built.vocabulary)
    return WrittenShards(
        features=spec, label=Label(built.label_kind, vocabulary),
        splits={name: _split_entry(entry, vocabulary) for name, entry in splits.items()}, stats=built.stats,
        inputs=built.inputs, ok=total, quarantined=quarantined, first_errors=first_errors,
        feature_names=tuple(built.feature_names), preprocess="_preprocess",
    )  # fmt: skip


def _split_entry(entry: dict, vocabulary: tuple[str, ...] | None) -> SplitEntry:
    """Rows per class name (label index order; "all" for regression or no label) and sorted files of one split."""
    counts = entry["per_class"]
    if vocabulary is not None:
        per_class = {vocabulary[int(k)]: v for k, v in sorted(counts.items(), key=lambda kv: int(kv[0]))}
    else:
        per_class = {"all": sum(counts.values())} if counts else {}
    return SplitEntry(entry["rows"], tuple(sorted(entry["files"])), per_class)


def _shard_task(staging_uri, split, spec, label_kind, passthrough, row_group_mb, compression):
    """The mapInArrow function: stream the partition's batches into one shard file."""

    def write(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        name = f"{split}/part-{part:05d}.parquet"
        schema = shard_schema(spec, label_kind, passthrough)
        counts = Counter()
        target = open_location(staging_uri).child(*name.split("/"))
        with ShardWriter(target, schema, spec, row_group_mb, compression) as writer:
            for batch in batches:
                writer.write_batch(batch)
                if label_kind == "class":
                    counts.update(batch.column("label").to_numpy().tolist())
                else:
                    counts.update({"all": batch.num_rows})
        if writer.rows:
            yield pa.RecordBatch.from_pydict(
                {"shard": [name], "rows": [writer.rows], "per_class": [json.dumps({str(k): v for k, v in counts.items()})]}
            )

    return write
