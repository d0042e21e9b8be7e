"""The text reader's ingest: two Spark passes over documents (files, lines of files, or a table's text column).

The first reads the documents (each task reads its files straight from storage, or Spark reads the table),
checks and tokenises them, writes the token lists to a temporary `_typed/` file and counts the train split's
tokens; the driver merges the counts into the vocabulary. The second turns tokens into int32 id sequences (or
TF-IDF vectors) and writes the shards. The vocabulary goes in the manifest, in `vocabulary.txt` (line i is id i)
and, with the tokeniser settings, in `_preprocess.json`, which predict and eval apply to raw text instead of
refitting. The reader (dltool.readers.text) describes the documents; this module runs the jobs.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np

from dltool.errors import ConfigError, RecordError
from dltool.readers.text import (
    BYTES_PER_BATCH,
    ROWS_PER_BATCH,
    TABLE_FORMATS,
    VOCABULARY_FILE,
    tokenizer_for,
)
from dltool.shards.codec import TensorSpec
from dltool.ingest.tables import TYPED
from dltool.shards.sink import FIRST_ERRORS, TaskResult, WrittenShards, on_write_complete
from dltool.storage.manifest import Label



def ingest_text(spark, config, reader, source, files, staging, parallelism, progress, preprocess=None, prefix="part",
                known: dict[str, str] | None = None) -> WrittenShards:  # fmt: skip
    """Read, tokenise, fit (unless `preprocess` names a fitted `_preprocess.json`) and write the shards.

    A dataset's later version (ingest/grow.py) writes into the dataset itself: its shard and error files
    are named `<prefix>-*`, its fitted preprocessing and vocabulary stay as they are, and `known` gives
    the splits of the documents it already held."""
    from dltool.spark.progress import spark_progress
    from dltool.ingest.tables import PREPROCESS, typed_duplicates
    from dltool.storage.fs import open_location
    from dltool.transforms.text import Tokenizer

    cfg = reader.config
    fitted = None if preprocess is None else json.loads(open_location(preprocess).read_bytes())
    classes = None if fitted is None or fitted["labels"] is None else list(fitted["labels"])
    output = cfg.output if fitted is None else fitted["output"]

    def pass_one(output: str):
        """Read and tokenise as `output` needs (as the fitted preprocessing did, when given)."""
        tokenizer = Tokenizer(**fitted["tokenizer"]) if fitted is not None else tokenizer_for(cfg, output)
        tfidf = output == "tf_idf" and fitted is None
        if cfg.format in TABLE_FORMATS:
            summaries, labelled = _read_table(reader, spark, config, source, files, staging, classes, tfidf, tokenizer,
                                              prefix, known)  # fmt: skip
        else:
            summaries, labelled = _read_files(reader, spark, config, source, files, staging, parallelism,
                                              classes, tfidf, tokenizer, prefix, known)  # fmt: skip
        return summaries, labelled, _merge(summaries)

    with spark_progress(spark, f"ingest {config.name}: text, {len(files)} file(s)", progress):
        if output == "auto":
            # Read as a sequence would (words only: the cheap pass); auto picks a bag of words only for a
            # small corpus of short documents, which is then read again with its word pairs.
            summaries, labelled, totals = pass_one("sequence")
            output = auto_output(totals["train_docs"], totals["lengths"]) if totals["train_docs"] else "sequence"
            if output != "sequence":
                staging.child(TYPED).delete()
                staging.child("_errors").delete()
                summaries, labelled, totals = pass_one(output)
        else:
            summaries, labelled, totals = pass_one(output)
        if fitted is None:
            fitted = _fit(reader, totals, labelled, output)
        if prefix == "part":  # a later version applies the dataset's own, which stay as they are
            staging.child(PREPROCESS).write_bytes(json.dumps(fitted).encode())
            staging.child(VOCABULARY_FILE).write_bytes(
                "\n".join(["", "[UNK]", *fitted["vocabulary"]]).encode() + b"\n"
            )  # fmt: skip
        typed = sorted(s["typed"] for s in summaries if s["typed"])
        documents = totals["inputs"] - totals["quarantined"]
        duplicates, drop = typed_duplicates(spark, staging, config.dataset.on_duplicates, documents) \
            if typed else (None, set())  # fmt: skip
        spec = reader.tensor_spec(len(fitted["vocabulary"]) + 2, fitted["output"])
        classes = fitted["labels"] if labelled else None  # raw inputs to predict have none
        task = _shard_task(staging.uri, fitted, classes, spec, list(cfg.passthrough), config.dataset, drop)
        results = spark.sparkContext.parallelize(typed, max(1, len(typed))).map(task).collect() if typed else []
    staging.child(TYPED).delete()
    classes = None if classes is None else tuple(classes)
    return on_write_complete(results, spec, Label("class" if classes else None, classes), totals["inputs"],
                             quarantined=totals["quarantined"], first_errors=totals["first_errors"],
                             duplicates=duplicates, preprocess=PREPROCESS, vocabulary=tuple(fitted["vocabulary"]))  # fmt: skip

def _fit(reader, totals: dict, labelled: bool, output: str) -> dict:
    from dltool.transforms.text import fit_vocabulary, idf_weights

    cfg = reader.config
    if not totals["train_docs"]:
        raise ConfigError(f"{cfg.input}: no valid document falls in the train split; nothing to fit a vocabulary on")
    tokenizer = tokenizer_for(cfg, output)
    tokens = fit_vocabulary(totals["tokens"], cfg.max_tokens, cfg.min_count, CHAR_SHARE if tokenizer.char_ngrams else 0.0)
    fitted = {"reader": "text", "tokenizer": dataclasses.asdict(tokenizer), "vocabulary": tokens,
              "labels": sorted(totals["labels"]) if labelled else None, "output": output,
              "sequence_length": cfg.sequence_length, "truncate": cfg.truncate, "idf": None}  # fmt: skip
    if output == "tf_idf":
        frequency = totals["documents_with"]
        idf = idf_weights(np.asarray([frequency.get(t, 0) for t in tokens], np.int64), totals["train_docs"]).round(6).tolist()
        oov = float(np.average(idf)) if idf else 0.0  # the OOV slot's weight, as Keras pads it: the mean
        fitted["idf"] = [oov, *idf]  # one weight per slot of Vocabulary.counts
    return fitted

def _read_files(reader, spark, config, source, files, staging, parallelism, classes, tfidf, tokenizer, prefix, known):
    """Pass one over files: labels and splits from the paths on the driver, reading and tokenising in tasks."""
    from dltool.shards.sink import error_row, write_errors
    from dltool.ingest.files import assign_files

    cfg = reader.config
    split = config.dataset.split
    per_line = cfg.format == "lines"
    if per_line and split.by == "hash" and (split.stratify or split.group):
        raise ConfigError("dataset.split: format lines splits each line by its own hash; stratify and group "
                          "need format files or a table format")  # fmt: skip
    if cfg.label.source == "none":
        classes = None
    assigned, vocabulary, unplaced = assign_files(config, reader, files, classes, None if per_line else known)
    labelled = vocabulary is not None
    driver_errors = [error_row(f.relpath, f.path, reader.name, e) for f, e in unplaced]
    if driver_errors:
        write_errors(staging.child("_errors", f"{prefix}-driver.parquet"), driver_errors)
    items = [(path, relpath, None if label is None else vocabulary[label], name, size)
             for name, chunk in assigned.items() for path, relpath, label, size in chunk]  # fmt: skip
    summaries = []
    if items:
        tasks = min(len(items), max(1, 2 * parallelism))
        job = _FileJob(cfg, source.uri, staging.uri, split if per_line else None, classes, tfidf, tokenizer, prefix)
        summaries = spark.sparkContext.parallelize(items, tasks).mapPartitionsWithIndex(job.run).collect()
    summaries.append({"typed": None, "quarantined": len(unplaced), "inputs": len(unplaced),
                      "first_errors": driver_errors[:FIRST_ERRORS]})  # fmt: skip
    return summaries, labelled


def _read_table(reader, spark, config, source, files, staging, classes, tfidf, tokenizer, prefix, known):
    """Pass one over a table: Spark reads, numbers and splits the rows; the tasks tokenise them."""
    from pyspark.sql import functions as F

    from dltool.readers.table import with_row_numbers
    from dltool.splits import column, keep_known, with_split
    from dltool.spark.paths import require_s3a, spark_path

    cfg = reader.config
    require_s3a(spark, source, staging)
    paths = [spark_path(source.uri, f.path) for f in files]
    frame = reader._frame(spark, paths)
    split = config.dataset.split
    extra = [c for c in (split.column if split.by == "column" else None, split.group) if c]
    used = [cfg.text_column, *[c for c in (cfg.label_column, cfg.key_column) if c], *cfg.passthrough, *extra]
    missing = [c for c in used if c not in frame.columns]
    if missing:
        raise ConfigError(f"{cfg.input}: columns {missing} named in ingest are not in the data {sorted(frame.columns)}")
    raw = frame.select(*[column(c) for c in dict.fromkeys(used)])
    raw = raw.withColumn("_file", F.input_file_name()).withColumn("_mid", F.monotonically_increasing_id())
    if cfg.key_column and split.by != "path":
        # The key names each row: a record's file is enough, and the pass over the whole table
        # that numbers rows (a sixth of the ingest, measured) is saved.
        where = F.col("_file")
        key = F.coalesce(column(cfg.key_column).cast("string"), F.concat_ws("#", "_file", F.col("_mid").cast("string")))
    else:
        raw, _ = with_row_numbers(spark, raw, dict(zip(paths, (f.relpath for f in files), strict=True)))
        where = F.concat_ws(":", "_relpath", F.col("_row").cast("string"))
        key = F.coalesce(column(cfg.key_column).cast("string"), where) if cfg.key_column else where
    label = column(cfg.label_column).cast("string") if cfg.label_column else None
    raw = keep_known(spark, with_split(raw.withColumn("key", key), F.col("key"), label, split), known, split)
    rows = raw.select(
        F.col("key"), column(cfg.text_column).cast("string").alias("_text"),
        (label if label is not None else F.lit(None).cast("string")).alias("_label"), F.col("split"),
        where.alias("_where"),
        *[column(c).cast("string").alias(f"_p{i}") for i, c in enumerate(cfg.passthrough)],
    )  # fmt: skip
    job = _TableJob(cfg, staging.uri, classes, tfidf, bool(cfg.label_column), tokenizer, prefix)
    summaries = [json.loads(r["summary"]) for r in rows.mapInArrow(job.run, "summary string").collect()]
    return summaries, bool(cfg.label_column)  # counts as JSON objects: _merge adds them up as they are


# -- pass one: documents to token lists ---------------------------------------------------------


class _TypedDocs:
    """One task's checked, tokenised documents: `_typed/<name>.parquet`, its quarantined ones in `_errors/`,
    and the train split's token counts. Documents arrive in batches (a table's) or one at a time (files),
    and are checked and tokenised a batch at a time with Arrow kernels."""

    COLUMNS = ("key", "_text", "_label", "split", "_where")  # then _p0.. (passthrough)

    def __init__(self, cfg, staging_uri: str, name: str, classes, tfidf: bool, labelled: bool, tokenizer):
        self.cfg, self.staging_uri, self.name, self.classes, self.tfidf = cfg, staging_uri, name, classes, tfidf
        self.labelled = labelled
        self.tokenizer = tokenizer
        self.tokens, self.documents_with, self.labels = Counter(), Counter(), Counter()
        self.lengths = Counter()  # train documents per length in tokens (auto output reads words: its median)
        self.errors, self.train_docs, self.inputs = [], 0, 0
        self.writer, self.pending, self.pending_bytes = None, [], 0

    def add(self, key: str, text: str, label: str | None, split: str | None, where: str) -> None:
        """One document read from a file."""
        self.pending.append((key, text, label, split, where))
        self.pending_bytes += len(text)
        if len(self.pending) >= ROWS_PER_BATCH or self.pending_bytes >= BYTES_PER_BATCH:
            self._add_pending()

    def quarantine(self, key: str, where: str, error: Exception) -> None:
        from dltool.shards.sink import error_row

        self.inputs += 1
        self.errors.append(error_row(key, where, "text", error))

    def add_batch(self, batch) -> None:
        """Documents as columns COLUMNS (+ passthrough); those empty, binary, unlabelled, of an unknown class
        or unplaced are quarantined with the reason, the rest tokenised, counted and written."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from dltool.transforms.text import token_counts

        self.inputs += batch.num_rows
        key, text, label, split, where = (batch.column(i) for i in range(5))
        problems = [
            (pc.or_kleene(pc.is_null(text), pc.equal(pc.utf8_trim_whitespace(text), "")), "read", "empty document"),
            (pc.match_substring(text, "\x00"), "decode", "binary data: the text holds NUL bytes"),
        ]  # fmt: skip
        if self.labelled:
            problems.append((pc.or_kleene(pc.is_null(label), pc.equal(pc.utf8_trim_whitespace(label), "")), "label",
                             "no label"))  # fmt: skip
        if self.classes is not None:
            unknown = pc.and_(pc.is_valid(label), pc.invert(pc.is_in(label, pa.array(self.classes, pa.string()))))
            problems.append((unknown, "label", None))
        problems.append((pc.is_null(split), "split", "the split rule names no split for it"))
        bad = np.zeros(batch.num_rows, bool)
        for mask, stage, message in problems:
            found = pc.fill_null(mask, False).to_numpy(zero_copy_only=False) & ~bad
            for i in np.flatnonzero(found):
                text_of = message or f"class {label[i].as_py()!r} is not one of the {len(self.classes)} the model knows"
                self.errors.append({"key": key[i].as_py(), "path": where[i].as_py(), "reader": "text", "stage": stage,
                                    "error_class": "RecordError", "message": text_of})  # fmt: skip
            bad |= found
        good = batch.filter(pa.array(~bad)) if bad.any() else batch
        if not good.num_rows:
            return
        tokens = self.tokenizer.token_lists(good.column(1))
        train = pc.equal(good.column(3), "train")
        train_tokens = tokens.filter(train)
        self.train_docs += len(train_tokens)
        lengths = np.minimum(pc.list_value_length(train_tokens).to_numpy(zero_copy_only=False), MAX_LENGTH)
        self.lengths.update(dict(zip(*np.unique(lengths, return_counts=True))))
        self.tokens.update(token_counts(train_tokens))
        if self.tfidf:
            self.documents_with.update(token_counts(train_tokens, per_document=True))
        if self.labelled:
            counted = pc.value_counts(good.column(2))
            self.labels.update(dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())))
        names = ["key", "tokens", "label", "split", "_content", *good.schema.names[5:]]
        self._write(pa.table([good.column(0), tokens, good.column(2), good.column(3), _content_hashes(tokens),
                              *good.columns[5:]], names=names))  # fmt: skip

    def _add_pending(self) -> None:
        import pyarrow as pa

        if self.pending:
            columns = [pa.array(c, pa.string()) for c in zip(*self.pending)]
            self.pending, self.pending_bytes = [], 0
            self.add_batch(pa.RecordBatch.from_arrays(columns, names=list(self.COLUMNS)))

    def _write(self, table) -> None:
        import pyarrow.parquet as pq

        from dltool.storage.fs import open_location

        if self.writer is None:
            self.target = open_location(self.staging_uri).child(TYPED, f"{self.name}.parquet")
            self.target.fs.create_dir(self.target.path.rsplit("/", 1)[0], recursive=True)
            self.writer = pq.ParquetWriter(self.target.path, table.schema, filesystem=self.target.fs, compression="lz4")
        self.writer.write_table(table)

    def close(self) -> dict:
        from dltool.shards.sink import write_errors
        from dltool.storage.fs import open_location

        self._add_pending()
        if self.writer is not None:
            self.writer.close()
        if self.errors:
            write_errors(open_location(self.staging_uri).child("_errors", f"{self.name}.parquet"), self.errors)
        tokens, documents_with = self._top_tokens()
        return {"typed": self.target.uri if self.writer is not None else None, "inputs": self.inputs,
                "quarantined": len(self.errors), "first_errors": self.errors[:FIRST_ERRORS], "tokens": tokens,
                "documents_with": documents_with, "labels": self.labels, "train_docs": self.train_docs,
                "lengths": {int(k): int(v) for k, v in self.lengths.items()}}  # fmt: skip

    def _top_tokens(self) -> tuple[Counter, Counter]:
        """This task's token counts for the driver: all of them, or its most frequent TOKENS_PER_TASK times
        max_tokens when it saw more (every distinct token and n-gram of a hostile corpus would otherwise
        reach the driver). Exact whenever no task sees more; else a token that is rare in every task
        alone may be undercounted."""
        cap = max(TOKENS_PER_TASK * self.cfg.max_tokens, MIN_TOKENS_PER_TASK)
        if len(self.tokens) <= cap:
            return self.tokens, self.documents_with
        tokens = Counter(dict(self.tokens.most_common(cap)))
        return tokens, Counter({t: self.documents_with[t] for t in tokens if t in self.documents_with})


CHAR_SHARE = 0.5  # of the vocabulary, for words' character n-grams (the rest: words and word n-grams)
TOKENS_PER_TASK = 10  # times max_tokens: the distinct tokens a task sends the driver at most
MAX_LENGTH = 100_000  # document lengths (words) are counted up to this: a longer one counts as this long
# output: auto picks a bag of words below this ratio of train documents to their median length in words: the
# rule Google's text classification guide measured over 12 data sets (developers.google.com/machine-learning/guides/
# text-classification/step-2-5), where n-gram models beat sequence models on short documents and small corpora.
SAMPLES_PER_WORD = 1500


def auto_output(train_docs: int, lengths: dict) -> str:
    """`output: auto`'s choice for `train_docs` train documents whose lengths in words are counted in `lengths`."""
    ordered = sorted((int(k), n) for k, n in lengths.items())
    half, seen, median = sum(n for _, n in ordered) / 2, 0, 1
    for length, n in ordered:
        seen += n
        if seen >= half:
            median = max(1, length)
            break
    return "tf_idf" if train_docs / median < SAMPLES_PER_WORD else "sequence"
MIN_TOKENS_PER_TASK = 100_000


class _FileJob:
    """Pass one for files: each task reads its files from storage as the reader's `read` says (a document a
    file, or a line), and tokenises and counts them."""

    def __init__(self, cfg, source_uri, staging_uri, line_split, classes, tfidf, tokenizer, prefix):
        self.cfg, self.source_uri, self.staging_uri = cfg, source_uri, staging_uri
        self.line_split, self.classes, self.tfidf = line_split, classes, tfidf  # line_split: SplitSettings, lines only
        self.tokenizer, self.prefix = tokenizer, prefix

    def run(self, part: int, items):
        from dltool.readers.base import reader_for
        from dltool.splits import split_of
        from dltool.storage.fs import open_location

        cfg = self.cfg
        reader = reader_for(cfg)
        source = open_location(self.source_uri)
        by_hash = self.line_split is not None and self.line_split.by == "hash"  # each line its own split
        docs = _TypedDocs(cfg, self.staging_uri, f"{self.prefix}-{part:05d}", self.classes, self.tfidf,
                          cfg.label.source != "none", self.tokenizer)  # fmt: skip
        for path, relpath, label, split, size in items:
            with source.fs.open_input_stream(path) as f:
                for key, where, text in reader.read(f, relpath, path, size):
                    if isinstance(text, RecordError):
                        docs.quarantine(key, where, text)
                    else:
                        docs.add(key, text, label, split_of(key, self.line_split) if by_hash else split, where)
        yield docs.close()


class _TableJob:
    """Pass one for a table: the mapInArrow function that tokenises the rows Spark read and split."""

    def __init__(self, cfg, staging_uri, classes, tfidf, labelled, tokenizer, prefix):
        self.cfg, self.staging_uri, self.classes, self.tfidf, self.labelled = cfg, staging_uri, classes, tfidf, labelled
        self.tokenizer, self.prefix = tokenizer, prefix

    def run(self, batches):
        import pyarrow as pa
        from pyspark import TaskContext

        docs = _TypedDocs(self.cfg, self.staging_uri, f"{self.prefix}-{TaskContext.get().partitionId():05d}",
                          self.classes, self.tfidf, self.labelled, self.tokenizer)  # fmt: skip
        for batch in batches:
            docs.add_batch(batch)
        summary = docs.close()
        summary.update({k: dict(summary[k]) for k in ("tokens", "documents_with", "labels", "lengths")})
        yield pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]})


def _content_hashes(tokens):
    """A 64-bit hash of each document's tokens: copies that differ only in case, punctuation or spacing hash alike."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dltool.transforms.table import string_hashes

    return pa.array(string_hashes(pc.binary_join(tokens, " ")).view(np.int64))


def _merge(summaries: list[dict]) -> dict:
    totals = {"tokens": Counter(), "documents_with": Counter(), "labels": Counter(), "lengths": Counter(),
              "train_docs": 0, "inputs": 0, "quarantined": 0, "first_errors": []}  # fmt: skip
    for s in summaries:
        for k in ("tokens", "documents_with", "labels"):
            totals[k].update(s.get(k, {}))
        totals["lengths"].update({int(k): n for k, n in s.get("lengths", {}).items()})  # JSON made the keys text
        totals["train_docs"] += s.get("train_docs", 0)
        totals["inputs"] += s["inputs"]
        totals["quarantined"] += s["quarantined"]
        totals["first_errors"] += s["first_errors"][: max(0, FIRST_ERRORS - len(totals["first_errors"]))]
    return totals


# -- pass two: token lists to shards ------------------------------------------------------------


def _shard_task(staging_uri, fitted: dict, classes: list[str] | None, spec: TensorSpec, passthrough: list[str], dataset,
                drop: set[int]):  # fmt: skip
    """One task per typed file: ids (or TF-IDF), labels (indexed by `classes`) and keys into per-split shards,
    leaving out the val and test documents whose content is in `drop` (on_duplicates: drop_from_eval)."""
    label_kind = "class" if classes is not None else None

    def write(typed_uri) -> TaskResult:
        import pyarrow as pa

        from dltool.ingest.tables import write_typed
        from dltool.transforms.text import Vocabulary

        vocabulary = Vocabulary(tuple(fitted["vocabulary"]))
        idf = None if fitted["idf"] is None else np.asarray(fitted["idf"], np.float32)
        index = {name: i for i, name in enumerate(classes or [])}

        def encode(rows):
            documents = rows.column("tokens")
            if fitted["output"] == "sequence":
                features = vocabulary.sequences(documents, fitted["sequence_length"], fitted["truncate"])
            else:
                features = vocabulary.counts(documents) if idf is None else vocabulary.counts(documents) * idf
            columns = {}
            if label_kind:
                columns["label"] = pa.array([index[x] for x in rows.column("label").to_pylist()], pa.int32())
            columns["key"] = rows.column("key")
            columns.update({c: rows.column(f"_p{i}") for i, c in enumerate(passthrough)})
            return features, columns

        return write_typed(typed_uri, staging_uri, spec, label_kind, passthrough, dataset, drop, encode,
                           batch_rows=ROWS_PER_BATCH)  # fmt: skip

    return write
