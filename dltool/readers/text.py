"""The `text` reader: documents from files in class folders, lines of large files, or a table's text column.

Two Spark passes. The first reads the documents (each task reads its files straight from
storage, or Spark reads the table), checks and tokenises them, writes the token lists to a
temporary `_typed/` file and counts the train split's tokens; the driver merges the counts
into the vocabulary. The second turns tokens into int32 id sequences (or TF-IDF vectors)
and writes the shards. The vocabulary goes in the manifest, in `vocabulary.txt` (line i is
id i) and, with the tokeniser settings, in `_preprocess.json`, which predict and eval apply
to raw text instead of refitting.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from dltool.config.base import FileInput
from dltool.errors import ConfigError, RecordError
from dltool.readers.base import FileReader, TableReader, register
from dltool.shards.codec import TensorSpec

TABLE_FORMATS = {"json": ["*.json", "*.jsonl", "*.ndjson"], "csv": ["*.csv", "*.tsv"], "parquet": ["*.parquet"],
                 "orc": ["*.orc"], "table": []}  # fmt: skip
VOCABULARY_FILE = "vocabulary.txt"
TYPED = "_typed"  # the token lists between the passes; removed before the commit
ROWS_PER_BATCH = 8192
BYTES_PER_BATCH = 64 << 20  # documents read from files are checked and tokenised in batches up to this size


class TextReaderConfig(FileInput):
    """Documents (reviews, tickets, logs) tokenised on Spark with a vocabulary fitted on the train split."""

    reader: Literal["text"] = Field(description="Selects this reader.")
    format: Literal["files", "lines", "json", "csv", "parquet", "orc", "table"] = Field(
        "files", description="files: one document per file; lines: one per line of each file (streamed); "
        "json, csv, parquet, orc: a text column of those files; table: a catalog table named by input.",
    )
    include: list[str] | None = Field(None, description="Glob patterns of files to read (default: *.txt, or the format's).")
    encoding: str = Field("utf-8", description="Text encoding of files and lines (a UTF-8 or UTF-16 BOM is dropped).")
    decode_errors: Literal["quarantine", "replace"] = Field(
        "quarantine", description="Bytes invalid in the encoding: quarantine the document, or replace them with U+FFFD."
    )
    max_file_mb: float = Field(16, gt=0, description="format files: larger files are quarantined unread; format "
                               "lines: a longer line is quarantined, never held whole.")
    text_column: str = Field("text", description="Table formats: the column holding the document.")
    label_column: str | None = Field(None, description="Table formats: the class column (none: unlabelled).")
    key_column: str | None = Field(None, description="Table formats: a unique id column; default file:row.")
    passthrough: list[str] = Field(default_factory=list, description="Table formats: columns copied to the shards.")
    options: dict[str, str] = Field(default_factory=dict, description="Options for Spark's reader (table formats).")
    lowercase: bool = Field(True, description="Lower-case (Unicode) before splitting.")
    strip_punctuation: bool = Field(True, description="Remove ASCII punctuation, as Keras's TextVectorization does.")
    normalize: Literal["none", "NFC", "NFKC"] = Field("none", description="Unicode normalisation applied first.")
    split: Literal["whitespace", "character"] = Field("whitespace", description="Tokens are words or characters.")
    ngrams: int | None = Field(
        None, ge=1, le=5, description="Tokens are all n-grams of 1 to this many words (or characters); default: 2 for "
        "a bag of words (tf_idf, count) of words, else 1.",
    )
    max_tokens: int = Field(20000, ge=3, description="Vocabulary size, padding and out-of-vocabulary ids included.")
    min_count: int = Field(1, ge=1, description="Tokens seen fewer times in train stay out of the vocabulary.")
    output: Literal["auto", "sequence", "tf_idf", "count"] = Field(
        "auto", description="sequence: int32 token ids (text_cnn); tf_idf or count (bag of words): one float per "
        "vocabulary slot (text_mlp); auto: tf_idf when the train documents number fewer than 1,500 times their median "
        "length in words (short documents, small corpora), else sequence.",
    )
    sequence_length: int = Field(200, ge=1, le=100_000, description="Ids per document: longer ones are cut, shorter padded.")
    truncate: Literal["end", "start"] = Field("end", description="Which end of a long document is cut off.")

    @model_validator(mode="after")
    def _format_fields(self):
        table = self.format in TABLE_FORMATS
        if table and "label" in self.model_fields_set:
            raise ValueError(f"format {self.format}: the label comes from `label_column`, not `label`")
        if self.format == "lines" and self.encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32")):
            raise ValueError(f"format lines splits bytes at newlines, which {self.encoding} does not allow: "
                             "convert the files to UTF-8, or use format files")  # fmt: skip
        if not table:
            used = [f for f in ("label_column", "key_column", "passthrough") if f in self.model_fields_set]
            if used:
                raise ValueError(f"{', '.join(used)}: only for table formats (json, csv, parquet, orc, table)")
        return self

    def tokenizer(self, output: str | None = None):
        """The tokeniser for `output` (default: this config's; the ingest tells `auto`'s choice)."""
        from dltool.transforms.text import Tokenizer

        output = output or self.output
        ngrams = self.ngrams or (2 if output != "sequence" and self.split == "whitespace" else 1)
        return Tokenizer(self.lowercase, self.strip_punctuation, None if self.normalize == "none" else self.normalize,
                         self.split, ngrams)  # fmt: skip


@register
class TextReader(TableReader):
    name = "text"
    task_modules = ("dltool.readers.text", "dltool.transforms.text", "pyarrow.parquet", "pyarrow.compute")
    config_model = TextReaderConfig
    default_model = "text_cnn"
    label_of = FileReader.label_of

    @classmethod
    def model_for(cls, features: TensorSpec) -> str:
        return "text_cnn" if features.dtype == "int32" else "text_mlp"

    def patterns(self) -> tuple[list[str], list[str]]:
        cfg = self.config
        default = TABLE_FORMATS.get(cfg.format, ["*.txt"])
        return list(cfg.include if cfg.include is not None else default), list(cfg.exclude)

    def inputs(self):
        from dltool.readers.table import TableSourceReader

        if self.config.format == "table":
            return TableSourceReader.inputs(self)
        return super().inputs()

    def labels_from_paths(self) -> bool:
        return self.config.format not in TABLE_FORMATS

    def label_column(self) -> str | None:
        return self.config.label_column if self.config.format in TABLE_FORMATS else None

    def for_raw_inputs(self, input_uri: str, labelled: bool = False):
        from dltool.config.base import NoLabel

        cfg = self.config
        unlabelled = {"label_column": None} if cfg.format in TABLE_FORMATS else {"label": NoLabel(source="none")}
        return cfg.model_copy(update={"input": input_uri, **({} if labelled else unlabelled)})

    def tensor_spec(self, vocabulary_size: int, output: str) -> TensorSpec:
        return TensorSpec((self.config.sequence_length,), "int32") if output == "sequence" else \
            TensorSpec((vocabulary_size - 1,), "float32")  # fmt: skip

    def planned(self) -> dict:
        cfg = self.config
        return {"columns": {"text": cfg.text_column if cfg.format in TABLE_FORMATS else f"{cfg.format}: {cfg.input}",
                            "label": cfg.label_column if cfg.format in TABLE_FORMATS else cfg.label.source}}  # fmt: skip

    def source_columns(self, spark, paths: list[str]) -> list[str]:
        return self._frame(spark, paths).columns

    # -- ingest ---------------------------------------------------------------------------------

    def write(self, spark, config, source, files, staging, parallelism, progress, preprocess=None):
        """Read, tokenise, fit (unless `preprocess` names a fitted `_preprocess.json`) and write the shards."""
        from dltool.spark.progress import spark_progress
        from dltool.spark.table_ingest import PREPROCESS, _duplicates
        from dltool.storage.fs import open_location

        cfg = self.config
        fitted = None if preprocess is None else json.loads(open_location(preprocess).read_bytes())
        classes = None if fitted is None or fitted["labels"] is None else list(fitted["labels"])
        output = cfg.output if fitted is None else fitted["output"]

        def pass_one(output: str):
            """Read and tokenise as `output` needs (as the fitted preprocessing did, when given)."""
            ngrams = fitted["tokenizer"]["ngrams"] if fitted is not None else cfg.tokenizer(output).ngrams
            tfidf = output == "tf_idf" and fitted is None
            if cfg.format in TABLE_FORMATS:
                summaries, labelled = self._read_table(spark, config, source, files, staging, classes, tfidf, ngrams)
            else:
                summaries, labelled = self._read_files(spark, config, source, files, staging, parallelism,
                                                       classes, tfidf, ngrams)  # fmt: skip
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
                fitted = self._fit(totals, labelled, output)
            staging.child(PREPROCESS).write_bytes(json.dumps(fitted).encode())
            staging.child(VOCABULARY_FILE).write_bytes(
                "\n".join(["", "[UNK]", *fitted["vocabulary"]]).encode() + b"\n"
            )  # fmt: skip
            typed = sorted(s["typed"] for s in summaries if s["typed"])
            documents = totals["inputs"] - totals["quarantined"]
            duplicates, drop = _duplicates(spark, staging, config.dataset.on_duplicates, documents) \
                if typed else (None, set())  # fmt: skip
            spec = self.tensor_spec(len(fitted["vocabulary"]) + 2, fitted["output"])
            classes = fitted["labels"] if labelled else None  # raw inputs to predict have none
            task = _shard_task(staging.uri, fitted, classes, spec, list(cfg.passthrough), config.dataset, drop)
            written = spark.sparkContext.parallelize(typed, max(1, len(typed))).flatMap(task).collect() if typed else []
        staging.child(TYPED).delete()
        return _written(written, fitted, classes, spec, totals, duplicates)

    def _fit(self, totals: dict, labelled: bool, output: str) -> dict:
        from dltool.transforms.text import fit_vocabulary, idf_weights

        cfg = self.config
        if not totals["train_docs"]:
            raise ConfigError(f"{cfg.input}: no valid document falls in the train split; nothing to fit a vocabulary on")
        tokens = fit_vocabulary(totals["tokens"], cfg.max_tokens, cfg.min_count)
        fitted = {"reader": "text", "tokenizer": dataclasses.asdict(cfg.tokenizer(output)), "vocabulary": tokens,
                  "labels": sorted(totals["labels"]) if labelled else None, "output": output,
                  "sequence_length": cfg.sequence_length, "truncate": cfg.truncate, "idf": None}  # fmt: skip
        if output == "tf_idf":
            frequency = totals["documents_with"]
            idf = idf_weights(np.asarray([frequency.get(t, 0) for t in tokens], np.int64), totals["train_docs"]).round(6).tolist()
            oov = float(np.average(idf)) if idf else 0.0  # the OOV slot's weight, as Keras pads it: the mean
            fitted["idf"] = [oov, *idf]  # one weight per slot of Vocabulary.counts
        return fitted

    def _read_files(self, spark, config, source, files, staging, parallelism, classes, tfidf, ngrams):
        """Pass one over files: labels and splits from the paths on the driver, reading and tokenising in tasks."""
        from dltool.spark.ingest import _assign, _error_row, _write_errors

        cfg = self.config
        split = config.dataset.split
        per_line = cfg.format == "lines"
        if per_line and split.by == "hash" and (split.stratify or split.group):
            raise ConfigError("dataset.split: format lines splits each line by its own hash; stratify and group "
                              "need format files or a table format")  # fmt: skip
        if cfg.label.source == "none":
            classes = None
        assigned, vocabulary, unplaced = _assign(config, self, files, classes)
        labelled = vocabulary is not None
        driver_errors = [_error_row(f.relpath, f.path, self.name, e) for f, e in unplaced]
        if driver_errors:
            _write_errors(staging.child("_errors", "part-driver.parquet"), driver_errors)
        items = [(path, relpath, None if label is None else vocabulary[label], name, size)
                 for name, chunk in assigned.items() for path, relpath, label, size in chunk]  # fmt: skip
        summaries = []
        if items:
            tasks = min(len(items), max(1, 2 * parallelism))
            job = _FileJob(cfg, source.uri, staging.uri, split if per_line else None, classes, tfidf, ngrams)
            summaries = spark.sparkContext.parallelize(items, tasks).mapPartitionsWithIndex(job.run).collect()
        summaries.append({"typed": None, "quarantined": len(unplaced), "inputs": len(unplaced),
                          "first_errors": driver_errors[:5]})  # fmt: skip
        return summaries, labelled

    def _frame(self, spark, paths: list[str]):
        from dltool.errors import map_errors

        cfg = self.config
        options = {**({"header": "true"} if cfg.format == "csv" else {}), **cfg.options}
        with map_errors(f"ingest.input: reading {cfg.input!r} as {cfg.format}"):
            if cfg.format == "table":
                return spark.table(cfg.input)
            return spark.read.format(cfg.format).options(**options).load(paths)

    def _read_table(self, spark, config, source, files, staging, classes, tfidf, ngrams):
        """Pass one over a table: Spark reads, numbers and splits the rows; the tasks tokenise them."""
        from pyspark.sql import functions as F

        from dltool.readers.table import _with_row_numbers
        from dltool.spark.splits import column, with_split
        from dltool.spark.table_ingest import require_s3a, spark_path

        cfg = self.config
        require_s3a(spark, source, staging)
        paths = [spark_path(source.uri, f.path) for f in files]
        frame = self._frame(spark, paths)
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
            raw, _ = _with_row_numbers(spark, raw, dict(zip(paths, (f.relpath for f in files), strict=True)))
            where = F.concat_ws(":", "_relpath", F.col("_row").cast("string"))
            key = F.coalesce(column(cfg.key_column).cast("string"), where) if cfg.key_column else where
        label = column(cfg.label_column).cast("string") if cfg.label_column else None
        raw = with_split(raw.withColumn("key", key), F.col("key"), label, split)
        rows = raw.select(
            F.col("key"), column(cfg.text_column).cast("string").alias("_text"),
            (label if label is not None else F.lit(None).cast("string")).alias("_label"), F.col("split"),
            where.alias("_where"),
            *[column(c).cast("string").alias(f"_p{i}") for i, c in enumerate(cfg.passthrough)],
        )  # fmt: skip
        job = _TableJob(cfg, staging.uri, classes, tfidf, bool(cfg.label_column), ngrams)
        summaries = [json.loads(r["summary"]) for r in rows.mapInArrow(job.run, "summary string").collect()]
        return summaries, bool(cfg.label_column)  # counts as JSON objects: _merge adds them up as they are


# -- pass one: documents to token lists ---------------------------------------------------------


class _TypedDocs:
    """One task's checked, tokenised documents: `_typed/part-N.parquet`, its quarantined ones in `_errors/`,
    and the train split's token counts. Documents arrive in batches (a table's) or one at a time (files),
    and are checked and tokenised a batch at a time with Arrow kernels."""

    COLUMNS = ("key", "_text", "_label", "split", "_where")  # then _p0.. (passthrough)

    def __init__(self, cfg, staging_uri: str, part: int, classes, tfidf: bool, labelled: bool, ngrams: int):
        self.cfg, self.staging_uri, self.part, self.classes, self.tfidf = cfg, staging_uri, part, classes, tfidf
        self.labelled = labelled
        self.tokenizer = dataclasses.replace(cfg.tokenizer(), ngrams=ngrams)
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
        from dltool.spark.ingest import _error_row

        self.inputs += 1
        self.errors.append(_error_row(key, where, "text", error))

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
            self.target = open_location(self.staging_uri).child(TYPED, f"part-{self.part:05d}.parquet")
            self.target.fs.create_dir(self.target.path.rsplit("/", 1)[0], recursive=True)
            self.writer = pq.ParquetWriter(self.target.path, table.schema, filesystem=self.target.fs, compression="lz4")
        self.writer.write_table(table)

    def close(self) -> dict:
        from dltool.spark.ingest import _write_errors
        from dltool.storage.fs import open_location

        self._add_pending()
        if self.writer is not None:
            self.writer.close()
        if self.errors:
            _write_errors(open_location(self.staging_uri).child("_errors", f"part-{self.part:05d}.parquet"), self.errors)
        tokens, documents_with = self._top_tokens()
        return {"typed": self.target.uri if self.writer is not None else None, "inputs": self.inputs,
                "quarantined": len(self.errors), "first_errors": self.errors[:5], "tokens": tokens,
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
    """Pass one for files: each task reads its files (one document each, or one per line) from storage."""

    def __init__(self, cfg, source_uri, staging_uri, line_split, classes, tfidf, ngrams):
        self.cfg, self.source_uri, self.staging_uri = cfg, source_uri, staging_uri
        self.line_split, self.classes, self.tfidf = line_split, classes, tfidf  # line_split: SplitSettings, lines only
        self.ngrams = ngrams

    def run(self, part: int, items):
        from dltool.storage.fs import open_location

        cfg = self.cfg
        source = open_location(self.source_uri)
        docs = _TypedDocs(cfg, self.staging_uri, part, self.classes, self.tfidf, cfg.label.source != "none", self.ngrams)
        for path, relpath, label, split, size in items:
            try:
                if self.line_split is not None:
                    self._lines(docs, source, path, relpath, label, split)
                    continue
                if size > cfg.max_file_mb * (1 << 20):
                    raise RecordError("read", f"file of {size / (1 << 20):.1f} MB is over max_file_mb {cfg.max_file_mb:g}")
                with source.fs.open_input_stream(path) as f:
                    text = _decode(f.read(), cfg.encoding, cfg.decode_errors)
            except RecordError as e:
                docs.quarantine(relpath, path, e)
                continue
            docs.add(relpath, text, label, split, path)
        yield docs.close()

    def _lines(self, docs, source, path, relpath, label, split) -> None:
        """One document per non-blank line, streamed: memory stays one line deep, whatever the file's size."""
        from dltool.spark.splits import split_of

        cfg = self.cfg
        by_hash = self.line_split.by == "hash"
        max_bytes = int(cfg.max_file_mb * (1 << 20))
        with source.fs.open_input_stream(path) as f:
            for number, line in enumerate(_binary_lines(f, max_bytes), start=1):
                key = f"{relpath}:{number}"
                if line is not None and not line.strip():
                    continue
                try:
                    if line is None:
                        raise RecordError("read", f"line is over max_file_mb {cfg.max_file_mb:g} (read no further)")
                    text = _decode(line, cfg.encoding, cfg.decode_errors)
                except RecordError as e:
                    docs.quarantine(key, f"{path}:{number}", e)
                    continue
                docs.add(key, text, label, split_of(key, self.line_split) if by_hash else split, f"{path}:{number}")


class _TableJob:
    """Pass one for a table: the mapInArrow function that tokenises the rows Spark read and split."""

    def __init__(self, cfg, staging_uri, classes, tfidf, labelled, ngrams):
        self.cfg, self.staging_uri, self.classes, self.tfidf, self.labelled = cfg, staging_uri, classes, tfidf, labelled
        self.ngrams = ngrams

    def run(self, batches):
        import pyarrow as pa
        from pyspark import TaskContext

        docs = _TypedDocs(self.cfg, self.staging_uri, TaskContext.get().partitionId(), self.classes, self.tfidf,
                          self.labelled, self.ngrams)  # fmt: skip
        for batch in batches:
            docs.add_batch(batch)
        summary = docs.close()
        summary.update({k: dict(summary[k]) for k in ("tokens", "documents_with", "labels", "lengths")})
        yield pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]})


def _content_hashes(tokens):
    """A 64-bit hash of each document's tokens: copies that differ only in case, punctuation or spacing hash alike."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    joined = pc.binary_join(tokens, " ").to_pandas()
    return pa.array(pd.util.hash_pandas_object(joined, index=False).to_numpy().view(np.int64))


def _decode(data: bytes, encoding: str, errors: str) -> str:
    data = _strip_bom(data, encoding)
    try:
        return data.decode(encoding, errors="strict" if errors == "quarantine" else "replace")
    except UnicodeDecodeError as e:
        raise RecordError("decode", f"bytes that are not valid {encoding} at offset {e.start} "
                                    "(set ingest.encoding, or decode_errors: replace)") from None  # fmt: skip
    except LookupError as e:
        raise ConfigError(f"ingest.encoding: unknown encoding {encoding!r}") from e


def _strip_bom(data: bytes, encoding: str) -> bytes:
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig") and data.startswith(b"\xef\xbb\xbf"):
        return data[3:]
    return data  # UTF-16 and UTF-32 codecs read and drop their own BOM


def _binary_lines(stream, max_bytes: int, chunk: int = 1 << 20):
    """The lines of a pyarrow input stream without their line ends, read a chunk at a time.

    A line longer than `max_bytes` comes back as None and is never held whole: memory stays
    within a chunk and max_bytes, and time linear, whatever one line's length.
    """
    parts: list[bytes] = []  # the start of the line that crosses chunks
    held, too_long = 0, False
    while True:
        block = stream.read(chunk)
        if not block:
            break
        lines = block.split(b"\n")
        rest = lines.pop()
        if lines:  # the held start ends here
            first = lines[0]
            if too_long or held + len(first) > max_bytes:
                yield None
            else:
                yield (b"".join(parts) + first).rstrip(b"\r")
            for line in lines[1:]:
                yield None if len(line) > max_bytes else line.rstrip(b"\r")
            parts, held, too_long = [], 0, False
        if not too_long:
            held += len(rest)
            too_long = held > max_bytes
            parts = [] if too_long else [*parts, rest]
    if too_long:
        yield None
    elif held:
        yield b"".join(parts).rstrip(b"\r")


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
        totals["first_errors"] += s["first_errors"][: max(0, 5 - len(totals["first_errors"]))]
    return totals


# -- pass two: token lists to shards ------------------------------------------------------------


def _shard_task(staging_uri, fitted: dict, classes: list[str] | None, spec: TensorSpec, passthrough: list[str], dataset,
                drop: set[int]):  # fmt: skip
    """One task per typed file: ids (or TF-IDF), labels (indexed by `classes`) and keys into per-split shards,
    leaving out the val and test documents whose content is in `drop` (on_duplicates: drop_from_eval)."""
    max_rows = max(1, (dataset.shard_mb << 20) // spec.nbytes)
    label_kind = "class" if classes is not None else None

    def write(typed_uri):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from dltool.shards.codec import encode_tensors
        from dltool.shards.writer import shard_schema
        from dltool.spark.splits import SPLITS
        from dltool.spark.table_ingest import _SplitShards, without_copies
        from dltool.storage.fs import open_location
        from dltool.transforms.text import Vocabulary

        vocabulary = Vocabulary(tuple(fitted["vocabulary"]))
        idf = None if fitted["idf"] is None else np.asarray(fitted["idf"], np.float32)
        index = {name: i for i, name in enumerate(classes or [])}
        source = open_location(typed_uri)
        part = int(source.path.rsplit("part-", 1)[1].split(".")[0])
        staging = open_location(staging_uri)
        schema = shard_schema(spec, label_kind, passthrough)
        shards = {s: _SplitShards(staging, s, part, schema, spec, max_rows, dataset, label_kind == "class") for s in SPLITS}
        dropped = 0
        with source.fs.open_input_file(source.path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=ROWS_PER_BATCH):
                batch, gone = without_copies(batch, drop)
                dropped += gone
                for split in SPLITS:
                    rows = batch.filter(pc.equal(batch.column("split"), split))
                    if not rows.num_rows:
                        continue
                    documents = rows.column("tokens")
                    if fitted["output"] == "sequence":
                        features = vocabulary.sequences(documents, fitted["sequence_length"], fitted["truncate"])
                    else:
                        features = vocabulary.counts(documents) if idf is None else vocabulary.counts(documents) * idf
                    columns = {"features": encode_tensors(features, spec)}
                    if label_kind:
                        columns["label"] = pa.array([index[x] for x in rows.column("label").to_pylist()], pa.int32())
                    columns["key"] = rows.column("key")
                    columns.update({c: rows.column(f"_p{i}") for i, c in enumerate(passthrough)})
                    shards[split].write(pa.table(columns))
        for split in SPLITS:
            for name, n, per_class in shards[split].close():
                yield {"split": split, "shard": name, "rows": n, "per_class": per_class}
        yield {"shard": None, "dropped": dropped}

    return write


def _written(written: list[dict], fitted: dict, classes: list[str] | None, spec: TensorSpec, totals: dict, duplicates):
    from dltool.spark.results import WrittenShards
    from dltool.spark.splits import SPLITS
    from dltool.spark.table_ingest import PREPROCESS, _split_entry
    from dltool.storage.manifest import Label

    splits = {s: {"rows": 0, "files": [], "per_class": Counter()} for s in SPLITS}
    dropped = sum(row["dropped"] for row in written if row["shard"] is None)
    for row in written:
        if row["shard"] is None:
            continue
        entry = splits[row["split"]]
        entry["rows"] += row["rows"]
        entry["files"].append(row["shard"])
        entry["per_class"].update(row["per_class"])
    classes = None if classes is None else tuple(classes)
    ok = sum(entry["rows"] for entry in splits.values()) + dropped
    return WrittenShards(
        features=spec, label=Label("class" if classes else None, classes),
        splits={name: _split_entry(entry, classes) for name, entry in splits.items()}, stats=None,
        inputs=totals["inputs"], ok=ok, quarantined=totals["quarantined"], first_errors=tuple(totals["first_errors"]),
        preprocess=PREPROCESS, vocabulary=tuple(fitted["vocabulary"]),
        duplicates=None if duplicates is None else dataclasses.replace(duplicates, dropped=dropped),
    )  # fmt: skip
