"""The `csv` reader: the `table` reader's column roles over Spark's CSV parser, with per-row parse errors.

Kept as its own reader (not `table` with `format: csv`) because text needs what typed
sources do not: header handling, quoting, an encoding, missing-value spellings, and a
quarantined row for every line the parser cannot split.
"""

from __future__ import annotations

import re

from dltool.config.readers import CsvReaderConfig  # noqa: F401  (re-exported)
from dltool.errors import ConfigError
from dltool.readers.base import register
from dltool.readers.table import CORRUPT, FORMAT_PATTERNS, HEADER_WITHIN, LABEL_SAMPLE, ColumnTableReader


@register
class CsvReader(ColumnTableReader):
    name = "csv"
    config_model = CsvReaderConfig
    # With column pruning Spark tokenises only the used columns, and a row with too few or too
    # many fields is no longer seen as malformed: every field must be read to quarantine it.
    # And files in any encoding Java knows (cp1252: Windows exports), not only Spark 4's short list.
    spark_conf = {"spark.sql.csv.parser.columnPruning.enabled": "false", "spark.sql.legacy.javaCharsets": "true"}
    corrupt_column = CORRUPT

    def __init__(self, config):
        super().__init__(config)
        self._first_bytes: dict[str, bytes | None] = {}  # path -> its first HEAD_BYTES (None: pyarrow cannot open it)
        self._encoding_bytes: dict[str, bytes] = {}  # path -> what its encoding is told by (`encoding_sample`)
        self._titles = 0  # the records above the first file's header (a report's title): each file's are skipped
        self._header_fields: list[str] = []  # that header's fields as written, to find it in each file

    def patterns(self) -> tuple[list[str], list[str]]:
        return FORMAT_PATTERNS["csv"], []

    def encoding(self) -> str:
        return self.config.encoding

    def read_options(self) -> dict:
        cfg = self.config
        # Above a title Spark must read the first line as a record: `header_record` finds the header among them.
        return {"header": str(cfg.header and not self._titles).lower(), "sep": cfg.delimiter, "quote": cfg.quote,
                "escape": cfg.escape, "multiLine": str(bool(cfg.multiline) or wide(cfg.encoding)).lower(),
                "encoding": java_charset(cfg.encoding), "maxCharsPerColumn": str(cfg.max_chars_per_value)}  # fmt: skip

    def explain_failure(self, message: str) -> str | None:
        # The CSV parser overflows its value buffer (univocity: "Index N out of bounds for length N", or
        # "exceeds the maximum number of characters") instead of quarantining the row.
        limit = self.config.max_chars_per_value
        if f"Index {limit} out of bounds for length {limit}" in message or "maximum number of characters" in message:
            return (f"{self.config.input}: a value is longer than max_chars_per_value ({limit:,} characters), "
                    "often an unclosed quote that swallows the rest of the file; fix the file or raise "
                    "ingest.max_chars_per_value")  # fmt: skip
        return None

    def columns(self, spark, paths: list[str], extra: list[str] = ()) -> list[str]:
        """The file's column names: its header (first file), or the config's `columns`."""
        cfg = self.config
        names = self.source_columns(spark, paths)
        used = cfg.named() + list(extra)
        missing = [c for c in used if c not in names]
        if missing:
            where = "header" if cfg.header else "columns"
            # One field holding the names: the file has another delimiter (a European `;`, a tab, a pipe).
            other = next((d for d in (";", "\t", "|", ",") if d != cfg.delimiter and len(names) == 1 and cfg.header
                          and all(c in names[0].split(d) for c in missing)), None)  # fmt: skip
            hint = f"; its fields are split by {other!r}: set ingest.delimiter: {other!r}" if other else ""
            raise ConfigError(f"{paths[0]}: columns {missing} named in the config are not in the {where} {names}{hint}")
        return names

    def source_columns(self, spark, paths: list[str]) -> list[str]:
        cfg = self.config
        if not cfg.header:
            self._head(paths[0])  # finds the delimiter and multiline from the first lines, where left out
            return list(cfg.columns)
        return header_names(self._header(spark, paths[0]))

    def _header(self, spark, path: str) -> list[str]:
        """The first row's fields, read with pyarrow's filesystems (a Spark job costs seconds in a fresh
        session); through Spark where pyarrow cannot open the path (s3a://)."""
        import csv
        import itertools

        head = self._head(path)
        if head is None:
            return spark.read.options(**self.read_options()).csv(path).columns
        records = [next(head, [])]
        try:
            records += itertools.islice(head, SNIFF_LINES - 1)
        except csv.Error:  # a value over the csv module's limit, a quote left open: its rows say so when read
            pass
        self._titles = header_row(records)
        self._header_fields = records[self._titles] if self._titles else []
        return records[self._titles]

    def header_record(self):
        """Where the first file has a title above its header: a Spark condition true for a record that repeats the
        header's fields, which each file's first HEADER_WITHIN records are searched for (the rows up to it are
        skipped); else None."""
        from pyspark.sql import functions as F

        from dltool.splits import column

        if not self._titles:
            return None
        names = header_names(self._header_fields)  # as `columns` names them
        found = F.lit(True)
        for name, field in zip(names, self._header_fields, strict=True):
            found = found & (F.coalesce(column(name), F.lit("")) == field if not field else column(name) == field)
        return found

    def skipped(self) -> list[str]:
        """What the read leaves out of the source: the title above the header, where there is one."""
        if not self._titles:
            return []
        header = self.config.delimiter.join(self._header_fields)
        return [f"{self.config.input}: a title above the header ({header[:60]!r}, record {self._titles + 1} of the first "
                "file): the records above each file's header are skipped"]

    def label_sample(self, spark, paths: list[str]) -> list | str:
        """The label of the rows in the first file's first MB (through Spark where pyarrow cannot open it)."""
        head = self._head(paths[0]) if self.config.header else None
        if head is None:
            return super().label_sample(spark, paths)
        self._header(spark, paths[0])  # a title above the header: its records are no labels
        for _ in range(self._titles):
            next(head, None)
        names = header_names(next(head, []))
        if self.config.label not in names:
            return super().label_sample(spark, paths)  # its message names the missing column
        at = names.index(self.config.label)
        rows = list(head)[:-1]  # the last line may be cut
        return [row[at] for row in rows[:LABEL_SAMPLE] if len(row) == len(names)]

    def _head(self, path: str):
        """A csv.reader over the file's first MB, or None where pyarrow cannot open it."""
        import csv
        import io

        from dltool.errors import StorageError
        from dltool.storage.fs import open_location

        cfg = self.config
        if path not in self._first_bytes:  # read once: the header, the label sample and the sniffing all use it
            try:
                first = open_location(path)
                with first.fs.open_input_stream(first.path, compression="detect") as f:
                    self._first_bytes[path] = f.read(HEAD_BYTES)
                    if "encoding" not in cfg.model_fields_set:
                        self._encoding_bytes[path] = encoding_sample(f, self._first_bytes[path])
            except (ConfigError, StorageError):
                self._first_bytes[path] = None
        data = self._first_bytes[path]
        if data is None:
            return None
        if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # ZIP (xlsx, ods) or OLE2 (xls)
            raise ConfigError(f"{path}: not text but a ZIP or Office file (a spreadsheet workbook?): save it as CSV")
        if "encoding" not in cfg.model_fields_set:  # left out: UTF-8, or what the head says where it is not UTF-8
            self.config = cfg = cfg.model_copy(update={"encoding": sniff_encoding(self._encoding_bytes.get(path, data))})
        head = data.decode(cfg.encoding, errors="replace")
        escape = {} if cfg.escape == cfg.quote else {"escapechar": cfg.escape, "doublequote": False}
        if "delimiter" not in cfg.model_fields_set:  # left out: the file's own, for this read and Spark's after it
            found = sniff_delimiter(head, cfg.quote, escape) or cfg.delimiter
            self.config = cfg = cfg.model_copy(update={"delimiter": found})
        if cfg.multiline is None:  # left out: whether a quoted value spans lines there (a text with its line breaks)
            spans = spans_lines(head, cfg.delimiter, cfg.quote, escape, cut=len(data) == HEAD_BYTES)
            self.config = cfg = cfg.model_copy(update={"multiline": spans})
        return csv.reader(io.StringIO(head), delimiter=cfg.delimiter, quotechar=cfg.quote, **escape)

    def read_raw(self, spark, paths: list[str], extra: list[str]):
        from pyspark.sql import types as T

        names = self.columns(spark, paths, extra)
        self._available = [n for n in names if n not in self.config.exclude]
        schema = T.StructType([T.StructField(n, T.StringType()) for n in names] + [T.StructField(CORRUPT, T.StringType())])
        return (
            spark.read.options(**self.read_options())
            .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT).option("enforceSchema", "true")
            .schema(schema).csv(paths)
        )  # fmt: skip


HEAD_BYTES = 1 << 20  # what `_head` reads of the first file
ENCODING_SCAN = 32 << 20  # how far into a file whose first MB is ASCII `encoding_sample` looks for another byte


def encoding_sample(stream, head: bytes) -> bytes:
    """The bytes to tell a file's encoding by, `head` being its first HEAD_BYTES read from `stream`: `head`, unless it
    is all ASCII (which UTF-8 and cp1252 read alike) and the file goes on; then HEAD_BYTES from the first other byte
    in the first ENCODING_SCAN bytes (a Windows export whose first accent comes late), else `head`."""
    read = len(head)
    if not head.isascii() or read < HEAD_BYTES:
        return head
    while read < ENCODING_SCAN and (chunk := stream.read(HEAD_BYTES)):
        read += len(chunk)
        if not chunk.isascii():
            at = re.search(rb"[\x80-\xff]", chunk).start()
            return chunk[at:] + stream.read(at)
    return head


def spans_lines(head: str, delimiter: str, quote: str, escape: dict, cut: bool = True) -> bool:
    """Whether a value of `head`'s records (less the last where `head` is `cut` from a longer file) holds a line
    break: a quoted one, which Spark reads only with multiLine (and then each file in one task)."""
    import csv
    import io

    try:
        records = list(csv.reader(io.StringIO(head), delimiter=delimiter, quotechar=quote, **escape))
    except csv.Error:  # a malformed head: its rows say so when read
        return False
    whole = records[:-1] if cut else records
    return any("\n" in value or "\r" in value for record in whole for value in record)


def sniff_encoding(head: bytes) -> str:
    """The encoding of a file that begins with `head`: UTF-16 after its byte-order mark (Excel's "Unicode text");
    UTF-8 where `head` decodes as UTF-8 (ASCII does; a character cut at its end is allowed), or where it holds more
    valid non-ASCII characters than bytes UTF-8 cannot decode; else cp1252, the
    encoding of Windows exports in Western Europe and the Americas, or latin-1, which decodes every byte (cp1252
    leaves five undefined)."""
    import codecs

    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head, final=False)
    # Bytes UTF-8 cannot decode, each replaced by U+FFFD; a U+FFFD the file holds (text garbled before it was written:
    # "R<U+FFFD>verie" in Amazon's reviews) is valid UTF-8, EF BF BD, and no sign of another encoding.
    bad = text.count("\ufffd") - head.count("\ufffd".encode())
    # A UTF-8 file with a stray bad byte stays UTF-8 (its row is quarantined, naming the encoding): read as cp1252,
    # its every other accent would be garbled unseen. In a cp1252 file, valid UTF-8 sequences are rare.
    if not bad or bad <= sum(ord(c) > 127 for c in text) - bad:
        return "utf-8"
    try:
        head.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


DELIMITERS = (",", ";", "\t", "|")  # what `sniff_delimiter` tries, in this order
SNIFF_LINES = HEADER_WITHIN  # the records the delimiter and the header are found among


def sniff_delimiter(head: str, quote: str, escape: dict) -> str | None:
    """Of DELIMITERS, the one that splits `head`'s first SNIFF_LINES records (less the last, which may be cut where
    the file goes on) into one number of fields, the most of them, more than one (a tie: the first); None where
    none does. A `;` file with decimal commas (`1,5;2`) is no `,` file: its header has one field by commas."""
    import csv
    import io

    text = "".join(head.splitlines(keepends=True)[: SNIFF_LINES * 4])  # records may span lines (quoted newlines)
    found: dict[str, int] = {}  # delimiter -> the fields of each record, where it splits them alike
    for delimiter in DELIMITERS:
        counts = []
        try:
            for record in csv.reader(io.StringIO(text), delimiter=delimiter, quotechar=quote, **escape):
                counts += [len(record)] if record else []
                if len(counts) > SNIFF_LINES:
                    break
        except csv.Error:  # a quote left open where the text stops
            pass
        counts = counts[:-1] if len(counts) > 2 else counts
        if counts and counts[0] > 1 and all(c == counts[0] for c in counts):
            found[delimiter] = counts[0]
    # The most fields: `a, b` in every line of a headerless tab file splits it alike by commas too.
    return max(found, key=found.get) if found else None


def wide(encoding: str) -> bool:
    """Whether `encoding` writes a line break in more than one byte (UTF-16, UTF-32): Spark splits lines by bytes
    unless it reads each file whole (multiLine)."""
    import codecs

    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def header_row(records: list[list[str]]) -> int:
    """Where the header is among a file's first records: 0, unless a later record looks like a header (two fields
    or more, more than half of them named, none a number, and a record of as many fields after it) and every record
    above it looks like a title: at most half its fields named (`Sales 2024,,,,`, a blank line), or one field where
    the header has more and no other delimiter splits (`Sales 2024`, not the `x;city;label` of a `;` file read by
    commas)."""
    def named(record):
        return sum(bool(v.strip()) for v in record)

    def title(record, width: int) -> bool:
        alone = len(record) == 1 and not any(d in record[0] for d in DELIMITERS)
        return named(record) * 2 <= len(record) or (alone and len(record) < width)

    if not records or not records[0]:
        return 0
    for at in range(1, len(records) - 1):
        record = records[at]
        if len(record) > 1 and named(record) * 2 > len(record) and len(records[at + 1]) == len(record) and not any(
                re.fullmatch(r"[-+]?[\d.,]+%?", v.strip()) for v in record):  # fmt: skip
            return at if all(title(above, len(record)) for above in records[:at]) else 0
    return 0


def java_charset(encoding: str) -> str:
    """The name Java reads `encoding` by: Python's canonical name, where Java spells it otherwise (latin-1 is
    iso8859-1 to Python and ISO-8859-1 to Java; a UTF-8 BOM Spark drops itself)."""
    import codecs

    name = codecs.lookup(encoding).name
    if found := re.fullmatch(r"utf-(16|32)-(le|be)", name):
        return f"UTF-{found[1]}{found[2].upper()}"
    return {"iso8859-1": "ISO-8859-1", "utf-8-sig": "UTF-8"}.get(name, name)


def header_names(fields: list[str]) -> list[str]:
    """A header record's column names: trimmed, without a byte-order mark, unique (`unique_names`); an empty one
    named by its position as Spark names it (`_c0`: the index column of a pandas `to_csv`, which has no name)."""
    return unique_names([n.lstrip("\ufeff").strip() or f"_c{i}" for i, n in enumerate(fields)])


def unique_names(names: list[str]) -> list[str]:
    """A header's names, a repeated one numbered from its second use (x, x, x -> x, x_2, x_3), as spreadsheets
    and joins export them: Spark cannot hold two columns of one name."""
    seen, out = set(names), []
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        if counts[name] > 1:
            k = counts[name]
            while f"{name}_{k}" in seen:
                k += 1
            name = f"{name}_{k}"
            seen.add(name)
        out.append(name)
    return out
