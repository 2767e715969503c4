"""Image decoding refuses what it must before allocating pixels."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facebridge.vision.images import ImageTooLarge, UndecodableImage, decode_image


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
