"""Turning per-variant meta-analysis arrays into GWAS-SSF text columns (vectorised).

Floats are written with 10 significant digits (relative rounding error < 5e-11, far below any
statistical precision, and a third of the bytes of a full repr). p-values come from ln p: those
below 1e-300 are written from -log10 p as `m.mmmmme-k` (`sumstats.format_p_value`), never as 0.
Chromosomes are GWAS-SSF integers 1-25 (X=23, Y=24, MT=25).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from federation import meta
from federation.meta_options import Scheme
from federation.sumstats import MANDATORY_COLUMNS, META_EXTRAS, NEG_LOG10_P, format_p_value

if TYPE_CHECKING:
    from federation.harmonize import Alignment
    from federation.meta_options import MetaOptions

SIGNIFICANT_DIGITS = 10
# Below this -log10 p, exp(ln p) is a normal float64 and prints as itself.
TAIL_NEG_LOG10_P = 300.0
STOUFFER_COLUMN = "stouffer_z"
MISSING = "NA"


def output_columns(sample_size_scheme: bool) -> list[str]:
    columns = [*MANDATORY_COLUMNS, "n", "variant_id", NEG_LOG10_P, *META_EXTRAS]
    return [*columns, STOUFFER_COLUMN] if sample_size_scheme else columns


def round_significant(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Round to `digits` significant digits so the shortest repr has at most that many.

    Scaling by an exact power of ten (10**k is exact for k <= 22) and dividing back gives the
    float nearest the decimal, which prints as that decimal.
    """
    out = values.astype(float, copy=True)
    finite = np.isfinite(out) & (out != 0)
    x = out[finite]
    # Clipped so 10**exponent stays finite (subnormal p-values are formatted from -log10 p).
    exponent = np.clip(digits - 1 - np.floor(np.log10(np.abs(x))), -300, 300)
    up = exponent >= 0
    scale_up = np.power(10.0, np.where(up, exponent, 0))
    scale_down = np.power(10.0, np.where(up, 0, -exponent))
    x = np.where(up, np.round(x * scale_up) / scale_up, np.round(x / scale_down) * scale_down)
    out[finite] = x
    return out


def float_column(values: np.ndarray) -> pa.Array:
    rounded = round_significant(values)
    finite = np.isfinite(rounded)
    if finite.all():
        return pc.cast(pa.array(rounded), pa.string())
    strings = pc.cast(pa.array(rounded, mask=~finite), pa.string())
    return pc.fill_null(strings, MISSING)


def int_column(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=float)
    known = np.isfinite(values)
    ints = pa.array(np.round(np.where(known, values, 0)).astype(np.int64), mask=~known)
    return pc.fill_null(pc.cast(ints, pa.string()), MISSING)


def p_column(log_p: np.ndarray) -> pa.Array:
    """p from ln p, exact in the tail: `format_p_value` for -log10 p >= 300."""
    nlp = meta.neg_log10(log_p)
    p = meta.p_from_log(log_p)
    strings = float_column(p)
    tail = np.isfinite(nlp) & (nlp >= TAIL_NEG_LOG10_P)
    if not tail.any():
        return strings
    values = strings.to_numpy(zero_copy_only=False).astype(object)
    values[tail] = format_p_value(p[tail], nlp[tail])
    return pa.array(values, type=pa.string())


def format_table(
    chromosome: int, alignment: Alignment, stats: dict[str, Any], options: MetaOptions
) -> pa.Table:
    """One bin's variants as a table of GWAS-SSF text columns, in output order."""
    n_rows = alignment.n_groups
    chrom = pa.repeat(pa.scalar(str(chromosome)), n_rows)
    position = pc.cast(pa.array(alignment.position, type=pa.int64()), pa.string())
    alleles = pa.array(alignment.allele_table, type=pa.string())
    effect = pc.take(alleles, pa.array(alignment.effect_code))
    other = pc.take(alleles, pa.array(alignment.other_code))
    text = _Formatter()
    columns = {
        "chromosome": chrom,
        "base_pair_location": position,
        "effect_allele": effect,
        "other_allele": other,
        "beta": text(float_column, stats["beta"]),
        "standard_error": text(float_column, stats["standard_error"]),
        "effect_allele_frequency": text(float_column, stats["effect_allele_frequency"]),
        "p_value": text(p_column, stats["log_p"]),
        "n": int_column(stats["n"]),
        # GWAS-SSF's own variant_id form, chr_pos_ref_alt (gwas-ssf validate wants [A-Za-z0-9_]).
        "variant_id": pc.binary_join_element_wise(chrom, position, other, effect, "_"),
        NEG_LOG10_P: float_column(meta.neg_log10(stats["log_p"])),
        "n_studies": int_column(stats["n_studies"]),
        "direction": stats["direction"],
        "het_q": text(float_column, stats["het_q"]),
        "het_df": int_column(stats["het_df"]),
        "het_p": text(p_column, stats["het_log_p"]),
        "i2": text(float_column, stats["i2"]),
        "tau2": text(float_column, stats["tau2"]),
        "beta_random": text(float_column, stats["beta_random"]),
        "se_random": text(float_column, stats["se_random"]),
        "p_random": text(p_column, stats["random_log_p"]),
    }
    if options.scheme is Scheme.SAMPLE_SIZE:
        columns[STOUFFER_COLUMN] = text(float_column, stats["stouffer_z"])
    names = output_columns(options.scheme is Scheme.SAMPLE_SIZE)
    return pa.table([columns[name] for name in names], names=names)


class _Formatter:
    """Formats each statistic once: under random effects the primary beta, SE and p are the
    very arrays of the *_random columns, and formatting is the costliest step of writing."""

    def __init__(self) -> None:
        self._done: dict[tuple[Callable[[np.ndarray], pa.Array], int], pa.Array] = {}

    def __call__(self, formatter: Callable[[np.ndarray], pa.Array], values: np.ndarray) -> pa.Array:
        key = (formatter, id(values))
        if key not in self._done:
            self._done[key] = formatter(values)
        return self._done[key]
