"""Shard feed benchmark: ShardFeed batches against shuffled numpy batches from memory, same tensors, one run.

What it measures (results in docs/benchmarks.md, "Shard feed"):

- ceiling: the tensors already in one numpy array; per pass a random permutation and one
  fancy-index gather per batch. Nothing a feed that reads storage can beat.
- cached: ShardFeed.stream with the share in its cache (the default for shares under
  cache_mb). The first batch pays for reading and decoding every shard once; that time
  is reported apart, the rate is over the passes after it.
- streamed: ShardFeed.stream with cache_mb=0: every pass reads and decodes the row groups
  again (zstd), shuffling inside a buffer of --shuffle-buffer rows.
- tf.data: ShardFeed.dataset(training=True) over the cached and the streamed feed, iterated
  in eager mode, so it adds from_generator's tensor conversion and the prefetch hand-off.
  Before it, a plain from_generator over the same stream and the in-memory ceiling, both with
  the malloc setting TensorFlow applies with its first generator iterator (ShardFeed.dataset
  undoes it: restore_malloc_thresholds in dltool/shards/feed.py); after it the ceiling again.
- pyarrow alone reading every row group once (features and label, no decode), the floor under
  any streamed pass on this storage.

The data is N image-like uint8 [64, 64, 3] examples (a flat colour, a gradient, noise), in
--shards files with 32 MiB row groups and zstd, as dltool ingest writes them, in a
temporary directory removed at the end. One worker's share is the whole split.

    .venv/bin/python bench/feed.py --rows 20000
    .venv/bin/python bench/feed.py --rows 2000 --passes 2        # quick smoke run
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (64, 64, 3)


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Compressible like small photos: a flat colour, a horizontal gradient and a little noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (n, 1, 1, 3), dtype=np.uint8)
    ramp = np.linspace(0, 40, SHAPE[1], dtype=np.float32).astype(np.uint8)[None, None, :, None]
    noise = rng.integers(0, 16, (n, *SHAPE), dtype=np.uint8)
    return base + ramp + noise, rng.integers(0, 10, n, dtype=np.int32)


def write_shards(root: Path, x: np.ndarray, y: np.ndarray, shards: int):
    """The split as dltool ingest would write it, with a manifest that describes it (placeholders elsewhere)."""
    import pyarrow as pa

    from dltool.shards.codec import TensorSpec, encode_tensors
    from dltool.shards.writer import ShardWriter, shard_schema
    from dltool.storage.fs import open_location
    from dltool.storage.manifest import Counts, Label, Manifest, SplitEntry

    spec = TensorSpec(SHAPE, "uint8")
    schema = shard_schema(spec, "class")
    files = []
    for part, rows in enumerate(np.array_split(np.arange(len(x)), shards)):
        name = f"train/part-{part:05d}.parquet"
        keys = pa.array([f"img_{i:06d}" for i in rows])
        batch = pa.record_batch([encode_tensors(x[rows], spec), pa.array(y[rows]), keys], schema=schema)
        with ShardWriter(open_location(str(root / name)), schema, spec, row_group_mb=32, compression="zstd") as w:
            w.write_table(pa.Table.from_batches([batch]))
        files.append(name)
    return Manifest(
        name="bench-feed", created="", dltool_version="", reader="image", source=str(root), features=spec,
        feature_names=None, label=Label("class", tuple(str(c) for c in range(10))), passthrough=(),
        splits={"train": SplitEntry(len(x), tuple(files), {})},
        counts=Counts(inputs=len(x), ok=len(x), quarantined=0, augmented=0, rows=len(x), left_out_by_patterns=0),
        stats=None, preprocess=None, errors="_errors", config_hash="", input_fingerprint="", ingest={}, status="ok",
    )  # fmt: skip


def rate(batches, batch_size: int, count: int, warmup: int) -> float:
    """Examples per second over `count` batches of an iterator (touching each batch's memory).

    `warmup` batches are taken first and not timed: they build a tf.data pipeline and let the
    allocator and page cache settle, so the first feed measured is not at a disadvantage.
    """
    batches = iter(batches)
    for _ in itertools.islice(batches, warmup):
        pass
    start = time.perf_counter()
    for x, _ in itertools.islice(batches, count):
        np.asarray(x)[:, 0, 0, 0].sum()  # a consumer looks at the batch; tensors become numpy here
    return count * batch_size / (time.perf_counter() - start)


def read_only(root: str, manifest) -> float:
    """Examples per second for pyarrow alone reading every row group once: the floor of a streamed pass."""
    import pyarrow.parquet as pq

    start = time.perf_counter()
    for name in manifest.splits["train"].files:
        parquet = pq.ParquetFile(f"{root}/{name}")
        for group in range(parquet.num_row_groups):
            parquet.read_row_group(group, columns=["features", "label"])
    return manifest.rows("train") / (time.perf_counter() - start)


def in_memory(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(len(x))
        for lo in range(0, len(x) - batch_size + 1, batch_size):
            rows = perm[lo : lo + batch_size]
            yield x[rows], y[rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--passes", type=int, default=3, help="passes over the data timed for each feed")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shuffle-buffer", type=int, default=4096)
    args = ap.parse_args()

    from dltool.shards.feed import ShardFeed, plan_shares

    x, y = make_images(args.rows)
    count = args.passes * args.rows // args.batch
    warmup = args.rows // args.batch  # one pass
    mb = x.nbytes / 2**20
    with tempfile.TemporaryDirectory(prefix="dltool-feed-bench-") as tmp:
        start = time.perf_counter()
        manifest = write_shards(Path(tmp), x, y, args.shards)
        on_disk = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet")) / 2**20
        print(f"{args.rows} examples of {list(SHAPE)} uint8 ({mb:.0f} MB; {on_disk:.0f} MB in {args.shards} zstd "
              f"shards, written in {time.perf_counter() - start:.1f} s); batch {args.batch}, "
              f"{count} batches ({args.passes} passes) timed per feed after a pass of warm-up")  # fmt: skip
        (share,) = plan_shares(tmp, manifest, "train", 1)

        results = {"ceiling (numpy from memory)": rate(in_memory(x, y, args.batch), args.batch, count, warmup)}
        del x, y  # the feeds below hold their own copy

        cached = ShardFeed(tmp, manifest, share, cache_mb=int(mb) + 64)
        stream = cached.stream(args.batch, shuffle_buffer=args.shuffle_buffer)
        start = time.perf_counter()
        next(stream)
        fill = time.perf_counter() - start
        results["ShardFeed.stream, cached"] = rate(stream, args.batch, count, warmup)

        results["pyarrow read_row_group only (no shuffle, no batches)"] = read_only(tmp, manifest)
        streamed = ShardFeed(tmp, manifest, share, cache_mb=0)
        results["ShardFeed.stream, streamed"] = rate(
            streamed.stream(args.batch, shuffle_buffer=args.shuffle_buffer), args.batch, count, warmup
        )

        start = time.perf_counter()
        import tensorflow as tf

        tf_start = time.perf_counter() - start
        # Plain from_generator first: the process still has the malloc setting TensorFlow applies
        # with the first generator iterator; ShardFeed.dataset undoes it for the rows after.
        signature = (tf.TensorSpec((args.batch, *SHAPE), tf.uint8), tf.TensorSpec((args.batch,), tf.int32))
        plain = tf.data.Dataset.from_generator(
            lambda: cached.stream(args.batch, shuffle_buffer=args.shuffle_buffer), output_signature=signature
        ).prefetch(tf.data.AUTOTUNE)
        results["tf.data from_generator(stream), TF's malloc patch"] = rate(plain, args.batch, count, warmup)
        x, y = make_images(args.rows)
        results["ceiling under TF's malloc patch"] = rate(in_memory(x, y, args.batch), args.batch, count, warmup)
        for name, feed in (("cached", cached), ("streamed", streamed)):
            data = feed.dataset(args.batch, training=True, shuffle_buffer=args.shuffle_buffer)
            results[f"ShardFeed.dataset (tf.data), {name}"] = rate(data, args.batch, count, warmup)
        restored = rate(in_memory(x, y, args.batch), args.batch, count, warmup)
        results["ceiling after ShardFeed.dataset restored malloc"] = restored

    ceiling = results["ceiling (numpy from memory)"]
    print(f"cache fill (read + decode all shards, first batch): {fill:.2f} s = {args.rows / fill:,.0f} examples/s; "
          f"tensorflow import: {tf_start:.1f} s")  # fmt: skip
    width = max(map(len, results))
    for name, value in results.items():
        print(f"  {name.ljust(width)}  {value:>10,.0f} examples/s  {value * np.prod(SHAPE) / 2**20:>7,.0f} MB/s  "
              f"ratio {value / ceiling:.2f}")  # fmt: skip
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (data {mb:.0f} MB, "
          f"generated copy + cache + tensorflow)")  # fmt: skip


if __name__ == "__main__":
    main()
