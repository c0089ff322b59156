"""Type stub of the C++ text kernels (`federation/meta/kernels/`); see meta.inputs.parse_block and
meta.format.format_rows for what they do."""

from collections.abc import Sequence
from typing import Any

COMPILER: str  # e.g. "gcc 12.2.0": recorded with the software versions

def parse_block(
    text: bytes | memoryview, n_fields: int, field_of_column: Sequence[int], need_n: bool, /
) -> tuple[
    int,  # rows parsed (well-formed, not blank)
    int,  # rows with too few or too many fields
    int,  # usable rows
    bytes,  # int8 reason per parsed row (-1: usable)
    bytes,  # int16 chromosome code per usable row
    bytes,  # int64 position
    bytes,  # float64 beta
    bytes,  # float64 standard error
    bytes,  # float64 effect allele frequency
    bytes,  # float64 n
    bytes,  # bool alt_is_effect
    bytes,  # int32 offsets of the effect alleles
    bytes,  # their upper-cased text
    bytes,  # int32 offsets of the other alleles
    bytes,  # their upper-cased text
]: ...
def format_rows(n_rows: int, columns: list[tuple[Any, ...]], /) -> bytes: ...
