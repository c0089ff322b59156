"""Loci and calibration of a genome scan: distance-based clumping and λGC per MAF bin.

Pure functions over arrays (no I/O, no pandas), used by the study report (`federation.report`)
and anything else that needs the lead variants of a meta-analysis.

Clumping rule (distance only: no LD reference ever leaves a node, so LD-based clumping as in
PLINK's `--clump` cannot be done at the coordinator):

    Variants with p < `threshold` (default 5e-8, genome-wide significance) are taken in order
    of increasing p (ties: genome order). Each one becomes the lead of a new locus unless it lies
    within `window` bp (default 250 kb, inclusive) of a lead already chosen on the same
    chromosome; it then joins the locus of the nearest such lead.

So two significant variants 200 kb apart form one locus (the stronger leads it), and two 300 kb
apart form two. This is the distance clumping of the GWAS Catalog's curation and of FUMA's
"maximum distance between LD blocks to merge into a locus"; the lead is the smallest p.

λGC: Devlin & Roeder (1999) Biometrics 55:997, median(z²) / median(χ²₁), computed by
`meta_analysis.genomic_control_lambda`; per MAF bin it is the same on the variants of each bin
(minor allele frequency = min(f, 1 - f) of the effect-allele frequency).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from federation.stats.meta_analysis import genomic_control_lambda

GENOME_WIDE_SIGNIFICANCE = 5e-8  # Bonferroni for ~1e6 independent common-variant tests
CLUMP_WINDOW_BP = 250_000  # the default: merge significant variants within 250 kb
# MAF bins of the λGC table and the QQ plot: rare (< 1%), low-frequency (1-5%), then common
# variants split where GWAS QC usually splits them (5-20%, 20-50%).
MAF_BIN_EDGES: tuple[float, ...] = (0.0, 0.01, 0.05, 0.2, 0.5)


@dataclass(frozen=True)
class Clumps:
    """`leads`: row indices of the lead variants, strongest first; `locus`: per row, the index
    into `leads` of the locus the row belongs to, or -1 for rows that are not significant."""

    leads: np.ndarray
    locus: np.ndarray


@dataclass(frozen=True)
class MafBinLambda:
    low: float  # MAF >= low
    high: float  # MAF < high (the last bin includes 0.5)
    n_variants: int
    lambda_gc: float  # NaN for an empty bin

    @property
    def label(self) -> str:
        return f"MAF {self.low:g}-{self.high:g}"


def clump_by_distance(
    chromosome: np.ndarray,
    position: np.ndarray,
    neg_log10_p: np.ndarray,
    *,
    threshold: float = GENOME_WIDE_SIGNIFICANCE,
    window: int = CLUMP_WINDOW_BP,
) -> Clumps:
    """Distance-based clumping of the rows with p < `threshold` (rule: module docstring).

    p is given as -log10 p, so that p below 1e-300 keeps its rank. O(s log s) in the number of
    significant rows s; the rest are never looked at one by one.
    """
    chromosome = np.asarray(chromosome)
    position = np.asarray(position, dtype=np.int64)
    strength = np.asarray(neg_log10_p, dtype=float)
    locus = np.full(strength.shape[0], -1, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        significant = np.flatnonzero(strength > -np.log10(threshold))
    # Strongest first; ties in genome order (lexsort: last key is primary).
    order = significant[
        np.lexsort((position[significant], chromosome[significant], -strength[significant]))
    ]
    leads: list[int] = []
    lead_positions: dict[object, list[int]] = {}  # per chromosome, sorted lead positions
    lead_at: dict[tuple[object, int], int] = {}  # (chromosome, position) -> locus index
    for row in order.tolist():
        chrom, pos = chromosome[row].item(), int(position[row])
        placed = lead_positions.setdefault(chrom, [])
        nearest = _nearest(placed, pos)
        if nearest is not None and abs(nearest - pos) <= window:
            locus[row] = lead_at[chrom, nearest]
            continue
        if (chrom, pos) in lead_at:  # another allele pair at a lead's very position
            locus[row] = lead_at[chrom, pos]
            continue
        lead_at[chrom, pos] = len(leads)
        locus[row] = len(leads)
        leads.append(row)
        bisect.insort(placed, pos)
    return Clumps(np.array(leads, dtype=np.int64), locus)


def _nearest(sorted_positions: list[int], position: int) -> int | None:
    """The member of `sorted_positions` closest to `position` (None if there is none)."""
    if not sorted_positions:
        return None
    at = bisect.bisect_left(sorted_positions, position)
    candidates = sorted_positions[max(0, at - 1) : at + 1]
    return min(candidates, key=lambda placed: abs(placed - position))


def minor_allele_frequency(frequency: np.ndarray) -> np.ndarray:
    """min(f, 1 - f); NaN stays NaN."""
    frequency = np.asarray(frequency, dtype=float)
    return np.minimum(frequency, 1.0 - frequency)


def lambda_by_maf(
    z: np.ndarray, frequency: np.ndarray, edges: tuple[float, ...] = MAF_BIN_EDGES
) -> list[MafBinLambda]:
    """λGC of the variants in each MAF bin [edges[i], edges[i+1]) (the last bin closed).

    `frequency` is the effect-allele frequency; rows without one are in no bin (they still
    count in the overall λGC).
    """
    maf = minor_allele_frequency(frequency)
    z = np.asarray(z, dtype=float)
    bins = maf_bin_index(maf, edges)
    out = []
    for index in range(len(edges) - 1):
        in_bin = z[bins == index]
        out.append(
            MafBinLambda(
                edges[index],
                edges[index + 1],
                int(np.isfinite(in_bin).sum()),
                genomic_control_lambda(in_bin),
            )
        )
    return out


def maf_bin_index(maf: np.ndarray, edges: tuple[float, ...] = MAF_BIN_EDGES) -> np.ndarray:
    """Per row, the index of its MAF bin, or -1 (no frequency, or outside the edges)."""
    maf = np.asarray(maf, dtype=float)
    index = np.searchsorted(np.asarray(edges), maf, side="right") - 1
    last = len(edges) - 2
    index = np.where(maf == edges[-1], last, index)  # MAF 0.5 belongs to the last bin
    with np.errstate(invalid="ignore"):
        outside = ~np.isfinite(maf) | (maf < edges[0]) | (maf > edges[-1])
    return np.where(outside, -1, index)
