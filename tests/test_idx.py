"""The hand-written IDX reader and writer (chapter 01)."""

import numpy as np
import pytest

from helpers.idx import read_idx, write_idx


def test_round_trip_keeps_shape_and_values():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = write_idx(array)
    assert data[:4] == bytes([0, 0, 0x08, 3])
    assert data[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    np.testing.assert_array_equal(read_idx(data), array)


def test_labels_header_is_one_dimensional():
    data = write_idx(np.array([5, 0, 4], dtype=np.uint8))
    assert data[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 3])
    assert read_idx(data).tolist() == [5, 0, 4]


def test_truncated_file_is_refused_with_the_sizes():
    data = write_idx(np.zeros((10, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(data[:-1])


@pytest.mark.parametrize(
    "data, message",
    [(b"\x01\x00\x08\x01", "two zero bytes"), (b"\x00\x00\x0d\x01", "not unsigned byte")],
)
def test_wrong_magic_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        read_idx(data + b"\x00\x00\x00\x00")


def test_writer_takes_only_uint8():
    with pytest.raises(TypeError, match="uint8"):
        write_idx(np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("cut", [4, 6, 15])
def test_a_truncated_header_says_so(cut):
    data = write_idx(np.zeros((2, 3, 4), dtype=np.uint8))[:cut]
    with pytest.raises(ValueError, match=rf"IDX data is {cut} bytes, .* needs 16: it is truncated"):
        read_idx(data)
