"""Unit tests for dltool.transforms.image on real encoded files."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dltool.errors import RecordError
from dltool.transforms.image import augment_image, decode_image, jpeg_reduction, orientation_transform, resize_image

MAX_PIXELS = 40_000_000

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(img: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


def pil_bytes(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def known_rgb() -> np.ndarray:
    """A 4x6 RGB image with distinct colours in three corners."""
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[0, 0] = RED
    rgb[0, 5] = GREEN
    rgb[3, 0] = BLUE
    rgb[3, 5] = WHITE
    rgb[1:3, 1:5] = (10, 120, 230)
    return rgb


def random_rgb(h: int = 24, w: int = 36, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking RGB PNG whose IHDR declares width x height but holds one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def stage_of(data: bytes, channels: int = 3, max_pixels: int = MAX_PIXELS) -> tuple[str, str]:
    with pytest.raises(RecordError) as info:
        decode_image(data, channels, max_pixels)
    return info.value.stage, str(info.value)


# --- decode: formats and colour order -------------------------------------------------


def test_png_rgb_comes_back_in_rgb_order():
    rgb = known_rgb()
    out = decode_image(encode(rgb[:, :, ::-1], ".png"), 3, MAX_PIXELS)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 5].tolist() == [0, 255, 0]
    assert out[3, 0].tolist() == [0, 0, 255]
    np.testing.assert_array_equal(out, rgb)


def test_png_rgb_to_gray_and_rgba():
    rgb = known_rgb()
    data = encode(rgb[:, :, ::-1], ".png")
    gray = decode_image(data, 1, MAX_PIXELS)
    assert gray.shape == (4, 6, 1)
    # ITU-R BT.601 luma: red 0.299, green 0.587, blue 0.114.
    assert gray[0, 0, 0] == 76 and gray[0, 5, 0] == 150 and gray[3, 0, 0] == 29 and gray[3, 5, 0] == 255
    rgba = decode_image(data, 4, MAX_PIXELS)
    assert rgba.shape == (4, 6, 4)
    np.testing.assert_array_equal(rgba[:, :, :3], rgb)
    assert (rgba[:, :, 3] == 255).all()


def test_grayscale_png_to_1_3_and_4_channels():
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    data = encode(gray, ".png")
    one = decode_image(data, 1, MAX_PIXELS)
    assert one.shape == (4, 6, 1)
    np.testing.assert_array_equal(one[:, :, 0], gray)
    three = decode_image(data, 3, MAX_PIXELS)
    assert three.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(three[:, :, c], gray)
    four = decode_image(data, 4, MAX_PIXELS)
    np.testing.assert_array_equal(four[:, :, 0], gray)
    assert (four[:, :, 3] == 255).all()


def test_rgba_png_keeps_alpha_and_drops_it_for_3_channels():
    rgba = np.zeros((3, 5, 4), np.uint8)
    rgba[..., 0] = 200  # R
    rgba[..., 1] = 100  # G
    rgba[..., 2] = 50  # B
    rgba[..., 3] = np.arange(15, dtype=np.uint8).reshape(3, 5) * 17
    bgra = rgba[:, :, [2, 1, 0, 3]]
    data = encode(bgra, ".png")
    four = decode_image(data, 4, MAX_PIXELS)
    np.testing.assert_array_equal(four, rgba)
    three = decode_image(data, 3, MAX_PIXELS)
    assert three.shape == (3, 5, 3)
    np.testing.assert_array_equal(three, rgba[:, :, :3])
    one = decode_image(data, 1, MAX_PIXELS)
    assert one.shape == (3, 5, 1)
    assert (one == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)).all()


def test_16_bit_png_keeps_the_high_byte():
    gray16 = np.array([[0x1234, 0xFFFF], [0x00FF, 0x8000]], np.uint16)
    out = decode_image(encode(gray16, ".png"), 1, MAX_PIXELS)
    assert out.dtype == np.uint8
    assert out[:, :, 0].tolist() == [[0x12, 0xFF], [0x00, 0x80]]

    bgr16 = np.zeros((2, 2, 3), np.uint16)
    bgr16[..., 2] = 0x1234  # red in BGR order
    bgr16[..., 0] = 0xFFFF  # blue
    rgb = decode_image(encode(bgr16, ".png"), 3, MAX_PIXELS)
    assert rgb[0, 0].tolist() == [0x12, 0x00, 0xFF]


def test_float_tiff_is_scaled_from_0_1():
    values = np.array([[0.0, 0.5], [1.0, 2.0]], np.float32)  # 2.0 is clipped to white
    out = decode_image(encode(values, ".tiff"), 1, MAX_PIXELS)
    assert out[:, :, 0].tolist() == [[0, 128], [255, 255]]


def test_int32_tiff_is_an_unsupported_pixel_type():
    data = pil_bytes(Image.new("I", (3, 2), 5), "TIFF")
    stage, message = stage_of(data, 1)
    assert stage == "decode"
    assert message == "unsupported pixel type int32"


def test_jpeg_decodes_approximately():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = RED
    rgb[:, 8:] = (40, 160, 220)
    out = decode_image(encode(rgb[:, :, ::-1], ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), 3, MAX_PIXELS)
    assert out.shape == (16, 16, 3)
    # Compare away from the colour edge, where chroma subsampling blurs.
    assert np.abs(out[:, :5].astype(int) - RED).max() <= 12
    assert np.abs(out[:, 11:].astype(int) - (40, 160, 220)).max() <= 12


@pytest.mark.parametrize(
    "ext,params",
    [(".bmp", []), (".tiff", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])],
    ids=["bmp", "tiff", "webp-lossless"],
)
def test_lossless_formats_decode_exactly(ext, params):
    rgb = random_rgb()
    out = decode_image(encode(rgb[:, :, ::-1], ext, params), 3, MAX_PIXELS)
    np.testing.assert_array_equal(out, rgb)


def test_palette_gif_decodes():
    rgb = known_rgb()
    data = pil_bytes(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "GIF")
    out = decode_image(data, 3, MAX_PIXELS)
    np.testing.assert_array_equal(out, rgb)


# --- EXIF orientation -----------------------------------------------------------------


def marked_image() -> np.ndarray:
    """20 high x 40 wide, black, with a red 6x6 block in the stored top-left corner."""
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:6, :6] = RED
    return rgb


def jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif, quality=95)


def is_red(block: np.ndarray) -> bool:
    mean = block.reshape(-1, 3).mean(axis=0)
    return bool(mean[0] > 200 and mean[1] < 50 and mean[2] < 50)


def test_exif_orientation_6_rotates_clockwise():
    out = decode_image(jpeg_with_orientation(marked_image(), 6), 3, MAX_PIXELS)
    assert out.shape == (40, 20, 3)
    # Rotating 90 degrees clockwise moves the top-left corner to the top-right.
    assert is_red(out[1:5, 15:19])
    assert not is_red(out[1:5, 1:5])


def test_exif_orientation_3_rotates_180():
    out = decode_image(jpeg_with_orientation(marked_image(), 3), 3, MAX_PIXELS)
    assert out.shape == (20, 40, 3)
    assert is_red(out[15:19, 35:39])
    assert not is_red(out[1:5, 1:5])


def test_exif_orientation_1_leaves_the_image_alone():
    out = decode_image(jpeg_with_orientation(marked_image(), 1), 3, MAX_PIXELS)
    assert out.shape == (20, 40, 3)
    assert is_red(out[1:5, 1:5])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation):
    rgb = random_rgb(5, 7, seed=orientation)
    image = Image.fromarray(rgb)
    image.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(orientation_transform(rgb, orientation), expected)
    # The same orientation carried in a real (lossless) PNG's eXIf chunk.
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(pil_bytes(Image.fromarray(rgb), "PNG", exif=exif), 3, MAX_PIXELS)
    np.testing.assert_array_equal(decoded, expected)
    assert decoded.flags["C_CONTIGUOUS"]


def test_unknown_orientation_is_ignored():
    rgb = random_rgb(3, 4)
    assert orientation_transform(rgb, 0) is rgb
    assert orientation_transform(rgb, 9) is rgb


# --- decode: bad input ----------------------------------------------------------------


def test_empty_data_fails_at_read():
    assert stage_of(b"") == ("read", "empty file (0 bytes)")


def test_text_is_not_decodable():
    stage, message = stage_of(b"hello, I am not a PNG")
    assert stage == "decode"
    assert message == "not a decodable image (corrupt or unsupported format)"


def test_truncated_jpeg_is_rejected():
    data = encode(random_rgb(64, 64), ".jpg")
    assert stage_of(data[: len(data) // 2]) == ("decode", "truncated JPEG (no end-of-image marker)")


def test_jpeg_with_trailing_zero_padding_is_accepted():
    rgb = np.full((8, 8, 3), 128, np.uint8)
    out = decode_image(encode(rgb, ".jpg") + b"\x00" * 10, 3, MAX_PIXELS)
    assert np.abs(out.astype(int) - 128).max() <= 2


def test_truncated_png_is_rejected():
    data = encode(random_rgb(64, 64), ".png")
    assert stage_of(data[: len(data) // 2]) == ("decode", "truncated PNG (no IEND chunk)")
    # Losing only the last bytes of the IEND chunk is also caught.
    assert stage_of(data[:-8])[0] == "decode"


def test_oversized_header_is_rejected_before_decoding():
    data = bomb_png(50_000, 50_000)
    assert len(data) < 100
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        stage, message = stage_of(data, 3, 40_000_000)
    assert time.perf_counter() - start < 1.0
    assert stage == "header"
    assert message == "image is 50000x50000 = 2500000000 pixels, over max_pixels 40000000"
    # Past our limit the same bytes reach the decoder, which fails differently.
    assert stage_of(data, 3, 3_000_000_000)[0] == "decode"


def test_header_limit_is_inclusive_and_per_call():
    rgb = random_rgb(10, 20)
    data = encode(rgb[:, :, ::-1], ".png")
    np.testing.assert_array_equal(decode_image(data, 3, 200), rgb)
    assert stage_of(data, 3, 199) == ("header", "image is 20x10 = 200 pixels, over max_pixels 199")


def test_format_pillow_cannot_identify_falls_back_to_opencv():
    # Radiance HDR: OpenCV decodes it to float32, Pillow has no plugin for it.
    bgr = np.full((4, 6, 3), 0.5, np.float32)
    bgr[0, 0] = (0.0, 0.0, 1.0)
    data = encode(bgr, ".hdr")
    with pytest.raises(Exception):
        Image.open(io.BytesIO(data))
    out = decode_image(data, 3, MAX_PIXELS)
    assert out.shape == (4, 6, 3)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 1].tolist() == [128, 128, 128]
    # Its size is read from its own header, before any pixel is decoded.
    assert stage_of(data, 3, 23) == ("header", "image is 6x4 = 24 pixels, over max_pixels 23")


@pytest.mark.parametrize(
    "header",
    [b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 200000 +X 300000\n", b"PF\n300000 200000\n-1\n"],
    ids=["radiance-hdr", "pfm"],
)
def test_a_huge_image_in_a_format_pillow_cannot_read_is_refused_from_its_header(header):
    # Named .png by a hostile sender: 60 billion pixels claimed, a few bytes sent.
    assert stage_of(header + b"\x00" * 64, 3, 10_000_000) == (
        "header", "image is 300000x200000 = 60000000000 pixels, over max_pixels 10000000")


def test_channels_must_be_1_3_or_4():
    with pytest.raises(ValueError, match="channels"):
        decode_image(encode(random_rgb(), ".png"), 2, MAX_PIXELS)


# --- resize ---------------------------------------------------------------------------


def test_stretch_resizes_to_the_exact_size():
    img = random_rgb(100, 200)
    out = resize_image(img, (30, 50), "stretch")
    assert out.shape == (30, 50, 3) and out.dtype == np.uint8
    up = resize_image(img, (150, 300), "stretch")
    assert up.shape == (150, 300, 3)


def test_stretch_to_the_same_size_returns_the_input():
    img = random_rgb(10, 20)
    assert resize_image(img, (10, 20), "stretch") is img


def test_resize_keeps_a_single_channel_axis():
    gray = np.full((100, 200, 1), 77, np.uint8)
    for mode in ("stretch", "pad", "crop"):
        out = resize_image(gray, (50, 50), mode)
        assert out.shape == (50, 50, 1)
        assert out[25, 25, 0] == 77


def test_pad_fills_borders_and_centres_the_content():
    img = np.full((100, 200, 3), 200, np.uint8)
    out = resize_image(img, (100, 100), "pad", pad_value=7)
    assert out.shape == (100, 100, 3)
    # 100x200 scales by 0.5 to 50x100, centred vertically: rows 25..74.
    assert (out[:25] == 7).all()
    assert (out[75:] == 7).all()
    assert (out[25:75] == 200).all()

    tall = np.full((80, 20, 1), 9, np.uint8)
    out = resize_image(tall, (40, 40), "pad", pad_value=255)
    # 80x20 scales by 0.5 to 40x10, centred horizontally: columns 15..24.
    assert (out[:, :15] == 255).all() and (out[:, 25:] == 255).all()
    assert (out[:, 15:25] == 9).all()


def test_crop_keeps_the_centre():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255  # the central 100x100 square
    out = resize_image(img, (50, 50), "crop")
    assert out.shape == (50, 50, 3)
    assert (out == 255).all()

    ramp = np.tile(np.arange(200, dtype=np.uint8), (100, 1))[:, :, None]
    out = resize_image(ramp, (100, 100), "crop")
    np.testing.assert_array_equal(out[0, :, 0], np.arange(50, 150))


def test_crop_to_a_wider_target_cuts_rows():
    img = np.zeros((100, 100, 1), np.uint8)
    img[25:75] = 200
    out = resize_image(img, (20, 40), "crop")
    assert out.shape == (20, 40, 1)
    assert (out == 200).all()


def test_resize_rejects_bad_arguments():
    img = random_rgb(10, 10)
    with pytest.raises(ValueError, match="mode"):
        resize_image(img, (5, 5), "squash")
    with pytest.raises(ValueError, match="pad_value"):
        resize_image(img, (5, 8), "pad", pad_value=300)


# --- augment --------------------------------------------------------------------------


def test_augment_keeps_shape_and_dtype():
    for channels in (1, 3, 4):
        img = np.random.default_rng(1).integers(0, 256, (30, 40, channels), dtype=np.uint8)
        out = augment_image(img, np.random.default_rng(2), True, 15.0, 0.2, 0.3)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert out.flags["C_CONTIGUOUS"]


def test_augment_is_deterministic_for_a_seed():
    img = random_rgb(30, 40)
    a = augment_image(img, np.random.default_rng(42), True, 20.0, 0.2, 0.2)
    b = augment_image(img, np.random.default_rng(42), True, 20.0, 0.2, 0.2)
    c = augment_image(img, np.random.default_rng(43), True, 20.0, 0.2, 0.2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augment_with_everything_off_is_identity():
    img = random_rgb(30, 40)
    out = augment_image(img, np.random.default_rng(0), False, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(out, img)


def test_flip_is_either_identity_or_a_mirror_and_both_happen():
    img = random_rgb(8, 12)
    flipped = unflipped = 0
    for seed in range(20):
        out = augment_image(img, np.random.default_rng(seed), True, 0.0, 0.0, 0.0)
        if np.array_equal(out, img[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, img)
            unflipped += 1
    assert flipped > 0 and unflipped > 0


def test_brightness_shifts_the_mean_by_the_drawn_delta():
    img = np.full((10, 10, 3), 128, np.uint8)
    signs = set()
    for seed in range(10):
        delta = np.random.default_rng(seed).uniform(-0.25, 0.25) * 255
        out = augment_image(img, np.random.default_rng(seed), False, 0.0, 0.0, 0.25)
        shift = float(out.mean()) - 128.0
        assert np.sign(shift) == np.sign(round(delta))
        assert (out == np.clip(np.rint(128 + delta), 0, 255)).all()
        signs.add(np.sign(shift))
    assert signs >= {-1.0, 1.0}


def test_brightness_clips_and_leaves_alpha_alone():
    img = np.zeros((4, 4, 4), np.uint8)
    img[..., :3] = 250
    img[..., 3] = 90
    out = augment_image(img, np.random.default_rng(0), False, 0.0, 0.0, 1.0)
    assert (out[..., 3] == 90).all()
    assert len(np.unique(out[..., :3])) == 1  # one shift for all colour pixels
    assert out[..., :3].max() <= 255


def test_rotate_and_crop_change_the_image_but_not_a_flat_one():
    img = random_rgb(30, 40)
    rotated = augment_image(img, np.random.default_rng(5), False, 30.0, 0.0, 0.0)
    assert not np.array_equal(rotated, img)
    cropped = augment_image(img, np.random.default_rng(5), False, 0.0, 0.3, 0.0)
    assert cropped.shape == img.shape and not np.array_equal(cropped, img)
    flat = np.full((30, 40, 3), 61, np.uint8)
    # Reflected borders and area resampling keep a flat image flat.
    assert (augment_image(flat, np.random.default_rng(5), True, 45.0, 0.4, 0.0) == 61).all()


def test_extreme_crop_still_returns_the_full_shape():
    img = random_rgb(5, 7)
    for seed in range(10):
        out = augment_image(img, np.random.default_rng(seed), False, 0.0, 0.99, 0.0)
        assert out.shape == (5, 7, 3)


# --- import cost ----------------------------------------------------------------------


def test_module_import_does_not_load_cv2_or_pillow():
    code = "import sys, dltool.transforms.image; print('cv2' in sys.modules, 'PIL' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root
    )
    assert result.stdout.split() == ["False", "False"]


# --- header fast path -------------------------------------------------------------------


def _pillow_bytes(array: np.ndarray, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda a: cv2.imencode(".jpg", a)[1].tobytes(),
        lambda a: cv2.imencode(".png", a)[1].tobytes(),
        lambda a: cv2.imencode(".png", a.astype(np.uint16) * 257)[1].tobytes(),
        lambda a: cv2.imencode(".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGRA))[1].tobytes(),
        lambda a: _pillow_bytes(a[..., 0], "JPEG"),
        lambda a: _pillow_bytes(a, "JPEG", progressive=True),
        lambda a: _pillow_bytes(a, "JPEG", quality=30, optimize=True),
    ],
    ids=["jpeg", "png", "png16", "png-rgba", "jpeg-gray", "jpeg-progressive", "jpeg-optimized"],
)
def test_plain_header_reads_the_size_pillow_reads(make):
    from dltool.transforms.image import _plain_header

    data = make(random_rgb(37, 53, seed=4))
    with Image.open(io.BytesIO(data)) as image:
        assert _plain_header(data) == (*image.size, 1) == (53, 37, 1)


def test_plain_header_leaves_exif_and_other_formats_to_pillow():
    from dltool.transforms.image import _plain_header, _read_header

    rgb = random_rgb(6, 9, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    assert _plain_header(jpeg_with_orientation(rgb, 6)) is None
    assert _read_header(jpeg_with_orientation(rgb, 6)) == (9, 6, 6)
    assert _plain_header(_pillow_bytes(rgb, "PNG", exif=exif)) is None
    for ext in (".bmp", ".webp", ".tiff"):
        assert _plain_header(cv2.imencode(ext, rgb)[1].tobytes()) is None
    assert _plain_header(b"\xff\xd8\xff") is None and _plain_header(b"") is None
    assert _plain_header(bomb_png(60000, 50000)) == (60000, 50000, 1)  # a bomb is caught without Pillow


def test_a_bomb_pillow_reads_is_ours_to_reject_and_pillows_limit_is_left_alone():
    # An eXIf chunk sends the header to Pillow: past twice its limit, open() alone would raise.
    data = bomb_png(60000, 50000)
    data = data[:33] + png_chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00") + data[33:]
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert stage_of(data) == ("header", "image is 60000x50000 = 3000000000 pixels, over max_pixels 40000000")
    assert Image.MAX_IMAGE_PIXELS == before is not None
    with pytest.raises(Image.DecompressionBombError):  # the user's own Pillow calls keep their limit
        Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    "width, height, orientation, size, mode, factor",
    [
        (4000, 3000, 1, (100, 100), "stretch", 8),  # 500x375 is twice 100x100 and more
        (640, 480, 1, (32, 32), "stretch", 4),  # 160x120; 1/8 (80x60) is not twice 32x32
        (640, 480, 1, (120, 160), "stretch", 2),
        (640, 480, 1, (121, 160), "stretch", 1),  # one row short at 1/2
        (640, 480, 1, (64, 64), "pad", 4),  # fits 64x48 inside 64x64: 160x120 is twice that
        (640, 480, 1, (64, 64), "crop", 2),  # covers 64x64 with 85x64: 160x120 is not twice that
        (480, 640, 6, (60, 80), "stretch", 4),  # stored sideways: displayed 640 wide, 480 high
        (480, 640, 6, (80, 60), "stretch", 2),
    ],
)
def test_jpeg_reduction_keeps_at_least_the_pixels_the_resize_keeps(width, height, orientation, size, mode, factor):
    assert jpeg_reduction(width, height, orientation, size, mode) == factor


@pytest.mark.parametrize(
    "channels, mode, orientation", [(3, "stretch", 1), (1, "crop", 1), (3, "pad", 6), (4, "stretch", 8)]
)
def test_a_large_jpeg_decoded_at_reduced_size_resizes_to_nearly_the_full_decode(channels, mode, orientation):
    # A smooth photo-like 600x400 image: gradients and a disc, as a JPEG (with an EXIF orientation when not 1).
    yy, xx = np.mgrid[0:400, 0:600]
    rgb = np.stack([xx * 255 // 599, yy * 255 // 399, ((xx - 300) ** 2 + (yy - 200) ** 2 < 120**2) * 200], -1)
    data = jpeg_with_orientation(rgb.astype(np.uint8), orientation)
    size = (40, 56)
    reduced = resize_image(decode_image(data, channels, MAX_PIXELS, size, mode), size, mode)
    full = resize_image(decode_image(data, channels, MAX_PIXELS), size, mode)
    assert reduced.shape == full.shape == (*size, channels)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 2.0  # out of 255
    smaller = decode_image(data, channels, MAX_PIXELS, size, mode)
    assert smaller.shape[0] * smaller.shape[1] <= 600 * 400 // 4  # it did decode at 1/2 or less


def test_pngs_and_small_jpegs_decode_in_full_whatever_the_target():
    rgb = random_rgb(64, 96)
    png = encode(rgb[:, :, ::-1], ".png")
    assert np.array_equal(decode_image(png, 3, MAX_PIXELS, (8, 8)), decode_image(png, 3, MAX_PIXELS))
    jpeg = encode(rgb[:, :, ::-1], ".jpg")
    assert decode_image(jpeg, 3, MAX_PIXELS, (24, 24)).shape == (64, 96, 3)  # 1/2 would leave 32 rows, not 48


def test_the_image_reader_decodes_large_jpegs_small_unless_told_not_to():
    from dltool.readers.image import ImageReader, ImageReaderConfig

    rgb = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    data = encode(cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_NEAREST), ".jpg")  # 8x8 blocks of colour
    settings = {"reader": "image", "input": "photos", "size": [30, 40], "resize": "stretch"}
    small = ImageReader(ImageReaderConfig(**settings)).decode(data, "a.jpg")[0][1]
    full = ImageReader(ImageReaderConfig(**settings, reduced_decode=False)).decode(data, "a.jpg")[0][1]
    expected = resize_image(decode_image(data, 3, MAX_PIXELS), (30, 40), "stretch")
    assert np.array_equal(full, expected) and not np.array_equal(small, full)
    assert small.shape == full.shape == (30, 40, 3) and np.abs(small.astype(int) - full).mean() < 4.0
