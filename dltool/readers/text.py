"""The `text` reader: documents from files in class folders, lines of large files, or a table's text column.

It describes the documents: the files or the table, labels, the tokeniser, the tensors. The ingest jobs that
read, tokenise, fit the vocabulary and write the shards are in dltool.ingest.text.
"""

from __future__ import annotations

from dltool.config.readers import TABLE_FORMATS, TextReaderConfig  # noqa: F401  (re-exported)
from dltool.errors import ConfigError, RecordError
from dltool.readers.base import FileReader, TableReader, register
from dltool.shards.codec import TensorSpec

VOCABULARY_FILE = "vocabulary.txt"
ROWS_PER_BATCH = 8192
BYTES_PER_BATCH = 64 << 20  # documents read from files are checked and tokenised in batches up to this size


def tokenizer_for(cfg: TextReaderConfig, output: str | None = None):
    """The tokeniser for `output` (default: the config's; the ingest tells `auto`'s choice)."""
    from dltool.transforms.text import Tokenizer

    output = output or cfg.output
    bag_of_words = output != "sequence" and cfg.split == "whitespace"
    ngrams = cfg.ngrams or (2 if bag_of_words else 1)
    chars = 0 if output == "sequence" else cfg.char_ngrams if cfg.char_ngrams is not None else 4 if bag_of_words else 0
    return Tokenizer(cfg.lowercase, cfg.strip_punctuation, None if cfg.normalize == "none" else cfg.normalize,
                     cfg.split, ngrams, chars)  # fmt: skip


@register
class TextReader(TableReader):
    name = "text"
    task_modules = ("dltool.readers.text", "dltool.ingest.text", "dltool.transforms.text", "pyarrow.parquet",
                    "pyarrow.compute", "pandas")  # fmt: skip
    engine = "text"
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

    def grows(self) -> bool:
        return self.config.format != "table"  # a catalog table has no files to compare

    def label_column(self) -> str | None:
        return self.config.label_column if self.config.format in TABLE_FORMATS else None

    def for_raw_inputs(self, input_uri: str, labelled: bool = False):
        from dltool.config.base import NoLabel

        cfg = self.config
        unlabelled = {"label_column": None} if cfg.format in TABLE_FORMATS else {"label": NoLabel(source="none")}
        return cfg.model_copy(update={"input": input_uri, **({} if labelled else unlabelled)})

    def read(self, stream, relpath: str, path: str, size: int):
        """The documents of one file, streamed from `stream`: (key, where, text), or (key, where, RecordError)
        for one that cannot be read. `format: files`: the file is one document, keyed by its path; `lines`:
        every non-blank line is one, keyed `path:line`, with memory one line deep whatever the file's size."""
        cfg = self.config
        max_bytes = int(cfg.max_file_mb * (1 << 20))
        if cfg.format != "lines":
            if size > max_bytes:
                yield relpath, path, RecordError("read", f"file of {size / (1 << 20):.1f} MB is over max_file_mb "
                                                         f"{cfg.max_file_mb:g}")  # fmt: skip
                return
            yield relpath, path, _decoded(stream.read(), cfg)
            return
        for number, line in enumerate(_binary_lines(stream, max_bytes), start=1):
            if line is not None and not line.strip():
                continue
            where = f"{path}:{number}"
            if line is None:
                yield f"{relpath}:{number}", where, RecordError(
                    "read", f"line is over max_file_mb {cfg.max_file_mb:g} (read no further)")  # fmt: skip
                continue
            yield f"{relpath}:{number}", where, _decoded(line, cfg)

    def tensor_spec(self, vocabulary_size: int, output: str) -> TensorSpec:
        return TensorSpec((self.config.sequence_length,), "int32") if output == "sequence" else \
            TensorSpec((vocabulary_size - 1,), "float32")  # fmt: skip

    def planned(self) -> dict:
        cfg = self.config
        return {"columns": {"text": cfg.text_column if cfg.format in TABLE_FORMATS else f"{cfg.format}: {cfg.input}",
                            "label": cfg.label_column if cfg.format in TABLE_FORMATS else cfg.label.source}}  # fmt: skip

    def source_columns(self, spark, paths: list[str]) -> list[str]:
        return self._frame(spark, paths).columns

    def _frame(self, spark, paths: list[str]):
        from dltool.errors import map_errors

        cfg = self.config
        # A CSV of texts: its header, and quoted texts with their line breaks and doubled quotes (RFC 4180)
        csv = {"header": "true", "multiLine": "true", "escape": '"'} if cfg.format == "csv" else {}
        options = {**csv, **cfg.options}
        with map_errors(f"ingest.input: reading {cfg.input!r} as {cfg.format}"):
            if cfg.format == "table":
                return spark.table(cfg.input)
            return spark.read.format(cfg.format).options(**options).load(paths)


def _decode(data: bytes, encoding: str, errors: str) -> str:
    data = _strip_bom(data, encoding)
    try:
        return data.decode(encoding, errors="strict" if errors == "quarantine" else "replace")
    except UnicodeDecodeError as e:
        raise RecordError("decode", f"bytes that are not valid {encoding} at offset {e.start} "
                                    "(set ingest.encoding, or decode_errors: replace)") from None  # fmt: skip
    except LookupError as e:
        raise ConfigError(f"ingest.encoding: unknown encoding {encoding!r}") from e


def _decoded(data: bytes, cfg: TextReaderConfig) -> str | RecordError:
    """The text of a document, or the RecordError that says why its bytes are not text.

    With `encoding` left out, a file that is not UTF-8 is read in its own encoding, as the csv reader reads one
    (`sniff_encoding`: UTF-16 after its byte-order mark, Notepad's "Unicode"; else cp1252 or latin-1): a folder of
    texts saved over the years holds several. Not a line of a file, and not bytes with a NUL outside UTF-16: those
    are binary, and stay quarantined."""
    try:
        return _decode(data, cfg.encoding, cfg.decode_errors)
    except RecordError as e:
        if "encoding" in cfg.model_fields_set or cfg.format == "lines":
            return e
        from dltool.readers.csv import sniff_encoding

        found = sniff_encoding(data)
        if found == "utf-8" or (found != "utf-16" and b"\x00" in data):
            return e
        try:
            return _decode(data, found, cfg.decode_errors)
        except RecordError:  # a UTF-16 mark before bytes that are not UTF-16: the first error says what to set
            return e


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
