"""Null-free columns between numpy and Arrow without pyarrow's pandas-importing paths."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.stats.arrow_numpy import arrow_of, numpy_of


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.float64])
def test_numbers_round_trip_with_their_type(dtype: type) -> None:
    values = np.arange(-3, 9).astype(dtype)
    array = arrow_of(values)
    assert array.type == pa.from_numpy_dtype(values.dtype)
    assert array.to_pylist() == values.tolist()
    assert numpy_of(array).dtype == values.dtype
    np.testing.assert_array_equal(numpy_of(array), values)


@given(st.lists(st.booleans(), max_size=40), st.integers(0, 20), st.integers(0, 20))
def test_booleans_and_slices_read_back_the_same(
    values: list[bool], start: int, length: int
) -> None:
    array = arrow_of(np.array(values, dtype=bool))
    assert array.to_pylist() == values
    piece = array.slice(start, length)  # a non-zero offset into the bit buffer
    assert numpy_of(piece).tolist() == values[start : start + length]
    numbers = arrow_of(np.arange(len(values), dtype=np.int64)).slice(start, length)
    assert numpy_of(numbers).tolist() == list(range(len(values)))[start : start + length]


def test_chunked_columns_are_joined() -> None:
    column = pa.chunked_array([pa.array([1.5, 2.5]), pa.array([3.5])])
    assert numpy_of(column).tolist() == [1.5, 2.5, 3.5]
    assert numpy_of(pa.chunked_array([], type=pa.bool_())).tolist() == []


def test_nulls_and_other_types_are_refused() -> None:
    with pytest.raises(ValueError, match="1 nulls in a double column"):
        numpy_of(pa.array([1.0, None]))
    with pytest.raises(TypeError, match="no numpy view of a string column"):
        numpy_of(pa.array(["A"]))
