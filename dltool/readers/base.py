"""Record reader base classes and the registry keyed by the YAML `reader:` name.

A reader is one module: its pydantic config section (with `reader: Literal[NAME]`), the
files it accepts, the builtin model `train.model.builtin: auto` picks for its data, how
predict reads raw inputs with it, and its decode (file readers) or table-building
(table readers) code. `@register` makes it a choice of `ingest.reader` everywhere: config
validation and YAML line numbers, `dltool schema`, the generated reference, ingest,
train and predict. A reader declared outside dltool registers the same way; on a cluster,
ship its module to the executors (`spark.sparkContext.addPyFile`), which import it when
they unpickle its config.

A file reader only decodes: the ingest job lists files, assigns labels and splits, reads
bytes, writes shards and quarantines failures. A table reader turns its input into a
Spark DataFrame of features, labels and keys.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from dltool.errors import ConfigError
from dltool.shards.codec import TensorSpec

REGISTRY: dict[str, type["Reader"]] = {}


def register(cls: type["Reader"]) -> type["Reader"]:
    """Class decorator: make `cls` the reader of `ingest.reader: cls.name` (and its config_model that section)."""
    from dltool.config.readers import add_section

    tag = cls.config_model.model_fields.get("reader")
    if tag is None or tag.annotation.__args__ != (cls.name,):  # Literal["name"]
        raise TypeError(f"{cls.__name__}.config_model needs a field `reader: Literal[{cls.name!r}]`")
    REGISTRY[cls.name] = cls
    add_section(cls.config_model)
    return cls


def unregister(name: str) -> None:
    """Remove a registered reader (tests that register their own)."""
    from dltool.config.readers import remove_section

    REGISTRY.pop(name, None)
    remove_section(name)


def _builtins() -> None:
    """Load the built-in readers (the package imports each), for code that reached this module directly."""
    import dltool.readers  # noqa: F401


def reader_for(config) -> "Reader":
    """The reader instance for an ingest config section."""
    _builtins()
    try:
        return REGISTRY[config.reader](config)
    except KeyError as e:
        raise ConfigError(f"ingest.reader: unknown reader {config.reader!r}; known: {sorted(REGISTRY)}") from e


def default_model_for(reader: str | None, features: TensorSpec) -> str | None:
    """The builtin model `auto` picks for data from this reader; for data no reader wrote (a DataFrame
    written by dltool.ml), by the features' rank: vectors get the MLP, [h, w, c] tensors the small CNN (measured:
    on raw VectorAssembler columns `tabular` scored below `mlp`, docs/benchmarks.md)."""
    _builtins()
    cls = REGISTRY.get(reader or "")
    if cls is not None:
        return cls.model_for(features)
    return {1: "mlp", 3: "small_cnn"}.get(len(features.shape))


class Reader(ABC):
    name: ClassVar[str]
    kind: ClassVar[str]  # "file" or "table"
    config_model: ClassVar[type[BaseModel]]  # the `ingest:` section, with `reader: Literal[name]`
    default_model: ClassVar[str]  # the builtin `train.model.builtin: auto` picks
    # Modules its Spark tasks import (decoders, the engine's task code): a new local session imports them in
    # its Python workers while it starts (spark.session._warm_up), a forked local ingest in the driver before
    # it forks. A plugin may list its own. Table readers list pandas (Spark's Arrow path needs it); file
    # readers do not: their tasks build Arrow columns from buffers (shards.codec.plain_array).
    task_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config):
        self.config = config

    def task_imports(self) -> tuple[str, ...]:
        """Every module its tasks import: the declared ones and the reader's own (a plugin's lives elsewhere)."""
        return (*self.task_modules, type(self).__module__)

    @classmethod
    def model_for(cls, features: TensorSpec) -> str:
        """The builtin for a dataset this reader wrote (a reader whose tensors differ by its settings overrides it)."""
        return cls.default_model

    def labels_from_paths(self) -> bool:
        """Whether labels come from the files' paths (class folders, a regex) rather than a column."""
        return self.kind == "file"

    def label_column(self) -> str | None:
        """The column holding the label, for readers that read one."""
        return None

    def grows(self) -> bool:
        """Whether an ingest of new inputs adds a version to its dataset (ingest/grow.py) rather than needing
        --overwrite: every reader of files does; one of a catalog or Delta table (no files to compare) not."""
        return self.kind == "file"

    def patterns(self) -> tuple[list[str], list[str]]:
        """The (include, exclude) globs of the files to read when `input` is a directory."""
        return list(self.config.include), list(self.config.exclude)

    def inputs(self) -> tuple[list, int]:
        """The InputFiles to read, and how many files under `input` the patterns left out."""
        from dltool.storage.fs import list_files, open_location

        include, exclude = self.patterns()
        return list_files(open_location(self.config.input), include, exclude)

    def explain_failure(self, message: str) -> str | None:
        """A user's reading of a failed ingest job's message, when this reader knows its cause; else None."""
        return None

    @abstractmethod
    def for_raw_inputs(self, input_uri: str, labelled: bool = False) -> BaseModel:
        """This reader's config for raw inputs at input_uri: as trained but unaugmented, and unlabelled
        unless `labelled` (eval --input scores labelled held-out inputs)."""


class FileReader(Reader):
    """Decodes one file's bytes into one or more fixed-shape examples."""

    kind = "file"
    # neither pandas nor pyarrow.compute (0.2 s and 0.04 s): a file task builds its columns from their buffers
    task_modules = ("dltool.ingest.files", "pyarrow.parquet")

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

    def for_raw_inputs(self, input_uri: str, labelled: bool = False) -> BaseModel:
        from dltool.config.base import NoLabel

        return self.config.model_copy(update={"input": input_uri, **({} if labelled else {"label": NoLabel(source="none")})})

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
    """Builds a DataFrame of (features array<float>, label, key, passthrough...) rows.

    Its preprocessing is fitted on the train split and saved in the dataset's `_preprocess.json`;
    predict applies that, never a refit one, to raw rows.
    """

    kind = "table"
    task_modules = ("dltool.ingest.tables", "dltool.transforms.table", "pyarrow.parquet", "pyarrow.compute", "pandas")
    engine: ClassVar[str] = "table"  # the ingest job that runs it (dltool.ingest.run._table_engine)

    def for_raw_inputs(self, input_uri: str, labelled: bool = False) -> BaseModel:
        return self.config.model_copy(update={"input": input_uri, **({} if labelled else {"label": None})})

    def label_column(self) -> str | None:
        return self.config.label

    def planned(self) -> dict:
        """What a dry run reports of the config (nothing is read)."""
        cfg = self.config
        return {"columns": {"numeric": cfg.numeric, "categorical": cfg.categorical, "label": cfg.label}}

