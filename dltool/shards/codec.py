"""Encode fixed-shape tensors as Spark-native Arrow columns and decode them without row loops.

uint8 tensors are stored as `binary` (the raw C-order bytes of one example);
float32 and int32 (token ids) tensors as `list<float>` and `list<int32>` (Spark's
array<float>, array<int>). Shape and dtype live
in the manifest and in the Parquet key-value metadata under `dltool.tensors`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

ENCODINGS = {"uint8": "binary", "float32": "list", "int32": "list"}


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # "uint8", "float32" or "int32" (token ids)

    @property
    def encoding(self) -> str:
        return ENCODINGS[self.dtype]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.binary() if self.encoding == "binary" else pa.list_(pa.from_numpy_dtype(np.dtype(self.dtype)))

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "encoding": self.encoding}

    @classmethod
    def from_json(cls, data: dict) -> "TensorSpec":
        return cls(tuple(int(d) for d in data["shape"]), data["dtype"])


def encode_tensors(batch: np.ndarray, spec: TensorSpec) -> pa.Array:
    """A [n, *shape] array as one Arrow array with n fixed-size values (no per-row copies)."""
    if tuple(batch.shape[1:]) != spec.shape or batch.dtype != np.dtype(spec.dtype):
        raise ValueError(
            f"features: expected shape {list(spec.shape)} dtype {spec.dtype}, got {list(batch.shape[1:])} {batch.dtype}"
        )
    n = batch.shape[0]
    flat = np.ascontiguousarray(batch).reshape(-1)
    if spec.encoding == "binary":
        if n * spec.nbytes < 2**31:  # binary's offsets are int32 (a cast from large_binary imports pyarrow.compute)
            offsets = np.arange(n + 1, dtype=np.int32) * np.int32(spec.nbytes)
            return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(flat)])
        offsets = np.arange(n + 1, dtype=np.int64) * spec.nbytes
        return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(flat)]).cast(
            pa.binary()
        )
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(spec.size)
    return pa.ListArray.from_arrays(numpy_array(offsets), numpy_array(flat))


def decode_tensors(column: pa.Array | pa.ChunkedArray, spec: TensorSpec, field: str = "features") -> np.ndarray:
    """The [n, *shape] numpy array held by an encoded column; raises ValueError naming the field."""
    if isinstance(column, pa.ChunkedArray):  # one chunk (a row group's) is used as it is: combining copies it
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    n = len(column)
    if column.null_count:
        raise ValueError(f"{field}: {column.null_count} null tensors")
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        offsets_type = np.int32 if pa.types.is_binary(column.type) else np.int64
        offsets = np.frombuffer(column.buffers()[1], dtype=offsets_type)[column.offset : column.offset + n + 1]
        data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        values = data.view(spec.dtype)
        lengths_ok = n == 0 or np.all(np.diff(offsets) == spec.nbytes)
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        values = numbers(column.flatten()).astype(spec.dtype, copy=False)
        lengths_ok = values.size == n * spec.size and (
            pa.types.is_fixed_size_list(column.type) or np.all(np.diff(numbers(column.offsets)) == spec.size)
        )
    else:
        raise ValueError(f"{field}: column type {column.type} is not a dltool tensor encoding (binary or list<float>)")
    if not lengths_ok or values.size != n * spec.size:
        raise ValueError(
            f"{field}: expected {spec.size} values per row for shape {list(spec.shape)}, got {values.size} in {n} rows"
        )
    return values.reshape((n, *spec.shape))


_NUMPY_NAMES = {"halffloat": "float16", "float": "float32", "double": "float64"}  # Arrow's names that numpy lacks


def numpy_dtype(arrow_type: pa.DataType) -> np.dtype:
    """The numpy dtype of an Arrow integer or floating-point type (`to_pandas_dtype` imports pandas)."""
    return np.dtype(_NUMPY_NAMES.get(str(arrow_type), str(arrow_type)))


def plain_array(values: list, arrow_type: pa.DataType) -> pa.Array:
    """`pa.array(values, arrow_type)` for a list of Python strings or numbers (None: null), built from its buffers
    when the type is a string, integer or floating-point one and every value fits it; else `pa.array` itself,
    which also raises its own error for a value that does not fit.

    `pa.array` imports pandas on its first call, whatever it is given: 0.15-0.25 s of a fresh process, which the
    driver of a local file ingest paid before forking its tasks, and a forked task for a shard's keys and labels.
    """
    n = len(values)
    nulls = sum(v is None for v in values)
    validity = None
    if nulls:
        validity = pa.py_buffer(np.packbits(np.fromiter((v is not None for v in values), np.bool_, n),
                                            bitorder="little"))  # fmt: skip
    if pa.types.is_string(arrow_type) and all(v is None or type(v) is str for v in values):
        data = [b"" if v is None else v.encode() for v in values]
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(np.fromiter(map(len, data), np.int64, n), out=offsets[1:])
        if offsets[-1] < 2**31:
            return pa.Array.from_buffers(arrow_type, n, [validity, pa.py_buffer(offsets.astype(np.int32)),
                                                         pa.py_buffer(b"".join(data))], nulls)  # fmt: skip
    elif pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        dtype = numpy_dtype(arrow_type)
        kinds = (int,) if dtype.kind in "iu" else (int, float)
        if all(v is None or type(v) in kinds for v in values):
            filled = [0 if v is None else v for v in values]
            if dtype.kind == "f" or not filled or np.iinfo(dtype).min <= min(filled) <= max(filled) <= np.iinfo(dtype).max:
                return pa.Array.from_buffers(arrow_type, n, [validity, pa.py_buffer(np.array(filled, dtype))], nulls)
    return pa.array(values, arrow_type)


def numpy_array(values: np.ndarray) -> pa.Array:
    """A 1-d numpy array of integers or floats as an Arrow array over the same memory (`pa.array` imports pandas:
    `plain_array`)."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        return pa.array(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def numbers(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A column of integers or floats as numpy: read from its buffers when it has no nulls (a view of a single
    chunk, read-only), else through pyarrow's own conversion.

    pyarrow's `to_numpy` imports pandas on its first call: 0.3-0.5 s of a fresh Python worker, which a
    scoring task needs for nothing else.
    """
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)) or column.null_count:
        return column.to_numpy(zero_copy_only=False)
    dtype = numpy_dtype(column.type)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [np.frombuffer(c.buffers()[1], dtype, count=c.offset + len(c))[c.offset :] for c in chunks if len(c)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, dtype)
