"""Decoding untrusted image bytes with limits checked before any pixel is decoded."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facebridge.exceptions import ImageError, ImageTooLarge, UndecodableImage

__all__ = ["ImageError", "ImageTooLarge", "UndecodableImage", "decode_image"]


# Pillow modes whose pixels OpenCV decodes to the same BGR bytes, per format: PNG is lossless and
# both read 8-bit grey, RGB, palette and alpha the same way (alpha dropped, never composited); both
# wheels decode JPEG with libjpeg-turbo's default (accurate) IDCT and fancy upsampling
_SAME_PIXELS_IN_OPENCV = {"PNG": frozenset({"RGB", "RGBA", "L", "LA", "P"}), "JPEG": frozenset({"RGB", "L"})}
_ORIENTATION = 0x0112  # EXIF tag


def same_pixels_in_opencv(opened: Image.Image, data: bytes) -> bool:
    """Whether OpenCV decodes this file to exactly the pixels Pillow's path gives, in less time.

    OpenCV's decoder runs in less time than Pillow's path, which also converts and copies; the pixels
    are the same (tests/test_images.py compares 199 photos of the four development populations and
    every 8-bit PNG colour type, bit for bit). Files that may carry an orientation keep Pillow's path,
    which applies it: a JPEG whose EXIF says anything but upright, and any PNG with an eXIf chunk
    (Pillow reads PNG EXIF only after the pixels). 16-bit, CMYK and 1-bit files convert differently
    in the two libraries and keep Pillow's path too, as does a JPEG without its end marker.
    """
    if opened.mode not in _SAME_PIXELS_IN_OPENCV.get(opened.format or "", ()):
        return False
    if opened.format == "PNG":
        return b"eXIf" not in data
    # a truncated JPEG is refused by Pillow and grey-filled by libjpeg in OpenCV: only whole files
    return data.rstrip(b"\0").endswith(b"\xff\xd9") and opened.getexif().get(_ORIENTATION, 1) == 1


def _opencv_decode(data: bytes) -> np.ndarray | None:
    try:
        decoded: np.ndarray | None = cv2.imdecode(
            np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
        )
    except cv2.error:
        return None
    return decoded


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode to a BGR uint8 array (EXIF orientation applied).

    Width and height are read from the header first, so a decompression bomb (small file, huge canvas)
    is refused before its pixels are allocated. Plain PNGs and upright JPEGs decode through OpenCV
    (`same_pixels_in_opencv`); the rest, and any file OpenCV cannot read, through Pillow, whose errors
    are the ones answered.
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
            if same_pixels_in_opencv(opened, data):
                fast = _opencv_decode(data)
                if fast is not None and fast.shape[:2] == (height, width):
                    return fast
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
