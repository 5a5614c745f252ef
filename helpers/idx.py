"""The IDX file format MNIST is published in, read and written by hand (chapter 01).

An IDX file is a tiny header followed by raw bytes:

    magic: 2 zero bytes, 1 byte type code (0x08 = unsigned byte), 1 byte number of dimensions
    dims:  one big-endian int32 per dimension
    data:  the values, row-major

So `train-images-idx3-ubyte` starts with 0x00000803 (ubyte, 3 dims), then 60000, 28, 28.
"""

from __future__ import annotations

import numpy as np

UBYTE = 0x08


def read_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes into a uint8 array of the shape the header declares."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("not an IDX file: it must start with two zero bytes")
    if data[2] != UBYTE:
        raise ValueError(f"IDX type code 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise ValueError(
            f"IDX data is {len(data)} bytes, but a header of {ndim} dimensions needs {header_end}: "
            "it is truncated; pass the whole file's bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(data[4:header_end], dtype=">i4"))
    expected = header_end + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"IDX file is {len(data):,} bytes but its header {shape} needs {expected:,}: "
            "it is truncated or corrupt"
        )
    # A copy, not a view of `data`: the caller gets an ordinary, writable array.
    return np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(shape).copy()


def write_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (the inverse of `read_idx`)."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writer takes uint8 arrays, got {array.dtype}")
    header = bytes([0, 0, UBYTE, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()
