"""ShardFeed.dataset through tf.data: exact signatures, the same values as the numpy feed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dltool.shards.codec import TensorSpec
from dltool.shards.feed import ShardFeed, plan_shares
from tests.conftest import write_dataset

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("cache_mb", [1024, 0])
def test_training_dataset_has_static_batches_and_the_stream_values(tmp_path, cache_mb):
    spec = TensorSpec((4, 5, 3), "uint8")
    manifest, _, _ = write_dataset(tmp_path, [(9, 4), (6, 6)], spec=spec)
    share = plan_shares(str(tmp_path), manifest, "train", 2)[1]
    feed = ShardFeed(str(tmp_path), manifest, share, seed=2, rank=1, cache_mb=cache_mb)
    data = feed.dataset(4, training=True, shuffle_buffer=3, start_batch=1)
    x_spec, y_spec = data.element_spec
    assert (x_spec.shape.as_list(), x_spec.dtype) == ([4, 4, 5, 3], tf.uint8)
    assert (y_spec.shape.as_list(), y_spec.dtype) == ([4], tf.int32)
    policy = data.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.OFF  # the share is already this worker's part
    # No autotuning thread: deleting an iterator waited for its sleep (up to a minute) at every run's end.
    assert data.options().autotune.enabled is False
    expected = itertools.islice(feed.stream(4, shuffle_buffer=3, start_batch=1), 6)
    for (x, y), (ex, ey) in zip(data.take(6), expected, strict=True):
        np.testing.assert_array_equal(x.numpy(), ex)
        np.testing.assert_array_equal(y.numpy(), ey)


def test_scoring_dataset_is_one_ordered_pass(tmp_path):
    manifest, x, y = write_dataset(tmp_path, [(7, 3)], label_kind="regression")
    (share,) = plan_shares(str(tmp_path), manifest, "train", 1)
    data = ShardFeed(str(tmp_path), manifest, share).dataset(3, training=False)
    x_spec, y_spec = data.element_spec
    assert (x_spec.shape.as_list(), x_spec.dtype, y_spec.shape.as_list(), y_spec.dtype) == (
        [None, 2], tf.float32, [None], tf.float32
    )
    batches = list(data)
    assert [len(bx) for bx, _ in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([bx.numpy() for bx, _ in batches]), x)
    np.testing.assert_array_equal(np.concatenate([by.numpy() for _, by in batches]), y)

    unlabelled = ShardFeed(str(tmp_path), manifest, share, with_labels=False).dataset(5, training=True)
    assert unlabelled.element_spec.shape.as_list() == [5, 2]
    assert next(iter(unlabelled)).shape == (5, 2)
