"""Moving null-free numeric and boolean columns between numpy and Arrow without pandas.

`pa.array(ndarray)` and `Array.to_numpy()` first ask pyarrow's pandas shim whether pandas is
installed, and asking imports it: ~0.2 s of one core, holding the GIL, in every meta-analysis,
which otherwise never needs pandas. These go through the buffers instead.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_NUMPY_DTYPES: dict[pa.DataType, np.dtype] = {
    pa.int8(): np.dtype(np.int8),
    pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8),
    pa.float64(): np.dtype(np.float64),
}


def numpy_of(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of a null-free integer, float64 or boolean column (zero-copy but booleans)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise ValueError(f"numpy_of: {array.null_count} nulls in a {array.type} column")
    data = array.buffers()[1]
    if pa.types.is_boolean(array.type):
        if data is None:  # an empty column may have no buffer
            return np.zeros(0, dtype=bool)
        bits = np.frombuffer(data, dtype=np.uint8)
        end = array.offset + len(array)
        return np.unpackbits(bits, count=end, bitorder="little")[array.offset :].view(bool)
    dtype = _NUMPY_DTYPES.get(array.type)
    if dtype is None:
        raise TypeError(f"numpy_of: no numpy view of a {array.type} column")
    if data is None:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def arrow_of(values: np.ndarray) -> pa.Array:
    """A numeric or boolean numpy vector as an Arrow array (zero-copy but booleans)."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    arrow_type = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])
