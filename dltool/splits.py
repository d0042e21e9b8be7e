"""Which split each record lands in: the same rules in Python (file readers) and Spark SQL (table readers).

- `by: hash`: a stable hash of the record key, or of its `group`, against the fractions; with
  `stratify`, each class is cut by its own hash order, so every class keeps the fractions.
- `by: path`: a regex over the file's relative path names the split (`train/`, `test/`...).
- `by: column`: a column names it (table readers).

With `by: path` or `column`, data that has no validation split gets one: `val_from_train`
of train, stratified by class and cut by the same stable hash.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dltool.config.models import KNOWN_SPLIT_NAMES, SplitSettings
from dltool.errors import ConfigError
from dltool.storage.manifest import SPLITS

if TYPE_CHECKING:
    from dltool.storage.manifest import Duplicates


def split_point(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by the key alone: the first 32 bits of md5(salt + key)."""
    return int(hashlib.md5((salt + key).encode()).hexdigest()[:8], 16) / 2**32


def split_of(key: str, split: SplitSettings) -> str:
    point = split_point(key, split.salt)
    if point < split.train:
        return "train"
    return "val" if point < split.train + split.val else "test"


def split_column(key_column, split: SplitSettings):
    """The same assignment as split_of, as a Spark column expression."""
    from pyspark.sql import functions as F

    point = F.conv(F.substring(F.md5(F.concat(F.lit(split.salt), key_column)), 1, 8), 16, 10).cast("double") / 2**32
    return F.when(point < split.train, "train").when(point < split.train + split.val, "val").otherwise("test")


@dataclass(frozen=True)
class Item:
    """One record to place: its key, its path relative to the input, its class (None: unlabelled)."""

    key: str
    path: str
    label: str | None


def assign(items: list[Item], split: SplitSettings,
           known: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:  # fmt: skip
    """Each item's split by key, and the keys that have none with the reason (`by: path` that does not match).

    `known`: the split of each record already in the dataset (key = path), kept for life: an item with a
    known key keeps its split, an item of a known group joins its group's split, and only the others are
    placed, among themselves, by the rules (so stratification holds within each batch of new records)."""
    group = _group_of(split)
    if known:
        of_group = {group(Item(key, key, None)): name for key, name in known.items()} if group else {}
        kept = {item.key: known.get(item.key) or of_group.get(group(item) if group else None) for item in items}
        placed, missing = assign([item for item in items if kept[item.key] is None], split)
        return {**placed, **{key: name for key, name in kept.items() if name is not None}}, missing
    if split.by == "column":
        raise ConfigError("dataset.split.by: column names a table column; file readers split by hash or path")
    if split.by == "hash":
        return cut(items, (split.train, split.val, split.test), split.salt, split.stratify, group), {}
    pattern = split.path_pattern()
    placed, missing = {}, {}
    for item in items:
        found = pattern.search(item.path)
        name = split.split_name(found.group(1)) if found else None
        if name is None:
            what = f"names an unknown split {found.group(1)!r}" if found else "does not match"
            missing[item.key] = f"path {what} (dataset.split.pattern {pattern.pattern!r})"
        else:
            placed[item.key] = name
    if "val" not in placed.values() and split.val_from_train > 0:
        train = [item for item in items if placed.get(item.key) == "train"]
        fractions = (1 - split.val_from_train, split.val_from_train, 0.0)
        placed.update(cut(train, fractions, split.salt, True, group))
    return placed, missing


def cut(items: list[Item], fractions: tuple[float, float, float], salt: str, stratify: bool, group) -> dict[str, str]:
    """Split items by the stable hash of their key or group: by threshold, or stratified by class.

    Stratified: each class's units (records, or groups: a group belongs to its most common class)
    are ordered by hash and cut at n * train and n * (train + val), rounded, so every
    class's count per split is within one of its fractions.
    """
    units: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        units[group(item) if group else item.key].append(item)
    placed = {}
    if not stratify:
        settings = SplitSettings(train=fractions[0], val=fractions[1], test=fractions[2], salt=salt)
        for unit, members in units.items():
            name = split_of(unit, settings)
            placed.update((m.key, name) for m in members)
        return placed
    by_class: dict[str | None, list[str]] = defaultdict(list)
    for unit, members in units.items():
        counts = Counter(m.label for m in members)
        by_class[min(counts, key=lambda c: (-counts[c], str(c)))].append(unit)
    for members in by_class.values():
        members.sort(key=lambda unit: (split_point(unit, salt), unit))
        n = len(members)
        ends = (int(n * fractions[0] + 0.5), int(n * (fractions[0] + fractions[1]) + 0.5))  # half up, as Spark
        for rank, unit in enumerate(members):
            name = "train" if rank < ends[0] else "val" if rank < ends[1] else "test"
            placed.update((m.key, name) for m in units[unit])
    return placed


def _group_of(split: SplitSettings):
    """The function giving a file's group (the regex's first group; the whole path when it does not match)."""
    if split.group is None:
        return None
    try:
        pattern = re.compile(split.group)
    except re.error as e:
        raise ConfigError(f"dataset.split.group: not a regular expression: {e}") from e
    if pattern.groups < 1:
        raise ConfigError(f"dataset.split.group: {split.group!r} has no (group); file readers need a regex whose "
                          "first group names the group, e.g. '^([^/]+)/' for the first folder")  # fmt: skip

    def group(item: Item) -> str:
        found = pattern.search(item.path)
        return f"group:{found.group(1)}" if found else item.key

    return group


def find_duplicates(entries, limit: int = 20) -> Duplicates | None:
    """Identical contents across splits from (content digest, split, key) entries; None when there are none."""
    from dltool.storage.manifest import Duplicates

    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for digest, split, key in entries:
        groups[digest].append((split, key))
    spread = [sorted(members) for members in groups.values() if len({s for s, _ in members}) > 1]
    if not spread:
        return None
    spread.sort(key=lambda members: members[0][1])
    examples, shown = [], 0
    for members in spread:
        if shown >= limit:
            break
        heads = [next(k for s, k in members if s == split) for split in sorted({s for s, _ in members})]
        keys = (heads + [k for _, k in members if k not in heads])[: limit - shown]  # a key of each split first
        examples.append({"splits": sorted({s for s, _ in members}), "keys": keys})
        shown += len(keys)
    return Duplicates(sum(len(m) for m in spread), len(spread), tuple(examples))


def report(per_split: dict[str, dict[str, int]], vocabulary: list[str] | None, split: SplitSettings) -> list[str]:
    """Warning lines: a split that should hold records and is empty, a class missing from val or test.

    Expected: by hash, the splits with a fraction above 0; by path or column, train and val
    (val is carved from train when the data has none) and test when the data named it.
    """
    rows = {name: sum(per_split.get(name, {}).values()) for name in SPLITS}
    if split.by == "hash":
        expected = [name for name, share in zip(SPLITS, (split.train, split.val, split.test)) if share > 0]
    else:
        expected = ["train", "val"] if split.val_from_train > 0 else ["train"]
    warnings = [f"split {name} is empty" for name in expected if not rows[name]]
    for name in ("val", "test"):
        counts = per_split.get(name, {})
        absent = [c for c in vocabulary or [] if not counts.get(c)] if rows[name] else []
        if absent:
            shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
            warnings.append(f"split {name} has no example of class {shown}")
    return warnings + _case_variants(vocabulary or [])


def _case_variants(vocabulary: list[str]) -> list[str]:
    """A warning for each set of classes written alike but for case and spaces (Churned, churned): one class written
    two ways, most often. They stay apart (in letters, a and A are two classes)."""
    spellings: dict[str, list[str]] = {}
    for c in vocabulary:
        spellings.setdefault(" ".join(str(c).split()).casefold(), []).append(str(c))
    return [f"classes {', '.join(repr(c) for c in same[:5])} differ only in case or spaces: one class written "
            f"{len(same)} ways? They are kept apart; write the label alike to make them one"
            for same in spellings.values() if len(same) > 1]  # fmt: skip


def column(name: str):
    """The Spark column of a source column name as written, dots, spaces and parentheses included."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def with_split(frame, key, label, split: SplitSettings):
    """`frame` with a `split` column (table readers): hash, hash per class, the file's path or a column.

    `key` is the row key column, `label` the class column (None: one class), and `frame` has
    `_relpath`, each row's file relative to the input. A row whose file path or split column
    names no split gets a null split (the tasks quarantine it).
    """
    from pyspark.sql import functions as F

    unit = F.coalesce(column(split.group).cast("string"), key) if split.group else key
    frame = frame.withColumn("_unit", unit)
    if split.by == "hash" and not split.stratify:
        return frame.withColumn("split", split_column(F.col("_unit"), split)).drop("_unit")
    if split.by == "hash":
        ranked = _ranked(frame, label, (split.train, split.val, split.test), split.salt)
        return frame.join(ranked, "_unit", "left").drop("_unit")
    known = {**KNOWN_SPLIT_NAMES, **{k.strip().lower(): v for k, v in split.names.items()}}
    if split.by == "path":  # the file's path relative to the input: train.csv, test/part-1.csv
        pattern = split.path_pattern()
        flags = "(?i)" if pattern.flags & re.IGNORECASE else ""
        named = F.lower(F.regexp_extract(F.col("_relpath"), flags + pattern.pattern, 1))
    else:
        named = F.lower(F.trim(column(split.column).cast("string")))
    names = F.create_map(*[F.lit(x) for pair in known.items() for x in pair])
    frame = frame.withColumn("split", F.element_at(names, named))
    if split.val_from_train > 0 and not frame.where(F.col("split") == "val").limit(1).count():
        train = frame.where(F.col("split") == "train")
        carved = _ranked(train, label, (1 - split.val_from_train, split.val_from_train, 0.0), split.salt)
        frame = frame.join(carved.withColumnRenamed("split", "_carved"), "_unit", "left")
        carve = F.when(F.col("split") == "train", F.coalesce("_carved", "split")).otherwise(F.col("split"))
        frame = frame.withColumn("split", carve).drop("_carved")  # only train rows move to val
    return frame.drop("_unit")


def keep_known(spark, frame, known: dict[str, str] | None, split: SplitSettings):
    """`frame` (with `key` and `split`) with each row of `known`'s keys in the split it had (a dataset's later
    version, a refit); a group with a known row stays whole, in that row's split."""
    if not known:
        return frame
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    held = spark.createDataFrame(list(known.items()), "key string, _known string")
    frame = frame.join(F.broadcast(held), "key", "left")
    if split.group:
        unit = F.coalesce(column(split.group).cast("string"), F.col("key"))
        frame = frame.withColumn("_known", F.coalesce("_known", F.max("_known").over(Window.partitionBy(unit))))
    return frame.withColumn("split", F.coalesce("_known", "split")).drop("_known")


def _ranked(frame, label, fractions, salt):
    """(_unit, split) with each class's units cut by their hash order at the fractions (as `cut`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    klass = F.trim(label) if label is not None else F.lit(None).cast("string")
    units = frame.groupBy("_unit").agg(F.mode(klass, deterministic=True).alias("_class"))
    point = F.conv(F.substring(F.md5(F.concat(F.lit(salt), F.col("_unit"))), 1, 8), 16, 10).cast("double")
    rank = F.row_number().over(Window.partitionBy("_class").orderBy(point, "_unit")) - 1
    n = F.count("*").over(Window.partitionBy("_class"))
    ends = (F.floor(n * fractions[0] + 0.5), F.floor(n * (fractions[0] + fractions[1]) + 0.5))
    split = F.when(rank < ends[0], "train").when(rank < ends[1], "val").otherwise("test")
    return units.select("_unit", split.alias("split"))
