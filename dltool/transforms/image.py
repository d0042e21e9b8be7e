"""Image bytes to uint8 (H, W, C) arrays: decode, EXIF orientation, resize and augmentation."""

from __future__ import annotations

import functools
import io
import os
import re
from typing import Any

import numpy as np

from dltool.errors import RecordError

__all__ = ["augment_image", "decode_image", "orientation_transform", "resize_image"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112
_RESIZE_MODES = ("stretch", "pad", "crop")

# (decoded channels, requested channels) -> cv2 colour-conversion code name.
# OpenCV decodes to BGR(A); converting straight to the target saves a pass.
_CONVERSIONS = {
    (1, 3): "COLOR_GRAY2RGB",
    (1, 4): "COLOR_GRAY2RGBA",
    (3, 1): "COLOR_BGR2GRAY",
    (3, 3): "COLOR_BGR2RGB",
    (3, 4): "COLOR_BGR2RGBA",
    (4, 1): "COLOR_BGRA2GRAY",
    (4, 3): "COLOR_BGRA2RGB",
    (4, 4): "COLOR_BGRA2RGBA",
}


# OpenCV's own cap on a decoded image, for a format whose header neither Pillow nor dltool reads
# (read by OpenCV when it first decodes; max_pixels, checked from the header, is the per-config limit).
OPENCV_MAX_PIXELS = 1 << 28


@functools.cache
def _cv2() -> Any:
    # Imported lazily so that `import dltool` does not pay for OpenCV; once per process (a lookup in
    # os.environ costs more than decoding a 1 KB scan's header).
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_MAX_PIXELS))
    import cv2

    return cv2


def _open_header(Image: Any, data: bytes) -> Any:
    """Image.open without Pillow's own bomb check, for this one call: max_pixels is ours, checked
    from the header with our message; Pillow would warn (or raise) with its limit instead.

    The limit is put back at once, so the user's own Pillow calls keep theirs.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = saved


# JPEG start-of-frame markers (they carry the size); C4, C8 and CC are other segments.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _plain_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, 1) of a JPEG or PNG that carries no EXIF, read from its bytes; else None.

    Most images have no EXIF, and this walk costs ~1 µs where Pillow's open costs 20-50 µs
    per image. Anything unusual (EXIF, odd markers, other formats) returns None: Pillow decides.
    """
    if data[:8] == _PNG_SIGNATURE:
        if data[12:16] != b"IHDR" or b"eXIf" in data or b"Raw profile type exif" in data:
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), 1
    if data[:2] != b"\xff\xd8":
        return None
    i, end, size = 2, len(data), None
    while i + 9 <= end and data[i] == 0xFF:  # the segments before the scan, as Pillow reads them
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\0\0":
            return None  # an orientation to read: Pillow's job
        if marker in _JPEG_SOF and size is None:
            size = int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big"), 1
        if marker == 0xDA:  # start of scan: every header segment has been seen
            return size
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


_RADIANCE_SIZE = re.compile(rb"^[-+][XY] (\d+) [-+][XY] (\d+)$")
_PFM_SIZE = re.compile(rb"^P[Ff]\s+(\d+)\s+(\d+)\s")


def _opencv_only_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, 1) of the formats OpenCV decodes and Pillow cannot read: Radiance HDR and PFM."""
    if data[:2] == b"#?":  # Radiance: header lines, an empty line, then "-Y <rows> +X <columns>"
        head = data[:4096]
        end = head.find(b"\n\n")
        line = head[end + 2 :].split(b"\n", 1)[0].strip() if end >= 0 else b""
        match = _RADIANCE_SIZE.match(line)
        if match:
            first, second = int(match.group(1)), int(match.group(2))
            return (second, first, 1) if line[1:2] == b"Y" else (first, second, 1)
    match = _PFM_SIZE.match(data[:64])
    if match:
        return int(match.group(1)), int(match.group(2)), 1
    return None


def _read_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation), or None if neither Pillow nor dltool can read the image's header."""
    plain = _plain_header(data)
    if plain is not None:
        return plain
    from PIL import Image

    try:
        img = _open_header(Image, data)
    except Exception:
        return _opencv_only_header(data)
    with img:
        try:
            width, height = img.size
        except Exception:
            return None
        try:
            # PngImageFile.getexif() decodes the whole image when no eXIf chunk
            # precedes IDAT; the base method only reads what open() parsed.
            orientation = int(Image.Image.getexif(img).get(_EXIF_ORIENTATION, 1))
        except Exception:
            # A broken EXIF block must not cost us a decodable image.
            orientation = 1
    return int(width), int(height), orientation


def _check_truncation(data: bytes) -> None:
    # libjpeg decodes a truncated JPEG into a grey-bottomed image with only a
    # warning, so the missing end marker is the one reliable signal we get.
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise RecordError("decode", "truncated JPEG (no end-of-image marker)")
    if data[:8] == _PNG_SIGNATURE and b"IEND" not in data[-12:]:
        raise RecordError("decode", "truncated PNG (no IEND chunk)")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        # Float images (TIFF) are taken as 0..1 intensities; NaN becomes black.
        scaled = np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0) * 255.0
        return np.rint(scaled).astype(np.uint8)
    raise RecordError("decode", f"unsupported pixel type {img.dtype}")


def _convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """BGR(A)/gray as OpenCV decodes it -> RGB/RGBA/gray with `channels` channels, always 3-D."""
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
    have = img.shape[2]
    if have not in (1, 3, 4):
        raise RecordError("decode", f"unsupported channel count {have}")
    if have == 1 and channels == 1:
        return img
    cv2 = _cv2()
    out = cv2.cvtColor(img, getattr(cv2, _CONVERSIONS[(have, channels)]))
    return out[:, :, np.newaxis] if out.ndim == 2 else out


def orientation_transform(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, ...) array so it displays upright.

    1 and unknown values return `img` itself; others return a C-contiguous copy.
    """
    if orientation == 2:  # mirror horizontal
        out = img[:, ::-1]
    elif orientation == 3:  # rotate 180
        out = img[::-1, ::-1]
    elif orientation == 4:  # mirror vertical
        out = img[::-1]
    elif orientation == 5:  # transpose: mirror along the main diagonal
        out = img.swapaxes(0, 1)
    elif orientation == 6:  # rotate 90 clockwise
        out = np.rot90(img, k=-1)
    elif orientation == 7:  # transverse: mirror along the anti-diagonal
        out = img[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:  # rotate 90 counter-clockwise
        out = np.rot90(img, k=1)
    else:
        return img
    return np.ascontiguousarray(out)


def jpeg_reduction(width: int, height: int, orientation: int, size: tuple[int, int], mode: str) -> int:
    """The largest scale-down (8, 4 or 2, else 1) at which libjpeg can decode a width x height JPEG and still
    give the resize to `size` (height, width) in `mode` twice the pixels it keeps, each way.

    A JPEG decodes at 1/2, 1/4 or 1/8 of its size from its DCT blocks, at a fraction of the cost
    (Pillow's draft does the same). The resize after it then still averages 2x2 pixels or more,
    which smooths out what the scaled decode does less well (subsampled colour, block edges):
    on 300-600 px photos to 32x32, a mean difference of 2.1 levels from a full decode, against
    4.5 with no margin (bench/photos.py)."""
    if orientation >= 5:  # stored sideways: the displayed height is the stored width
        width, height = height, width
    target_h, target_w = size
    if mode == "stretch":
        need_h, need_w = target_h, target_w
    else:  # pad fits the image inside the target, crop covers the target with it
        scale = (min if mode == "pad" else max)(target_h / height, target_w / width)
        need_h, need_w = height * scale, width * scale
    return next((f for f in (8, 4, 2) if height // f >= 2 * need_h and width // f >= 2 * need_w), 1)


def decode_image(data: bytes, channels: int, max_pixels: int, target: tuple[int, int] | None = None,
                 mode: str = "stretch") -> np.ndarray:  # fmt: skip
    """Decode image bytes to an upright uint8 (H, W, channels) array in gray/RGB/RGBA order.

    With `target` (the [height, width] the image is resized to next, in resize `mode`), a JPEG
    much larger than it decodes at reduced size (`jpeg_reduction`). Raises RecordError (stage
    read, header or decode) for empty, oversized, truncated, corrupt or unsupported data.
    """
    if channels not in (1, 3, 4):
        raise ValueError(f"channels must be 1, 3 or 4, got {channels}")
    if not data:
        raise RecordError("read", "empty file (0 bytes)")

    header = _read_header(data)
    orientation = 1
    if header is not None:
        width, height, orientation = header
        # Checked before decoding: a decompression bomb must cost no memory.
        if width * height > max_pixels:
            raise RecordError(
                "header",
                f"image is {width}x{height} = {width * height} pixels, over max_pixels {max_pixels}",
            )

    _check_truncation(data)

    cv2 = _cv2()
    # UNCHANGED keeps alpha and 16-bit depth, and skips OpenCV's own EXIF
    # rotation (which IMREAD_COLOR applies), so orientation is applied once.
    flags = cv2.IMREAD_UNCHANGED
    if target is not None and header is not None and data[:2] == b"\xff\xd8":  # 8-bit, no alpha: nothing to keep
        factor = jpeg_reduction(width, height, orientation, target, mode)
        if factor > 1:
            kind = "GRAYSCALE" if channels == 1 else "COLOR"
            flags = getattr(cv2, f"IMREAD_REDUCED_{kind}_{factor}") | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except Exception:
        img = None
    if img is None:
        raise RecordError("decode", "not a decodable image (corrupt or unsupported format)")

    if header is None and img.shape[0] * img.shape[1] > max_pixels:
        # Pillow could not read the header, so this is the first size we know.
        height, width = img.shape[:2]
        raise RecordError(
            "decode", f"image is {width}x{height} = {width * height} pixels, over max_pixels {max_pixels}"
        )

    img = _convert_channels(_to_uint8(img), channels)
    return np.ascontiguousarray(orientation_transform(img, orientation))


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize to (height, width), keeping a size-1 channel axis that cv2 drops."""
    if img.shape[:2] == (height, width):
        return img
    cv2 = _cv2()
    shrinking = height <= img.shape[0] and width <= img.shape[1]
    # INTER_AREA averages source pixels, avoiding aliasing when shrinking;
    # it degenerates to blocky output when enlarging, where LINEAR is better.
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(img), (width, height), interpolation=interpolation)
    return out.reshape(height, width, img.shape[2])


def resize_image(img: np.ndarray, size: tuple[int, int], mode: str, pad_value: int = 0) -> np.ndarray:
    """Resize a uint8 (H, W, C) image to size = (height, width).

    stretch: ignore aspect ratio; pad: fit inside and centre on a pad_value
    canvas; crop: cover the target and keep the centre.
    """
    if mode not in _RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(_RESIZE_MODES)}, got {mode!r}")
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    target_h, target_w = int(size[0]), int(size[1])
    if target_h < 1 or target_w < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    h, w, c = img.shape

    if mode == "stretch":
        return _resize(img, target_h, target_w)

    if mode == "pad":
        if not 0 <= pad_value <= 255:
            raise ValueError(f"pad_value must be 0..255, got {pad_value}")
        scale = min(target_h / h, target_w / w)
        new_h = min(target_h, max(1, round(h * scale)))
        new_w = min(target_w, max(1, round(w * scale)))
        canvas = np.full((target_h, target_w, c), pad_value, dtype=np.uint8)
        top, left = (target_h - new_h) // 2, (target_w - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = _resize(img, new_h, new_w)
        return canvas

    # crop: cut the centred source window with the target's aspect ratio first,
    # so only the pixels that survive get resized.
    scale = max(target_h / h, target_w / w)
    crop_h = min(h, max(1, round(target_h / scale)))
    crop_w = min(w, max(1, round(target_w / scale)))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return np.ascontiguousarray(_resize(img[top : top + crop_h, left : left + crop_w], target_h, target_w))


def _crop_window(length: int, frac_start: float, frac_end: float) -> tuple[int, int]:
    start = int(frac_start * length)
    end = length - int(frac_end * length)
    if end <= start:
        # crop may be up to (not including) 1 per side, so both sides together
        # can eat the whole axis; keep one pixel where they meet.
        start = min(max(start, 0), length - 1)
        end = start + 1
    return start, end


def augment_image(
    img: np.ndarray,
    rng: np.random.Generator,
    flip: bool,
    rotate: float,
    crop: float,
    brightness: float,
) -> np.ndarray:
    """Randomly flip, rotate, crop-and-resize and brighten a uint8 (H, W, C) image.

    Output has the input's shape and dtype. The result depends only on the
    inputs and the rng state; disabled options draw no random numbers.
    """
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    h, w, c = img.shape
    out = img

    if flip and rng.random() < 0.5:
        out = out[:, ::-1]

    if rotate:
        cv2 = _cv2()
        angle = float(rng.uniform(-rotate, rotate))
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        # Reflecting the border avoids black corners the model could learn from.
        out = cv2.warpAffine(
            np.ascontiguousarray(out),
            matrix,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        ).reshape(h, w, c)

    if crop:
        top_f, bottom_f, left_f, right_f = rng.uniform(0.0, crop, size=4)
        y0, y1 = _crop_window(h, top_f, bottom_f)
        x0, x1 = _crop_window(w, left_f, right_f)
        out = _resize(out[y0:y1, x0:x1], h, w)

    if brightness:
        delta = float(rng.uniform(-brightness, brightness)) * 255.0
        out = np.array(out, dtype=np.uint8, copy=True)
        # Alpha is opacity, not light: only colour/gray channels are shifted.
        colour = slice(0, 3) if c == 4 else slice(None)
        shifted = np.rint(out[:, :, colour].astype(np.float32) + delta)
        out[:, :, colour] = np.clip(shifted, 0, 255).astype(np.uint8)

    return np.ascontiguousarray(out)
