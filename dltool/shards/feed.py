"""Feed a split's shards to training and scoring: balanced per-worker shares decoded to numpy batches.

`plan_shares` reads only Parquet footers and cuts a split into one contiguous share of
rows per worker, described by `FeedUnit`s (row ranges of row groups), so it balances
exactly whatever the number of files and row groups. `ShardFeed` decodes one share with
pyarrow + `decode_tensors` and yields batches: one ordered pass (scoring) or an endless
shuffled stream of full batches (training).

The training order is a pure function of (seed, rank, pass): per pass the units are
shuffled, their rows concatenated and cut into windows of `shuffle_buffer` rows, and
each window is permuted by a generator of its own. The order is therefore the same
whether the share is cached in memory or streamed from storage, and a stream can start
at any batch without replaying the ones before it.

Global batches: a feed given the whole split and `workers` > 1 draws the order of the
whole split (independent of the rank) and yields rank r's slice of each global batch, so
W workers train on exactly the batches one worker would: the number of workers changes
where the arithmetic runs, not what the model sees. Each worker then holds the whole
split in memory, so the driver only chooses this when the split fits `cache_mb`.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dltool.errors import ConfigError, DltoolError, InputNotFoundError
from dltool.shards.codec import TensorSpec, decode_tensors, numbers, numpy_dtype
from dltool.storage.fs import Location, open_dataset
from dltool.storage.manifest import Manifest

__all__ = ["FeedUnit", "ShardFeed", "plan_shares", "restore_malloc_thresholds"]

LABEL_TYPES = {"class": pa.int32(), "regression": pa.float32()}
PREFETCH_MB = 64  # the training dataset's read-ahead: as many batches as fit, 2 to 8
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h

Batch = tuple[np.ndarray, "np.ndarray | None"]


@dataclass(frozen=True)
class FeedUnit:
    """Rows [start, stop) of one row group of one shard; plain values, so units pickle to workers."""

    file: str  # relative to the dataset root, as in the manifest's splits.<split>.files
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_shares(dataset_uri: str, manifest: Manifest, split: str, workers: int) -> list[list[FeedUnit]]:
    """One share per rank: rank r gets rows [r*N//W, (r+1)*N//W) of the split in file/row-group order.

    With fewer rows than workers some shares are empty: fine for scoring (`one_pass` yields
    nothing), refused by `ShardFeed.stream`.
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    splits = manifest.splits
    if split not in splits:
        raise ConfigError(f"split '{split}' is not in the dataset (it has: {', '.join(splits) or 'no splits'})")
    entry = splits[split]
    if not entry.rows:
        raise ConfigError(f"split '{split}' has 0 rows; nothing to feed (check dataset.split in the ingest config)")
    dataset = open_dataset(dataset_uri)
    groups = [
        (file, index, rows)
        for file in entry.files
        for index, rows in enumerate(_row_group_rows(dataset.child(*file.split("/")), split, manifest, dataset, file))
    ]
    total = sum(rows for _, _, rows in groups)
    if total != entry.rows:
        raise DltoolError(
            f"{dataset.uri}: split '{split}' has {total} rows in its shards but the manifest says "
            f"{entry.rows}; the dataset changed after ingest, re-run dltool ingest --overwrite"
        )
    bounds = [r * total // workers for r in range(workers + 1)]
    shares: list[list[FeedUnit]] = [[] for _ in range(workers)]
    rank, offset = 0, 0
    for file, index, rows in groups:
        lo, end = offset, offset + rows
        while lo < end:  # a row group may straddle the bounds of several ranks
            while bounds[rank + 1] <= lo:  # skips the empty shares too
                rank += 1
            cut = min(end, bounds[rank + 1])
            shares[rank].append(FeedUnit(file, index, lo - offset, cut - offset))
            lo = cut
        offset = end
    return shares


def _row_group_rows(shard: Location, split: str, manifest: Manifest, dataset: Location, file: str) -> list[int]:
    try:
        with shard.fs.open_input_file(shard.path) as f:
            problem = manifest.shard_problem(dataset, file, f.size())  # a cut or replaced shard, before its footer
            if problem is not None:
                raise DltoolError(f"{problem}: the shard is damaged; check with dltool inspect --verify, "
                                  "re-run dltool ingest --overwrite")  # fmt: skip
            meta = pq.ParquetFile(f).metadata
    except FileNotFoundError as e:
        raise InputNotFoundError(
            f"{shard.uri}: shard of split '{split}' is in the manifest but does not exist; "
            "re-run dltool ingest --overwrite"
        ) from e
    except (OSError, pa.ArrowException) as e:
        raise DltoolError(
            f"{shard.uri}: cannot read the Parquet footer ({_first_line(e)}); the shard is damaged"
        ) from e
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class ShardFeed:
    """Batches of (features, labels) from one worker's share of a split.

    Features keep the stored dtype (uint8 or float32) and the manifest shape; labels are
    int32 class indices or float32 targets, or None when `with_labels` is false. When the
    decoded share fits `cache_mb` it is decoded once, on first use, into one read-only
    array and later passes only permute indices; otherwise every pass reads unit by unit,
    holding about the shuffle buffer plus two row groups (one is read ahead on a thread).
    Treat batches as read-only: some are views of the cache or of Arrow buffers. Build a
    feed inside the worker process; it holds a filesystem handle and a lock, not plain values.
    """

    def __init__(
        self,
        dataset_uri: str,
        manifest: Manifest,
        units: list[FeedUnit],
        *,
        seed: int = 0,
        rank: int = 0,
        workers: int = 1,
        cache_mb: int = 1024,
        with_labels: bool = True,
    ):
        self.location = open_dataset(dataset_uri)
        self.spec = manifest.features
        kind = manifest.label.kind
        if with_labels and kind is None:
            raise ConfigError(f"{self.location.uri}: the dataset has no label column; read it with with_labels=False")
        self.label_type = LABEL_TYPES[kind] if with_labels else None
        self.units = list(units)
        self.rows = sum(unit.rows for unit in self.units)
        self.seed, self.rank, self.workers = seed, rank, workers
        # A share's order is seeded by its rank; the whole split's order is the same on every rank.
        self._order_key = 0 if workers > 1 else rank
        row_bytes = self.spec.nbytes + (self.label_type.byte_width if self.label_type else 0)
        self.nbytes = self.rows * row_bytes  # the share, decoded
        self.cached = self.nbytes <= cache_mb * 2**20
        if workers > 1 and not self.cached:
            raise ConfigError(
                f"{self.location.uri}: global batches over {workers} workers need the split in memory "
                f"({self.rows} rows of {row_bytes} bytes); raise train.cache_mb"
            )
        if workers > 1 and not 0 <= rank < workers:
            raise ConfigError(f"rank {rank} is not one of {workers} workers")
        self._starts = np.cumsum([0] + [unit.rows for unit in self.units])  # each unit's first row in the share
        self._cache: Batch | None = None
        self._cache_lock = threading.Lock()  # tf.data may run two iterators of one feed at once

    # ------------------------------------------------------------------ public

    def one_pass(self, batch_size: int) -> Iterator[Batch]:
        """Every row of the share once, in plan order; the last batch may be short (for scoring)."""
        _check_batch_size(batch_size)
        chunks = [self._cached()] if self.cached else self._read_ahead([(unit, 0) for unit in self.units])
        yield from _rebatch(chunks, batch_size, keep_short=True)

    def stream(
        self, batch_size: int, *, start_pass: int = 0, start_batch: int = 0, shuffle_buffer: int = 4096
    ) -> Iterator[Batch]:
        """Endless full batches for training, passes chained so no batch is short.

        The stream starts `start_batch` batches after the beginning of pass `start_pass`, so a
        resumed run that passes the number of batches it already trained on continues exactly
        where it stopped. `shuffle_buffer` <= 1 keeps the rows of each unit in order.
        """
        _check_batch_size(batch_size)
        if self.rows == 0:
            raise ConfigError(f"{self.location.uri}: rank {self.rank} has an empty share; nothing to train on")
        # With global batches, batch_size is this rank's slice of a batch of batch_size * workers.
        global_batch = batch_size * self.workers
        first_pass, skip = divmod(start_pass * self.rows + start_batch * global_batch, self.rows)
        shuffle = shuffle_buffer > 1
        # Without shuffling, windows only bound memory; one unit's size keeps them cheap.
        window = shuffle_buffer if shuffle else max(unit.rows for unit in self.units)
        passes = zip(itertools.count(first_pass), itertools.chain([skip], itertools.repeat(0)))
        if self.cached:
            x, y = self._cached()
            mine = slice(self.rank * batch_size, (self.rank + 1) * batch_size) if self.workers > 1 else slice(None)
            orders = ((self._pass_order(p, window, shuffle)[s:], None) for p, s in passes)
            for rows, _ in _rebatch(orders, global_batch, keep_short=False):
                rows = rows[mine]
                yield x[rows], None if y is None else y[rows]
        else:
            windows = itertools.chain.from_iterable(self._stream_pass(p, s, window, shuffle) for p, s in passes)
            yield from _rebatch(windows, batch_size, keep_short=False)

    def dataset(
        self,
        batch_size: int,
        *,
        training: bool,
        start_pass: int = 0,
        start_batch: int = 0,
        shuffle_buffer: int = 4096,
    ):
        """A tf.data.Dataset of `stream` (training) or `one_pass` batches, prefetched.

        Elements are (x, y), or x alone without labels. Training batches have a static batch
        dimension. Auto-sharding is off: the share is already this worker's part of the split.
        Iterating it resets glibc's allocation thresholds for the process (see
        `restore_malloc_thresholds`).

        The read-ahead is fixed (PREFETCH_MB) and tf.data's autotuning off: its model thread sleeps
        in periods that double up to a minute, and deleting the iterator waits for the current one to
        end (measured: 0-3 s at the end of an 8-s run, every other tune trial).
        """
        import tensorflow as tf

        _check_batch_size(batch_size)
        batch = batch_size if training else None
        x_spec = tf.TensorSpec((batch, *self.spec.shape), tf.as_dtype(self.spec.dtype))
        signature = x_spec
        if self.label_type is not None:
            signature = (x_spec, tf.TensorSpec((batch,), tf.as_dtype(numpy_dtype(self.label_type))))

        def generator():
            # TensorFlow patches malloc when it makes this dataset's iterator, before this body runs.
            restore_malloc_thresholds()
            if training:
                batches = self.stream(batch_size, start_pass=start_pass, start_batch=start_batch,
                                      shuffle_buffer=shuffle_buffer)  # fmt: skip
            else:
                batches = self.one_pass(batch_size)
            for x, y in batches:
                yield x if self.label_type is None else (x, y)

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        options.autotune.enabled = False
        ahead = int(np.clip(PREFETCH_MB * 2**20 // (batch_size * max(1, self.spec.nbytes)), 2, 8))
        data = tf.data.Dataset.from_generator(generator, output_signature=signature)
        return data.with_options(options).prefetch(ahead)

    # ------------------------------------------------------------------ order

    def _unit_order(self, p: int) -> np.ndarray:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self._order_key, p])).permutation(len(self.units))

    def _window_perm(self, p: int, w: int, n: int) -> np.ndarray:
        # A generator per window (a spawned child of the pass's seed) lets a stream start mid-pass.
        seed = np.random.SeedSequence([self.seed, self._order_key, p], spawn_key=(w,))
        return np.random.default_rng(seed).permutation(n)

    def _pass_order(self, p: int, window: int, shuffle: bool) -> np.ndarray:
        """Pass p as indices into the cache (which holds the units in plan order)."""
        order = np.concatenate([np.arange(self._starts[u], self._starts[u + 1]) for u in self._unit_order(p)])
        if shuffle:
            for w, lo in enumerate(range(0, self.rows, window)):
                part = order[lo : lo + window]
                part[:] = part[self._window_perm(p, w, len(part))]
        return order

    def _stream_pass(self, p: int, skip: int, window: int, shuffle: bool) -> Iterator[Batch]:
        """Pass p read unit by unit, as shuffled windows, from row `skip` on; the same order as _pass_order."""
        w = skip // window
        drop = skip - w * window  # rows of the first window already consumed
        reads, pos = [], 0
        for u in self._unit_order(p):
            unit, start = self.units[u], pos
            pos += unit.rows
            if pos > w * window:  # units wholly before the first window needed are not read at all
                reads.append((unit, max(0, w * window - start)))
        pieces: list[Batch] = []
        held = 0  # rows in pieces
        for rows in self._read_ahead(reads):
            pieces.append(rows)
            held += len(rows[0])
            while held >= window:
                yield _slice(self._window(pieces, window, p, w, shuffle), drop, window)
                w, drop = w + 1, 0
                pieces, held = _after(pieces, window), held - window
        if held:
            yield _slice(self._window(pieces, held, p, w, shuffle), drop, held)

    def _window(self, pieces: list[Batch], n: int, p: int, w: int, shuffle: bool) -> Batch:
        """The first `n` rows of `pieces` as window w of pass p, shuffled: each row is copied once, straight
        to its shuffled place (row i of the window is row perm[i] of the pieces joined)."""
        if len(pieces[0][0]) >= n:  # one piece: a gather
            rows = _slice(pieces[0], 0, n)
            return rows if not shuffle else tuple(None if a is None else a[self._window_perm(p, w, n)] for a in rows)
        if not shuffle:
            return _concat(_before(pieces, n))
        place = np.empty(n, np.intp)
        place[self._window_perm(p, w, n)] = np.arange(n)  # where each row of the joined pieces goes
        out = tuple(None if a is None else np.empty((n, *a.shape[1:]), a.dtype) for a in pieces[0])
        lo = 0
        for piece in _before(pieces, n):
            take = len(piece[0])
            for target, source in zip(out, piece):
                if target is not None:
                    target[place[lo : lo + take]] = source
            lo += take
        return out

    # ------------------------------------------------------------------ reading

    def _read_ahead(self, reads: list[tuple[FeedUnit, int]]) -> Iterator[Batch]:
        """`_read` of each (unit, skip) in order, the next read running on a thread while the caller works.

        pyarrow and numpy release the GIL, so reading and decompressing overlap the shuffle copies.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="dltool-feed") as pool:
            pending: deque = deque()
            for unit, skip in reads:
                pending.append(pool.submit(self._read, unit, skip))
                if len(pending) > 1:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _cached(self) -> Batch:
        with self._cache_lock:
            if self._cache is None:
                x = np.empty((self.rows, *self.spec.shape), self.spec.dtype)
                y = np.empty(self.rows, numpy_dtype(self.label_type)) if self.label_type else None
                for (ux, uy), unit, lo in zip(self._read_ahead([(u, 0) for u in self.units]), self.units, self._starts):
                    x[lo : lo + unit.rows] = ux
                    if y is not None:
                        y[lo : lo + unit.rows] = uy
                for a in (x, y):
                    if a is not None:
                        a.flags.writeable = False  # batches of one_pass are views of the cache
                self._cache = (x, y)
        return self._cache

    def _read(self, unit: FeedUnit, skip: int = 0) -> Batch:
        """The decoded rows [start + skip, stop) of a unit; errors name the file, row group and field."""
        shard = self.location.child(*unit.file.split("/"))
        where = f"{shard.uri} row group {unit.row_group}"
        columns = ["features"] + (["label"] if self.label_type else [])
        try:
            with shard.fs.open_input_file(shard.path) as f:
                parquet = pq.ParquetFile(f)
                missing = [c for c in columns if c not in parquet.schema_arrow.names]
                if missing:
                    raise DltoolError(f"{where}: {missing[0]}: no such column in the shard")
                table = parquet.read_row_group(unit.row_group, columns=columns)
        except FileNotFoundError as e:
            raise InputNotFoundError(f"{shard.uri}: shard does not exist; re-run dltool ingest --overwrite") from e
        except (OSError, pa.ArrowException) as e:
            columns_text = ", ".join(columns)
            raise DltoolError(f"{where}: cannot read {columns_text} ({_first_line(e)}); the shard is damaged") from e
        if table.num_rows < unit.stop:
            raise DltoolError(
                f"{where}: has {table.num_rows} rows, the plan expects {unit.stop}; the dataset changed since "
                "the shares were planned"
            )
        table = table.slice(unit.start + skip, unit.rows - skip)
        features = table.column("features")
        if not _is_encoding(features.type, self.spec):
            raise DltoolError(
                f"{where}: features: expected {self.spec.arrow_type} for dtype {self.spec.dtype}, got {features.type}"
            )
        try:
            x = decode_tensors(features, self.spec)
        except ValueError as e:
            raise DltoolError(f"{where}: {e}") from e
        if not self.label_type:
            return x, None
        label = table.column("label")
        if label.type != self.label_type:
            raise DltoolError(f"{where}: label: expected {self.label_type}, got {label.type}")
        if label.null_count:
            raise DltoolError(f"{where}: label: {label.null_count} null labels")
        return x, numbers(label)


def _is_encoding(column_type: pa.DataType, spec: TensorSpec) -> bool:
    if spec.encoding == "binary":
        return pa.types.is_binary(column_type) or pa.types.is_large_binary(column_type)
    listlike = pa.types.is_list(column_type) or pa.types.is_large_list(column_type)
    listlike = listlike or pa.types.is_fixed_size_list(column_type)
    return listlike and column_type.value_type == spec.arrow_type.value_type


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")


def restore_malloc_thresholds() -> None:
    """Give glibc back the large-allocation thresholds that TensorFlow's from_generator takes away.

    TensorFlow 2.21 sets M_TRIM_THRESHOLD to 128 KiB for the whole process when it makes the
    first from_generator iterator ("Memory patch applied" in the log). Setting it also freezes
    the mmap threshold at 128 KiB, so every batch-sized buffer, numpy's and TensorFlow's, is a
    fresh mmap that page-faults on first touch: numpy gathers and tf.data ran several times
    slower (docs/benchmarks.md, "Shard feed"). 32 and 64 MiB are the values glibc's own
    dynamic thresholds reach on 64-bit Linux. Does nothing off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and others: TensorFlow's patch is glibc-only too
        return
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)


# ---------------------------------------------------------------------- row-aligned tuples
# Chunks are tuples of arrays with the same number of rows (None for absent labels).


def _slice(rows: Batch, lo: int, hi: int) -> Batch:
    return tuple(None if a is None else a[lo:hi] for a in rows)


def _before(pieces: list[Batch], n: int) -> list[Batch]:
    """The first n rows of pieces, as views of them."""
    out, held = [], 0
    for piece in pieces:
        if held >= n:
            break
        out.append(_slice(piece, 0, n - held))
        held += len(out[-1][0])
    return out


def _after(pieces: list[Batch], n: int) -> list[Batch]:
    """pieces without their first n rows, as views of them."""
    out, held = [], 0
    for piece in pieces:
        rows = len(piece[0])
        if held + rows > n:
            out.append(_slice(piece, max(0, n - held), rows))
        held += rows
    return out


def _concat(pieces: list[Batch]) -> Batch:
    if len(pieces) == 1:
        return pieces[0]
    return tuple(None if parts[0] is None else np.concatenate(parts) for parts in zip(*pieces))


def _rebatch(chunks: Iterable[Batch], size: int, keep_short: bool) -> Iterator[Batch]:
    """Cut row-aligned chunks into batches of `size` rows, joining rows across chunk edges.

    Batches inside a chunk are views; only a batch that spans chunks is copied.
    """
    carry: list[Batch] = []
    held = 0
    for chunk in chunks:
        n, pos = len(chunk[0]), 0
        if carry:
            pos = min(size - held, n)
            carry.append(_slice(chunk, 0, pos))
            held += pos
            if held < size:
                continue
            yield _concat(carry)
            carry, held = [], 0
        while n - pos >= size:
            yield _slice(chunk, pos, pos + size)
            pos += size
        if pos < n:
            carry, held = [_slice(chunk, pos, n)], n - pos
    if carry and keep_short:
        yield _concat(carry)
