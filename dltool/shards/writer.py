"""Write one Parquet shard file: fixed-size tensors, label, key; row groups sized by bytes."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dltool.shards.codec import TensorSpec, encode_tensors, plain_array
from dltool.storage.fs import Location

TENSOR_METADATA_KEY = b"dltool.tensors"


def shard_schema(spec: TensorSpec, label_kind: str | None, passthrough: list[str] = ()) -> pa.Schema:
    """The Arrow schema of a shard; label_kind is "class" (int32), "regression" (float32) or None."""
    fields = [pa.field("features", spec.arrow_type, nullable=False)]
    if label_kind == "class":
        fields.append(pa.field("label", pa.int32(), nullable=False))
    elif label_kind == "regression":
        fields.append(pa.field("label", pa.float32(), nullable=False))
    fields.append(pa.field("key", pa.string(), nullable=False))
    fields.extend(pa.field(name, pa.string()) for name in passthrough)
    metadata = {TENSOR_METADATA_KEY: json.dumps({"features": spec.to_json()}).encode()}
    return pa.schema(fields, metadata=metadata)


class ShardWriter:
    """Buffers examples and writes them as row groups of one Parquet file, opened on first write.

    Use as a context manager; `rows` and `bytes` say what was written. A writer that
    received no examples leaves no file.
    """

    def __init__(self, target: Location, schema: pa.Schema, spec: TensorSpec, row_group_mb: int, compression: str):
        self.target = target
        self.schema = schema
        self.spec = spec
        self.row_group_rows = max(1, (row_group_mb << 20) // max(1, spec.nbytes))
        self.compression = None if compression == "none" else compression
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: dict[str, list] = {name: [] for name in schema.names}
        self._extra = schema.names[schema.get_field_index("key") + 1 :]  # the passthrough columns

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def add(self, tensor: np.ndarray, key: str, label=None, extra: dict | None = None) -> None:
        self._pending["features"].append(tensor)
        self._pending["key"].append(key)
        if "label" in self._pending:
            self._pending["label"].append(label)
        for name in self._extra:
            self._pending[name].append((extra or {}).get(name))
        if len(self._pending["key"]) >= self.row_group_rows:
            self._flush()

    def write_table(self, table: pa.Table) -> None:
        """Write rows that already hold the shard schema's columns, in its order (the tabular path)."""
        self._write(table.cast(self.schema))

    def _flush(self) -> None:
        if not self._pending["key"]:
            return
        columns = []
        for field in self.schema:
            values = self._pending[field.name]
            if field.name == "features":
                columns.append(encode_tensors(np.stack(values), self.spec))
            else:
                columns.append(plain_array(values, field.type))
        self._write(pa.Table.from_arrays(columns, schema=self.schema))
        self._pending = {name: [] for name in self.schema.names}

    def _write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            parent = self.target.path.rsplit("/", 1)[0]
            self.target.fs.create_dir(parent, recursive=True)
            # No dictionary for the tensors: it cost 40% of a table's shard write (35 floats a row) and slowed
            # the feed's reads by 20%, for files 15-40% smaller; pixels (binary) and token ids gain nothing from it.
            coded = [name for name in self.schema.names if name != "features"]
            self._writer = pq.ParquetWriter(self.target.path, self.schema, filesystem=self.target.fs,
                                            compression=self.compression, use_dictionary=coded)  # fmt: skip
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self.rows += table.num_rows

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def file_bytes(self) -> int:
        info = self.target.fs.get_file_info(self.target.path)
        return info.size or 0
