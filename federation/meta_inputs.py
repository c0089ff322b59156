"""GWAS-SSF inputs of the meta-analysis: their headers, their kind, and the checks on every row.

Rows that cannot be used are dropped and counted per reason (`DropReason`), never fatal.
`meta_spill` streams the files through `clean_batch` in blocks.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from isal import igzip

from federation.errors import SpecError

# Columns the meta-analysis cannot do without (GWAS-SSF names).
REQUIRED_COLUMNS = (
    "chromosome",
    "base_pair_location",
    "effect_allele",
    "other_allele",
    "beta",
    "standard_error",
)
# Columns used when present: frequency (palindromes, pooled EAF), p (range check), n, ID (ref/alt).
OPTIONAL_COLUMNS = ("effect_allele_frequency", "p_value", "n", "variant_id")
NUMERIC_COLUMNS = ("base_pair_location", "beta", "standard_error") + OPTIONAL_COLUMNS[:3]
NA_VALUES = ["", "NA", "#NA", "NaN", "nan", "N/A", "NULL", "null", "."]
# Columns that only an allele-frequency table has.
FREQUENCY_TABLE_COLUMNS = frozenset({"allele_count", "allele_number", "node_id"})
# GWAS-SSF chromosome codes: 1-22, then X=23, Y=24, MT=25.
CHROMOSOME_CODES: dict[str, int] = {str(i): i for i in range(1, 26)} | {
    "X": 23,
    "Y": 24,
    "M": 25,
    "MT": 25,
}
GZIP_MAGIC = b"\x1f\x8b"


class DropReason(StrEnum):
    """Why a row was not used (the sidecar counts them per input). First failing check wins."""

    MISSING_VALUE = "missing_value"  # includes rows with too few or too many fields
    UNKNOWN_CHROMOSOME = "unknown_chromosome"
    INVALID_POSITION = "invalid_position"
    INVALID_ALLELE = "invalid_allele"
    BETA_NOT_FINITE = "beta_not_finite"
    SE_MISSING = "se_missing"
    SE_INFINITE = "se_infinite"
    SE_NOT_POSITIVE = "se_not_positive"
    P_OUT_OF_RANGE = "p_out_of_range"
    FREQUENCY_OUT_OF_RANGE = "frequency_out_of_range"
    N_INVALID = "n_invalid"
    N_MISSING = "n_missing"
    DUPLICATE_VARIANT = "duplicate_variant"
    PALINDROMIC_AMBIGUOUS = "palindromic_ambiguous"
    PALINDROMIC_NO_FREQUENCY = "palindromic_no_frequency"


ROW_CHECKS = list(DropReason)[:12]  # the checks made while reading, in order


def open_text(path: Path) -> IO[bytes]:
    """Open a `.tsv` or `.tsv.gz` for binary reading (gzip decompressed in a helper thread)."""
    if not path.is_file():
        raise SpecError(f"input '{path}': file not found; check the path")
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return igzip.open(path, "rb")  # ISA-L: ~3x zlib; multi-member (bgzip) files too
    return open(path, "rb")


def read_header(path: Path) -> list[str]:
    """The column names of an input; SpecError naming the file if it cannot be read."""
    try:
        with open_text(path) as handle:
            line = handle.readline()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise SpecError(
            f"input '{path}': cannot be read as a gzip or plain TSV ({error}); "
            "give a GWAS-SSF .tsv.gz file"
        ) from error
    try:
        header = line.decode("utf-8").rstrip("\r\n").split("\t")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"input '{path}': header is not UTF-8 text; give a GWAS-SSF .tsv.gz file"
        ) from error
    return header


def check_columns(path: Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> list[str]:
    header = read_header(path)
    missing = [name for name in required if name not in header]
    if missing:
        raise SpecError(
            f"input '{path}': column '{missing[0]}' missing (have: {', '.join(header[:12])}); "
            f"GWAS-SSF needs {', '.join(required)}"
        )
    return header


def is_frequency_table(path: Path) -> bool:
    """An allele-frequency table (to be pooled) rather than GWAS summary statistics."""
    return set(read_header(path)) >= FREQUENCY_TABLE_COLUMNS


def reject_mixed_inputs(paths: Sequence[Path]) -> bool:
    """True if all inputs are allele-frequency tables, False if none; SpecError if mixed."""
    kinds = [is_frequency_table(p) for p in paths]
    if any(kinds) and not all(kinds):
        odd = paths[kinds.index(not kinds[0])]
        raise SpecError(
            f"input '{odd}': mixes allele-frequency tables and GWAS summary statistics; "
            "run `federation meta` on one kind at a time"
        )
    return bool(kinds) and all(kinds)


def _numeric(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A column as float64 with NaN for missing or unparseable values."""
    if name not in batch.schema.names:
        return np.full(batch.num_rows, np.nan)
    column = batch.column(name)
    if pa.types.is_floating(column.type):
        return column.to_numpy(zero_copy_only=False)
    import pandas as pd  # only on the slow path for files with non-numeric junk

    return pd.to_numeric(column.to_pandas(), errors="coerce").to_numpy(dtype=float)


def _chromosome_codes(column: pa.Array) -> np.ndarray:
    encoded = pc.dictionary_encode(column)
    names = encoded.dictionary.to_pylist()
    lookup = np.array(
        [CHROMOSOME_CODES.get(_strip_chr(n), 0) if n is not None else 0 for n in names] + [0],
        dtype=np.int16,
    )
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    indices = np.where(encoded.indices.is_null().to_numpy(zero_copy_only=False), -1, indices)
    return lookup[indices.astype(np.int64)]


def _is_nucleotides(alleles: pa.Array) -> pa.Array:
    """Non-empty and only A, C, G, T (trimming them away leaves nothing: ~2x a regex match)."""
    return pc.and_(
        pc.equal(pc.utf8_length(pc.ascii_trim(alleles, "ACGT")), 0),
        pc.greater(pc.utf8_length(alleles), 0),
    )


def id_ends_in_allele(variant_id: pa.Array, allele: pa.Array) -> np.ndarray:
    """Per row: is the ID's last field (after its last ':' or '_'; all of it if none) the allele?

    `chr:pos:ref:alt` and `chr_pos_ref_alt` IDs end in the alternate allele. Single-base
    alleles, nearly every row, are tested with suffix matches per base; the rest with a regex
    (a regex over every row would cost as much as parsing the column).
    """
    ids = pc.ascii_upper(variant_id)
    encoded = pc.dictionary_encode(allele)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    answer = np.zeros(len(ids), dtype=bool)
    regex_rows = np.ones(len(ids), dtype=bool)
    for code, base in enumerate(encoded.dictionary.to_pylist()):
        if base is None or len(base) != 1 or base in ":_":
            continue
        rows = codes == code
        ends = pc.or_(
            pc.or_(pc.ends_with(ids, ":" + base), pc.ends_with(ids, "_" + base)),
            pc.equal(ids, base),
        )
        answer[rows] = ends.fill_null(False).to_numpy(zero_copy_only=False)[rows]
        regex_rows[rows] = False
    if regex_rows.any():
        subset = pa.array(np.flatnonzero(regex_rows))
        last = pc.replace_substring_regex(pc.take(ids, subset), r"^.*[:_]", "")
        same = pc.equal(last, pc.take(allele, subset)).fill_null(False)
        answer[regex_rows] = same.to_numpy(zero_copy_only=False)
    return answer


def _strip_chr(name: str) -> str:
    name = name.strip().upper()
    return name[3:] if name.startswith("CHR") else name


def clean_batch(
    batch: pa.RecordBatch, need_n: bool
) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """Check every row; return usable rows, their chromosome codes, reasons of all rows, z."""
    position = _numeric(batch, "base_pair_location")
    beta = _numeric(batch, "beta")
    se = _numeric(batch, "standard_error")
    frequency = _numeric(batch, "effect_allele_frequency")
    p_value = _numeric(batch, "p_value")
    n = _numeric(batch, "n")
    chromosome = _chromosome_codes(batch.column("chromosome"))
    effect = pc.ascii_upper(batch.column("effect_allele"))
    other = pc.ascii_upper(batch.column("other_allele"))
    missing = (
        batch.column("chromosome").is_null().to_numpy(zero_copy_only=False)
        | np.isnan(position)
        | effect.is_null().to_numpy(zero_copy_only=False)
        | other.is_null().to_numpy(zero_copy_only=False)
        | np.isnan(beta)
    )
    allele_ok = pc.and_(
        pc.and_(_is_nucleotides(effect), _is_nucleotides(other)), pc.not_equal(effect, other)
    )
    with np.errstate(invalid="ignore"):
        failures = [
            missing,
            chromosome == 0,
            (position < 1) | (position != np.floor(position)) | ~np.isfinite(position),
            ~allele_ok.fill_null(False).to_numpy(zero_copy_only=False),
            ~np.isfinite(beta),
            np.isnan(se),
            np.isinf(se),
            se <= 0,
            (p_value < 0) | (p_value > 1),
            (frequency < 0) | (frequency > 1),
            (n < 0) | np.isinf(n),
            np.isnan(n) if need_n else np.zeros(batch.num_rows, dtype=bool),
        ]
    reason = np.full(batch.num_rows, -1, dtype=np.int8)
    for code, failed in enumerate(failures):
        reason[(reason < 0) & failed] = code
    usable = reason < 0
    if "variant_id" in batch.schema.names:
        alt_is_effect = ~id_ends_in_allele(batch.column("variant_id"), other)
    else:
        alt_is_effect = np.ones(batch.num_rows, dtype=bool)
    table = pa.table(
        {
            "position": position.astype(np.int64, copy=False),
            "effect_allele": effect,
            "other_allele": other,
            "beta": beta,
            "se": se,
            "frequency": frequency,
            "n": n,
            "alt_is_effect": alt_is_effect,
        }
    ).filter(pa.array(usable))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = beta[usable] / se[usable]
    return table, chromosome[usable], reason, z
