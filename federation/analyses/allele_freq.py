"""Allele counts and frequencies of the QC'd cohort, one row per biallelic variant."""

from __future__ import annotations

import hail as hl

from federation.analyses.export import variant_fields


def allele_frequencies(mt: hl.MatrixTable) -> hl.Table:
    """AC/AN/AF of the alternate allele, homozygote counts and the number of called samples.

    AN counts called alleles only (2 per called diploid genotype), as plink2 --freq does.
    """
    counts = mt.annotate_rows(
        counts=hl.struct(
            allele_count=hl.agg.sum(mt.GT.n_alt_alleles()),
            allele_number=2 * hl.agg.count_where(hl.is_defined(mt.GT)),
            homozygote_count=hl.agg.count_where(mt.GT.is_hom_var()),
            homozygote_ref_count=hl.agg.count_where(mt.GT.is_hom_ref()),
            n_samples=hl.agg.count_where(hl.is_defined(mt.GT)),
        )
    ).rows()
    counts = counts.select(**variant_fields(counts), **counts.counts)
    return counts.annotate(
        allele_frequency=hl.or_missing(
            counts.allele_number > 0, counts.allele_count / counts.allele_number
        )
    )
