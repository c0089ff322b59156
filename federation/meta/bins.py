"""One position bin of the meta-analysis, start to finish: align, combine, format, compress.

`BinJob(bin_id)` reads that bin of every input from the scratch directory `spill` wrote,
aligns the rows into variants (`stats.harmonize`), combines them (`stats.meta_analysis`), formats the GWAS-SSF text
and compresses it into BGZF blocks. Bins are independent, so `runner` can hand them to
worker processes and concatenate the blocks in genome order: a BGZF file is a series of gzip
members, and equal tables still give equal bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from federation.meta.format import format_rows
from federation.meta.options import MetaOptions, Scheme
from federation.meta.spill import chromosome_of_bin, load_bin
from federation.stats import harmonize, meta_analysis
from federation.stats.arrow_numpy import arrow_of, numpy_of
from federation.sumstats import bgzf_blocks

if TYPE_CHECKING:
    from federation.meta.record import InputTally

# Rows aligned and combined at once: bounds the temporaries. A bin of five 1M-variant inputs
# (~215k rows) is one slice; splitting costs a sort and a copy of the bin. At 5 inputs x 5M
# variants, 400k rows per slice peaked at 874 MB for the whole run, 200k at 810 MB.
SLICE_ROWS = 400_000
# The fates counted as drops (everything but KEPT), in a fixed order for the count arrays.
DROP_FATES = [fate for fate in harmonize.RowFate if fate is not harmonize.RowFate.KEPT]


@dataclass
class BinCounts:
    """Per-input counts from aligning rows: drops per fate, rows used, swaps, strand flips."""

    dropped: np.ndarray  # (len(DROP_FATES), n_inputs)
    used: np.ndarray
    swaps: np.ndarray
    flips: np.ndarray

    @classmethod
    def zeros(cls, n_inputs: int) -> BinCounts:
        empty = np.zeros(n_inputs, dtype=np.int64)
        return cls(np.zeros((len(DROP_FATES), n_inputs), dtype=np.int64), empty, empty, empty)

    @classmethod
    def of(
        cls, alignment: harmonize.Alignment, input_index: np.ndarray, n_inputs: int
    ) -> BinCounts:
        def per_input(rows: np.ndarray) -> np.ndarray:
            return np.bincount(input_index[rows], minlength=n_inputs)

        dropped = np.array([per_input(alignment.fate == fate) for fate in DROP_FATES])
        return cls(
            dropped.reshape(len(DROP_FATES), n_inputs),
            per_input(alignment.kept),
            per_input(alignment.swapped),
            per_input(alignment.strand_flipped),
        )

    def __add__(self, other: BinCounts) -> BinCounts:
        return BinCounts(
            self.dropped + other.dropped,
            self.used + other.used,
            self.swaps + other.swaps,
            self.flips + other.flips,
        )

    def add_to(self, tallies: list[InputTally]) -> None:
        for index, tally in enumerate(tallies):
            for fate, count in zip(DROP_FATES, self.dropped[:, index], strict=True):
                tally.add_drop(fate.reason, int(count))
            tally.rows_used += int(self.used[index])
            tally.allele_swaps += int(self.swaps[index])
            tally.strand_flips += int(self.flips[index])


@dataclass(frozen=True)
class BinResult:
    member: bytes  # the bin's rows as GWAS-SSF text in BGZF blocks (b"" if none)
    n_variants: int
    z_primary: np.ndarray  # per variant, for the meta-analysis λGC
    counts: BinCounts


@dataclass(frozen=True)
class BinJob:
    """Everything a worker needs to process any bin (small, so cheap to send to a process)."""

    scratch: Path
    n_inputs: int
    se_factors: tuple[float, ...]  # genomic control: each input's SE multiplier
    options: MetaOptions
    # Per input: its alleles are REF/ALT of the declared build (its palindromes are kept).
    reference_aligned: tuple[bool, ...] = ()

    def __call__(self, bin_id: int) -> BinResult:
        counts = BinCounts.zeros(self.n_inputs)
        text: list[bytes] = []
        z_parts, n_variants = [], 0
        for rows, input_index in _slices(_load_bin_rows(bin_id, self.n_inputs, self.scratch)):
            alignment, stats = self.combine_slice(rows, input_index)
            counts = counts + BinCounts.of(alignment, input_index, self.n_inputs)
            n_variants += alignment.n_groups
            z_parts.append(stats["z_primary"])
            text.append(format_rows(chromosome_of_bin(bin_id), alignment, stats, self.options))
        if n_variants == 0:
            return BinResult(b"", 0, np.zeros(0), counts)
        # BGZF blocks cut from the start of the bin: the bytes depend on the bin's text only.
        return BinResult(bgzf_blocks(b"".join(text)), n_variants, np.concatenate(z_parts), counts)

    def combine_slice(
        self, rows: pa.Table, input_index: np.ndarray
    ) -> tuple[harmonize.Alignment, dict[str, Any]]:
        se = numpy_of(rows.column("se")) * np.asarray(self.se_factors)[input_index]
        beta = numpy_of(rows.column("beta"))
        frequency = numpy_of(rows.column("frequency"))
        n = numpy_of(rows.column("n"))
        alignment = harmonize.align(
            input_index,
            numpy_of(rows.column("position")),
            rows.column("effect_allele"),
            rows.column("other_allele"),
            frequency,
            numpy_of(rows.column("alt_is_effect")),
            self.options.palindromic_maf_band,
            (np.asarray(self.reference_aligned, dtype=bool)[input_index])
            if self.reference_aligned
            else None,
        )
        kept = alignment.kept
        group, sign = alignment.group[kept], alignment.sign[kept]
        beta_k = beta[kept] * sign
        freq_k = np.where(sign > 0, frequency[kept], 1.0 - frequency[kept])
        stats = combine_rows(
            beta_k, se[kept], freq_k, n[kept], group, alignment.n_groups, self.options
        )
        stats["direction"] = direction_cells(
            beta_k, group, input_index[kept], alignment.n_groups, self.n_inputs
        )
        return alignment, stats


def combine_rows(
    beta: np.ndarray,
    se: np.ndarray,
    frequency: np.ndarray,
    n: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    options: MetaOptions,
) -> dict[str, Any]:
    """All per-variant statistics from aligned rows (pure; the columns of the output)."""
    fixed = meta_analysis.fixed_effects(beta, se, group, n_groups)
    het = meta_analysis.heterogeneity(beta, se, group, fixed)
    random = meta_analysis.dersimonian_laird(beta, se, group, fixed, het)
    has_n = np.isfinite(n)
    n_sum = meta_analysis.group_sum(np.where(has_n, n, 0.0), group, n_groups)
    n_known = np.bincount(group[has_n], minlength=n_groups) > 0
    primary = random if options.random_effects else fixed
    stats = {
        "beta": primary.beta,
        "standard_error": primary.se,
        "effect_allele_frequency": meta_analysis.weighted_frequency(frequency, n, group, n_groups),
        "log_p": primary.log_p,
        "z_primary": primary.z,
        "n": np.where(n_known, n_sum, np.nan),
        "n_studies": fixed.n_studies,
        "het_q": het.q,
        "het_df": het.df,
        "het_log_p": het.log_p,
        "i2": het.i2,
        "tau2": random.tau2,
        "beta_random": random.beta,
        "se_random": random.se,
        "random_log_p": random.log_p,
        "beta_fixed": fixed.beta,
        "se_fixed": fixed.se,
        "fixed_log_p": fixed.log_p,
    }
    if options.scheme is Scheme.SAMPLE_SIZE:
        weighted = meta_analysis.stouffer(beta / se, n, group, n_groups)
        stats["log_p"] = weighted.log_p
        stats["z_primary"] = weighted.z
        stats["stouffer_z"] = weighted.z
    return stats


def direction_cells(
    beta: np.ndarray, group: np.ndarray, input_index: np.ndarray, n_groups: int, n_inputs: int
) -> np.ndarray:
    """METAL-style direction per variant: one of + - 0 ? per input, in input order, as a
    (variant, input) array of ASCII codes (each row is the column's text)."""
    cells = np.full((n_groups, n_inputs), ord("?"), dtype=np.uint8)
    cells[group, input_index] = np.where(beta > 0, ord("+"), np.where(beta < 0, ord("-"), 48))
    return cells


def _load_bin_rows(bin_id: int, n_inputs: int, scratch: Path) -> tuple[pa.Table, np.ndarray] | None:
    """One position bin of every input, concatenated, with each row's input index."""
    pieces, owners = [], []
    for index in range(n_inputs):
        piece = load_bin(scratch, index, bin_id)
        if piece is not None and piece.num_rows:
            pieces.append(piece)
            owners.append(np.full(piece.num_rows, index, dtype=np.int32))
    if not pieces:
        return None
    return pa.concat_tables(pieces).combine_chunks(), np.concatenate(owners)


def _slices(
    loaded: tuple[pa.Table, np.ndarray] | None,
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """A bin in slices of about SLICE_ROWS rows, cut between positions (a position's rows
    stay together), so a dense bin does not raise peak memory."""
    if loaded is None:
        return
    rows, input_index = loaded
    if rows.num_rows <= SLICE_ROWS:
        yield rows, input_index
        return
    position = numpy_of(rows.column("position"))
    order = np.argsort(position, kind="stable")
    position = position[order]
    starts = [0]
    while starts[-1] + SLICE_ROWS < position.size:
        cut = int(np.searchsorted(position, position[starts[-1] + SLICE_ROWS], side="left"))
        if cut <= starts[-1]:  # one position with more rows than a slice: keep it whole
            cut = int(np.searchsorted(position, position[starts[-1]], side="right"))
        starts.append(cut)
    for start, stop in zip(starts, [*starts[1:], position.size], strict=True):
        take = arrow_of(order[start:stop])
        yield rows.take(take), input_index[order[start:stop]]
