"""The .npy codecs of the binary bodies (facebridge/npy.py): the fast header reader agrees with numpy's."""

from __future__ import annotations

import io

import numpy as np
import pytest

from facebridge.exceptions import BatchTooLarge, ImageTooLarge, InvalidNpy
from facebridge.npy import npy_buffer, read_embeddings, read_pixels

pytestmark = pytest.mark.fast


def _saved(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    stream = io.BytesIO()
    if version is None:
        np.save(stream, array, allow_pickle=False)
    else:
        np.lib.format.write_array(stream, array, version=version, allow_pickle=False)
    return stream.getvalue()


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0)])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(15, dtype=np.float32).reshape(3, 5),
        np.arange(7, dtype=np.float64),
        np.arange(4, dtype=">f4").reshape(2, 2),
        np.zeros((0, 128), np.float32),
    ],
)
def test_embeddings_read_as_numpy_reads_them(array: np.ndarray, version: tuple[int, int] | None) -> None:
    body = _saved(array, version)
    read = read_embeddings(body)
    assert read.dtype == np.float32 and read.shape == array.shape
    np.testing.assert_array_equal(read, np.load(io.BytesIO(body)).astype(np.float32))


def test_a_header_other_writers_format_goes_through_numpys_reader() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = b"{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}"  # keys in another order
    header += b" " * (64 - 10 - len(header) - 1) + b"\n"
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + array.tobytes()
    np.testing.assert_array_equal(read_embeddings(body), array)


def test_pixels_read_with_their_limits() -> None:
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_pixels(_saved(crops), 4, 112 * 112), crops)
    assert read_pixels(_saved(crops[0]), 4, 112 * 112).shape == (1, 112, 112, 3)
    with pytest.raises(BatchTooLarge):
        read_pixels(_saved(crops), 2, 112 * 112)
    with pytest.raises(ImageTooLarge):
        read_pixels(_saved(crops), 4, 112 * 111)
    for bad in (crops.astype(np.float32), crops[..., :2], np.asfortranarray(crops[0, :, :, 0]), crops[:0]):
        with pytest.raises(InvalidNpy):
            read_pixels(_saved(bad), 4, 112 * 112)
    for broken in (b"", b"not npy", _saved(crops)[:-1], _saved(crops) + b"\0"):
        with pytest.raises(InvalidNpy):
            read_pixels(broken, 4, 112 * 112)


def test_a_header_whose_size_overflows_int64_is_refused() -> None:
    """2**32 x 2**32 x 2**32 x 3 bytes wraps around in int64 arithmetic; counted exactly, the body is
    simply too short."""
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296, 3), }"
    header += b" " * (128 - 10 - len(header) - 1) + b"\n"
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    with pytest.raises(InvalidNpy):
        read_pixels(body, 4, 112 * 112)
    with pytest.raises(InvalidNpy):
        read_embeddings(body)


def test_npy_buffer_is_a_file_numpy_loads() -> None:
    buffer, out = npy_buffer(4, 3)
    out[:] = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(np.load(io.BytesIO(bytes(buffer))), out)
    np.testing.assert_array_equal(read_embeddings(buffer), out)
