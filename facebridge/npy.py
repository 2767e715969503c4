"""The .npy and .npz codecs of the binary bodies: embeddings for bulk /translate, pixels for /embed.

Arrays are read as zero-copy views of the body and answers are written straight into the buffer that
goes out, because a bulk body is tens of megabytes and every copy of it costs as much as the work.
Errors are `InvalidNpy`, which the service answers as 422 `invalid-npy`.
"""

from __future__ import annotations

import io
import math
import re
import zipfile

import numpy as np

from facebridge.exceptions import BatchTooLarge, ImageTooLarge, InvalidNpy

NPY = "application/x-npy"
NPZ = "application/x-npz"
NPY_HEADER_PROBE = 65_545 + 12  # the longest version 1 header, and a version 2 preamble
# the header numpy's own np.save writes (version 1.0, a plain dtype): read without ast.literal_eval,
# which compiles the header's text on every request (a tenth of a millisecond, a batch-1 /embed's
# whole budget for parsing); any other header goes through numpy's reader
_NUMPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=][a-zA-Z]\d{1,2})', 'fortran_order': (False|True), "
    rb"'shape': \(((?:\d+, ?)*\d*)\), \} *\n"
)


def _header(body: bytes | bytearray | memoryview) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a C-ordered .npy body."""
    view = memoryview(body)
    if bytes(view[:8]) == b"\x93NUMPY\x01\x00" and len(view) >= 10:
        end = 10 + int.from_bytes(view[8:10], "little")
        plain = _NUMPY_HEADER.fullmatch(bytes(view[10:end]))
        if plain is not None:
            descr, fortran_text, shape_text = plain.groups()
            shape = tuple(int(part) for part in shape_text.split(b",") if part.strip())
            return _checked(body, shape, np.dtype(descr.decode()), fortran_text == b"True", end)
    stream = _header_stream(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise InvalidNpy(f"body is not a .npy array: {exc}", "body") from exc
    return _checked(body, shape, dtype, fortran, stream.tell())


def _checked(
    body: bytes | bytearray | memoryview, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, offset: int
) -> tuple[tuple[int, ...], np.dtype, int]:
    if fortran:
        raise InvalidNpy("need a C-ordered array, got fortran_order=True", "body")
    expected = math.prod(shape) * dtype.itemsize
    if len(body) - offset != expected:
        raise InvalidNpy(
            f"truncated .npy array: the header promises {expected} bytes of data, the body has "
            f"{len(body) - offset}",
            "body",
        )
    return shape, dtype, offset


def _header_stream(body: bytes | bytearray | memoryview) -> io.BytesIO:
    """The .npy header as a stream, copied alone: BytesIO copies what it is given, and a bulk body is
    tens of megabytes. A version 1 header is at most 65,545 bytes; a longer version 2 one is read whole."""
    view = memoryview(body)
    prefix = view[:NPY_HEADER_PROBE]
    if len(view) > NPY_HEADER_PROBE and bytes(view[6:8]) == b"\x02\x00":
        prefix = view[: 12 + int.from_bytes(view[8:12], "little")]
    return io.BytesIO(prefix)


def read_embeddings(body: bytes | bytearray | memoryview) -> np.ndarray:
    """Zero-copy view of a C-ordered float32 .npy body (float64 is converted)."""
    shape, dtype, offset = _header(body)
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise InvalidNpy(f"need a float32 (or float64) array, got dtype {dtype}", "body")
    array = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    return array if dtype == np.dtype("<f4") else array.astype(np.float32)


def read_pixels(body: bytes | bytearray | memoryview, max_images: int, max_pixels: int) -> np.ndarray:
    """Zero-copy view of a uint8 .npy body of images, (n, height, width, 3) or one (height, width, 3).

    The limits are checked from the header, before any pixel is touched: a batch of more than
    `max_images` is BatchTooLarge, an image of more than `max_pixels` ImageTooLarge."""
    shape, dtype, offset = _header(body)
    if dtype != np.dtype(np.uint8):
        raise InvalidNpy(f"need uint8 pixels, got dtype {dtype}", "body")
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or shape[3] != 3 or 0 in shape:
        raise InvalidNpy(f"need images of shape (n, height, width, 3), got {tuple(shape)}", "body")
    if shape[0] > max_images:
        raise BatchTooLarge(f"{shape[0]} images; the limit is {max_images} per request", "body")
    if shape[1] * shape[2] > max_pixels:
        raise ImageTooLarge(
            f"images are {shape[2]}x{shape[1]} pixels; the limit is {max_pixels} pixels", "body"
        )
    return np.frombuffer(body, dtype=np.uint8, count=math.prod(shape), offset=offset).reshape(shape)


def uninitialised(size: int) -> memoryview:
    """`size` writable bytes, not zero-filled first: every byte is written before it is read, and
    filling a bulk buffer (and faulting its pages in) twice costs as much as the copy itself."""
    return np.empty(size, np.uint8).data


def npy_buffer(rows: int, dim: int) -> tuple[memoryview, np.ndarray]:
    """A complete .npy file for a float32 (rows, dim) array, and a writable view of its data part.

    Results are computed straight into the view, so the response body is never copied.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
    )
    offset = len(header.getvalue())
    buffer = uninitialised(offset + rows * dim * 4)
    buffer[:offset] = header.getvalue()
    return buffer, np.frombuffer(buffer, dtype="<f4", offset=offset).reshape(rows, dim)


def npz_body(embeddings_npy: memoryview, confidence: np.ndarray) -> memoryview:
    """An uncompressed .npz of the ready .npy embeddings and the confidence vector (one copy of each)."""
    vector = io.BytesIO()
    np.save(vector, np.ascontiguousarray(confidence, dtype="<f4"), allow_pickle=False)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as npz:
        npz.writestr("embeddings.npy", memoryview(embeddings_npy))
        npz.writestr("confidence.npy", vector.getbuffer())
    return archive.getbuffer()
