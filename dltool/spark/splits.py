"""Stable split assignment: a hash of the record key, the same in Python and in Spark SQL."""

from __future__ import annotations

import hashlib

from dltool.config.models import SplitSettings

SPLITS = ("train", "val", "test")


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
