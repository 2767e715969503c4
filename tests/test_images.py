"""Image decoding refuses what it must before allocating pixels; its fast PNG path gives Pillow's
pixels."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from facebridge.vision.images import (
    ImageTooLarge,
    UndecodableImage,
    decode_image,
    same_pixels_in_opencv,
)
from tests.conftest import LFW


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG claiming a huge canvas: the classic decompression bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decodes_to_bgr() -> None:
    image = decode_image(_png(8, 4), 10_000, 1_000)
    assert image.shape == (4, 8, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == (30, 20, 10)


def test_refuses_too_many_bytes() -> None:
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_image(_png(8, 8), 10, 1_000)


def test_refuses_decompression_bomb_from_header() -> None:
    bomb = _png_header_only(30_000, 30_000)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(bomb, 10_000, 40_000_000)
    with pytest.raises(ImageTooLarge, match="5000x6000 pixels"):
        decode_image(_png_header_only(5000, 6000), 10_000, 4_000_000)


@pytest.mark.parametrize(
    "data", [b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, b"\xff\xd8\xff" + b"\0" * 50]
)
def test_refuses_undecodable(data: bytes) -> None:
    with pytest.raises(UndecodableImage):
        decode_image(data, 10_000, 1_000)


def _pillow_pixels(data: bytes) -> np.ndarray:
    """What Pillow's path decodes: RGB with EXIF orientation applied, as BGR."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    return np.asarray(image)[..., ::-1]


def _encoded(image: Image.Image, kind: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def _takes_opencv_path(data: bytes) -> bool:
    return same_pixels_in_opencv(Image.open(io.BytesIO(data)), data)


def _photo() -> Image.Image:
    return Image.open(sorted(LFW.glob("*/*_0001.jpg"))[0]).convert("RGB")


def test_real_photos_decode_to_pillows_pixels() -> None:
    """Photos of every development population, as they are on disk (JPEG): OpenCV's decode equals
    Pillow's bit for bit, so embeddings do not depend on which path a photo took."""
    photos = [
        p
        for name in ("lfw", "celeba-dev", "imfdb-dev", "rmfd-dev")
        for p in sorted((LFW.parent / name).glob("*/*.jpg"))[::97]
    ]
    assert len(photos) > 100
    for path in photos:
        data = path.read_bytes()
        assert _takes_opencv_path(data), path
        assert np.array_equal(decode_image(data, 1 << 24, 1 << 24), _pillow_pixels(data)), path


@pytest.mark.parametrize(
    "mode", ["RGB", "RGBA", "L", "LA", "P", "P-transparent", "JPEG-L", "JPEG-progressive"]
)
def test_opencv_path_gives_pillows_pixels(mode: str) -> None:
    """A real photo encoded in each 8-bit PNG colour type and in other JPEG forms."""
    photo = _photo()
    if mode == "RGBA":
        image = photo.copy()
        image.putalpha(Image.linear_gradient("L").resize(photo.size))
        data = _encoded(image)
    elif mode == "P-transparent":
        data = _encoded(photo.convert("P", palette=Image.Palette.ADAPTIVE), transparency=0)
    elif mode == "JPEG-L":
        data = _encoded(photo.convert("L"), "JPEG", quality=90)
    elif mode == "JPEG-progressive":
        data = _encoded(photo, "JPEG", quality=90, progressive=True, subsampling=2)
    else:
        data = _encoded(photo.convert(mode))
    assert _takes_opencv_path(data)
    assert np.array_equal(decode_image(data, 1 << 24, 1 << 24), _pillow_pixels(data))


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_orientation_keeps_pillows_path(kind: str) -> None:
    """EXIF may rotate the picture: such a file is decoded by Pillow, its orientation applied."""
    photo = _photo().crop((0, 0, 250, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encoded(photo, kind, exif=exif.tobytes())
    assert not _takes_opencv_path(data)
    decoded = decode_image(data, 1 << 24, 1 << 24)
    assert decoded.shape == (250, 200, 3)
    assert np.array_equal(decoded, _pillow_pixels(data))


def test_sixteen_bit_and_cmyk_keep_pillows_path() -> None:
    grey = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    cmyk = _encoded(_photo().convert("CMYK"), "JPEG")
    for data in (_encoded(grey), cmyk):
        assert not _takes_opencv_path(data)
        decoded = decode_image(data, 1 << 24, 1 << 24)
        assert np.array_equal(decoded, _pillow_pixels(data))


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_truncated_files_are_refused_as_before(kind: str) -> None:
    """libjpeg in OpenCV would grey-fill a truncated JPEG; Pillow refuses it, and so does facebridge."""
    data = _encoded(_photo(), kind)
    with pytest.raises(UndecodableImage):
        decode_image(data[: len(data) // 2], 1 << 24, 1 << 24)
