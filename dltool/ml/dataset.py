"""dltool datasets as Spark DataFrames and back: `read_dataset` for Spark ML, `write_dataset` for dltool's trainer.

A features column is an ML vector, an array of numbers or a binary tensor (uint8 bytes with a
`shape`); a class label is a numeric index, named by the column's Spark ML attributes when it
has them (StringIndexer's output), else by its index. Column types and shapes are checked from
the schema before any Spark job (`FeatureColumn.of`, `LabelColumn.of`).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from dltool.errors import ConfigError, DataQualityError, map_errors
from dltool.shards.codec import TensorSpec
from dltool.storage.fs import Location, open_dataset, open_location
from dltool.storage.ownership import check_replaceable
from dltool.storage.manifest import SPLITS, SUCCESS, Label, Manifest
from dltool.storage.stores import storage_scope

__all__ = ["FeatureColumn", "LabelColumn", "read_dataset", "write_dataset"]

READER = "dataframe"  # the manifest's reader for data no dltool reader ingested


@dataclass(frozen=True)
class FeatureColumn:
    """A DataFrame's features column: its name, how to read it (vector, array or binary) and the tensor it holds."""

    name: str
    kind: str  # "vector", "array" or "binary"
    spec: TensorSpec

    @classmethod
    def of(cls, schema, name: str, shape: list[int] | None = None) -> FeatureColumn:
        """The column checked against the schema (no Spark job); a vector's size comes from its ML attributes
        (VectorAssembler sets them) or from `shape`, which a binary tensor always needs."""
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql import types as T

        if name not in schema.names:
            raise ConfigError(f"features column {name!r} is not in the DataFrame (columns: {', '.join(schema.names)})")
        field = schema[name]
        kind = field.dataType
        shape = [int(d) for d in shape] if shape else None
        if shape is not None and (not shape or min(shape) < 1):
            raise ConfigError(f"featuresShape {shape}: every dimension must be a positive integer")
        if isinstance(kind, T.BinaryType):
            if shape is None:
                raise ConfigError(f"features column {name!r} is binary: set featuresShape (e.g. [32, 32, 3]) "
                                  "to say which uint8 tensor its bytes hold")  # fmt: skip
            return cls(name, "binary", TensorSpec(tuple(shape), "uint8"))
        if isinstance(kind, VectorUDT):
            size = field.metadata.get("ml_attr", {}).get("num_attrs")
        elif isinstance(kind, T.ArrayType) and isinstance(kind.elementType, T.NumericType):
            size = None
        else:
            raise ConfigError(f"features column {name!r} is {kind.simpleString()}: expected an ML vector, an array of "
                              "numbers, or binary tensors with featuresShape")  # fmt: skip
        if shape is not None and size is not None and _prod(shape) != size:
            raise ConfigError(f"featuresShape {shape} holds {_prod(shape)} values, but column {name!r} is a vector of "
                              f"{size}")  # fmt: skip
        shape = shape or ([size] if size else None)
        return cls(name, "vector" if isinstance(kind, VectorUDT) else "array",
                   TensorSpec(tuple(shape), "float32") if shape else TensorSpec((0,), "float32"))  # fmt: skip

    @property
    def sized(self) -> bool:
        return self.spec.size > 0

    def values(self):
        """The column as Spark values the shard writer takes: array<float> (or the binary bytes)."""
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        column = F.col(f"`{self.name}`")
        if self.kind == "vector":
            return vector_to_array(column, dtype="float32")
        return column if self.kind == "binary" else column.cast("array<float>")

    def with_size(self, size: int) -> FeatureColumn:
        return FeatureColumn(self.name, self.kind, TensorSpec((size,), "float32"))


@dataclass(frozen=True)
class LabelColumn:
    """A DataFrame's label column: classes (an index, with class names) or a regression target."""

    name: str
    task: str  # "classification" or "regression"
    classes: tuple[str, ...] | None  # from the column's ML attributes; None: found from the data

    @classmethod
    def of(cls, schema, name: str, task: str, classes: list[str] | None = None) -> LabelColumn:
        from pyspark.sql import types as T

        if name not in schema.names:
            raise ConfigError(f"label column {name!r} is not in the DataFrame (columns: {', '.join(schema.names)})")
        field = schema[name]
        if not isinstance(field.dataType, T.NumericType):
            hint = ": index it first (pyspark.ml.feature.StringIndexer)" if isinstance(field.dataType, T.StringType) else ""
            raise ConfigError(f"label column {name!r} is {field.dataType.simpleString()}, expected numbers{hint}")
        if task == "regression":
            return cls(name, task, None)
        attr = field.metadata.get("ml_attr", {})
        named = attr.get("vals") if attr.get("type") == "nominal" else None
        return cls(name, task, tuple(classes) if classes else tuple(named) if named else None)


def _prod(shape) -> int:
    total = 1
    for d in shape:
        total *= int(d)
    return total


def label_metadata(classes: tuple[str, ...], name: str = "label") -> dict:
    """Spark ML's nominal attribute for a label column (what StringIndexer writes)."""
    return {"ml_attr": {"type": "nominal", "vals": list(classes), "name": name}}


# ------------------------------------------------------------------------------------------- reading


def read_dataset(path: str, split: str | None = "train", spark=None, vectors: bool = False,
                 storage: dict | None = None):  # fmt: skip
    """A dataset split (every split when None) as a DataFrame of features, label, key, split."""
    path = os.fspath(path)
    with storage_scope(storage):
        dataset = open_dataset(path)
        manifest = Manifest.read(dataset)
        names = list(manifest.splits) if split is None else [split]
        unknown = [s for s in names if s not in manifest.splits]
        if unknown:
            raise ConfigError(f"split {unknown[0]!r} is not in {dataset.uri} (it has: {', '.join(manifest.splits)})")
        spark = spark or _spark()
        frames = [_read_split(spark, dataset, manifest, s, vectors) for s in names]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return frame


def _spark():
    from dltool.config.models import SparkSettings
    from dltool.spark.session import spark_session

    return spark_session(SparkSettings())


def _read_split(spark, dataset: Location, manifest: Manifest, split: str, vectors: bool):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from dltool.spark.paths import hadoop_uri, require_s3a

    require_s3a(spark, dataset)
    files = [hadoop_uri(dataset.child(f)) for f in manifest.splits[split].files]
    label = manifest.label
    fields = [T.StructField("features", T.ArrayType(T.FloatType(), False), False)]
    if label.kind is not None:
        fields.append(T.StructField("label", T.IntegerType() if label.kind == "class" else T.FloatType(), False))
    fields.append(T.StructField("key", T.StringType(), False))
    schema = T.StructType(fields)
    if not files:  # an empty split
        frame = spark.createDataFrame([], schema)
    else:
        columns = [f.name for f in fields]
        frame = spark.read.parquet(*files).select(*columns).mapInArrow(_decoder(manifest.features), schema)
    if vectors:
        frame = frame.withColumn("features", array_to_vector("features"))
    if label.kind == "class":
        frame = frame.withColumn("label", F.col("label").cast("double").alias("label", metadata=label_metadata(label.vocabulary)))
    elif label.kind == "regression":
        frame = frame.withColumn("label", F.col("label").cast("double"))
    return frame.withColumn("split", F.lit(split))


def _decoder(spec: TensorSpec):
    """The mapInArrow function that turns stored tensors (binary or list<float>) into flat float arrays."""

    def decode(batches):
        import numpy as np
        import pyarrow as pa

        from dltool.shards.codec import decode_tensors

        for batch in batches:
            values = decode_tensors(batch.column("features"), spec).reshape(batch.num_rows, -1).astype(np.float32)
            offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32) * spec.size)
            features = pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.float32()))
            yield pa.RecordBatch.from_arrays([features, *batch.columns[1:]], names=batch.schema.names)

    return decode


# ------------------------------------------------------------------------------------------- writing


def write_dataset(df, path: str, features_col: str = "features", label_col: str | None = "label",
                  task: str = "classification", shape: list[int] | None = None, classes: list[str] | None = None,
                  key_col: str | None = None, split: tuple[float, float, float] = (0.8, 0.1, 0.1), salt: str = "",
                  name: str = "dataframe", overwrite: bool = False, storage: dict | None = None) -> Manifest:  # fmt: skip
    """Write a DataFrame as a dltool dataset at `path` (train/val/test by a stable hash of `key_col`, else of
    the row's position) and return its manifest; `dltool train` and `dltool.ml` estimators read it.

    A row with a null key, feature or label, a feature of the wrong size, NaN or infinity, or a label outside the
    classes fails the write (DataQualityError, exit 3: how many, and the first with its reason); nothing is left.
    """
    from dltool.config.models import SplitSettings

    path = os.fspath(path)
    feature = FeatureColumn.of(df.schema, features_col, shape)
    label = None if label_col is None else LabelColumn.of(df.schema, label_col, task, classes)
    if key_col is not None and key_col not in df.schema.names:
        raise ConfigError(f"key column {key_col!r} is not in the DataFrame (columns: {', '.join(df.schema.names)})")
    try:
        settings = SplitSettings(train=split[0], val=split[1], test=split[2], salt=salt)
    except ValueError as e:
        raise ConfigError(f"split {tuple(split)}: train, val and test fractions must add up to 1") from e
    with storage_scope(storage):
        dataset = open_location(path if "://" in path else os.path.abspath(path))
        if dataset.exists():
            check_replaceable(dataset, "dataset")
            if not overwrite:
                raise ConfigError(f"{dataset.uri}: exists; pass overwrite=True to replace it")
            dataset.delete()
        rows, feature, label = _prepared(df, feature, label, key_col, settings)
        return _write(rows, dataset, feature, label, name, settings)


def _prepared(df, feature: FeatureColumn, label: LabelColumn | None, key_col: str | None, settings):
    """The rows to write (features, label, key, split), with a vector's size and the classes found when
    the schema does not say them (one small job each)."""
    from pyspark.sql import functions as F

    from dltool.splits import split_column

    key = F.col(f"`{key_col}`").cast("string") if key_col else F.monotonically_increasing_id().cast("string")
    columns = [feature.values().alias("features")]
    if label is not None:
        target = F.col(f"`{label.name}`")
        columns.append((target.cast("int") if label.task == "classification" else target.cast("float")).alias("label"))
        if label.task == "classification" and label.classes is None:
            top = df.agg(F.max(target)).first()[0]
            label = LabelColumn(label.name, label.task, tuple(str(i) for i in range(int(top or 0) + 1)))
    columns.append(key.alias("key"))
    rows = df.select(*columns)
    if not feature.sized:
        first = rows.where(F.col("features").isNotNull()).select(F.size("features")).first()
        if first is None:
            raise ConfigError(f"features column {feature.name!r} has no values")
        feature = feature.with_size(int(first[0]))
    return rows.withColumn("split", split_column(F.col("key"), settings)), feature, label


def _write(rows, dataset: Location, feature: FeatureColumn, label: LabelColumn | None, name: str, settings) -> Manifest:
    from dltool.config.loader import config_hash
    from dltool.shards.sink import TaskResult, on_write_complete
    from dltool.storage.commit import StagedFolder

    spec = feature.spec
    classes = label.classes if label is not None else None
    kind = None if label is None else "class" if label.task == "classification" else "regression"
    with map_errors(f"writing dataset {dataset.uri}"), StagedFolder(dataset, kind="dataset") as staged:
        staging = staged.location
        results = [TaskResult.from_json(row["result"])
                   for row in rows.mapInArrow(_shard_task(staging.uri, spec, kind, classes), "result string").collect()]
        written = on_write_complete(results, spec, Label(kind, classes), sum(r.ok + r.quarantined for r in results))
        if written.quarantined:
            first = written.first_errors[0]
            raise DataQualityError(f"{written.quarantined} of {written.inputs} rows cannot be written as {feature.name!r} "
                                   f"{list(spec.shape)} {spec.dtype}, e.g. row {first['key']}: {first['message']}")  # fmt: skip
        ingest = {"reader": READER, "features_col": feature.name, "label_col": None if label is None else label.name,
                  "shape": list(spec.shape), "task": None if label is None else label.task}  # fmt: skip
        manifest = written.manifest(
            name=name, reader=READER, source="dataframe", ingest=ingest,
            config_hash=config_hash({**ingest, "split": settings.model_dump(mode="json")}),
            input_fingerprint=uuid.uuid4().hex,
        )  # fmt: skip
        manifest.write(staging)
        staged.commit()
    dataset.child(SUCCESS).write_bytes(b"")
    return manifest


def _shard_task(staging_uri: str, spec: TensorSpec, kind: str | None, classes: tuple[str, ...] | None):
    """mapInArrow: write this partition's valid rows as one shard per split; one row back, the task's result
    as JSON, counting the rows that cannot be written, with the first reasons."""

    def write(batches):
        import numpy as np
        import pyarrow as pa
        from pyspark import TaskContext

        from dltool.shards.codec import decode_tensors
        from dltool.shards.sink import FIRST_ERRORS, Moments, SplitShards, TaskResult
        from dltool.shards.writer import shard_schema

        staging = open_location(staging_uri)
        part = f"part-{TaskContext.get().partitionId():05d}-{uuid.uuid4().hex[:8]}"
        schema = shard_schema(spec, kind)
        shards = {s: SplitShards(staging, s, part, schema, spec, 64, "zstd") for s in SPLITS}
        moments, errors = Moments(-1), []
        for batch in batches:
            table = _valid(pa.Table.from_batches([batch]), spec, kind, classes, errors)
            values = decode_tensors(table.column("features"), spec)
            if spec.dtype == "float32":  # NaN or infinity would make the loss NaN
                finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
                if not finite.all():
                    errors.extend(_error(key, "features hold NaN or infinite values")
                                  for key in table.filter(pa.array(~finite)).column("key").to_pylist())  # fmt: skip
                    table, values = table.filter(pa.array(finite)), values[finite]
            split = table.column("split").to_numpy(zero_copy_only=False)
            for s in SPLITS:
                mask = split == s
                if not mask.any():
                    continue
                shards[s].write(table.filter(pa.array(mask)).select(schema.names))
                if s == "train":
                    moments.add_batch(values[mask])
        result = TaskResult(shards=[shard for s in SPLITS for shard in shards[s].close()], quarantined=len(errors),
                            moments=moments.result(), errors=errors[:FIRST_ERRORS])  # fmt: skip
        result.ok = sum(shard.rows for shard in result.shards)
        yield pa.RecordBatch.from_pydict({"result": [result.to_json()]})

    return write


def _error(key: str | None, reason: str) -> dict:
    return {"key": key, "path": key, "reader": READER, "stage": "decode", "error_class": "ValueError", "message": reason}


def _valid(table, spec: TensorSpec, kind: str | None, classes, errors: list):
    """The rows that can be written (a key, a feature of the right size, a known label); the others are added
    to `errors` as error-table rows."""
    import pyarrow.compute as pc

    features = table.column("features")
    lengths = pc.binary_length(features) if spec.encoding == "binary" else pc.list_value_length(features)
    expected = spec.nbytes if spec.encoding == "binary" else spec.size
    ok = pc.fill_null(pc.equal(lengths, expected), False)
    reasons = pc.if_else(pc.is_null(features), "null features", f"features hold the wrong number of values "
                         f"(expected {expected} for {list(spec.shape)} {spec.dtype})")  # fmt: skip
    if kind is not None:
        label = table.column("label")
        if kind == "class":
            known = pc.fill_null(pc.and_(pc.greater_equal(label, 0), pc.less(label, len(classes))), False)
            why = pc.if_else(pc.is_null(label), "null label", f"label is not a class index 0..{len(classes) - 1}")
        else:
            known, why = pc.invert(pc.is_null(label)), "null label"
        reasons, ok = pc.if_else(ok, why, reasons), pc.and_(ok, known)
    has_key = pc.invert(pc.is_null(table.column("key")))
    reasons, ok = pc.if_else(has_key, reasons, "null key"), pc.and_(ok, has_key)
    if pc.all(ok).as_py():
        return table
    bad = pc.invert(ok)
    errors.extend(_error(key, reason) for key, reason in zip(table.filter(bad).column("key").to_pylist(),
                                                             reasons.filter(bad).to_pylist(), strict=True))  # fmt: skip
    return table.filter(ok)
