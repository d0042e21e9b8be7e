"""The `ingest:` sections of the built-in readers, and the registry of sections that `ingest:` accepts.

A leaf of the config layer (pydantic and config.base only): the experiment models validate `ingest:` against
these classes without importing a reader, as Keras resolves a registered name without importing its
implementation. A reader registered outside dltool (`dltool.readers.register`) adds its own section here.
"""

from __future__ import annotations

import re
from typing import Callable, Literal, Union

from pydantic import Field, field_validator, model_validator

from dltool.config.base import FileInput, Section

IMAGE_EXTENSIONS = ["*.jpg", "*.jpeg", "*.png", "*.bmp", "*.tif", "*.tiff", "*.webp", "*.gif"]


class Augment(Section):
    """Ingest-time augmentation: `copies` extra randomised copies of each train image."""

    copies: int = Field(0, ge=0, le=32, description="Extra augmented copies of each train example (0: off).")
    flip: bool = Field(False, description="Random horizontal flip.")
    rotate: float = Field(0, ge=0, le=180, description="Random rotation within +/- this many degrees.")
    crop: float = Field(0, ge=0, lt=1, description="Random crop removing up to this fraction of each side, then resize.")
    brightness: float = Field(0, ge=0, le=1, description="Random brightness shift within +/- this fraction of 255.")
    seed: int = Field(0, description="Seed mixed with each record key, so reruns write the same pixels.")


class ImageReaderConfig(FileInput):
    """Images (JPEG, PNG, BMP, TIFF, WebP) decoded with OpenCV."""

    reader: Literal["image"] = Field(description="Selects this reader.")
    include: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS), description="Glob patterns of files to read.")
    size: tuple[int, int] = Field(description="Output [height, width] in pixels.")
    channels: Literal[1, 3, 4] = Field(3, description="1 grayscale, 3 RGB, 4 RGBA.")
    resize: Literal["stretch", "pad", "crop"] = Field(
        "stretch", description="stretch to size; pad: keep aspect and pad; crop: keep aspect and center-crop."
    )
    pad_value: int = Field(0, ge=0, le=255, description="Fill value of the border in pad mode.")
    dtype: Literal["uint8", "float32"] = Field("uint8", description="Stored dtype; float32 scales to [0, 1].")
    max_pixels: int = Field(40_000_000, gt=0, description="Images whose header declares more pixels are quarantined.")
    reduced_decode: bool = Field(
        True, description="Decode a JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling, several times "
        "faster) when that still leaves the resize twice the pixels it keeps, each way; false decodes every pixel.",
    )
    augment: Augment = Augment()

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > 8192:
            raise ValueError("height and width must be between 1 and 8192")
        return value


AUDIO_EXTENSIONS = ["*.wav", "*.flac", "*.ogg", "*.mp3", "*.opus"]


class AudioReaderConfig(FileInput):
    """Audio (WAV, FLAC, OGG, MP3, Opus) decoded with soundfile and resampled with soxr."""

    reader: Literal["audio"] = Field(description="Selects this reader.")
    include: list[str] = Field(default_factory=lambda: list(AUDIO_EXTENSIONS), description="Glob patterns of files to read.")
    sample_rate: int = Field(16000, ge=1000, le=192000, description="Every clip is resampled (soxr, HQ) to this rate.")
    channels: int = Field(1, ge=1, le=8, description="1 mixes down to mono; N keeps N channels (mono is repeated).")
    duration: float = Field(description="Seconds per example; shorter clips are zero-padded.", gt=0, le=600)
    long_clips: Literal["crop", "chunk"] = Field("crop", description="crop keeps the start; chunk makes windows.")
    max_seconds: float = Field(
        3600, gt=0, description="A file longer than this (by its header, read before any sample is decoded) is "
        "quarantined: it bounds the memory one file takes. With long_clips: crop only the kept start is decoded.",
    )
    chunk_hop: float | None = Field(None, gt=0, description="Seconds between chunk starts (default: duration).")
    features: Literal["waveform", "logmel", "mfcc"] = Field(
        "waveform", description="Store the waveform, or a log-mel spectrogram / MFCCs computed at ingest."
    )
    n_fft: int = Field(512, ge=16, le=16384, description="FFT window length in samples (spectrograms).")
    hop_length: int = Field(160, ge=1, description="Samples between spectrogram frames.")
    n_mels: int = Field(40, ge=1, le=512, description="Mel bands.")
    n_mfcc: int = Field(13, ge=1, le=128, description="MFCC coefficients kept (features: mfcc).")
    fmin: float = Field(0.0, ge=0, description="Lowest mel band edge in Hz.")
    fmax: float | None = Field(None, gt=0, description="Highest mel band edge in Hz (default: Nyquist).")

    @model_validator(mode="after")
    def _spectrogram_fits(self):
        if self.features != "waveform" and self.n_fft > round(self.duration * self.sample_rate):
            raise ValueError("n_fft is longer than one example (duration * sample_rate)")
        if self.features == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError("n_mfcc must not exceed n_mels")
        if self.fmax is not None and self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax must not exceed the Nyquist frequency {self.sample_rate / 2:g}")
        return self


CORRUPT = "_corrupt_record"  # the column holding a row the source could not parse (CSV only)
# Columns the ingest adds to each row; a source column of one of these names cannot take a role.
RESERVED = {"key", "split", "_file", "_row", "_relpath", "_label", "_content", "_unit", "_mid", CORRUPT}


def id_like(column: str) -> bool:
    """Whether a column's name says it holds ids: `id`, `customer_id`, `userId`, `Serial No`, `account number`..."""
    lowered = column.lower()
    return lowered in ("id", "key", "uuid", "guid", "index", "idx") or column.endswith(("ID", "Id")) or lowered.endswith(
        tuple(f"{sep}{word}" for sep in "_- " for word in ("id", "key", "uuid", "guid", "idx", "no", "nr", "number")))


def label_task(values: list, na_values=("",)) -> tuple[str, str]:
    """The task a label's values (as text) call for, and why: regression where every present one is a number, more
    than 20 distinct, or more than 10 with decimals among them (`task: auto`, and `dltool guess`)."""
    present = [v.strip() for v in values if v is not None and v.strip() not in na_values]
    try:
        numbers = [float(v) for v in present]
    except ValueError:
        return "classification", "text values"
    if not numbers:
        return "classification", "no values in the rows read"
    finite = [n for n in numbers if abs(n) < float("inf")]  # nan, inf: no value to count
    distinct, decimals = len(set(finite)), any(n != int(n) for n in finite)
    if distinct > 20 or (decimals and distinct > 10):
        return "regression", f"{distinct} distinct numbers"
    return "classification", f"{distinct} distinct values"


class ColumnRoles(Section):
    """What each column of a table is for; shared by the `table` and `csv` readers."""

    numeric: Union[list[str], Literal["auto"]] = Field(
        default_factory=list, description="Numeric feature columns (true/false become 1/0), or auto: every column "
        "whose train values are all numbers (or booleans), except ids (distinct integers named like an id or numbering the rows).",
    )
    categorical: Union[list[str], Literal["auto"]] = Field(
        default_factory=list, description="Categorical feature columns, or auto: every text column with at most "
        "`max_categories` distinct train values.",
    )
    dates: list[str] = Field(
        default_factory=list, description="Date or timestamp columns (ISO 8601, Spark date and timestamp types, or "
        "the format `date_formats` gives): each becomes days since 1970, month, day, weekday and hour features. auto "
        "roles add every such column, and the common other forms (12/31/2020, 31.12.2020, 2020/12/31, Dec 31, 2020, "
        "31-Dec-20; day or month first as the train values show, else month first with slashes); a column named "
        "here without a format gets one the same way.",
    )
    date_formats: dict[str, str] = Field(
        default_factory=dict, description="The strptime format of a `dates` column that is not ISO 8601, e.g. "
        "{sold: '%d/%m/%Y'}; a time of day may follow (13:45, 13:45:30). With %b (month names) commas and periods "
        "are ignored and dashes read as spaces.",
    )
    decimal_comma: list[str] = Field(
        default_factory=list, description="Numeric columns written with a decimal comma and dots grouping thousands "
        "(3,5; 1.234,56; 12,5 %). auto adds a column all of whose train values are such numbers, one at least not a "
        "number with a decimal point.",
    )
    units: dict[str, str] = Field(
        default_factory=dict, description="The unit written after the numbers of a numeric column, e.g. {weight: kg}: "
        "12 kg, 12kg and 12 KGS read as 12 (any case; a plural s for units of 2 letters or more); a unit of a known "
        "kind (bytes, counts like 201k and 19M, length, mass, time) takes the others of its kind, converted (600 g "
        "in kg: 0.6). auto adds a column all of whose train values are numbers, most of them followed by one unit or "
        "by units of one kind (then the most common).",
    )
    missing_values: dict[str, list[str]] = Field(
        default_factory=dict, description="Words read as missing in one column only, e.g. {age: [unknown, n/k]} "
        "(`na_values` holds those of every column). auto roles add them for a column of numbers with a few words "
        "besides (at most 3 distinct, in at most half of its train values), and for a date column with such words: the "
        "column stays numeric, or dates.",
    )
    words: list[str] = Field(
        default_factory=list, description="Free-text columns (names, titles, notes): each word in at least 2 train rows "
        "(the `max_words` most frequent) becomes a 0/1 feature. auto roles add every text column with more than "
        "`max_categories` distinct values.",
    )
    max_categories: int = Field(50, ge=2, description="auto: the most distinct values a categorical column may have.")
    max_words: int | None = Field(
        None, ge=1, description="words: the most words each free-text column keeps. Left out: 5,000, fewer past 10,000 "
        "rows (50 million slots a column at most; never under 100).",
    )
    exclude: list[str] = Field(default_factory=list, description="auto: columns never used as features.")
    categorical_encoding: Literal["onehot", "index"] = Field(
        "onehot", description="One-hot slots per category (plus one for missing/unseen), or the category index."
    )
    impute: Literal["mean", "median", "mode"] = Field("mean", description="Fills missing numeric values.")
    non_finite: Literal["missing", "quarantine"] = Field(
        "missing", description="NaN, inf and -inf in numeric columns: treat as missing (imputed) or quarantine the row."
    )
    scale: bool = Field(False, description="Standardise features at ingest (else the model does it).")
    label: str | None = Field(None, description="Label column.")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="classification: label is a class name; regression: a number; auto: regression where the "
        "label's values are numbers, more than 20 distinct or more than 10 with decimals (in a CSV's first MB, a "
        "table's first 10,000 rows; a float or decimal column), else classification.",
    )
    key_column: str | None = Field(None, description="Unique id column; default: file:row.")
    passthrough: list[str] = Field(default_factory=list, description="Columns copied to the shards as strings.")

    def vector_columns(self) -> list[str]:
        return []

    def auto(self) -> bool:
        return self.numeric == "auto" or self.categorical == "auto"

    def named(self) -> list[str]:
        """The columns the config names for a role (not counting `auto`)."""
        lists = [r for r in (self.numeric, self.categorical) if r != "auto"]
        return [c for r in lists for c in r] + self.dates + self.words + self.vector_columns() + [c for c in (self.label, self.key_column) if c] \
            + self.passthrough  # fmt: skip

    @model_validator(mode="after")
    def _roles_consistent(self):
        if not self.auto() and not any((self.numeric, self.categorical, self.dates, self.words, self.vector_columns())):
            raise ValueError("name at least one feature column in 'numeric', 'categorical', 'dates', 'words' or "
                             "'vectors', or use auto")
        lists = [r for r in (self.numeric, self.categorical) if r != "auto"]
        roles = [c for r in lists for c in r] + self.dates + self.words + self.vector_columns() + ([self.label] if self.label else []) \
            + self.passthrough  # fmt: skip
        reserved = sorted({c for c in [*roles, *([self.key_column] if self.key_column else [])] if c.lower() in RESERVED})
        if reserved:
            raise ValueError(f"columns {reserved}: these names are dltool's own per-row columns; rename them in the data")
        dupes = sorted({c for c in roles if roles.count(c) > 1})
        if dupes:
            raise ValueError(f"columns used twice: {', '.join(dupes)}")
        for c, form in self.date_formats.items():
            if c not in self.dates:
                raise ValueError(f"date_formats: column {c} is not listed in `dates`")
            if not re.search(r"%[Yy]", form) or not re.search(r"%[mbB]", form):
                raise ValueError(f"date_formats: {c}: {form!r} names no year and month (strptime, e.g. '%d/%m/%Y')")
        for c, unit in self.units.items():
            if self.numeric != "auto" and c not in self.numeric and not (c == self.label and self.task != "classification"):
                raise ValueError(f"units: column {c} is not listed in `numeric`")
            if not re.fullmatch(r"[A-Za-z°µ][A-Za-z°µ/²³. ]{0,11}[A-Za-z²³.]?", unit):
                raise ValueError(f"units: {c}: {unit!r} is not a unit (letters, and / . ² ³ or spaces after the first; "
                                 "at most 13 characters)")
        return self


class TableReaderConfig(ColumnRoles):
    """Rows from any Spark source (Parquet, ORC, JSON lines, CSV, Delta, a catalog table); preprocessing fitted on train."""

    reader: Literal["table"] = Field(description="Selects this reader.")
    format: Literal["parquet", "orc", "json", "csv", "delta", "table"] = Field(
        description="Spark's data source; `table`: `input` names a catalog table (database.table)."
    )
    input: str = Field(description="A file or directory of the format (local path or URI), or a table name.")
    options: dict[str, str] = Field(default_factory=dict, description="Options passed to Spark's reader.")
    vectors: list[str] = Field(
        default_factory=list,
        description="Array or ML vector columns (precomputed embeddings): their values become feature slots.",
    )
    na_values: list[str] = Field(default_factory=list, description="Text values read as missing (nulls always are).")

    def vector_columns(self) -> list[str]:
        return list(self.vectors)


class CsvReaderConfig(ColumnRoles):
    """Tabular rows read with Spark's CSV reader; preprocessing fitted on train."""

    reader: Literal["csv"] = Field(description="Selects this reader.")
    input: str = Field(description="A CSV file, or a directory of CSV files.")
    header: bool = Field(True, description="The first line holds column names.")
    columns: list[str] | None = Field(None, description="Column names when the file has no header.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator. Left out: found from the "
                           "first file's first lines (with or without a header): of , ; tab |, the one that splits them "
                           "all into one number of fields, the most (a tie: in that order); else ,.")
    quote: str = Field('"', min_length=1, max_length=1, description="Quote character.")
    escape: str = Field('"', min_length=1, max_length=1, description="Escape inside quotes (RFC 4180 doubles the quote).")
    multiline: bool | None = Field(None, description="Allow quoted values that span lines. Left out: true where a "
                                   "quoted value in the first file's first MB spans lines.")
    encoding: str = Field("utf-8", description="Text encoding of the file (Python's or Java's name: utf-8, cp1252, "
                          "latin-1, utf-16...). Left out: UTF-8, unless the first file's first MB (or, after a first MB "
                          "of ASCII, the MB from its first other byte) is not UTF-8: then UTF-16 after its byte-order "
                          "mark, else cp1252 (Windows exports), else latin-1.")
    max_chars_per_value: int = Field(
        1 << 20, ge=1024, description="The longest value a field may hold (characters): it bounds the memory one "
        "row takes (an unclosed quote would otherwise read the rest of the file into one value).",
    )
    na_values: list[str] = Field(
        default_factory=lambda: ["", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "null", "NULL", "None", "#N/A",
                                 "#N/A N/A", "#NA", "<NA>", "?"],
        description="Values read as missing: by default pandas' list (spreadsheets' `#N/A`, Python's `None`) and `?`.",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (utf-8, cp1252, latin-1, utf-16...)") from None
        return value

    @model_validator(mode="after")
    def _header_or_columns(self):
        if not self.header and not self.columns:
            raise ValueError("a file without header needs 'columns'")
        return self


TABLE_FORMATS = {"json": ["*.json", "*.jsonl", "*.ndjson"], "csv": ["*.csv", "*.tsv"], "parquet": ["*.parquet"],
                 "orc": ["*.orc"], "table": []}  # fmt: skip


class TextReaderConfig(FileInput):
    """Documents (reviews, tickets, logs) tokenised on Spark with a vocabulary fitted on the train split."""

    reader: Literal["text"] = Field(description="Selects this reader.")
    format: Literal["files", "lines", "json", "csv", "parquet", "orc", "table"] = Field(
        "files", description="files: one document per file; lines: one per line of each file (streamed); "
        "json, csv, parquet, orc: a text column of those files; table: a catalog table named by input.",
    )
    include: list[str] | None = Field(None, description="Glob patterns of files to read (default: *.txt, or the format's).")
    encoding: str = Field("utf-8", description="Text encoding of files and lines (a UTF-8 or UTF-16 BOM is dropped); "
                          "left out, a file that is not UTF-8 is read as UTF-16 after its BOM, else cp1252 or latin-1.")
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
    char_ngrams: int | None = Field(
        None, ge=0, le=6, description="A bag of words also counts each word's character n-grams of 2 to this many "
        "characters (fastText's subwords: misspelt and inflected words share features), in half of max_tokens; 0: "
        "off; default: 4 for a bag of words (tf_idf, count) of words, else 0 (token-id sequences have none).",
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

    @model_validator(mode="before")
    @classmethod
    def _label_names_a_column(cls, data):
        """`label: sentiment` in a table format names the class column, as in the csv and table readers."""
        if isinstance(data, dict) and isinstance(data.get("label"), str):
            if data.get("format") not in TABLE_FORMATS:
                raise ValueError(f"label: {data['label']!r} names a column, which only table formats (json, csv, parquet, "
                                 "orc, table) have; files take {source: parent_dir}, {source: regex, pattern: ...} or "
                                 "{source: none}")  # fmt: skip
            if "label_column" not in data:
                data = {**{k: v for k, v in data.items() if k != "label"}, "label_column": data["label"]}
        return data

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


# ------------------------------------------------------------------------------------------------ the registry

# The sections `ingest:` accepts, by `reader:` name, in the order of `dltool schema` and the reference.
INGEST_SECTIONS: dict[str, type[Section]] = {
    "image": ImageReaderConfig, "audio": AudioReaderConfig, "table": TableReaderConfig, "csv": CsvReaderConfig,
    "text": TextReaderConfig,
}  # fmt: skip
_LISTENERS: list[Callable[[], None]] = []


def add_section(model: type[Section]) -> None:
    """Make `model` (with a `reader: Literal[NAME]` field) the section of `ingest.reader: NAME`."""
    tag = model.model_fields.get("reader")
    names = getattr(tag.annotation, "__args__", ()) if tag is not None else ()
    if len(names) != 1:
        raise TypeError(f"{model.__name__} needs a field `reader: Literal[NAME]`")
    if INGEST_SECTIONS.get(names[0]) is not model:
        INGEST_SECTIONS[names[0]] = model
        _changed()


def remove_section(name: str) -> None:
    if INGEST_SECTIONS.pop(name, None) is not None:
        _changed()


def on_change(listener: Callable[[], None]) -> None:
    """Call `listener` whenever the sections change (the experiment models rebuild their `ingest:` union)."""
    _LISTENERS.append(listener)


def _changed() -> None:
    for listener in _LISTENERS:
        listener()
