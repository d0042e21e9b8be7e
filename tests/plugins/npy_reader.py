"""A reader declared outside dltool: NumPy `.npy` arrays of a fixed shape, one example per file.

The whole plugin is this module; tests/integration/test_plugins.py imports it as a
top-level module (and ships it to Spark's Python workers) to show that a reader needs no
change to dltool.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from pydantic import Field

from dltool.config.base import FileInput
from dltool.errors import RecordError
from dltool.readers import FileReader, register
from dltool.shards.codec import TensorSpec


class NpyReaderConfig(FileInput):
    """NumPy arrays saved with numpy.save, each of `shape`, stored as float32."""

    reader: Literal["npy"] = Field(description="Selects this reader.")
    include: list[str] = Field(default_factory=lambda: ["*.npy"], description="Glob patterns of files to read.")
    shape: list[int] = Field(min_length=1, description="The shape of every array.")


@register
class NpyReader(FileReader):
    name = "npy"
    config_model = NpyReaderConfig
    default_model = "mlp"

    def tensor_spec(self) -> TensorSpec:
        return TensorSpec(tuple(self.config.shape), "float32")

    def decode(self, data: bytes, relpath: str) -> list[tuple[str, np.ndarray]]:
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise RecordError("decode", f"not a .npy array: {e}") from e
        if list(array.shape) != list(self.config.shape):
            raise RecordError("decode", f"shape {list(array.shape)}, expected {list(self.config.shape)}")
        return [("", array.astype(np.float32))]
