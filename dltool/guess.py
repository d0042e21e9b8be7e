"""`dltool init`: look at a user's data and write a commented experiment YAML that validates and trains.

Every guess is made from a bounded sample (at most MAX_ENTRIES paths listed, MAX_HEADERS file headers and
MAX_ROWS table rows read) and explained twice: as a comment beside the line it wrote, and in `notes`.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dltool.config.readers import id_like, label_task
from dltool.errors import ConfigError, InputNotFoundError

MAX_ENTRIES = 100_000  # paths listed from a folder
MAX_HEADERS = 200  # image or audio headers read for sizes
MAX_ROWS = 2_000  # table rows read for the label, the task and the split column
MAX_HEADER_BYTES = 64 * 1024  # an image header is read from at most this many bytes

KINDS = {
    "image": {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"},
    "audio": {".wav", ".flac", ".ogg", ".mp3", ".opus"},
    "text": {".txt"},
    "csv": {".csv", ".tsv"},
    "parquet": {".parquet"},
    "orc": {".orc"},
    "json": {".json", ".jsonl", ".ndjson"},
}
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test", "testing": "test"}  # fmt: skip
TEST_LIKE = {"holdout", "eval", "evaluation", "heldout", "held_out"}
LABEL_NAMES = ("label", "target", "class", "y", "outcome", "category", "labels", "species")
SPLIT_COLUMNS = ("split", "fold", "set", "subset", "partition")


@dataclass
class Guess:
    """The config `dltool init` wrote, as text, and why it chose what it did."""

    yaml: str
    reader: str
    notes: list[str] = field(default_factory=list)


def guess_config(target: str, base: str | None = None, name: str | None = None) -> Guess:
    """A commented experiment YAML for the data at `target` (a folder or a file); paths in it are written relative to
    `base` (the folder the YAML will be saved in; default: the working directory)."""
    path = Path(target)
    if "://" in target:
        raise ConfigError(f"{target}: dltool init reads local folders and files; copy a sample here to start")
    if not path.exists():
        raise InputNotFoundError(f"{target}: no such file or folder")
    base = os.path.abspath(base or os.getcwd())
    name = name or _name_of(path)
    if path.is_file():
        kind = _kind_of(path)
        if kind not in ("csv", "parquet", "orc", "json"):
            workbook = ": a spreadsheet workbook; save it as CSV (UTF-8) first" if path.suffix.lower() in WORKBOOKS else ""
            raise ConfigError(f"{target}: dltool init takes a folder of images, audio or text, or a table file "
                              f"(CSV, Parquet, ORC, JSON lines){workbook}")  # fmt: skip
        return _table(path, kind, base, name, [f"{path.name}: a {kind} table"])
    files, truncated = _listing(path)
    counts = Counter(kind for kind in (_kind_of(Path(f)) for f in files) if kind)
    if not counts:
        raise ConfigError(f"{target}: found no images, audio, text or table files in {len(files)} files")
    kind, count = counts.most_common(1)[0]
    notes = [f"{target}: {count} {kind} files of {len(files)}{' (listing stopped there)' if truncated else ''}"]
    if kind in ("csv", "parquet", "orc", "json"):
        return _table(path, kind, base, name, notes)
    ours = [f for f in files if _kind_of(Path(f)) == kind]
    return _files(path, kind, ours, base, name, notes)


def _name_of(path: Path) -> str:
    stem = path.resolve().stem if path.is_file() else path.resolve().name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-") or "experiment"


def _kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if path.name.lower().endswith((".csv.gz", ".csv.bz2")):
        return "csv"
    return next((kind for kind, suffixes in KINDS.items() if suffix in suffixes), None)


def _listing(root: Path) -> tuple[list[str], bool]:
    """Paths relative to `root`, hidden files and folders left out, at most MAX_ENTRIES."""
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for item in sorted(names):
            if not item.startswith((".", "_")):
                found.append(os.path.relpath(os.path.join(folder, item), root).replace(os.sep, "/"))
                if len(found) >= MAX_ENTRIES:
                    return found, True
    return found, False


# ---------------------------------------------------------------- folders of files


def _files(root: Path, kind: str, files: list[str], base: str, name: str, notes: list[str]) -> Guess:
    lines = [f"# Written by `dltool init {root}`: every guess is explained beside it. Change what is wrong.",
             f"name: {name}", "dataset:", f"  path: out/datasets/{name}"]  # fmt: skip
    parts = [f.split("/") for f in files]
    splits = {p[0] for p in parts if len(p) > 1 and p[0].lower() in SPLIT_NAMES}
    by_path = len(splits) >= 2 and all(len(p) > 1 and p[0].lower() in SPLIT_NAMES for p in parts)
    classes = Counter(p[-2] for p in parts if len(p) >= 2)
    depth_after_split = {len(p) - (1 if by_path else 0) for p in parts}
    group = not by_path and depth_after_split == {3} and len({p[0] for p in parts}) >= 2
    labelled = len(classes) >= 2
    lines.append("  split:")
    if by_path:
        lines += [f"    by: path   # the top folders {sorted(splits)} name the splits"]
        if not any(SPLIT_NAMES[s.lower()] == "val" for s in splits):
            lines.append("    val_from_train: 0.1   # no val/ folder: 10% of train, stratified by class")
        notes.append(f"splits from the folders {sorted(splits)}")
    else:
        lines += ["    train: 0.8   # a stable hash of each file's path: reruns keep each file's split",
                  "    val: 0.1", "    test: 0.1"]  # fmt: skip
        if labelled:
            lines.append("    stratify: true   # every class keeps these fractions")
        if group:
            lines.append("    group: '^([^/]+)/'   # the first folder (a speaker, a patient?) stays in one split")
            notes.append(f"{len({p[0] for p in parts})} first-level folders above the class folders: grouped by "
                         "the first folder, so none of them is in two splits")  # fmt: skip
        notes.append("no train/ or test/ folders: a hashed 80/10/10 split")
    reader = "text" if kind == "text" else kind
    lines += ["ingest:", f"  reader: {reader}", f"  input: {_relative(str(root), base)}"]
    if labelled:
        lines.append("  label: {source: parent_dir}   # the folder holding each file names its class")
        shown = ", ".join(f"{c} ({n})" for c, n in classes.most_common(8))
        notes.append(f"{len(classes)} classes from the folder names: {shown}{', ...' if len(classes) > 8 else ''}")
    else:
        raise ConfigError(f"{root}: the files are not in class folders (found {len(classes)} folder(s) holding "
                          f"{kind} files): put each class in its own folder, e.g. {root}/cat/1.jpg, {root}/dog/2.jpg")
    if kind == "image":
        lines += _image_lines(root, files, notes)
    elif kind == "audio":
        lines += _audio_lines(root, files, notes)
    else:
        lines.append("  output: auto   # TF-IDF of words and pairs for short texts, word ids for long ones")
        notes.append("text: the reader picks a bag of words or word order from the corpus size (output: auto)")
    lines += _train_lines(name, classes=True)
    return Guess(_aligned(lines), reader, notes)


def _image_lines(root: Path, files: list[str], notes: list[str]) -> list[str]:
    from PIL import Image

    sizes, modes = [], Counter()
    for rel in _sample(files, MAX_HEADERS):
        try:
            with open(root / rel, "rb") as handle, Image.open(handle) as img:  # the header only: nothing decoded
                sizes.append(img.size)
                modes[img.mode] += 1
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # ingest quarantines it, naming the file
    if not sizes:
        raise ConfigError(f"{root}: none of the {min(len(files), MAX_HEADERS)} images sampled has a readable header")
    width = statistics.median(w for w, _ in sizes)
    height = statistics.median(h for _, h in sizes)
    side = _image_side(max(width, height))
    gray = sum(n for mode, n in modes.items() if mode in ("L", "1", "I", "I;16", "F", "LA")) > sum(modes.values()) / 2
    square = 0.8 <= width / max(height, 1) <= 1.25
    notes.append(f"images: median {width:g}x{height:g} px ({len(sizes)} headers read), "
                 f"{'mostly grayscale' if gray else 'colour'}: size [{side}, {side}]")  # fmt: skip
    return [f"  size: [{side}, {side}]   # median image {width:g}x{height:g} px, kept small for a quick first model",
            f"  channels: {1 if gray else 3}   # {'grayscale' if gray else 'colour'} files",
            f"  resize: {'stretch' if square else 'pad'}   # {'square images' if square else 'keeps the aspect: pads the short side'}"]  # fmt: skip


def _image_side(longest: float) -> int:
    """The model's input side: the images' own up to 64 px (a power of two or their size), 64 beyond."""
    if longest <= 64:
        return int(max(8, round(longest)))
    return 64


def _audio_lines(root: Path, files: list[str], notes: list[str]) -> list[str]:
    import soundfile

    rates, seconds = [], []
    for rel in _sample(files, MAX_HEADERS):
        try:
            info = soundfile.info(str(root / rel))  # the header only
        except (RuntimeError, OSError, ValueError, soundfile.LibsndfileError):
            continue
        rates.append(info.samplerate)
        seconds.append(info.frames / max(info.samplerate, 1))
    if not rates:
        raise ConfigError(f"{root}: none of the {min(len(files), MAX_HEADERS)} audio files sampled has a readable header")
    rate = min(16000, int(statistics.median(rates)))
    duration = min(10.0, max(0.5, round(statistics.quantiles(seconds, n=10)[-1] * 2) / 2 if len(seconds) > 1 else seconds[0]))
    notes.append(f"audio: median {statistics.median(rates):g} Hz, clips {min(seconds):.2f}-{max(seconds):.2f} s "
                 f"({len(rates)} headers read): {duration:g} s at {rate} Hz, log-mel features")  # fmt: skip
    return [f"  sample_rate: {rate}   # clips resampled to this (median of the files: {statistics.median(rates):g} Hz)",
            f"  duration: {duration:g}   # seconds per example: 9 in 10 clips fit; longer are cropped, shorter padded",
            "  features: logmel   # a log-mel spectrogram per clip, computed at ingest"]  # fmt: skip


def _sample(items: list[str], count: int) -> list[str]:
    """Up to `count` items spread over the list (every class, not the first folder's only)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


# ---------------------------------------------------------------- tables


def _table(path: Path, kind: str, base: str, name: str, notes: list[str]) -> Guess:
    columns, rows, dialect = _table_sample(path, kind)
    if not columns:
        raise ConfigError(f"{path}: found no columns (is the first line a header?)")
    label = _label_column(columns, rows)
    values = [row.get(label) for row in rows]
    task, why = label_task([None if v is None else str(v) for v in values])
    split_column = next((c for c in columns if c.lower() in SPLIT_COLUMNS and c != label), None)
    split_values = sorted({str(row.get(split_column)) for row in rows if row.get(split_column) not in (None, "")}) \
        if split_column else []  # fmt: skip
    known = [v for v in split_values if v.lower() in SPLIT_NAMES or v.lower() in TEST_LIKE]
    key = next((c for c in columns if id_like(c) and len({row.get(c) for row in rows}) == len(rows) and c != label), None)
    lines = [f"# Written by `dltool init {path}`: every guess is explained beside it. Change what is wrong.",
             f"name: {name}", "dataset:", f"  path: out/datasets/{name}", "  split:"]  # fmt: skip
    if split_column and split_values and len(known) == len(split_values):
        lines += ["    by: column", f"    column: {split_column}   # its values name each row's split: "
                  f"{', '.join(split_values)}"]  # fmt: skip
        extra = {v: "test" for v in split_values if v.lower() in TEST_LIKE}
        if extra:
            lines.append(f"    names: {json.dumps(extra)}")
        notes.append(f"splits from the column {split_column!r} ({', '.join(split_values)})")
    else:
        lines += ["    train: 0.8   # a stable hash of each row: reruns keep each row's split",
                  "    val: 0.1", "    test: 0.1"]  # fmt: skip
        if task == "classification":
            lines.append("    stratify: true   # every class keeps these fractions")
        notes.append("a hashed 80/10/10 split of the rows")
    lines += ["ingest:"]
    plain = kind != "csv" or (dialect == PLAIN_CSV and not path.is_dir())  # read by the text reader as by ingest's
    text = _text_column(columns, rows, {label, key, split_column}) if task == "classification" and plain else None
    if text is not None:
        column, words = text
        lines += ["  reader: text", f"  format: {kind}", f"  input: {_relative(str(path), base)}",
                  f"  text_column: {_yaml_name(column)}   # the one feature: free text, {words:.0f} words a row on average",
                  f"  label: {_yaml_name(label)}   # {_label_reason(label)}"]  # fmt: skip
        if key:
            lines.append(_key_line(key))
        lines.append("  output: auto   # TF-IDF of words, word pairs and subwords for short texts, word ids for long ones")
        notes.append(f"label {label!r} ({why}); the text of {column!r} read as documents (reader: text)")
        lines += _train_lines(name, classes=True)
        return Guess(_aligned(lines), "text", notes)
    if kind == "csv":
        lines += ["  reader: csv", f"  input: {_relative(str(path), base)}"]
        if path.is_file() and path.suffix.lower() == ".tsv":
            lines.append("  delimiter: \"\\t\"")
        encoding = dialect["encoding"]
        if encoding != "utf-8":
            lines.append(f"  encoding: {encoding}   # the file is not UTF-8 " + (
                "(its byte-order mark)" if encoding == "utf-16" else "(Windows exports are cp1252)"))
    else:
        lines += ["  reader: table", f"  format: {kind}", f"  input: {_relative(str(path), base)}"]
    lines += [f"  label: {_yaml_name(label)}   # {_label_reason(label)}",
              f"  task: {task}   # {why}",
              "  numeric: auto   # numbers (ids left out); dates and free text are found too",
              "  categorical: auto   # text columns with at most 50 distinct values"]  # fmt: skip
    if key:
        lines.append(_key_line(key))
    excluded = [c for c in (split_column,) if c]
    if excluded:
        lines.append(f"  exclude: [{', '.join(_yaml_name(c) for c in excluded)}]   # the split column is no feature")
    notes.append(f"label {label!r} ({task}: {why}); features: every other column, roles found at ingest")
    lines += _train_lines(name, classes=task == "classification")
    return Guess(_aligned(lines), "csv" if kind == "csv" else "table", notes)


TEXT_WORDS = 3  # a lone feature of this many words a row on average (and mostly distinct) is text to classify


CODE = re.compile(r"(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_-]+")  # B000J0LSBG, SKU-1234, a hash: letters and digits


def _codes(values: list) -> bool:
    """Whether a column holds codes (an Amazon review's product ASIN, a SKU, a hash): letters and digits in one token,
    nearly every row's its own. Its values share no words: beside a text column it is no second feature."""
    filled = [str(v).strip() for v in values if v is not None and str(v).strip()]
    return bool(filled) and len(set(filled)) >= 0.9 * len(filled) and all(CODE.fullmatch(v) for v in filled)


def _text_column(columns: list[str], rows: list[dict], other: set) -> tuple[str, float] | None:
    """The table's one feature column when it holds free text (tweets, tickets, titles), with its words a row.

    Such a table is a text classification set, which the text reader serves better than a table's word slots
    (docs/benchmarks.md)."""
    features = [c for c in columns if c not in other and c.strip() and not _codes([row.get(c) for row in rows])]
    if len(features) != 1 or not rows:
        return None
    values = [str(row.get(features[0]) or "") for row in rows]
    filled = [v for v in values if v.strip()]
    words = sum(len(v.split()) for v in filled) / max(len(filled), 1)
    if words < TEXT_WORDS or len(set(filled)) < 0.5 * len(values):
        return None
    return features[0], words


WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")


def csv_encoding(path: Path) -> str:
    """The encoding ingest reads a CSV file (or a folder's first) in where the config leaves it out."""
    from dltool.readers.csv import HEAD_BYTES, encoding_sample, sniff_encoding

    if path.is_dir():
        path = next((Path(path, f) for f in _listing(path)[0] if _kind_of(Path(f)) == "csv"), path)
    with open(path, "rb") as handle:
        return sniff_encoding(encoding_sample(handle, handle.read(HEAD_BYTES)))


def _key_line(key: str) -> str:
    return f"  key_column: {_yaml_name(key)}   # unique in the rows read: names each row in errors and predictions"


# a CSV the text reader reads as ingest's csv reader does: commas, UTF-8, its header on the first line
PLAIN_CSV = {"encoding": "utf-8", "delimiter": ",", "title_lines": 0, "read": True}


def _table_sample(path: Path, kind: str) -> tuple[list[str], list[dict], dict | None]:
    """The column names and up to MAX_ROWS rows (as text) of a table file, or of the first file of a folder.

    Third, for a CSV, how it was read (PLAIN_CSV's keys): its encoding, delimiter, lines above the header, and
    whether the csv module read its first lines (not with a quote left open, a field past the size limit)."""
    if path.is_dir():
        first = next((Path(path, f) for f in _listing(path)[0] if _kind_of(Path(f)) == kind), None)
        if first is None:
            raise ConfigError(f"{path}: found no {kind} file")
        path = first
    if kind == "csv":
        from dltool.readers.csv import SNIFF_LINES, header_row, sniff_delimiter

        csv.field_size_limit(1 << 20)  # a value of at most 1 MiB, as ingest's max_chars_per_value
        encoding = csv_encoding(path)
        with open(path, newline="", encoding=encoding, errors="replace") as handle:
            # the delimiter as ingest finds it where the config leaves it out (a `;` export, a tab file)
            delimiter = sniff_delimiter(handle.read(1 << 20), '"', {}) or ("\t" if path.suffix.lower() == ".tsv" else ",")
            handle.seek(0)
            try:
                records = list(itertools.islice(csv.reader(handle, delimiter=delimiter), SNIFF_LINES))
            except csv.Error:  # a quote left open: the sample below says what it can
                records = []
            handle.seek(0)
            title_lines = header_row(records)
            for _ in range(title_lines):  # a title above the header, which ingest skips too
                next(csv.reader(handle, delimiter=delimiter), None)
            reader = csv.DictReader(handle, delimiter=delimiter)
            rows = [row for _, row in zip(range(MAX_ROWS), reader)]
            dialect = {"encoding": encoding, "delimiter": delimiter, "title_lines": title_lines, "read": bool(records)}
            return list(reader.fieldnames or []), rows, dialect
    if kind == "json":
        rows = []
        with open(path, encoding="utf-8", errors="replace") as handle:
            for _, line in zip(range(MAX_ROWS), handle):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{path}: not JSON lines (one object per line): {e}") from e
        columns = list(dict.fromkeys(k for row in rows if isinstance(row, dict) for k in row))
        return columns, [row for row in rows if isinstance(row, dict)], None
    import pyarrow.orc as orc
    import pyarrow.parquet as pq

    if kind == "parquet":
        table = next(pq.ParquetFile(path).iter_batches(batch_size=MAX_ROWS), None)
    else:
        table = orc.ORCFile(path).read_stripe(0) if orc.ORCFile(path).nstripes else None
    if table is None:
        return [], [], None
    table = table.slice(0, MAX_ROWS)
    return list(table.schema.names), table.to_pylist(), None


def _label_column(columns: list[str], rows: list[dict]) -> str:
    """A column named like a label, else the last column that is no id, split or free text (at most 50 values)."""
    lowered = {c.lower(): c for c in columns}
    named = next((lowered[n] for n in LABEL_NAMES if n in lowered), None)
    if named is not None:
        return named
    for column in reversed(columns):
        values = [row.get(column) for row in rows]
        distinct = {str(v) for v in values}
        gaps = sum(v in (None, "") for v in values) > 0.05 * max(len(values), 1)  # a label is rarely left empty
        if not gaps and not id_like(column) and column.lower() not in SPLIT_COLUMNS \
                and (len(distinct) <= 50 or _all_numbers(distinct)):  # fmt: skip
            return column
    # else the last named column with values (not the empty ones a spreadsheet's trailing commas make)
    return next((c for c in reversed(columns) if c.strip() and any(row.get(c) not in (None, "") for row in rows)),
                columns[-1])


def _all_numbers(values) -> bool:
    try:
        [float(v) for v in values if v not in ("", "None")]
    except ValueError:
        return False
    return True


def _label_reason(label: str) -> str:
    return "named like a label" if label.lower() in LABEL_NAMES else \
        "the last column with no gaps that is no id or free text (none is named label or target)"


def _yaml_name(column: str) -> str:
    """A column name as a YAML scalar: quoted when YAML would read it as something else."""
    return column if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .-]*", column) and column.lower() not in (
        "y", "n", "yes", "no", "true", "false", "on", "off", "null") else json.dumps(column, ensure_ascii=False)  # fmt: skip


# ---------------------------------------------------------------- common


def _train_lines(name: str, classes: bool) -> list[str]:
    return ["train:",
            f"  run_dir: out/runs/{name}",
            "  model: {builtin: auto}   # a network built for the reader: a CNN for images and sound, "
            "a tabular net for tables, a bag-of-words or word-order net for text",
            "  # epochs, batch size and early stopping are sized to the data when left out",
            f"  monitor: {'val_accuracy' if classes else 'val_loss'}"]  # fmt: skip


def _aligned(lines: list[str]) -> str:
    """The YAML text with each line's comment moved to one column (a line's own `#` inside quotes is left alone)."""
    out = []
    for line in lines:
        code, sep, comment = line.partition("   # ") if not line.lstrip().startswith("#") else (line, "", "")
        out.append(f"{code.rstrip():<32} # {comment.strip()}" if sep else line)
    return "\n".join(out) + "\n"


def _relative(target: str, base: str) -> str:
    """A path as the config will hold it: relative to the config's folder (the loader resolves it from there)."""
    rel = os.path.relpath(os.path.abspath(target), base).replace(os.sep, "/")
    return json.dumps(rel) if rel != rel.strip() or ":" in rel or rel.startswith(("#", "&", "*", "!", "{", "[")) else rel
