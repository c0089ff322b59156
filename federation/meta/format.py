"""Turning per-variant meta-analysis arrays into GWAS-SSF text.

Floats are written with 10 significant digits (relative rounding error < 5e-11, far below any
statistical precision, and a third of the bytes of a full repr). p-values come from ln p: those
below 1e-300 are written from -log10 p as `m.mmmmme-k` (`sumstats.format_p_value`), never as 0.
Chromosomes are GWAS-SSF integers 1-25 (X=23, Y=24, MT=25).

`format_rows` writes a bin's rows in one pass of the C++ kernel; `p_column` is its p-value
column on its own, and `round_significant` rounds the numbers the allele-frequency tables
keep as floats.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from federation import _tsv
from federation.meta.options import MetaOptions, Scheme
from federation.stats.tails import neg_log10, p_from_log
from federation.sumstats import (
    FIXED_EFFECTS_COLUMNS,
    MANDATORY_COLUMNS,
    META_EXTRAS,
    NEG_LOG10_P,
    RANDOM_EFFECTS_COLUMNS,
)

if TYPE_CHECKING:
    from federation.stats.harmonize import Alignment

SIGNIFICANT_DIGITS = 10
STOUFFER_COLUMN = "stouffer_z"


def output_columns(options: MetaOptions) -> list[str]:
    """The output's columns: GWAS-SSF's, the meta extras, then the model the primary columns do
    not hold (random effects under fixed, fixed under random: no column repeats another)."""
    other_model = FIXED_EFFECTS_COLUMNS if options.random_effects else RANDOM_EFFECTS_COLUMNS
    columns = [*MANDATORY_COLUMNS, "n", "variant_id", NEG_LOG10_P, *META_EXTRAS, *other_model]
    return [*columns, STOUFFER_COLUMN] if options.scheme is Scheme.SAMPLE_SIZE else columns


def round_significant(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Round to `digits` significant digits so the shortest repr has at most that many.

    Scaling by an exact power of ten (10**k is exact for k <= 22) and rounding once gives the
    float nearest the decimal, which prints as that decimal. Where that is not sure (10**k
    inexact, a scaled value within 1e-4 of a tie, log10 off by one next to a power of ten), the
    value is rounded from its exact decimal expansion instead, as the C++ formatter does.
    """
    out = values.astype(float, copy=True)
    finite = np.isfinite(out) & (out != 0)
    x = out[finite]
    # Clipped so 10**exponent stays finite; values that far out take the exact path below.
    exponent = np.clip(digits - 1 - np.floor(np.log10(np.abs(x))), -300, 300)
    up = exponent >= 0
    scale_up = np.power(10.0, np.where(up, exponent, 0))
    scale_down = np.power(10.0, np.where(up, 0, -exponent))
    scaled = np.where(up, x * scale_up, x / scale_down)
    whole = np.round(scaled)
    unsure = (
        (np.abs(exponent) > 22)
        | (np.abs(np.abs(scaled - whole) - 0.5) < 1e-4)
        | (np.abs(whole) < 10.0 ** (digits - 1))
        | (np.abs(whole) >= 10.0**digits)
    )
    with np.errstate(over="ignore"):  # only values taking the exact path can overflow here
        rounded = np.where(up, whole / scale_up, whole * scale_down)
    rounded[unsure] = [float(f"{value:.{digits - 1}e}") for value in x[unsure]]
    out[finite] = rounded
    return out


def p_column(log_p: np.ndarray) -> list[str]:
    """p from ln p as text, exact in the tail (`format_p_value` for -log10 p >= 300): the
    p-value column of `format_rows`, on its own."""
    p, nlp = _doubles(p_from_log(log_p)), _doubles(neg_log10(log_p))
    return _tsv.format_rows(len(p), [("p_value", p, nlp)]).decode().splitlines()


def format_rows(
    chromosome: int, alignment: Alignment, stats: dict[str, Any], options: MetaOptions
) -> bytes:
    """One bin's variants as GWAS-SSF text rows (no header), columns in `output_columns` order.

    One pass of `_tsv.format_rows` (C++, without the GIL) writes every row: floats correctly
    rounded to SIGNIFICANT_DIGITS in the layout of Arrow's float-to-text cast (plain decimals
    for 1e-6 <= |x| < 1e10, else `1.5e-12`), p from ln p with its exact tail form, whole numbers,
    and NA for anything not finite.
    """
    allele_offsets, allele_bytes = _string_buffers(alignment.allele_table)
    sources: dict[str, tuple[str, Any]] = {
        "chromosome": ("constant", str(chromosome).encode()),
        "base_pair_location": ("int64", alignment.position),
        "effect_allele": ("coded_text", alignment.effect_code),
        "other_allele": ("coded_text", alignment.other_code),
        "beta": ("significant", stats["beta"]),
        "standard_error": ("significant", stats["standard_error"]),
        "effect_allele_frequency": ("significant", stats["effect_allele_frequency"]),
        "p_value": ("p_value", stats["log_p"]),
        "n": ("integer", stats["n"]),
        # GWAS-SSF's own variant_id form, chr_pos_ref_alt (gwas-ssf validate wants [A-Za-z0-9_]).
        "variant_id": (
            "join",
            ("chromosome", "base_pair_location", "other_allele", "effect_allele"),
        ),
        NEG_LOG10_P: ("significant", neg_log10(stats["log_p"])),
        "n_studies": ("integer", stats["n_studies"]),
        "direction": ("fixed_width", stats["direction"]),
        "het_q": ("significant", stats["het_q"]),
        "het_df": ("integer", stats["het_df"]),
        "het_p": ("p_value", stats["het_log_p"]),
        "i2": ("significant", stats["i2"]),
        "tau2": ("significant", stats["tau2"]),
        "beta_random": ("significant", stats["beta_random"]),
        "se_random": ("significant", stats["se_random"]),
        "p_random": ("p_value", stats["random_log_p"]),
        "beta_fixed": ("significant", stats["beta_fixed"]),
        "se_fixed": ("significant", stats["se_fixed"]),
        "p_fixed": ("p_value", stats["fixed_log_p"]),
    }
    if options.scheme is Scheme.SAMPLE_SIZE:
        sources[STOUFFER_COLUMN] = ("significant", stats["stouffer_z"])
    names = output_columns(options)
    index = {name: i for i, name in enumerate(names)}
    specs: list[tuple[Any, ...]] = []
    for name in names:
        kind, source = sources[name]
        if kind == "join":
            specs.append(("join", tuple(index[part] for part in source), b"_"))
        elif kind == "constant":
            specs.append((kind, source))
        elif kind == "int64":
            specs.append((kind, np.ascontiguousarray(source, dtype=np.int64)))
        elif kind == "coded_text":
            codes = np.ascontiguousarray(source, dtype=np.int64)
            specs.append((kind, codes, allele_offsets, allele_bytes))
        elif kind == "fixed_width":
            cells = np.ascontiguousarray(source, dtype=np.uint8)
            specs.append((kind, cells, cells.shape[1] if cells.ndim == 2 else 0))
        elif kind == "p_value":
            specs.append((kind, _doubles(p_from_log(source)), _doubles(neg_log10(source))))
        else:
            specs.append((kind, _doubles(source)))
    return _tsv.format_rows(alignment.n_groups, specs)


def _string_buffers(strings: Iterable[str]) -> tuple[np.ndarray, bytes]:
    """Arrow-style int32 offsets and bytes of a few strings (the distinct alleles)."""
    encoded = [text.encode() for text in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(text) for text in encoded], out=offsets[1:])
    return offsets, b"".join(encoded)


def _doubles(values: Any) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)
