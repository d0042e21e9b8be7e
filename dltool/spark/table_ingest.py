"""Write a table reader's rows as shards: features computed and written by pyarrow in each Spark task (mapInArrow)."""

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


def ingest_table(spark, config, reader, source, files, staging, parallelism, progress, preprocess=None) -> WrittenShards:
    """Type, fit and write the table; `preprocess` (a saved `_preprocess.json` URI) is applied instead of fitting.

    Three passes over the source: rows per file piece (row numbers), one aggregation (the fit and
    the split sizes), and the write, where each task turns its rows into features with numpy and
    streams them into per-split shards and its quarantined rows into `_errors/`.
    """
    from dltool.spark.progress import spark_progress
    from dltool.transforms.table import Preprocess

    paths = [spark_path(source.uri, f.path) for f in files]
    relpaths = dict(zip(paths, (f.relpath for f in files), strict=True))
    with spark_progress(spark, f"ingest {config.name}: {len(files)} table file(s)", progress):
        frame, inputs = reader.typed(spark, paths, relpaths, config.dataset.split)
        if preprocess is None:
            pre, _ = reader.fit(frame)
            if config.ingest.scale:
                pre = pre.with_scale(_train_moments(frame, pre))
        else:
            pre = Preprocess.from_json(json.loads(open_location(preprocess).read_bytes()))
        staging.child(PREPROCESS).write_bytes(json.dumps(pre.to_json(), indent=1).encode())
        cfg = config.ingest
        label_kind = None if not cfg.label else "class" if cfg.task == "classification" else "regression"
        task = _shard_task(staging.uri, pre, label_kind, list(cfg.passthrough), reader.name, config.dataset)
        summaries = frame.mapInArrow(task, TASK_OUTPUT).collect()
    return _combine(summaries, pre, label_kind, inputs)


PREPROCESS = "_preprocess.json"
TASK_OUTPUT = "split string, shard string, rows long, per_class string, errors long, first_errors string, moments binary"


def _train_moments(frame, pre):
    """Per-slot [count, sum, sum of squares] of the unscaled train features (for `scale: true`)."""
    import numpy as np
    from pyspark.sql import functions as F

    def task(batches):
        import pyarrow as pa

        from dltool.transforms.table import moments

        total = np.zeros((3, pre.width))
        for batch in batches:
            total += moments(pre.features(batch, scaled=False))
        yield pa.RecordBatch.from_pydict({"moments": [total.tobytes()]})

    train = frame.where(F.col("_error_class").isNull() & (F.col("split") == "train"))
    parts = train.mapInArrow(task, "moments binary").collect()
    return sum(np.frombuffer(r["moments"]).reshape(3, pre.width) for r in parts)


def _combine(summaries, pre, label_kind, inputs) -> WrittenShards:
    import numpy as np

    from dltool.spark.ingest import _stats

    splits = {s: {"rows": 0, "files": [], "per_class": Counter()} for s in SPLITS}
    quarantined, first_errors, moments = 0, [], np.zeros((3, pre.width))
    for row in summaries:
        if row["shard"] is None:  # the task's own line
            quarantined += row["errors"]
            first_errors += json.loads(row["first_errors"])[: max(0, 5 - len(first_errors))]
            moments += np.frombuffer(row["moments"]).reshape(3, pre.width)
            continue
        entry = splits[row["split"]]
        entry["rows"] += row["rows"]
        entry["files"].append(row["shard"])
        entry["per_class"].update(json.loads(row["per_class"]))
    vocabulary = tuple(pre.labels) if label_kind == "class" else None
    return WrittenShards(
        features=TensorSpec((pre.width,), "float32"), label=Label(label_kind, vocabulary),
        splits={name: _split_entry(entry, vocabulary) for name, entry in splits.items()},
        stats=_stats(moments, 0) if moments[0, 0] else None, inputs=inputs,
        ok=sum(entry["rows"] for entry in splits.values()), quarantined=quarantined, first_errors=tuple(first_errors),
        feature_names=tuple(pre.names), preprocess=PREPROCESS,
    )  # fmt: skip


def _split_entry(entry: dict, vocabulary: tuple[str, ...] | None) -> SplitEntry:
    """Rows per class name (label index order; "all" for regression or no label) and sorted files of one split."""
    counts = entry["per_class"]
    if vocabulary is not None:
        per_class = {vocabulary[int(k)]: v for k, v in sorted(counts.items(), key=lambda kv: int(kv[0]))}
    else:
        per_class = {"all": sum(counts.values())} if counts else {}
    return SplitEntry(entry["rows"], tuple(sorted(entry["files"])), per_class)


def _shard_task(staging_uri, pre, label_kind, passthrough, reader_name, dataset):
    """The mapInArrow function: features, labels and keys into per-split shards (a new file every
    `shard_mb`), quarantined rows into `_errors/part-NNNNN.parquet`; one summary row per shard and
    one for the task (errors, train moments)."""
    spec = TensorSpec((pre.width,), "float32")
    max_rows = max(1, (dataset.shard_mb << 20) // spec.nbytes)

    def write(batches):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark import TaskContext

        from dltool.shards.codec import encode_tensors
        from dltool.spark.ingest import ERROR_FIELDS
        from dltool.transforms.table import moments

        part = TaskContext.get().partitionId()
        schema = shard_schema(spec, label_kind, passthrough)
        staging = open_location(staging_uri)
        shards = {s: _SplitShards(staging, s, part, schema, spec, max_rows, dataset, label_kind == "class")
                  for s in SPLITS}
        errors, total = [], np.zeros((3, spec.shape[0]))
        for batch in batches:
            bad = pc.is_valid(batch.column("_error_class"))
            if pc.any(bad).as_py():
                errors.append(batch.filter(bad))
                batch = batch.filter(pc.invert(bad))
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
        quarantined = _write_errors(staging, part, errors, reader_name, ERROR_FIELDS)
        for split in SPLITS:
            for name, n, per_class in shards[split].close():
                yield _summary_row(split=split, shard=name, rows=n, per_class=json.dumps(per_class))
        yield _summary_row(errors=quarantined[0], first_errors=json.dumps(quarantined[1]), moments=total.tobytes())

    return write


def _summary_row(**values):
    """One row of TASK_OUTPUT; the fields not given are null."""
    import pyarrow as pa

    schema = pa.schema([("split", pa.string()), ("shard", pa.string()), ("rows", pa.int64()), ("per_class", pa.string()),
                        ("errors", pa.int64()), ("first_errors", pa.string()), ("moments", pa.binary())])  # fmt: skip
    return pa.RecordBatch.from_pydict({name: [values.get(name)] for name in schema.names}, schema=schema)


def _write_errors(staging, part, batches, reader_name, fields) -> tuple[int, list[dict]]:
    """The task's quarantined rows as one error file; their number and the first five."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not batches:
        return 0, []
    rows = pa.Table.from_batches(batches)
    table = pa.table({"key": rows.column("key"), "path": rows.column("_where"),
                      "reader": pa.array([reader_name] * rows.num_rows, pa.string()),
                      "stage": pa.array(["parse"] * rows.num_rows, pa.string()),
                      "error_class": rows.column("_error_class"), "message": rows.column("_message")})  # fmt: skip
    table = table.select(list(fields))
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
