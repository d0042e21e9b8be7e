"""The `image` reader: JPEG, PNG, BMP, TIFF and WebP files to fixed-size uint8 tensors."""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from dltool.config.base import FileInput, Section
from dltool.readers.base import FileReader, register
from dltool.shards.codec import TensorSpec

IMAGE_EXTENSIONS = ["*.jpg", "*.jpeg", "*.png", "*.bmp", "*.tif", "*.tiff", "*.webp"]


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
    augment: Augment = Augment()

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > 8192:
            raise ValueError("height and width must be between 1 and 8192")
        return value


@register
class ImageReader(FileReader):
    name = "image"
    task_modules = (*FileReader.task_modules, "dltool.transforms.image", "cv2")
    config_model = ImageReaderConfig
    default_model = "small_cnn"

    def tensor_spec(self) -> TensorSpec:
        height, width = self.config.size
        return TensorSpec((height, width, self.config.channels), self.config.dtype)

    def setup(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # one Spark task per core: OpenCV's own pool would oversubscribe

    def decode(self, data: bytes, relpath: str) -> list[tuple[str, np.ndarray]]:
        from dltool.transforms.image import decode_image, resize_image

        cfg = self.config
        image = decode_image(data, cfg.channels, cfg.max_pixels)
        image = resize_image(image, tuple(cfg.size), cfg.resize, cfg.pad_value)
        return [("", self._stored(image))]

    def augment_copies(self) -> int:
        return self.config.augment.copies

    def for_raw_inputs(self, input_uri: str, labelled: bool = False):
        return super().for_raw_inputs(input_uri, labelled).model_copy(update={"augment": Augment()})

    def augment(self, example: np.ndarray, key: str, copy: int) -> np.ndarray:
        from dltool.transforms.image import augment_image

        aug = self.config.augment
        # Seeded by key and copy so a rerun writes the same augmented pixels.
        digest = hashlib.sha256(f"{aug.seed}:{key}:{copy}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        pixels = example if example.dtype == np.uint8 else np.round(example * 255).astype(np.uint8)
        out = augment_image(pixels, rng, aug.flip, aug.rotate, aug.crop, aug.brightness)
        return self._stored(out)

    def _stored(self, image: np.ndarray) -> np.ndarray:
        if self.config.dtype == "float32":
            return image.astype(np.float32) / 255.0
        return image
