"""Decoding untrusted image bytes with limits checked before any pixel is decoded."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facebridge.exceptions import ImageError, ImageTooLarge, UndecodableImage

__all__ = ["ImageError", "ImageTooLarge", "UndecodableImage", "decode_image"]


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode to a BGR uint8 array (EXIF orientation applied).

    Width and height are read from the header first, so a decompression bomb (small file, huge canvas)
    is refused before its pixels are allocated.
    """
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise UndecodableImage("image is empty")
    try:
        with warnings.catch_warnings():
            # the pixel limit below is ours; Pillow's own warning would only duplicate it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
            ImageOps.exif_transpose(opened, in_place=True)
            image = opened if opened.mode == "RGB" else opened.convert("RGB")
            # the pixels in BGR order straight from Pillow's raw encoder: one pass over them, where
            # np.asarray and a channel flip made two more copies
            bgr = np.frombuffer(image.tobytes("raw", "BGR"), np.uint8).reshape(image.height, image.width, 3)
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image header claims too many pixels; the limit is {max_pixels} pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UndecodableImage("not a decodable image (JPEG, PNG, WebP, BMP, TIFF or GIF expected)") from exc
    return bgr.copy()  # writable, as callers may draw on it
