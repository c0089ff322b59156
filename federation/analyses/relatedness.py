"""Relatedness on a node's QC'd cohort: KING-robust kinship, then a maximal independent set.

Related samples (duplicates, first- and second-degree relatives) are not independent
observations: left in, they inflate association statistics and double-count alleles. The
node estimates pairwise kinship with KING-robust (Manichaikul et al. 2010, Bioinformatics
26:2867; Hail's `hl.king`) on common autosomal variants of the samples that passed sample
QC, links every pair above the threshold, and removes the fewest samples that leave no
linked pair (Hail's `maximal_independent_set`). Population structure is not handled here:
the GWAS adjusts for it with node-computed principal components.
"""

from __future__ import annotations

from dataclasses import dataclass

import hail as hl

METHOD = "king_robust"
# KING-robust is estimated on common, well-called autosomal variants (its het/hom balance is
# noisy on rare ones); at most MAX_VARIANTS of them, thinned by hash of the locus like the PCs.
MIN_MAF = 0.05
MIN_CALL_RATE = 0.95
MAX_VARIANTS = 100_000


@dataclass(frozen=True)
class RelatednessResult:
    method: str
    kinship_max: float | None  # None: not estimated (disabled by the study)
    related_pairs: int
    samples_removed: int


def kinship_variants(mt: hl.MatrixTable) -> hl.MatrixTable:
    """Common, well-called autosomal biallelic variants of `mt` for the kinship estimate."""
    autosomal = hl.variant_qc(mt.filter_rows(mt.locus.in_autosome()))
    stats = autosomal.variant_qc
    autosomal = autosomal.filter_rows(
        (stats.call_rate >= MIN_CALL_RATE) & (hl.min(stats.AF) >= MIN_MAF)
    ).drop("variant_qc")
    n_variants = autosomal.count_rows()
    if n_variants > MAX_VARIANTS:
        per_million = int(MAX_VARIANTS / n_variants * 1_000_000)
        autosomal = autosomal.filter_rows(hl.hash(autosomal.locus) % 1_000_000 < per_million)
    return autosomal


def related_pairs(mt: hl.MatrixTable, kinship_max: float) -> hl.Table:
    """Pairs (i, j) of distinct samples whose KING-robust kinship exceeds `kinship_max`."""
    kinship = hl.king(kinship_variants(mt).GT)
    pairs = kinship.filter_entries(
        (kinship.s_1 < kinship.s) & (kinship.phi > kinship_max)
    ).entries()
    pairs = pairs.key_by()
    return pairs.select(i=pairs.s_1, j=pairs.s)


def remove_related(
    mt: hl.MatrixTable, kinship_max: float
) -> tuple[hl.MatrixTable, RelatednessResult]:
    """`mt` without one sample of each related pair: the complement of a maximal independent
    set of the relatedness graph (no two kept samples related above `kinship_max`)."""
    pairs = related_pairs(mt, kinship_max).checkpoint(hl.utils.new_temp_file("related", "ht"))
    n_pairs = pairs.count()
    removed = 0
    if n_pairs:
        drop = hl.maximal_independent_set(pairs.i, pairs.j, keep=False)
        drop = drop.key_by(s=drop.node)
        removed = drop.count()
        mt = mt.filter_cols(hl.is_missing(drop[mt.s]))
    return mt, RelatednessResult(METHOD, kinship_max, n_pairs, removed)


def not_estimated() -> RelatednessResult:
    return RelatednessResult("none", None, 0, 0)
