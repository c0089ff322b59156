"""Allele counts and frequencies of the QC'd cohort, one row per biallelic variant.

Counts are of ALT dosages: hard calls give whole counts, imputed inputs the sum of dosages
(AF = Σ dosage / 2N, as plink2 --freq computes from dosages). A male's non-PAR chrX allele
counts once (AN = 2 x females + males; `sex_chromosomes.allele_counts`).
"""

from __future__ import annotations

import hail as hl

from federation.analyses.export import variant_fields
from federation.analyses.sex_chromosomes import allele_counts


def allele_frequencies(mt: hl.MatrixTable) -> hl.Table:
    """AC/AN/AF of the alternate allele, homozygote counts and the number of called samples.

    AN counts called alleles only (2 per called diploid genotype, 1 per hemizygous male), as
    plink2 --freq does.
    """
    mt = mt.annotate_entries(counted=allele_counts(mt))  # `alleles` is the row key
    counts = mt.annotate_rows(
        counts=hl.struct(
            allele_count=hl.agg.sum(mt.counted.alt),
            allele_number=hl.agg.sum(mt.counted.alleles),
            homozygote_count=hl.agg.count_where(mt.GT.is_hom_var()),
            homozygote_ref_count=hl.agg.count_where(mt.GT.is_hom_ref()),
            n_samples=hl.agg.count_where(hl.is_defined(mt.counted)),
        )
    ).rows()
    counts = counts.select(**variant_fields(counts), **counts.counts)
    return counts.annotate(
        allele_frequency=hl.or_missing(
            counts.allele_number > 0, counts.allele_count / counts.allele_number
        )
    )
