"""The `image` reader: JPEG, PNG, BMP, TIFF and WebP files to fixed-size uint8 tensors."""

from __future__ import annotations

import hashlib

import numpy as np

from dltool.config.readers import IMAGE_EXTENSIONS, Augment, ImageReaderConfig  # noqa: F401  (re-exported)
from dltool.readers.base import FileReader, register
from dltool.shards.codec import TensorSpec

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
        target = tuple(cfg.size) if cfg.reduced_decode else None
        image = decode_image(data, cfg.channels, cfg.max_pixels, target, cfg.resize)
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
