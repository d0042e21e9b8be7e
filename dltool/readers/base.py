"""Record reader base classes and the registry keyed by the YAML `reader:` name.

A file reader only decodes: the ingest job lists files, assigns labels and
splits, reads bytes, writes shards and quarantines failures. A table reader
(CSV) turns its input into a Spark DataFrame of features, labels and keys.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from dltool.errors import ConfigError
from dltool.shards.codec import TensorSpec

REGISTRY: dict[str, type["Reader"]] = {}


def register(cls: type["Reader"]) -> type["Reader"]:
    REGISTRY[cls.name] = cls
    return cls


def reader_for(config) -> "Reader":
    """The reader instance for an ingest config section."""
    import dltool.readers  # noqa: F401  (registers the built-in readers)

    try:
        return REGISTRY[config.reader](config)
    except KeyError as e:
        raise ConfigError(f"ingest.reader: unknown reader {config.reader!r}; known: {sorted(REGISTRY)}") from e


class Reader(ABC):
    name: ClassVar[str]
    kind: ClassVar[str]  # "file" or "table"

    def __init__(self, config):
        self.config = config


class FileReader(Reader):
    """Decodes one file's bytes into one or more fixed-shape examples."""

    kind = "file"

    @abstractmethod
    def tensor_spec(self) -> TensorSpec:
        """The shape and dtype of one example, known from the config before any data is read."""

    def setup(self) -> None:
        """Per-task set-up on the executor (thread limits, lazy imports)."""

    @abstractmethod
    def decode(self, data: bytes, relpath: str) -> list[tuple[str, np.ndarray]]:
        """The (key suffix, example) pairs of one file; raises RecordError for a bad record."""

    def stats_axis(self) -> int:
        """The tensor axis that train statistics are kept per entry of (channel, mel bin)."""
        return -1

    def augment_copies(self) -> int:
        return 0

    def augment(self, example: np.ndarray, key: str, copy: int) -> np.ndarray:
        return example

    def label_of(self, relpath: str) -> str | None:
        """The label text of a file from its path relative to the input root (None: unlabelled)."""
        label = self.config.label
        if label.source == "none":
            return None
        if label.source == "parent_dir":
            parts = relpath.split("/")
            return parts[-2] if len(parts) >= 2 else None
        match = re.search(label.pattern, relpath)
        return match.group(1) if match else None


class TableReader(Reader):
    """Builds a DataFrame of (features array<float>, label, key, passthrough...) rows."""

    kind = "table"
