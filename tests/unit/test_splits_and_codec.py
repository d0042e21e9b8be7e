"""Split hashing and the tensor <-> Arrow codec, with no Spark."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dltool.config.models import SplitSettings
from dltool.shards.codec import TensorSpec, decode_tensors, encode_tensors, numbers, plain_array
from dltool.shards.writer import ShardWriter, shard_schema
from dltool.splits import split_of, split_point
from dltool.storage.fs import open_location


def test_split_is_a_pure_function_of_the_key():
    keys = [f"class{i % 3}/img_{i:05d}.png" for i in range(5000)]
    settings = SplitSettings(train=0.8, val=0.1, test=0.1)
    first = [split_of(k, settings) for k in keys]
    # Adding and reordering keys never moves an existing one.
    more = keys[::-1] + [f"new/{i}.png" for i in range(1000)]
    again = dict(zip(more, (split_of(k, settings) for k in more)))
    assert first == [again[k] for k in keys]
    counts = {s: first.count(s) / len(first) for s in ("train", "val", "test")}
    assert counts["train"] == pytest.approx(0.8, abs=0.03)
    assert counts["val"] == pytest.approx(0.1, abs=0.02)


def test_salt_reshuffles_and_points_are_known():
    assert split_point("a") == int("0cc175b9", 16) / 2**32  # md5("a") starts 0cc175b9
    assert split_point("a", salt="x") != split_point("a")


@pytest.mark.parametrize("dtype,shape", [("uint8", (4, 5, 3)), ("float32", (7,)), ("float32", (3, 2, 1))])
def test_codec_round_trip(dtype, shape):
    spec = TensorSpec(shape, dtype)
    batch = (np.arange(6 * spec.size) % 251).astype(dtype).reshape((6, *shape))
    column = encode_tensors(batch, spec)
    assert column.type == (pa.binary() if dtype == "uint8" else pa.list_(pa.float32()))
    np.testing.assert_array_equal(decode_tensors(column, spec), batch)
    np.testing.assert_array_equal(decode_tensors(column.slice(2, 3), spec), batch[2:5])


@pytest.mark.parametrize("kind", [pa.int32(), pa.int64(), pa.uint8(), pa.float16(), pa.float32(), pa.float64()])
def test_numbers_read_from_buffers_equal_pyarrows_conversion(kind):
    column = pa.chunked_array([pa.array(np.arange(10) % 7, kind).slice(3, 5), pa.array([], kind), pa.array([4, 5], kind)])
    for array in (column, column.chunk(0), pa.chunked_array([column.chunk(0)]), pa.chunked_array([], kind)):
        got = numbers(array)
        assert got.dtype == array.type.to_pandas_dtype()
        np.testing.assert_array_equal(got, array.to_numpy())
    with_nulls = pa.chunked_array([pa.array([1.5, None, 2.5], pa.float32())])
    np.testing.assert_array_equal(numbers(with_nulls), [1.5, np.nan, 2.5])


@pytest.mark.parametrize("values,kind", [
    (["a", "bé", None, ""], pa.string()), ([], pa.string()), ([None, None], pa.string()), ([3, None, -1], pa.int32()),
    ([2**40, 0], pa.int64()), ([1.5, None, 2], pa.float32()), ([1, 2.25], pa.float64()), ([7], pa.uint8()),
    ([np.int64(3), 4], pa.int32()), ([[1], None], pa.list_(pa.int64())),  # not built from buffers: pa.array's
])  # fmt: skip
def test_plain_arrays_equal_pyarrows_own(values, kind):
    array = plain_array(values, kind)
    array.validate(full=True)
    assert array.equals(pa.array(values, kind)) and array.null_count == sum(v is None for v in values)


@pytest.mark.parametrize("values,kind", [([2**40], pa.int32()), ([-1], pa.uint8()), ([True], pa.int32()), ([1], pa.string())])
def test_a_plain_array_of_values_that_do_not_fit_raises_as_pyarrow_does(values, kind):
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)):
        plain_array(values, kind)


def test_codec_names_field_expected_and_actual():
    spec = TensorSpec((4,), "float32")
    column = pa.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match=r"features: expected 4 values per row for shape \[4\], got 6 in 2 rows"):
        decode_tensors(column, spec)
    with pytest.raises(ValueError, match=r"features: expected shape \[4\] dtype float32, got \[3\] float32"):
        encode_tensors(np.zeros((2, 3), np.float32), spec)


def test_shard_writer_row_groups_and_metadata(tmp_path):
    spec = TensorSpec((8, 8, 3), "uint8")
    target = open_location(str(tmp_path / "train" / "part-00000.parquet"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    with ShardWriter(target, shard_schema(spec, "class"), spec, row_group_mb=1, compression="zstd") as writer:
        writer.row_group_rows = 16  # force several row groups
        for i, image in enumerate(images):
            writer.add(image, f"k{i}", i % 3)
    assert writer.rows == 50
    parquet = pq.ParquetFile(target.path)
    assert parquet.num_row_groups == 4
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    # the tensors without a dictionary (it costs time and saves nothing on pixels), the labels with one
    assert [parquet.metadata.row_group(0).column(i).has_dictionary_page for i in range(3)] == [False, True, True]
    meta = json.loads(parquet.schema_arrow.metadata[b"dltool.tensors"])
    assert meta == {"features": {"shape": [8, 8, 3], "dtype": "uint8", "encoding": "binary"}}
    table = parquet.read()
    np.testing.assert_array_equal(decode_tensors(table.column("features"), spec), images)
    assert table.column("label").to_pylist() == [i % 3 for i in range(50)]
    assert table.column("key").to_pylist()[:2] == ["k0", "k1"]


def test_empty_writer_leaves_no_file(tmp_path):
    spec = TensorSpec((2,), "float32")
    target = open_location(str(tmp_path / "val" / "part-00000.parquet"))
    with ShardWriter(target, shard_schema(spec, None), spec, 1, "zstd") as writer:
        pass
    assert writer.rows == 0 and not target.exists()


def test_moments_of_uint8_from_histograms_equal_float_sums():
    import numpy as np

    from dltool.shards.sink import Moments

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 5, 4, 3), dtype=np.uint8)
    exact, floats = Moments(-1), Moments(-1)
    for image in images:
        exact.add(image)
        floats.add(image.astype(np.float32))  # the general path, for float tensors
    values = images.reshape(-1, 3).astype(np.float64)
    assert np.array_equal(exact.result(), np.stack([np.full(3, len(values)), values.sum(0), (values**2).sum(0)]))
    assert np.allclose(floats.result(), exact.result(), rtol=1e-6)
