"""The shard feed: balanced shares from Parquet footers, ordered passes and shuffled streams, with no Spark or TF."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from dltool.errors import ConfigError, DltoolError, InputNotFoundError
from dltool.shards.codec import TensorSpec
from dltool.shards.feed import FeedUnit, ShardFeed, plan_shares
from dltool.storage.manifest import Label
from tests.conftest import write_dataset


def ids(batches):
    """The split row index of every row in a list of batches."""
    return np.concatenate([x[:, 0] for x, _ in batches]).astype(int)


@pytest.fixture
def dataset(tmp_path):
    manifest, x, y = write_dataset(tmp_path, [(10, 4), (7, 7), (5, 2)])  # row groups 4,4,2 | 7 | 2,2,1
    return str(tmp_path), manifest, x, y


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_shares_are_balanced_disjoint_and_cover_the_split(dataset, workers):
    uri, manifest, _, _ = dataset
    shares = plan_shares(uri, manifest, "train", workers)
    assert len(shares) == workers
    sizes = [sum(unit.rows for unit in share) for share in shares]
    assert sizes == [(r + 1) * 22 // workers - r * 22 // workers for r in range(workers)]
    assert max(sizes) - min(sizes) <= 1
    read = [ids(ShardFeed(uri, manifest, share, cache_mb=0).one_pass(4)) for share in shares]
    np.testing.assert_array_equal(np.concatenate(read), np.arange(22))  # in order, each row exactly once


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_fewer_row_groups_than_workers_splits_row_groups(tmp_path, workers):
    manifest, _, _ = write_dataset(tmp_path, [(11, 100)])  # one row group
    shares = plan_shares(str(tmp_path), manifest, "train", workers)
    assert all(len(share) == 1 and share[0].row_group == 0 for share in shares)
    assert [(s[0].start, s[0].stop) for s in shares] == [(r * 11 // workers, (r + 1) * 11 // workers)
                                                         for r in range(workers)]  # fmt: skip
    read = [ids(ShardFeed(str(tmp_path), manifest, share).one_pass(3)) for share in shares]
    np.testing.assert_array_equal(np.concatenate(read), np.arange(11))


def test_units_are_plain_values(dataset):
    import pickle

    uri, manifest, _, _ = dataset
    share = plan_shares(uri, manifest, "train", 2)[1]
    assert pickle.loads(pickle.dumps(share)) == share
    assert share[0] == FeedUnit("train/part-00001.parquet", 0, 1, 7)  # rank 1 starts at row 11 of 22


@pytest.mark.parametrize("cache_mb", [1024, 0])
def test_one_pass_gives_exact_tensors_and_labels_in_order(tmp_path, cache_mb):
    spec = TensorSpec((4, 5, 3), "uint8")
    manifest, x, y = write_dataset(tmp_path, [(9, 4), (6, 6)], spec=spec)
    (share,) = plan_shares(str(tmp_path), manifest, "train", 1)
    feed = ShardFeed(str(tmp_path), manifest, share, cache_mb=cache_mb)
    assert feed.cached == (cache_mb > 0) and feed.rows == 15
    batches = list(feed.one_pass(4))
    assert [len(bx) for bx, _ in batches] == [4, 4, 4, 3]
    assert batches[0][0].dtype == np.uint8 and batches[0][1].dtype == np.int32
    np.testing.assert_array_equal(np.concatenate([bx for bx, _ in batches]), x)
    np.testing.assert_array_equal(np.concatenate([by for _, by in batches]), y)
    again = list(feed.one_pass(15))  # a second pass reads the same rows again
    np.testing.assert_array_equal(again[0][0], x)


def test_without_labels_and_with_regression_labels(tmp_path):
    manifest, x, y = write_dataset(tmp_path / "r", [(5, 5)], label_kind="regression")
    (share,) = plan_shares(str(tmp_path / "r"), manifest, "train", 1)
    (batch,) = ShardFeed(str(tmp_path / "r"), manifest, share).one_pass(8)
    assert batch[1].dtype == np.float32
    np.testing.assert_array_equal(batch[1], y)
    (batch,) = ShardFeed(str(tmp_path / "r"), manifest, share, with_labels=False).one_pass(8)
    assert batch[1] is None
    np.testing.assert_array_equal(batch[0], x)

    manifest, _, _ = write_dataset(tmp_path / "u", [(5, 5)], label_kind=None)
    (share,) = plan_shares(str(tmp_path / "u"), manifest, "train", 1)
    with pytest.raises(ConfigError, match="no label column"):
        ShardFeed(str(tmp_path / "u"), manifest, share)
    batch = next(ShardFeed(str(tmp_path / "u"), manifest, share, with_labels=False).stream(5))
    assert batch[1] is None and len(batch[0]) == 5


def test_reading_shards_leaves_pandas_unimported(tmp_path):
    """A scoring task reads shards without pyarrow's to_numpy, whose first call imports pandas (0.3-0.5 s of a
    fresh Python worker): streamed and cached, list and binary features, class and regression labels."""
    import subprocess
    import sys

    for name, spec, kind in (("f", None, "class"), ("u", TensorSpec((2, 3), "uint8"), "regression")):
        manifest, _, _ = write_dataset(tmp_path / name, [(9, 4), (3, 3)], spec=spec, label_kind=kind)
        (tmp_path / name / "_manifest.json").write_text(json.dumps(manifest.to_json()))
    code = """if True:
        import json, sys
        from pathlib import Path
        from dltool.shards.feed import ShardFeed, plan_shares
        from dltool.storage.manifest import Manifest
        rows = 0
        for name in ("f", "u"):
            root = Path(sys.argv[1]) / name
            manifest = Manifest.from_json(json.loads((root / "_manifest.json").read_text()))
            (share,) = plan_shares(str(root), manifest, "train", 1)
            for cache_mb in (0, 64):
                rows += sum(len(y) for _, y in ShardFeed(str(root), manifest, share, cache_mb=cache_mb).one_pass(5))
        print(rows, "pandas" in sys.modules)"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["48", "False"]


def take(feed, batches, batch_size=4, **kwargs):
    return list(itertools.islice(feed.stream(batch_size, **kwargs), batches))


@pytest.mark.parametrize("cache_mb", [1024, 0])
def test_stream_gives_full_batches_and_every_row_once_per_pass(dataset, cache_mb):
    uri, manifest, _, y = dataset
    share = plan_shares(uri, manifest, "train", 2)[0]  # 11 rows in 3 units
    feed = ShardFeed(uri, manifest, share, seed=3, cache_mb=cache_mb)
    batches = take(feed, 11, shuffle_buffer=4)  # 44 rows: exactly 4 passes, chained across batch edges
    assert all(len(bx) == len(by) == 4 for bx, by in batches)
    rows = ids(batches)
    passes = rows.reshape(4, 11)
    for order in passes:
        assert sorted(order) == list(range(11))
    assert len({tuple(order) for order in passes}) == 4  # each pass has its own order
    np.testing.assert_array_equal(np.concatenate([by for _, by in batches]), y[rows])  # labels stay with rows


def test_order_depends_on_seed_and_rank_only(dataset):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)

    def order(**kwargs):
        return ids(take(ShardFeed(uri, manifest, share, cache_mb=0, **kwargs), 11, batch_size=2))

    np.testing.assert_array_equal(order(seed=1, rank=0), order(seed=1, rank=0))
    assert not np.array_equal(order(seed=1, rank=0), order(seed=1, rank=1))
    assert not np.array_equal(order(seed=1, rank=0), order(seed=2, rank=0))


@pytest.mark.parametrize("shuffle_buffer", [1, 3, 4096])
def test_cached_and_streamed_feeds_give_the_same_batches(dataset, shuffle_buffer):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)
    cached = take(ShardFeed(uri, manifest, share, seed=7, cache_mb=1), 20, batch_size=5, shuffle_buffer=shuffle_buffer)
    streamed = take(ShardFeed(uri, manifest, share, seed=7, cache_mb=0), 20, batch_size=5,
                    shuffle_buffer=shuffle_buffer)  # fmt: skip
    for (cx, cy), (sx, sy) in zip(cached, streamed, strict=True):
        np.testing.assert_array_equal(cx, sx)
        np.testing.assert_array_equal(cy, sy)


def test_shuffle_buffer_of_one_shuffles_units_only(dataset):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)
    first_pass = ids(take(ShardFeed(uri, manifest, share, cache_mb=0), 11, batch_size=2, shuffle_buffer=1))
    assert not np.array_equal(first_pass, np.arange(22))
    starts = np.cumsum([0] + [unit.rows for unit in share])
    for lo, hi in itertools.pairwise(starts):  # each unit's rows arrive together and in order
        at = int(np.flatnonzero(first_pass == lo)[0])
        np.testing.assert_array_equal(first_pass[at : at + hi - lo], np.arange(lo, hi))


@pytest.mark.parametrize("cache_mb", [1024, 0])
def test_a_stream_resumes_exactly_at_any_batch(dataset, cache_mb):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)
    feed = ShardFeed(uri, manifest, share, seed=5, cache_mb=cache_mb)
    whole = ids(take(feed, 30, batch_size=3, shuffle_buffer=4))
    for start in (1, 7, 8, 15):  # mid-window, window edge, mid-pass, across passes (22 rows a pass)
        resumed = ids(take(feed, 30 - start, batch_size=3, shuffle_buffer=4, start_batch=start))
        np.testing.assert_array_equal(resumed, whole[start * 3 :])
    second = ids(take(feed, 11, batch_size=2, shuffle_buffer=4, start_pass=1))
    np.testing.assert_array_equal(second, ids(take(feed, 22, batch_size=2, shuffle_buffer=4))[22:])


def test_cache_decodes_each_unit_once(dataset, monkeypatch):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)
    reads = []
    original = ShardFeed._read

    def counting(self, unit, skip=0):
        reads.append(unit)
        return original(self, unit, skip)

    monkeypatch.setattr(ShardFeed, "_read", counting)
    cached, streamed = (ShardFeed(uri, manifest, share, cache_mb=mb) for mb in (1, 0))
    take(cached, 33, batch_size=2)
    list(cached.one_pass(5))
    assert len(reads) == len(share) == 7
    reads.clear()
    take(streamed, 33, batch_size=2)  # 3 passes
    assert len(reads) == 3 * len(share)


def test_split_errors_name_the_split(dataset):
    uri, manifest, _, _ = dataset
    with pytest.raises(ConfigError, match="split 'test' is not in the dataset") as err:
        plan_shares(uri, manifest, "test", 2)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="split 'val' has 0 rows"):
        plan_shares(uri, manifest, "val", 2)


def test_more_workers_than_rows_leaves_empty_shares_that_cannot_train(dataset):
    uri, manifest, _, _ = dataset
    shares = plan_shares(uri, manifest, "train", 30)
    assert [sum(unit.rows for unit in share) for share in shares] == [(r + 1) * 22 // 30 - r * 22 // 30
                                                                      for r in range(30)]  # fmt: skip
    empty = ShardFeed(uri, manifest, shares[0], rank=0)
    assert empty.rows == 0 and list(empty.one_pass(4)) == []
    with pytest.raises(ConfigError, match="rank 0 has an empty share"):
        next(empty.stream(4))


def test_missing_and_damaged_shards_are_named(dataset, tmp_path):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)
    (tmp_path / "train" / "part-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DltoolError, match=r"train/part-00001\.parquet: cannot read the Parquet footer") as err:
        plan_shares(uri, manifest, "train", 2)
    assert "\n" not in str(err.value)
    with pytest.raises(DltoolError, match=r"train/part-00001\.parquet row group 0: cannot read features, label"):
        list(ShardFeed(uri, manifest, share, cache_mb=0).one_pass(4))
    (tmp_path / "train" / "part-00002.parquet").unlink()
    train = replace(manifest.splits["train"], files=("train/part-00002.parquet",))
    manifest = replace(manifest, splits={**manifest.splits, "train": train})
    with pytest.raises(InputNotFoundError, match=r"train/part-00002\.parquet: shard of split 'train'.*does not exist"):
        plan_shares(uri, manifest, "train", 2)


def test_rows_that_disagree_with_the_manifest_name_file_row_group_and_field(dataset):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)
    wrong_shape = replace(manifest, features=TensorSpec((3,), "float32"))
    with pytest.raises(DltoolError, match=r"part-00000\.parquet row group 0: features: expected 3 values per row"):
        list(ShardFeed(uri, wrong_shape, share).one_pass(4))
    wrong_dtype = replace(manifest, features=TensorSpec((8,), "uint8"))
    with pytest.raises(DltoolError, match=r"row group 0: features: expected binary for dtype uint8, got list<"):
        list(ShardFeed(uri, wrong_dtype, share).one_pass(4))
    wrong_label = replace(manifest, label=Label("regression"))
    with pytest.raises(DltoolError, match=r"part-00000\.parquet row group 0: label: expected float, got int32"):
        list(ShardFeed(uri, wrong_label, share).stream(4))
    manifest = replace(manifest, splits={**manifest.splits, "train": replace(manifest.splits["train"], rows=23)})
    with pytest.raises(DltoolError, match=r"split 'train' has 22 rows in its shards but the manifest says 23"):
        plan_shares(uri, manifest, "train", 1)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("start_batch", [0, 5])
def test_global_batches_split_one_workers_batches_between_ranks(dataset, workers, start_batch):
    """W ranks fed the whole split train on exactly one worker's batches, each rank a slice of them."""
    uri, manifest, _, _ = dataset
    (units,) = plan_shares(uri, manifest, "train", 1)  # what the driver gives every rank
    one = ShardFeed(uri, manifest, units, seed=4, cache_mb=1)
    expected = ids(itertools.islice(one.stream(2 * workers, start_batch=start_batch, shuffle_buffer=8), 12))
    per_rank = [
        ids(itertools.islice(ShardFeed(uri, manifest, units, seed=4, rank=r, workers=workers, cache_mb=1)
                             .stream(2, start_batch=start_batch, shuffle_buffer=8), 12))
        for r in range(workers)
    ]  # fmt: skip
    got = np.stack([rows.reshape(12, 2) for rows in per_rank], axis=1).reshape(-1)  # batch by batch, rank by rank
    np.testing.assert_array_equal(got, expected)


def test_global_batches_need_the_split_in_memory(dataset):
    uri, manifest, _, _ = dataset
    (share,) = plan_shares(uri, manifest, "train", 1)
    with pytest.raises(ConfigError, match="global batches over 2 workers need the split in memory"):
        ShardFeed(uri, manifest, share, rank=1, workers=2, cache_mb=0)
