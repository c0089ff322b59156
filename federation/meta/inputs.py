"""GWAS-SSF inputs of the meta-analysis: their headers, their kind, what their sidecars declare
(genome build, trait type, reference-aligned alleles), and the checks on every row.

Rows that cannot be used are dropped and counted per reason (`DropReason`), never fatal.
`spill` streams the files through `parse_block` in blocks.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
from isal import igzip

from federation import _tsv, sumstats
from federation.errors import SpecError
from federation.spec import TraitType
from federation.stats.arrow_numpy import arrow_of, numpy_of

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
# Values read as missing (`kernels/parse_rows.cpp`: is_na).
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
TRAIT_TYPES = tuple(trait.value for trait in TraitType)  # as sidecars write them


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


@dataclass(frozen=True)
class InputDeclaration:
    """What an input's sidecar declares (or the run assumes, for an input without one)."""

    path: Path
    genome_assembly: str
    trait_type: str | None
    reference_aligned: bool  # alleles are REF/ALT of the build: palindromic SNPs keep strand
    sidecar: Path | None
    node_id: str | None = None


def declare_inputs(
    paths: Sequence[Path],
    assume_build: str | None = None,
    trait_type: str | None = None,
    *,
    need_trait: bool = True,
    require_sidecar: bool = True,
) -> list[InputDeclaration]:
    """Each input's genome build, trait type and allele alignment, from its sidecar.

    An input without a sidecar is refused unless the build (`--assume-build`) and, for GWAS,
    the trait type (`--trait-type`) are given; it is then taken as not reference-aligned.
    Inputs that declare different builds or trait types are refused: their positions or
    effect scales do not combine. SpecError with one line naming the files and values.
    `require_sidecar=False` (allele-frequency tables): inputs without a declared build pass
    unchecked and are left out of the result; those that declare one must still agree.
    """
    if trait_type is not None and trait_type not in TRAIT_TYPES:
        raise SpecError(
            f"--trait-type '{trait_type}': unknown; use one of {', '.join(TRAIT_TYPES)}"
        )
    if not require_sidecar:
        declared = [
            InputDeclaration(path, build, None, False, sumstats.find_sidecar(path))
            for path in paths
            if (
                build := _declared(sumstats.read_sidecar(path).get("genome_assembly"))
                or assume_build
            )
        ]
        _refuse_mixed(declared, "genome_assembly", "genome builds", "lift one over")
        return declared
    declarations = [_declaration(path, assume_build, trait_type, need_trait) for path in paths]
    _refuse_mixed(declarations, "genome_assembly", "genome builds", "lift one over")
    if need_trait:
        _refuse_mixed(declarations, "trait_type", "trait types", "meta-analyse them apart")
    return declarations


def _declaration(
    path: Path, assume_build: str | None, trait_type: str | None, need_trait: bool
) -> InputDeclaration:
    sidecar = sumstats.find_sidecar(path)
    metadata = sumstats.read_sidecar(path) if sidecar is not None else {}
    build = _declared(metadata.get("genome_assembly")) or assume_build
    trait = _declared(metadata.get("trait_type")) or trait_type
    if sidecar is None and (build is None or (need_trait and trait is None)):
        raise SpecError(
            f"input '{path}': no sidecar '{sumstats.sidecar_path(path).name}', so its genome "
            "build and trait type are unknown; give the sidecar, or state them with "
            "--assume-build GRCh38 --trait-type quantitative|binary"
        )
    if build is None:
        raise SpecError(
            f"input '{path}': sidecar '{sidecar}' has no genome_assembly; add it, or state it "
            "with --assume-build GRCh38"
        )
    if need_trait and trait is None:
        raise SpecError(
            f"input '{path}': sidecar '{sidecar}' has no trait_type; add it, or state it "
            "with --trait-type quantitative|binary"
        )
    return InputDeclaration(
        path=path,
        genome_assembly=build,
        trait_type=trait,
        reference_aligned=metadata.get(sumstats.REFERENCE_ALIGNED) is True,
        sidecar=sidecar,
        node_id=metadata.get("node_id"),
    )


def _declared(value: object) -> str | None:
    """A sidecar's value, None when absent or GWAS-SSF's `NR` (not reported)."""
    return None if value is None or str(value).strip() in ("", "NR") else str(value).strip()


def _refuse_mixed(
    declarations: Sequence[InputDeclaration], field: str, what: str, fix: str
) -> None:
    first = declarations[0] if declarations else None
    for other in declarations[1:]:
        assert first is not None
        if getattr(other, field) != getattr(first, field):
            raise SpecError(
                f"inputs '{first.path}' ({field} {getattr(first, field)}) and '{other.path}' "
                f"({field} {getattr(other, field)}): different {what} cannot be combined; "
                f"{fix}, or leave one out"
            )


# The columns the row kernel reads, in its order (`kernels/parse_rows.cpp`: enum Column); absent
# columns read as missing values.
KERNEL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


@dataclass(frozen=True)
class ParsedBlock:
    """The rows of one block of text: what was dropped, and the usable rows."""

    rows_read: int
    drop_counts: np.ndarray  # per ROW_CHECKS reason
    usable: pa.Table  # position, effect_allele, other_allele, beta, se, frequency, n, alt_is_effect
    chromosome: np.ndarray  # int16 GWAS-SSF code of each usable row

    @property
    def z(self) -> np.ndarray:
        """beta / SE of the usable rows (for λGC)."""
        return numpy_of(self.usable.column("beta")) / numpy_of(self.usable.column("se"))


def parse_block(text: bytes | memoryview, header: Sequence[str], need_n: bool) -> ParsedBlock:
    """Parse and check whole lines of TSV text whose columns are `header`; never fatal.

    Every row gets the first failing check of ROW_CHECKS; a row with too few or too many fields
    counts as a missing value, a blank line is not a row. Values in NA_VALUES are missing, a
    number that does not parse is NaN (so counted by the checks), alleles are upper-cased, and
    chromosome names are trimmed, upper-cased and stripped of a "chr" prefix before
    CHROMOSOME_CODES. alt_is_effect is False only when the row's variant_id ends (after its last
    ':' or '_') in the other allele: `chr:pos:ref:alt` IDs name the alternate allele last.
    The work is one pass of `_tsv.parse_block` (C++, without the GIL).
    """
    field_of_column = [header.index(c) if c in header else -1 for c in KERNEL_COLUMNS]
    (
        parsed,
        malformed,
        usable,
        reason,
        chromosome,
        position,
        beta,
        se,
        frequency,
        n,
        alt,
        effect_offsets,
        effect_data,
        other_offsets,
        other_data,
    ) = _tsv.parse_block(text, len(header), field_of_column, need_n)
    reasons = np.frombuffer(reason, dtype=np.int8)
    counts = np.bincount(reasons[reasons >= 0], minlength=len(ROW_CHECKS)).astype(np.int64)
    counts[0] += malformed
    columns = {
        "position": arrow_of(np.frombuffer(position, dtype=np.int64)),
        "effect_allele": _strings(usable, effect_offsets, effect_data),
        "other_allele": _strings(usable, other_offsets, other_data),
        "beta": arrow_of(np.frombuffer(beta, dtype=np.float64)),
        "se": arrow_of(np.frombuffer(se, dtype=np.float64)),
        "frequency": arrow_of(np.frombuffer(frequency, dtype=np.float64)),
        "n": arrow_of(np.frombuffer(n, dtype=np.float64)),
        "alt_is_effect": arrow_of(np.frombuffer(alt, dtype=np.bool_)),
    }
    table = pa.Table.from_arrays(list(columns.values()), names=list(columns))
    return ParsedBlock(
        rows_read=parsed + malformed,
        drop_counts=counts,
        usable=table,
        chromosome=np.frombuffer(chromosome, dtype=np.int16),
    )


def _strings(count: int, offsets: bytes, data: bytes) -> pa.Array:
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))
