"""Reading GWAS-SSF inputs for the meta-analysis: checked, cleaned and spilled in position bins.

Each input is streamed once (gzip via ISA-L, CSV via pyarrow, in blocks), so memory does not
grow with the file. Rows that cannot be used are dropped and counted per reason, never fatal.
The usable rows are written to Arrow IPC files, one per (chromosome, position bin), in a
scratch directory; the meta-analysis then reads one bin of every input at a time, so its
memory is bounded by the largest bin, not by the genome.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from isal import igzip

from federation import meta
from federation.errors import SpecError
from federation.sumstats import sha256_file

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
# GWAS-SSF chromosome codes: 1-22, then X=23, Y=24, MT=25.
CHROMOSOME_CODES: dict[str, int] = {str(i): i for i in range(1, 26)} | {
    "X": 23,
    "Y": 24,
    "M": 25,
    "MT": 25,
}
# Position bins: 25 Mb keeps a bin under 1% of the genome (bounded memory) while a
# chromosome needs at most 10 bins (few files).
BIN_SIZE = 25_000_000
BINS_PER_CHROMOSOME = 1000
# Blocks of 8 MB of text (~70k rows): pyarrow parses a block on both cores, and two inputs
# read at once hold well under 100 MB of text between them.
READ_BLOCK_BYTES = 8 << 20
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


@dataclass(frozen=True)
class InputScan:
    """What reading one input found."""

    path: Path
    sha256: str
    rows_read: int
    rows_usable: int
    dropped: dict[str, int]
    lambda_gc: float
    bins: frozenset[int]


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


def _text_blocks(path: Path) -> Iterator[bytes]:
    """The file's text after the header, in blocks of READ_BLOCK_BYTES that end at a line end."""
    with open_text(path) as handle:
        handle.readline()
        carry = b""
        while data := handle.read(READ_BLOCK_BYTES):
            block = carry + data
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            if cut:
                yield block[:cut]
        if carry.strip():
            yield carry + b"\n"


def _batches(
    path: Path, header: list[str], as_text: bool, malformed: list[int]
) -> Iterator[pa.RecordBatch]:
    """Blocks of typed columns; rows with the wrong number of fields are skipped and counted.

    Each block is parsed on its own (pyarrow's own streaming reader over a Python file object
    reads far ahead: ~450 MB held per 5M-row input, against ~120 MB this way).
    """

    def skip_row(_row: Any) -> str:
        malformed[0] += 1
        return "skip"

    wanted = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in header]
    types: dict[str, Any] = {c: pa.string() for c in wanted}
    if not as_text:
        types |= {c: pa.float64() for c in NUMERIC_COLUMNS if c in wanted}
    read_options = pcsv.ReadOptions(column_names=header)
    parse_options = pcsv.ParseOptions(
        delimiter="\t", quote_char=False, invalid_row_handler=skip_row
    )
    convert_options = pcsv.ConvertOptions(
        column_types=types, include_columns=wanted, null_values=NA_VALUES, strings_can_be_null=True
    )
    for block in _text_blocks(path):
        table = pcsv.read_csv(pa.py_buffer(block), read_options, parse_options, convert_options)
        yield from table.combine_chunks().to_batches()


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
        pc.and_(
            pc.match_substring_regex(effect, "^[ACGT]+$"),
            pc.match_substring_regex(other, "^[ACGT]+$"),
        ),
        pc.not_equal(effect, other),
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
        last = pc.ascii_upper(
            pc.replace_substring_regex(batch.column("variant_id"), r"^.*[:_]", "")
        )
        alt_is_effect = ~pc.equal(last, other).fill_null(False).to_numpy(zero_copy_only=False)
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


def bin_of(chromosome: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(chromosome, 25 Mb window) as one sortable int: processing bins in order keeps the
    output sorted by chromosome and position."""
    window = np.minimum(position // BIN_SIZE, BINS_PER_CHROMOSOME - 1)
    return chromosome.astype(np.int64) * BINS_PER_CHROMOSOME + window


def chromosome_of_bin(bin_id: int) -> int:
    return bin_id // BINS_PER_CHROMOSOME


def bin_path(spill_dir: Path, input_index: int, bin_id: int) -> Path:
    return spill_dir / str(input_index) / f"{bin_id}.arrow"


def scan_input(path: Path, input_index: int, spill_dir: Path, need_n: bool) -> InputScan:
    """Read one input once: count drops, compute λGC, spill usable rows per position bin."""
    header = check_columns(path)
    (spill_dir / str(input_index)).mkdir(parents=True, exist_ok=True)
    try:
        return _scan(path, header, input_index, spill_dir, need_n, as_text=False)
    except (OSError, EOFError) as error:
        raise SpecError(
            f"input '{path}': unreadable after the header ({error}); "
            "the file is truncated or corrupt, give a complete GWAS-SSF .tsv.gz"
        ) from error
    except pa.ArrowInvalid:
        # A non-numeric value in a numeric column: read again as text, coercing per value.
        for stale in (spill_dir / str(input_index)).glob("*.arrow"):
            stale.unlink()
        try:
            return _scan(path, header, input_index, spill_dir, need_n, as_text=True)
        except pa.ArrowInvalid as error:
            raise SpecError(
                f"input '{path}': not a well-formed TSV ({str(error).splitlines()[0]}); "
                "every row needs one value per header column"
            ) from error


def _scan(
    path: Path, header: list[str], input_index: int, spill_dir: Path, need_n: bool, as_text: bool
) -> InputScan:
    counts = np.zeros(len(ROW_CHECKS), dtype=np.int64)
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    sinks: list[pa.NativeFile] = []
    z_parts: list[np.ndarray] = []
    rows_read = 0
    malformed = [0]
    try:
        for batch in _batches(path, header, as_text, malformed):
            rows_read += batch.num_rows
            table, chromosome, reason, z = clean_batch(batch, need_n)
            counts += np.bincount(reason[reason >= 0], minlength=len(ROW_CHECKS))
            z_parts.append(z)
            if table.num_rows == 0:
                continue
            bins = bin_of(chromosome, table.column("position").to_numpy())
            order = np.argsort(bins, kind="stable")
            bins = bins[order]
            table = table.take(pa.array(order))
            starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
            stops = np.r_[starts[1:], bins.size]
            for start, stop in zip(starts, stops, strict=True):
                bin_id = int(bins[start])
                if bin_id not in writers:
                    sink = pa.OSFile(str(bin_path(spill_dir, input_index, bin_id)), "wb")
                    sinks.append(sink)
                    writers[bin_id] = pa.ipc.new_stream(sink, table.schema)
                writers[bin_id].write_table(table.slice(start, stop - start))
    finally:
        for writer in writers.values():
            writer.close()
        for sink in sinks:
            sink.close()
    counts[0] += malformed[0]
    rows_read += malformed[0]
    z_all = np.concatenate(z_parts) if z_parts else np.zeros(0)
    return InputScan(
        path=path,
        sha256=sha256_file(path),
        rows_read=rows_read,
        rows_usable=int(z_all.size),
        dropped={reason.value: int(c) for reason, c in zip(ROW_CHECKS, counts, strict=True) if c},
        lambda_gc=meta.genomic_control_lambda(z_all),
        bins=frozenset(writers),
    )


def load_bin(spill_dir: Path, input_index: int, bin_id: int) -> pa.Table | None:
    path = bin_path(spill_dir, input_index, bin_id)
    if not path.exists():
        return None
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_stream(source).read_all()
