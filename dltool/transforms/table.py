"""Table rows in Spark tasks: check and type raw fields, fit and apply the preprocessing, with pyarrow and numpy.

Spark parses the source and numbers the rows; everything per field happens here, vectorised
over Arrow batches, so each value is trimmed and parsed once:

- `RowRules.check` quarantines a row at its first problem (file, row, field, message) and
  types the rest: finite float64 or null (a date: its five DATE_PARTS), trimmed categories
  and free text or null, vectors, the label.
- `FitStats` adds up what the preprocessing needs over the train split's typed rows, a
  task at a time (sums, category counts, word row counts, labels, the labels of each numeric
  column's gaps); `FitStats.preprocess` turns the total into a `Preprocess`.
- `Preprocess.features` computes the feature matrix of typed rows. The shard writers and
  predict (with the training dataset's `_preprocess.json`) use the same code.

Feature layout: numeric columns, then each date's parts `col:days` .. `col:hour` (missing
values filled), then a 0/1 slot `col=<missing>` for each of those whose gaps tell of the label
(`informative_gap`), then each categorical column as one-hot slots `col=value` in alphabetical
order plus `col=<other>` (missing or unseen), or as one slot holding the category index
(`<other>` is the last index; spellings that differ only in case, `Basic` and `BASIC`, are
one category, named by its most common spelling), then each free-text column's 0/1 word
slots `col~word` (alphabetical), then the vector columns' values. The numeric slots lead: the `tabular`
model embeds them and takes the rest as they are.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from dltool.errors import ConfigError

OTHER = "<other>"
MISSING = "<missing>"  # the 0/1 slot `column=<missing>` of a numeric column whose gaps tell of the label


def category_names(counts: Counter) -> list[str]:
    """A categorical column's vocabulary from its train value counts: one name per value up to case (its most
    common spelling; ties: the first in sort order), sorted."""
    spellings: dict[str, list[tuple[int, str]]] = {}
    for value, n in counts.items():
        if value is not None:
            spellings.setdefault(value.lower(), []).append((-n, value))
    return sorted(min(group)[1] for group in spellings.values())


def case_free(vocab) -> bool:
    """Whether values meet `vocab`'s names up to case: its names differ in more than case (one fitted before case
    variants were merged may hold both `a` and `A`, each then matched as written)."""
    return len({v.lower() for v in vocab}) == len(vocab)


def category_key(vocab):
    """The function giving the name a value is matched to `vocab`'s under: lower-cased, or (`case_free` not) as it is."""
    return str.lower if case_free(vocab) else str


@dataclass(frozen=True)
class RowRules:
    """What each column is for and how its fields are read; built from a table reader's config."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    vectors: dict[str, int]  # column -> number of values
    passthrough: tuple[str, ...]
    label: str | None
    regression: bool
    key_column: str | None
    na_values: tuple[str, ...]
    non_finite: str  # missing | quarantine
    encoding: str
    corrupt: str | None = None  # the column holding a row the source could not split into fields (CSV)
    split_column: str | None = None  # what names each row's split: dataset.split.column, or _relpath (by: path)
    classes: tuple[str, ...] | None = None  # the known classes (a fitted preprocessing's): another label is quarantined
    dates: tuple[str, ...] = ()  # date or timestamp columns: each becomes the numeric `date_features`
    words: tuple[str, ...] = ()  # free-text columns (names, titles): each becomes 0/1 slots of its frequent words
    date_formats: dict[str, str] = field(default_factory=dict)  # date column -> its strptime format (else ISO 8601)
    missing_values: dict[str, list[str]] = field(default_factory=dict)  # column -> its own words read as missing
    decimal_comma: tuple[str, ...] = ()  # numeric columns written 1.234,56
    units: dict[str, str] = field(default_factory=dict)  # numeric column -> the unit after its numbers (12 kg)

    @property
    def numbers(self) -> tuple[str, ...]:
        """Every numeric column of the typed rows: the numeric ones, then each date's features."""
        return self.numeric + tuple(date_features(self.dates))

    def check(self, batch):
        """(typed good rows, quarantined rows) of a raw batch: the error rows hold key, path, error_class, message."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        problems = _Problems(n)
        if self.corrupt:
            problems.add(pc.is_valid(batch.column(self.corrupt)), "MalformedRow",
                         lambda i: "malformed row (wrong number of fields or bad quoting): "
                                   + batch.column(self.corrupt)[i].as_py()[:120])  # fmt: skip
        if self.split_column:  # a null split: the row's split column (or file path) names none
            where = "file" if self.split_column == "_relpath" else f"field {self.split_column}:"
            problems.add(pc.is_null(batch.column("split")), "UnknownSplit",
                         lambda i: f"{where} {batch.column(self.split_column)[i].as_py()!r} names no split (train, val, "
                                   "test, or one of dataset.split.names)")  # fmt: skip
        for c, size in self.vectors.items():
            column = batch.column(c)
            problems.add(pc.is_null(column), "MissingValue", lambda i, c=c: f"field {c}: missing vector")
            lengths = pc.fill_null(pc.list_value_length(column), size)
            problems.add(pc.not_equal(lengths, size), "BadValue",
                         lambda i, c=c, lengths=lengths: f"field {c}: {lengths[i].as_py()} values, expected {size}")  # fmt: skip
            values = pc.list_flatten(column)
            bad = ~np.asarray(pc.fill_null(pc.is_finite(values), False).to_numpy(zero_copy_only=False), bool)
            rows = np.zeros(n, bool)
            np.logical_or.at(rows, pc.list_parent_indices(column).to_numpy(), bad)
            problems.add(rows, "NonFinite", lambda i, c=c: f"field {c}: null, NaN or infinite values")
        text = {c: pc.utf8_trim_whitespace(batch.column(c)) for c in self._text_columns()}
        missing = {c: np.asarray(pc.fill_null(pc.or_(pc.is_null(batch.column(c)), pc.is_in(text[c], pa.array(
            (*self.na_values, *self.missing_values.get(c, ())), pa.string()))), True).to_numpy(zero_copy_only=False), bool)
            for c in text}  # fmt: skip
        if self.key_column:
            problems.add(missing[self.key_column], "MissingKey", lambda i: f"field {self.key_column}: missing key")
        if self.label:
            problems.add(missing[self.label], "MissingLabel", lambda i: f"field {self.label}: missing label")
        if self.label and self.classes is not None and not self.regression:
            known = pc.fill_null(pc.is_in(text[self.label], pa.array(self.classes, pa.string())), False)
            problems.add(pc.invert(known), "UnknownLabel", lambda i: f"field {self.label}: class "
                         f"{text[self.label][i].as_py()!r} is not one of the {len(self.classes)} the model knows")  # fmt: skip
        numbers = {}
        for c in self.numeric + ((self.label,) if self.label and self.regression else ()):
            comma, unit = c in self.decimal_comma, self.units.get(c)
            values, unparsed = _parse_numbers(text[c], missing[c], comma, unit)
            problems.add(unparsed, "BadValue", lambda i, c=c, comma=comma, unit=unit:
                         _not_a_number(c, batch.column(c)[i].as_py(), comma, unit))  # fmt: skip
            numbers[c] = values
        for c in self.dates:
            form = self.date_formats.get(c)
            parts, unparsed = _parse_dates(text[c], missing[c], form)
            expected = f"the format {form}" if form else "ISO 8601: 2024-05-31, 2024-05-31 13:45:00; or name its " \
                "format in ingest.date_formats"  # fmt: skip
            problems.add(unparsed, "BadValue", lambda i, c=c, expected=expected: f"field {c}: "
                         f"'{batch.column(c)[i].as_py()[:60]}' is not a date or time (expected {expected})")  # fmt: skip
            numbers.update(zip(date_features([c]), parts))
        targets = [self.label] if self.label and self.regression else []  # never imputed
        for c in (list(self.numeric) if self.non_finite == "quarantine" else []) + targets:
            problems.add(~np.isfinite(numbers[c]) & ~np.isnan(numbers[c]) | _spells_nan(text[c], numbers[c]),
                         "NonFinite", lambda i, c=c: f"field {c}: '{text[c][i].as_py()}' is not a finite number")  # fmt: skip
        # A CSV file (the reader with a corrupt-record column) read as UTF-8 that is not: most likely cp1252 or latin-1.
        hint = " (a file in another encoding? set ingest.encoding, e.g. cp1252)" if self.corrupt and self.encoding == "utf-8" else ""
        for c in self.categorical + self.words + ((self.label,) if self.label else ()) + self.passthrough:
            found = pc.fill_null(pc.match_substring(batch.column(c), "\ufffd"), False)
            problems.add(found, "EncodingError", lambda i, c=c: f"field {c}: bytes that are not valid {self.encoding}{hint}")
        good = ~problems.failed
        typed = {"key": batch.column("key"), "split": batch.column("split")}
        for c in self.numbers:
            values = np.where(np.isfinite(numbers[c]), numbers[c], np.nan)  # non-finite: missing
            typed[c] = pa.array(values, pa.float64(), mask=np.isnan(values))
        for c in self.categorical + self.words:
            typed[c] = pc.if_else(pa.array(missing[c]), pa.scalar(None, pa.string()), text[c])
        typed.update({c: batch.column(c) for c in self.vectors})
        typed.update({c: batch.column(c).cast(pa.string()) for c in self.passthrough})
        if self.label:
            typed["_label"] = pa.array(numbers[self.label], pa.float64()) if self.regression else text[self.label]
        table = pa.table(typed).filter(pa.array(good))
        return table, problems.table(batch)

    def inputs(self) -> list[str]:
        """The raw columns `check` reads: the used ones, and those naming each row's place and split."""
        named = [*self._text_columns(), *self.vectors, *self.passthrough, self.corrupt, self.split_column]
        return list(dict.fromkeys([c for c in named if c] + ["_file", "_row", "key", "split"]))

    def _text_columns(self) -> list[str]:
        used = self.numeric + self.dates + self.categorical + self.words + tuple(c for c in (self.label, self.key_column) if c)
        return list(dict.fromkeys(used))


def content_hashes(typed, columns: list[str]):
    """A 64-bit hash per typed row over `columns` (values after trimming and parsing, vectors value by value):
    rows that differ only in spacing or number spelling (`1.50`, ` 1.5`) hash alike.

    Numbers are hashed by their bits (-0.0 as 0.0, every NaN and missing value alike), text by its distinct
    values only (dictionary-encoded, then pandas' hash of each word): no Python object per field."""
    import pyarrow as pa

    hashes = np.full(typed.num_rows, 0x9E3779B97F4A7C15, np.uint64)
    for c in columns:
        column = typed.column(c).combine_chunks()
        if pa.types.is_list(column.type):
            values = column.flatten().to_numpy(zero_copy_only=False).reshape(typed.num_rows, -1)
            for i in range(values.shape[1]):
                hashes = _mix(hashes + _number_bits(values[:, i]))
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            hashes = _mix(hashes + _text_hashes(column))
        else:
            hashes = _mix(hashes + _number_bits(column.to_numpy(zero_copy_only=False)))
    return pa.array(hashes.view(np.int64))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: each bit of the input moves about half of the output's (uint64 wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _number_bits(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64) + 0.0  # -0.0 + 0.0 is 0.0
    return np.where(np.isnan(values), np.nan, values).view(np.uint64)


def _text_hashes(column) -> np.ndarray:
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)
    words = string_hashes(encoded.dictionary)
    at = encoded.indices.to_numpy(zero_copy_only=False)
    if encoded.null_count:  # a batch may hold nothing but nulls: an empty dictionary, so index only the values
        hashes = np.full(len(at), MISSING_HASH, np.uint64)
        present = ~np.isnan(at)
        hashes[present] = words[at[present].astype(np.int64)]
        return hashes
    return words[at]


STRING_BASE = np.uint64(0x100000001B3)
MISSING_HASH = np.uint64(0x5851F42D4C957F2D)


def string_hashes(strings, chunk_bytes: int = 1 << 22) -> np.ndarray:
    """A 64-bit hash of each value of an Arrow string array from its UTF-8 bytes where they lie: a polynomial
    over the bytes (mod 2**64) and the length, through splitmix64's finaliser. No Python object per value (pandas'
    hash_array made one each: a third of a table's content hashes); values `chunk_bytes` at a time, so that long
    texts take a bounded amount of memory. Nulls hash alike, as MISSING_HASH."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_large_string(strings.type):
        strings = strings.cast(pa.large_string())
    hashes = np.empty(len(strings), np.uint64)
    _, offsets, data = strings.buffers()
    if len(strings):
        ends = np.frombuffer(offsets, np.int64)[strings.offset : strings.offset + len(strings) + 1]
        data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        start = 0
        while start < len(strings):  # the values whose bytes fit in chunk_bytes, at least one
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] + chunk_bytes, side="right")) - 1)
            hashes[start:stop] = _byte_hashes(data, ends[start : stop + 1])
            start = stop
    if strings.null_count:
        hashes[np.asarray(pc.is_null(strings).to_numpy(zero_copy_only=False), bool)] = MISSING_HASH
    return hashes


def _byte_hashes(data: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """string_hashes of the values whose bytes are data[ends[0]:ends[1]], data[ends[1]:ends[2]], ..."""
    starts, lengths = ends[:-1] - ends[0], np.diff(ends)
    sums = np.zeros(1, np.uint64)
    if lengths.sum():
        powers = np.full(int(lengths.max()), STRING_BASE, np.uint64)
        powers[0] = 1
        position = np.arange(ends[-1] - ends[0], dtype=np.int64) - np.repeat(starts, lengths)
        values = data[ends[0] : ends[-1]].astype(np.uint64) + np.uint64(1)
        sums = np.concatenate([sums, np.cumsum(values * np.cumprod(powers)[position], dtype=np.uint64)])
    return _mix(sums[starts + lengths] - sums[starts] + (lengths + 1).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


class _Problems:
    """The first problem of each row of a batch: later checks only see rows that are still good."""

    def __init__(self, rows: int):
        self.failed = np.zeros(rows, bool)
        self.found: list[tuple[int, str, str]] = []

    def add(self, mask, error_class: str, message) -> None:
        mask = np.asarray(mask.to_numpy(zero_copy_only=False) if hasattr(mask, "to_numpy") else mask, bool)
        for i in np.flatnonzero(mask & ~self.failed):
            self.found.append((int(i), error_class, message(int(i))))
        self.failed |= mask

    def table(self, batch):
        import pyarrow as pa

        self.found.sort()
        at = pa.array([i for i, _, _ in self.found], pa.int64())
        files, rows = batch.column("_file").take(at).to_pylist(), batch.column("_row").take(at).to_pylist()
        return pa.table({
            "key": batch.column("key").take(at).cast(pa.string()),
            "path": pa.array([f"{f}:{r}" for f, r in zip(files, rows)], pa.string()),
            "error_class": pa.array([e for _, e, _ in self.found], pa.string()),
            "message": pa.array([m for _, _, m in self.found], pa.string()),
        })  # fmt: skip


def _parse_numbers(text, missing: np.ndarray, decimal_comma: bool = False,
                   unit: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN where missing or unparsable; true/false are 1/0) and the mask of present fields
    that are not numbers. `decimal_comma`: numbers are written 1.234,56 (DECIMAL_COMMA_NUMBER), and only so.
    `unit`: a number may be followed by this unit (12 kg), which is dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not decimal_comma and not unit:  # most columns: every present field a plain number, in one cast
        try:
            present = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text)
            return pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False), np.zeros(len(missing), bool)
        except pa.ArrowInvalid:
            pass
    lowered = pc.utf8_lower(text)  # true and false are 1 and 0
    text = pc.if_else(pc.equal(lowered, "true"), "1", pc.if_else(pc.equal(lowered, "false"), "0", text))
    present = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text)
    scale = None
    if unit and (kind := unit_kind([unit_key(unit)])):  # 1.2 GB in a column of MB: 1200; a unit of another kind is none
        parts = pc.extract_regex(present, UNIT_PARTS)
        written = pc.replace_substring_regex(pc.utf8_lower(pc.struct_field(parts, "unit")), PLURAL, "\\1")
        found = written.dictionary_encode()
        size = kind[unit_key(unit)]  # a value with no unit is in the column's
        sizes = np.array([kind.get(u, np.nan) for u in found.dictionary.to_pylist()] + [size]) / size
        scale = sizes[found.indices.fill_null(len(found.dictionary)).to_numpy(zero_copy_only=False)]
        present = pc.if_else(pc.is_valid(written), pc.struct_field(parts, "number"), present)
    elif unit:  # 12 kg is 12; a unit alone is no number
        bare = pc.replace_substring_regex(present, unit_suffix(unit), "")
        present = pc.if_else(pc.equal(bare, ""), present, bare)
    values, unparsed = _read_numbers(present, missing, decimal_comma)
    if scale is None:
        return values, unparsed
    return values * scale, unparsed | (np.isnan(scale) & ~missing)


def _read_numbers(present, missing: np.ndarray, decimal_comma: bool) -> tuple[np.ndarray, np.ndarray]:
    """`_parse_numbers` of strings with no unit left."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if decimal_comma:
        written = np.asarray(pc.fill_null(pc.match_substring_regex(present, DECIMAL_COMMA_NUMBER), False), bool)
        plain = pc.replace_substring(pc.replace_substring_regex(present, DECIMAL_COMMA_SIGNS, ""), ",", ".")
        plain = pc.replace_substring_regex(plain, NEGATIVE, "-")
        values = pc.cast(pc.if_else(pa.array(written), plain, pa.scalar(None, pa.string())), pa.float64())
        return values.to_numpy(zero_copy_only=False), ~missing & ~written
    try:
        return pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False), np.zeros(len(missing), bool)
    except pa.ArrowInvalid:  # some field is not a number: cast those that look like one, in one call
        pass
    formatted = pc.fill_null(pc.match_substring_regex(present, FORMATTED_NUMBER), False)  # $1,234.50, 12%, (5)
    plain = pc.replace_substring_regex(pc.replace_substring_regex(present, NUMBER_SIGNS, ""), NEGATIVE, "-")
    present = pc.if_else(formatted, plain, present)
    looks = np.asarray(pc.fill_null(pc.match_substring_regex(present, NUMBER, ignore_case=True), False), bool)
    try:
        values = pc.cast(pc.if_else(pa.array(looks), present, pa.scalar(None, pa.string())), pa.float64())
        values = np.array(values.to_numpy(zero_copy_only=False), np.float64)
        clock = ~looks & np.asarray(pc.fill_null(pc.match_substring_regex(present, CLOCK), False), bool)  # 13:45
        if clock.any():
            values[clock] = _clock_hours(present.filter(pa.array(clock)))
        return values, ~missing & ~looks & ~clock
    except pa.ArrowInvalid:  # the pattern and the parser disagree on some field: ask the parser, field by field
        values, unparsed = np.full(len(missing), np.nan), np.zeros(len(missing), bool)
        for i in np.flatnonzero(~missing):
            try:
                values[i] = pc.cast(present[i], pa.float64()).as_py()
            except pa.ArrowInvalid:
                unparsed[i] = True
        return values, unparsed


# What each date or timestamp column becomes: days since 1970-01-01 (with the time of day as a fraction),
# the month (1-12), the day of the month, the weekday (0 = Monday) and the hour (0-23).
DATE_PARTS = ("days", "month", "day", "weekday", "hour")


def date_features(columns) -> list[str]:
    """The numeric feature names of date columns, `column:part`."""
    return [f"{c}:{part}" for c in columns for part in DATE_PARTS]


def _parse_dates(text, missing: np.ndarray, form: str | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The DATE_PARTS of dates and times as float64 (NaN where missing or unparsable), and the mask of present
    fields that are not dates: ISO 8601, or the strptime `form` (see `strptime_dates`), either in DATE_DRESSING. A
    zone offset (Z, +02:00) is dropped from ISO forms: the parts are the record's local time.

    Arrow parses the zero-padded ISO forms in C; the rest of what Spark's cast takes (which is how `auto` found the
    column: `2024-1-5`, `2024-01`, `2024-01-05 9:30`) is parsed field by field."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.replace_substring_regex(text, DATE_DRESSING, "")
    if form:
        stamps = strptime_dates(pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), text), form)
        unparsed = ~missing & np.asarray(pc.is_null(stamps).to_numpy(zero_copy_only=False), bool)
    else:
        present = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), pc.replace_substring_regex(
            text, ZONE, ""))  # fmt: skip
        try:
            stamps = pc.cast(present, pa.timestamp("us"))
            unparsed = np.zeros(len(missing), bool)
        except pa.ArrowInvalid:
            values, unparsed = [], np.zeros(len(missing), bool)
            for i, value in enumerate(present.to_pylist()):
                stamp = None if value is None else _spark_date(value)
                unparsed[i] = value is not None and stamp is None
                values.append(stamp)
            stamps = pa.array(values, pa.timestamp("us"))
    as_float = lambda a: pc.cast(a, pa.float64()).to_numpy(zero_copy_only=False)  # noqa: E731
    days = as_float(pc.cast(stamps, pa.int64())) / 86_400e6
    return [days, as_float(pc.month(stamps)), as_float(pc.day(stamps)), as_float(pc.day_of_week(stamps)),
            as_float(pc.hour(stamps))], unparsed  # fmt: skip


def strptime_dates(text, form: str):
    """Timestamps of the strings `text` in the strptime format `form` (null where one does not parse, and where the
    day does not exist: 02/30/2020 is no date, though strptime reads it as March 1). A time of day may follow the
    date (` 13:45`, ` 13:45:30`, ` 1:45 PM`, ` 1:45pm`). Where the format names the month (%b), commas and periods
    are ignored and dashes read as spaces, in the text and the format alike: `Dec 31, 2020` and `31-Dec-2020`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "%b" in form or "%B" in form:
        text = pc.replace_substring_regex(pc.replace_substring_regex(text, r"[,.]", ""), r"[\s-]+", " ")
        form = re.sub(r"[\s-]+", " ", re.sub(r"[,.]", "", form))
    stamps = pc.strptime(text, format=form, unit="us", error_is_null=True)
    if "%H" not in form and "%I" not in form:
        text = pc.replace_substring_regex(text, r"(?i)(\d) ?([ap])\.?m\.?$", r"\1 \2M")  # 1:45pm, 1:45 p.m.
        for clock in (" %H:%M", " %H:%M:%S", " %I:%M %p", " %I:%M:%S %p"):
            if stamps.null_count == text.null_count:  # every value read: no more passes
                break
            stamps = pc.coalesce(stamps, pc.strptime(text, format=form + clock, unit="us", error_is_null=True))
    if "%d" in form:  # strptime rolls an impossible day into the next month: the day written must be the day read
        written = pc.struct_field(pc.extract_regex(text, _day_pattern(form)), [0])
        rolled = pc.fill_null(pc.not_equal(pc.day(stamps), pc.cast(written, "int64")), False)
        stamps = pc.if_else(rolled, pa.scalar(None, stamps.type), stamps)
    return stamps


def _day_pattern(form: str) -> str:
    """A regex (RE2) whose group `day` is the day of the month in a text written in the strptime format `form`."""
    pattern = []
    for part in re.split(r"(%.)", form[: form.index("%d") + 2]):
        if part == "%d":
            pattern.append(r"(?P<day>\d{1,2})")
        elif part.startswith("%") and len(part) == 2:
            pattern.append(r"\S+?" if part != "%%" else "%")
        else:
            pattern.append(re.escape(part))
    return "(?i)^" + "".join(pattern)


# The date and time forms Spark's string-to-timestamp cast accepts (zone already removed): year[-month[-day]]
# [(T| )hour:minute[:second[.fraction]]], one or two digits for month, day and the time's fields.
SPARK_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,9}))?)?)?$")
ZONE = r"(?:Z|[+-]\d\d:?\d\d)$"
# The same with its zone (Java and RE2): what `auto` may call an ISO 8601 date or time.
ISO_TIME = SPARK_DATE.pattern.removesuffix("$") + ZONE.replace(")$", ")?$")
# What a date may be dressed in, dropped before it is read (Java, RE2 and Python alike): a weekday before it and a
# zone's name after it, as e-mail and web logs write them (Wed, 03 Jul 2019 10:00:00 GMT; 2019-07-03 10:00:00 UTC).
DATE_DRESSING = r"^(?i:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,? +)|(?i: *(?:utc|gmt))$"


def _spark_date(value: str):
    import datetime

    found = SPARK_DATE.match(value.strip())
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction = found.groups()
    try:
        return datetime.datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                                 int(second or 0), int((fraction or "0")[:6].ljust(6, "0")))  # fmt: skip
    except ValueError:  # month 13, 31 February
        return None


# What pyarrow's cast parses as a float: decimal and exponent forms, inf, infinity, nan (any case).
NUMBER = r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)$"
# A number as people format it: a currency sign before or after, thousands grouped, a percent sign
# ($1,234.50, -€ 30, 1,250,000, 12.5%), at least (10,000+, as app stores count installs), or in parentheses as
# accountants write a negative amount ((1,234.50)). It reads as the plain number (12.5% is 12.5; 10,000+ is 10000;
# (5) is -5). The same pattern in Java (Spark, for `auto`), RE2 (Arrow) and Python (messages):
# a comma must group three digits, so 1,5 (a decimal comma) is no number.
# Thousands are grouped by one mark throughout: commas, apostrophes (Swiss: 1'234'567.50) or spaces (French:
# 1 234 567, also with the no-break spaces a spreadsheet writes).
_SPACES = " \u00a0\u202f"  # a space, the no-break space and the narrow one
_GROUPED = rf"\d{{1,3}}(?:(?:,\d{{3}})+|(?:['’]\d{{3}})+|(?:[{_SPACES}]\d{{3}})+)"
_AMOUNT = rf"[$€£¥₹]? ?(?:{_GROUPED}|\d+)(?:\.\d+)? ?[$€£¥₹%]?"
FORMATTED_NUMBER = rf"^(?:[+-]?[$€£¥₹]? ?[+-]?(?:{_GROUPED}|\d+)(?:\.\d+)? ?[$€£¥₹%]?\+?|\({_AMOUNT}\))$"
NUMBER_SIGNS = rf"[$€£¥₹%,'’{_SPACES})+]"
NEGATIVE = r"^\("  # what is left of an accountant's parentheses once NUMBER_SIGNS are gone: read as a minus
# The same as written in much of Europe: dots or spaces group thousands and a comma marks the decimals (3,5;
# 1.234,56 €; 1 234,56 €).
_COMMA_GROUPED = rf"\d{{1,3}}(?:(?:\.\d{{3}})+|(?:[{_SPACES}]\d{{3}})+)"
_COMMA_AMOUNT = rf"[$€£¥₹]? ?(?:{_COMMA_GROUPED}|\d+)(?:,\d+)? ?[$€£¥₹%]?"
# A euro amount whose dots group thousands (1.037 €, € 12.500): with no comma after them, the dot alone could be a
# decimal point; `auto` takes a column whose values are all such amounts or whole numbers as written with a decimal
# comma (1.037 € is 1037). Without the euro sign, 1.037 stays 1.037.
EURO_THOUSANDS = r"^[+-]?(?:€ ?)?\d{1,3}(?:\.\d{3})+(?: ?€)?$"
DECIMAL_COMMA_NUMBER = rf"^(?:[+-]?[$€£¥₹]? ?[+-]?(?:{_COMMA_GROUPED}|\d+)(?:,\d+)? ?[$€£¥₹%]?|\({_COMMA_AMOUNT}\))$"
DECIMAL_COMMA_SIGNS = rf"[$€£¥₹%.{_SPACES})]"
# A number followed by a unit of measure (12 kg, 3.5km, 90 min, 1,200 sq ft): the unit is the second group.
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_UNIT = r"[A-Za-z°µ][A-Za-z°µ/²³. ]{0,11}[A-Za-z²³.]|[A-Za-z°µ]"
UNIT_NUMBER = rf"^[+-]?({_UNSIGNED}) ?({_UNIT})$"
UNIT_PARTS = rf"^(?P<number>[+-]?(?:{_UNSIGNED})) ?(?P<unit>{_UNIT})$"
# Units of one kind, each with its size in one of them, by `unit_key`: a column that mixes them (12 MB, 1.2 GB;
# 201k, 19M) reads every value in its `units` unit. m is metres or millions: a column's unit is never m where its
# values mix units (MIXED_AMBIGUOUS), and a unit of m alone takes no other.
UNIT_KINDS = (
    {"byte": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15, "kib": 2**10, "mib": 2**20, "gib": 2**30,
     "tib": 2**40},
    {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "mio": 1e6, "million": 1e6, "b": 1e9, "bn": 1e9,
     "billion": 1e9},
    {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "km": 1e3, "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344,
     "mile": 1609.344},
    {"mg": 1e-3, "g": 1.0, "kg": 1e3, "lb": 453.59237, "oz": 28.349523125},
    {"ms": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hr": 3600.0,
     "hour": 3600.0, "day": 86400.0, "week": 604800.0},
)  # fmt: skip
MIXED_AMBIGUOUS = frozenset({"m"})
PLURAL = "^(.{2,})s$"  # a unit's plural s, after 2 letters or more (kgs, mins; not ms): Java and RE2 alike


def unit_key(unit: str) -> str:
    """A unit as UNIT_KINDS names it: lower case, without a plural s (PLURAL: KGs is kg, mins is min)."""
    return re.sub(PLURAL, r"\1", unit.strip().lower())


def unit_kind(units) -> dict[str, float] | None:
    """The one kind (a UNIT_KINDS entry) all of `units` (keys) belong to; None where none, or where it is not one
    kind alone (m)."""
    kinds = [kind for kind in UNIT_KINDS if all(u in kind for u in units)]
    return kinds[0] if len(kinds) == 1 else None


# A time of day or a duration (13:45, 1:45 PM, 1:30:00, 1:30:00.5): read as its hours (in the first field's unit:
# 3:30 as minutes and seconds reads 3.5, in minutes), 13.75, 13.75, 1.5. Named groups in RE2; Java names them (?<h>...).
CLOCK = r"^(?P<h>\d{1,3}):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d(?:\.\d+)?))?(?: ?(?P<p>[AaPp])\.?[Mm]\.?)?$"


def _clock_hours(present) -> np.ndarray:
    """The hours of each CLOCK value of the strings `present` (NaN where it is none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = pc.extract_regex(present, CLOCK)
    number = lambda name: pc.cast(pc.if_else(pc.equal(pc.struct_field(parts, name), ""), "0",  # noqa: E731
                                             pc.struct_field(parts, name)), pa.float64()).to_numpy(zero_copy_only=False)
    hours, noon = number("h"), np.asarray(pc.utf8_lower(pc.struct_field(parts, "p")).to_pylist(), object)
    hours = np.where(noon == "p", hours % 12 + 12, np.where(noon == "a", hours % 12, hours))
    return (hours + number("m") / 60 + number("s") / 3600).astype(np.float64)


def unit_suffix(unit: str) -> str:
    """The pattern (RE2 and Java) of `unit` after a number, in any case and, for a unit of 2 letters or more, with a
    plural s (12 kg, 12 KG, 12 kgs): what `units` strips before the number is read."""
    return "(?i) ?" + unit.replace(".", r"\.") + ("s?" if len(unit) > 1 else "") + "$"


def _not_a_number(column: str, value: str, decimal_comma: bool, unit: str | None = None) -> str:
    """The message of a numeric field that is not a number, with the likely cause where one shows."""
    if decimal_comma:
        return f"field {column}: '{value[:60]}' is not a number written 1.234,56 (ingest.decimal_comma)"
    if unit:
        kind = unit_kind([unit_key(unit)])
        others = f" or another of its kind ({', '.join(list(kind)[:6])}{', ...' if len(kind) > 6 else ''})" if kind else ""
        return f"field {column}: '{value[:60]}' is not a number in {unit}{others} (ingest.units)"
    hint = ""
    if re.match(DECIMAL_COMMA_NUMBER, value):
        hint = " (a decimal comma? name the column in ingest.decimal_comma)"
    elif found := re.match(UNIT_NUMBER, value.strip()):
        hint = f" (a unit? name the column's unit in ingest.units: {{{column}: {found.group(2)}}})"
    return f"field {column}: '{value[:60]}' is not a number{hint}"


def _spells_nan(text, values: np.ndarray) -> np.ndarray:
    """Fields that spell NaN, even where `na_values` lists them (a parsed NaN looks like a missing value);
    only the fields whose `values` are NaN are looked at (a missing field or a NaN parses to NaN)."""
    import pyarrow.compute as pc

    spelled = np.zeros(len(values), bool)
    at = np.flatnonzero(np.isnan(values))
    if len(at):
        found = pc.fill_null(pc.match_substring_regex(text.take(at), r"^[+-]?nan$", ignore_case=True), False)
        spelled[at] = np.asarray(found.to_numpy(zero_copy_only=False), bool)
    return spelled


# Distinct values a named categorical column, or the label, may have in train: past it the column is an id
# or free text, and counting it would grow each task's result and the driver without bound.
MAX_DISTINCT = 100_000
MIN_SKEW = 2.0  # a numeric column of no negative value skewed past this is read as a logarithm (`_long_tails`)
TAIL_SCALE = 100  # ... log1p(x / s), s its least value or 1/TAIL_SCALE of its mean, the larger


@dataclass
class FitStats:
    """What the preprocessing is fitted from, added up over typed rows a task at a time."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    vectors: dict[str, int]
    words: tuple[str, ...] = ()
    sums: dict[str, list[float]] = field(default_factory=dict)  # column -> [count, sum, sum of squares] of train values
    tails: dict[str, list[float]] = field(default_factory=dict)  # column -> [sum of cubes, least value] of train values
    categories: dict[str, Counter] = field(default_factory=dict)  # column -> train value counts (None: missing)
    vector_moments: dict[str, list] = field(default_factory=dict)  # column -> [count, sums, squares] per value
    word_counts: dict[str, Counter] = field(default_factory=dict)  # column -> train rows each word appears in
    labels: set = field(default_factory=set)  # class labels over every split
    rows: Counter = field(default_factory=Counter)  # good rows per split
    targets: Counter = field(default_factory=Counter)  # the train labels (`label_summary`)
    gap_targets: dict[str, Counter] = field(default_factory=dict)  # numeric column -> the labels of its train gaps

    def add(self, typed, classify: bool) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        for entry in pc.value_counts(typed.column("split")).to_pylist():  # no Python string per row
            self.rows[entry["values"]] += entry["counts"]
        if classify:
            self.labels.update(v for v in pc.unique(typed.column("_label")).to_pylist())
        train = typed.filter(pc.equal(typed.column("split"), "train"))
        for c in self.numeric:
            values = train.column(c).drop_null().to_numpy()
            old = self.sums.get(c, [0, 0.0, 0.0])
            self.sums[c] = [old[0] + len(values), old[1] + float(values.sum()), old[2] + float((values * values).sum())]
            if len(values):
                cubes, least = self.tails.get(c, [0.0, math.inf])
                self.tails[c] = [cubes + float((values.astype(np.float64) ** 3).sum()), min(least, float(values.min()))]
        if "_label" in train.column_names:  # whether a column's gaps tell of the label (`informative_gap`)
            label = train.column("_label")
            self.targets.update(label_summary(label, classify))
            for c in self.numeric:
                gaps = pc.is_null(train.column(c))
                if pc.any(gaps).as_py():
                    self.gap_targets.setdefault(c, Counter()).update(label_summary(label.filter(gaps), classify))
        for c in self.categorical:
            counts = self.categories.setdefault(c, Counter())
            for entry in pc.value_counts(train.column(c)).to_pylist():
                counts[entry["values"]] += entry["counts"]
        for c in self.words:
            rows, words = _row_words(train.column(c))
            pairs = pa.table({"row": rows, "word": words}).group_by(["row", "word"]).aggregate([])  # once per row
            counts = self.word_counts.setdefault(c, Counter())
            for entry in pc.value_counts(pairs.column("word")).to_pylist():
                counts[entry["values"]] += entry["counts"]
        for c, size in self.vectors.items():
            values = np.asarray(pc.list_flatten(train.column(c)).to_numpy(), np.float64).reshape(-1, size)
            update = [len(values), values.sum(0), (values * values).sum(0)]
            old = self.vector_moments.get(c)
            self.vector_moments[c] = update if old is None else [a + b for a, b in zip(old, update)]
        self._check_distinct()

    def merge(self, other: FitStats) -> None:
        for split, count in other.rows.items():
            self.rows[split] += count
        self.labels |= other.labels
        self.targets.update(other.targets)
        for c, counts in other.gap_targets.items():
            self.gap_targets.setdefault(c, Counter()).update(counts)
        for c, (n, s, q) in other.sums.items():
            old = self.sums.get(c, [0, 0.0, 0.0])
            self.sums[c] = [old[0] + n, old[1] + s, old[2] + q]
        for c, (cubes, least) in other.tails.items():
            old = self.tails.get(c, [0.0, math.inf])
            self.tails[c] = [old[0] + cubes, min(old[1], least)]
        for c, counts in other.categories.items():
            self.categories.setdefault(c, Counter()).update(counts)
        for c, counts in other.word_counts.items():
            self.word_counts.setdefault(c, Counter()).update(counts)
        self._check_distinct()
        for c, update in other.vector_moments.items():
            old = self.vector_moments.get(c)
            self.vector_moments[c] = update if old is None else [a + b for a, b in zip(old, update)]

    def _check_distinct(self) -> None:
        if len(self.labels) > MAX_DISTINCT:
            raise ConfigError(f"ingest.label: more than {MAX_DISTINCT:,} distinct classes: is it an id or a number? "
                              "(use task: regression for numbers)")  # fmt: skip
        for counts in self.word_counts.values():
            if len(counts) > MAX_DISTINCT:  # keep the most frequent: bounded, and the vocabulary takes only the top
                kept = counts.most_common(MAX_DISTINCT // 2)
                counts.clear()
                counts.update(dict(kept))
        for c, counts in self.categories.items():
            if len(counts) > MAX_DISTINCT:
                raise ConfigError(f"ingest.categorical: column {c} has more than {MAX_DISTINCT:,} distinct train values "
                                  "(an id or free text?): leave it out of categorical")  # fmt: skip

    def preprocess(self, fills: dict[str, float], encoding: str, classify: bool, scale: bool,
                   dates: tuple[str, ...] = (), max_words: int | None = None, date_formats: dict | None = None,
                   missing_values: dict | None = None, decimal_comma: tuple[str, ...] = (),
                   units: dict | None = None) -> Preprocess:
        """The fitted preprocessing; `fills` holds each numeric column's imputed value (date features included).
        A free-text column keeps its `max_words` most frequent words that appear in at least 2 train rows (None:
        `default_words`)."""
        max_words = default_words(sum(self.rows.values())) if max_words is None else max_words
        vocabularies = {c: category_names(self.categories.get(c, Counter())) for c in self.categorical}
        labels = sorted(self.labels) if classify else None
        words = {}
        for c in self.words:
            frequent = sorted(((-n, w) for w, n in self.word_counts.get(c, {}).items() if n >= 2 and w))[:max_words]
            words[c] = sorted(w for _, w in frequent)
        pre = Preprocess(dict(fills), vocabularies, encoding, dict(self.vectors), labels, dates=list(dates), words=words,
                         date_formats=dict(date_formats or {}), missing_values=dict(missing_values or {}),
                         decimal_comma=list(decimal_comma), units=dict(units or {}),
                         gaps=self._gaps(dates, classify), log={} if scale else self._long_tails(dates))  # fmt: skip
        return pre.with_scale(self._moments(pre)) if scale else pre

    def _long_tails(self, dates) -> dict[str, float]:
        """The numeric columns of no negative value whose train values are skewed past MIN_SKEW (counts, amounts,
        sizes: most rows small, a few huge), and are not 0/1 alone, each with its scale s: its least train value or
        1/TAIL_SCALE of its train mean, the larger. Their features are log1p(value / s) (`Preprocess.log`).
        Standardised as they are, such a column's bulk sits within a fraction of a standard deviation and the model
        cannot tell its values apart: R's hpc_data, 4 such columns, scored 0.795, and 0.822 as logarithms (gradient
        boosting 0.824; with s the mean, 0.804: values below it stay nearly linear; docs/benchmarks.md). Not with
        `scale: true`, whose moments are the raw values'."""
        derived = set(date_features(dates))
        found = {}
        for c in self.numeric:
            (n, total, squares), (cubes, least) = self.sums.get(c, [0, 0.0, 0.0]), self.tails.get(c, [0.0, -1.0])
            if c in derived or n < 2 or least < 0 or abs(squares - total) <= 1e-9 * total:
                continue  # no negative values; and not 0/1 alone (x = x * x), which a logarithm only rescales
            mean = total / n
            variance = squares / n - mean * mean
            if mean <= 0 or variance <= 1e-12 * max(mean * mean, 1e-300):
                continue
            skew = (cubes / n - 3 * mean * variance - mean**3) / variance**1.5
            if skew > MIN_SKEW:
                found[c] = float(max(least, mean / TAIL_SCALE))
        return found

    def _gaps(self, dates, classify: bool) -> list[str]:
        """The numeric columns whose train gaps tell of the label (`informative_gap`): each gets a 0/1 slot saying a
        row's value was missing (a date column's on its first part only: its parts are missing together)."""
        later_parts = set(date_features(dates)) - {f"{c}:{DATE_PARTS[0]}" for c in dates}
        return [c for c in self.numeric if c not in later_parts and c in self.gap_targets
                and informative_gap(self.gap_targets[c], self.targets, classify)]  # fmt: skip

    def means(self) -> dict[str, float | None]:
        return {c: (s / n if n else None) for c, (n, s, _) in ((c, self.sums.get(c, [0, 0.0, 0.0])) for c in self.numeric)}

    def _moments(self, pre: Preprocess) -> np.ndarray:
        """[count, sum, sum of squares] of every feature slot over train, from the totals alone."""
        rows = self.rows["train"]
        parts = []
        for c in self.numeric:
            n, s, q = self.sums[c]
            fill = pre.numeric[c]
            parts.append([s + fill * (rows - n), q + fill * fill * (rows - n)])
        for c in pre.gaps:
            missing = rows - self.sums[c][0]
            parts.append([missing, missing])
        for c in self.categorical:
            vocab = pre.categorical[c]
            key = category_key(vocab)
            name = {key(v): v for v in vocab}
            folded = Counter()
            for value, n in self.categories.get(c, Counter()).items():
                if value is not None:
                    folded[name.get(key(value))] += n
            per_slot = [folded.get(v, 0) for v in vocab]
            per_slot.append(rows - sum(per_slot))  # missing or unseen
            if pre.encoding == "onehot":
                parts += [[k, k] for k in per_slot]
            else:
                index = np.arange(len(per_slot))
                parts.append([float((index * per_slot).sum()), float((index * index * per_slot).sum())])
        for c in self.words:
            parts += [[k, k] for k in (self.word_counts[c][w] for w in pre.words[c])]
        for c in self.vectors:
            _, sums, squares = self.vector_moments.get(c, [0, np.zeros(self.vectors[c]), np.zeros(self.vectors[c])])
            parts += [[float(s), float(q)] for s, q in zip(sums, squares)]
        sums, squares = np.asarray(parts, np.float64).T
        return np.stack([np.full(len(sums), rows, np.float64), sums, squares])


MAX_WORDS, MIN_WORDS = 5000, 100  # a free-text column's word slots when `max_words` is left out, from its rows
WORD_CELLS = 50_000_000  # of a free-text column's word slots over all rows: 200 MB of float32 features at most


def default_words(rows: int) -> int:
    """The words a free-text column keeps in a table of `rows` rows (`max_words` left out): MAX_WORDS up to 10,000
    rows (a CSV of sayings and their topic: 0.41 accuracy with 100 words, 0.68 with 5,000, where the text reader's
    TF-IDF model scores 0.67), then fewer, so that the slots stay within WORD_CELLS, never under MIN_WORDS."""
    return max(MIN_WORDS, min(MAX_WORDS, WORD_CELLS // max(rows, 1)))


MIN_GAPS = 10  # train rows with and without a value a column needs before its gaps are tested
GAP_ALPHA = 0.01  # the test's false-alarm rate: of columns whose gaps are at random, 1 in 100 gets a slot


def label_summary(label, classify: bool) -> Counter:
    """What `informative_gap` needs of some rows' labels: each class's rows, or a regression's count, sum and sum of
    squares (Counters add up over tasks)."""
    import pyarrow.compute as pc

    if classify:
        return Counter({entry["values"]: entry["counts"] for entry in pc.value_counts(label).to_pylist()})
    values = np.asarray(label.to_numpy(zero_copy_only=False), np.float64)
    return Counter({"n": len(values), "sum": float(values.sum()), "squares": float((values * values).sum())})


def informative_gap(gaps: Counter, everyone: Counter, classify: bool) -> bool:
    """Whether the labels of the rows missing a value (`gaps`) differ from those of the rows having it, out of
    `everyone`'s (`label_summary`s), at GAP_ALPHA: a chi-squared test of the classes, or Welch's t-test of the
    means. A gap at random adds a slot of noise, which costs a small table accuracy (2 points on the churn sample);
    a telling one (a blank income, an age nobody wrote down) is a feature a model should have."""
    from statistics import NormalDist

    if classify:
        having = everyone - gaps
        n_gaps, n_having = sum(gaps.values()), sum(having.values())
        if min(n_gaps, n_having) < MIN_GAPS:
            return False
        total = n_gaps + n_having
        classes = [k for k, n in everyone.items() if n]
        chi2 = sum((group[k] - size * everyone[k] / total) ** 2 / (size * everyone[k] / total)
                   for group, size in ((gaps, n_gaps), (having, n_having)) for k in classes)  # fmt: skip
        df = max(1, len(classes) - 1)  # Wilson-Hilferty: the chi-squared quantile from the normal's
        z = NormalDist().inv_cdf(1 - GAP_ALPHA)
        return chi2 > df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    n_gaps, n_having = gaps["n"], everyone["n"] - gaps["n"]
    if min(n_gaps, n_having) < MIN_GAPS:
        return False
    moments = [(n, s / n, max(q / n - (s / n) ** 2, 0.0) * n / (n - 1)) for n, s, q in
               ((n_gaps, gaps["sum"], gaps["squares"]),
                (n_having, everyone["sum"] - gaps["sum"], everyone["squares"] - gaps["squares"]))]  # fmt: skip
    (n1, mean1, var1), (n2, mean2, var2) = moments
    spread = math.sqrt(var1 / n1 + var2 / n2)
    return spread > 0 and abs(mean1 - mean2) / spread > NormalDist().inv_cdf(1 - GAP_ALPHA / 2)


@dataclass(frozen=True)
class Preprocess:
    numeric: dict[str, float]  # column -> the value that fills a missing one (train mean, median or mode)
    categorical: dict[str, list[str]]  # column -> its train vocabulary, sorted
    encoding: str  # onehot | index
    vectors: dict[str, int]  # column -> number of values
    labels: list[str] | None = None  # the class vocabulary (classification)
    scale: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]} per slot, when standardised
    version: int = 1
    dates: list[str] = field(default_factory=list)  # date columns: their `date_features` are among `numeric`
    words: dict[str, list[str]] = field(default_factory=dict)  # free-text column -> its kept words, sorted
    date_formats: dict[str, str] = field(default_factory=dict)  # date column -> its strptime format (else ISO 8601)
    missing_values: dict[str, list[str]] = field(default_factory=dict)  # column -> its own words read as missing
    decimal_comma: list[str] = field(default_factory=list)  # numeric columns written 1.234,56
    units: dict[str, str] = field(default_factory=dict)  # numeric column -> the unit after its numbers (12 kg)
    gaps: list[str] = field(default_factory=list)  # numeric columns (of `numeric`) that get a MISSING slot
    log: dict[str, float] = field(default_factory=dict)  # long-tailed numeric column -> s: its feature is log1p(x / s)
    names: list[str] = field(init=False)

    def __post_init__(self):
        names = list(self.numeric) + [f"{c}={MISSING}" for c in self.gaps]
        for column, vocab in self.categorical.items():
            names += [f"{column}={v}" for v in vocab] + [f"{column}={OTHER}"] if self.encoding == "onehot" else [column]
        names += [f"{column}~{w}" for column, vocab in self.words.items() for w in vocab]
        names += [f"{c}[{i}]" for c, n in self.vectors.items() for i in range(n)]
        object.__setattr__(self, "names", names)

    @property
    def width(self) -> int:
        return len(self.names)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("names")
        for key in ("dates", "words", "date_formats", "missing_values", "decimal_comma", "units", "gaps", "log"):
            if not out[key]:
                out.pop(key)  # the file of a table without them stays as it was
        return out

    @property
    def source_numeric(self) -> list[str]:
        """The numeric source columns (without the date features)."""
        derived = set(date_features(self.dates))
        return [c for c in self.numeric if c not in derived]

    @classmethod
    def from_json(cls, data: dict) -> Preprocess:
        return cls(**{k: v for k, v in data.items() if k != "names"})

    def with_scale(self, moments: np.ndarray) -> Preprocess:
        """This preprocessing, standardising each slot by the train moments [count, sum, sum of squares]."""
        count, total, squares = moments
        mean = total / np.maximum(count, 1)
        std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean * mean, 0.0))
        return Preprocess(**{**self.to_json(), "scale": {"mean": mean.tolist(), "std": std.tolist()}})

    def features(self, typed) -> np.ndarray:
        """The [rows, width] float32 features of typed rows (an Arrow table or batch from RowRules.check)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = typed.num_rows
        out = np.zeros((rows, self.width), np.float32)
        at = 0
        for column, fill in self.numeric.items():
            out[:, at] = pc.fill_null(typed.column(column), fill).to_numpy(zero_copy_only=False)
            if column in self.log:  # a value below 0 the fit never saw keeps its sign
                out[:, at] = np.sign(out[:, at]) * np.log1p(np.abs(out[:, at]) / self.log[column])
            at += 1
        for column in self.gaps:  # a value imputed or not: the model may learn what a gap says (HGB does)
            out[:, at] = pc.is_null(typed.column(column)).to_numpy(zero_copy_only=False)
            at += 1
        for column, vocab in self.categorical.items():
            values, names = typed.column(column), pa.array(vocab, pa.string())
            if case_free(vocab):  # a vocabulary fitted before case variants were merged may hold both
                values, names = pc.utf8_lower(values), pc.utf8_lower(names)
            index = pc.index_in(values, value_set=names)
            index = pc.fill_null(index, len(vocab)).to_numpy(zero_copy_only=False)
            if self.encoding == "onehot":
                out[np.arange(rows), at + index] = 1.0
                at += len(vocab) + 1
            else:
                out[:, at] = index
                at += 1
        for column, vocab in self.words.items():
            rows_of, words = _row_words(typed.column(column))
            index = pc.index_in(words, value_set=pa.array(vocab, pa.string()))
            found = np.asarray(pc.is_valid(index).to_numpy(zero_copy_only=False), bool)
            out[np.asarray(rows_of)[found], at + np.asarray(index.drop_null(), np.int64)] = 1.0
            at += len(vocab)
        for column, size in self.vectors.items():
            flat = pc.list_flatten(typed.column(column)).to_numpy(zero_copy_only=False)
            out[:, at : at + size] = np.asarray(flat, np.float64).reshape(rows, size)
            at += size
        if self.scale is not None:
            std = np.asarray(self.scale["std"])
            out = ((out - np.asarray(self.scale["mean"])) / np.where(std > 0, std, 1.0)).astype(np.float32)
        return out

    def label_index(self, column) -> np.ndarray:
        """Class indexes of a label column (every value is in the vocabulary: the fit saw all rows)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        return pc.index_in(column, value_set=pa.array(self.labels, pa.string())).to_numpy(zero_copy_only=False)


def _row_words(column):
    """(row index, word) pairs of a text column: lower-cased, split at anything but letters and digits."""
    import pyarrow.compute as pc

    tokens = pc.split_pattern_regex(pc.utf8_lower(column), r"[^\w]+")
    words = pc.list_flatten(tokens)
    rows = pc.list_parent_indices(tokens)
    keep = pc.not_equal(words, "")
    return pc.filter(rows, keep).to_numpy(zero_copy_only=False), pc.filter(words, keep)
