"""chrX, chrY and MT in the node's analyses.

- chrY and MT are left out by default (`qc.excluded_chromosomes`); the count is audited.
- The pseudo-autosomal regions of chrX (`federation.genome`) are analysed as autosomal.
- Outside them males are hemizygous. In the regression a male's genotype is coded 0/2 (his
  one allele counted twice, the "full dosage compensation" model), which is plink2's default
  `--glm` chrX model (`--xchr-model 2`) and REGENIE's; the study's covariates should
  include sex, as plink2's model adds it. A male's call may come as haploid (`1`, counted
  twice) or as a homozygous diploid (`1/1`, as PLINK 1 stores it); a heterozygous male call
  there is an error of the data and is treated as missing. Males with unknown sex have no
  non-PAR chrX genotype.
- Allele frequencies count a male's allele once: AN = 2 x females + males, as
  `plink2 --freq` does.
- Hardy-Weinberg tests of non-PAR chrX variants use females only (males' homozygous calls
  would otherwise look like a gross HWE violation).

Sex comes from the phenotype table's `sex` column (0 = female, 1 = male), which the QC sex
check has already compared with the genotypes (`hl.impute_sex`).
"""

from __future__ import annotations

import hail as hl

from federation.analyses.dosages import alt_dosage, has_dosages
from federation.genome import PSEUDOAUTOSOMAL_REGIONS, bare_chromosome

X_CONTIGS = ("X", "chrX")


def in_x_nonpar(locus: hl.LocusExpression) -> hl.BooleanExpression:
    """chrX outside the build's PARs (the intervals of federation.genome, both ends in)."""
    regions = PSEUDOAUTOSOMAL_REGIONS[locus.dtype.reference_genome.name]
    in_par = hl.bool(False)
    for start, end in regions:
        in_par = in_par | ((locus.position >= start) & (locus.position <= end))
    return hl.literal(set(X_CONTIGS)).contains(locus.contig) & ~in_par


def reported_male(mt: hl.MatrixTable) -> hl.BooleanExpression:
    """Sex from the phenotype table: True for males, missing when unknown."""
    if "pheno" not in mt.col or "sex" not in mt.pheno:
        return hl.missing(hl.tbool)
    return hl.float64(mt.pheno.sex) == 1.0


def _hemizygous(mt: hl.MatrixTable) -> hl.BooleanExpression:
    """Missing where chrX non-PAR meets unknown sex: no genotype can be coded there."""
    return hl.if_else(in_x_nonpar(mt.locus), reported_male(mt), False)


def coded_dosage(mt: hl.MatrixTable) -> hl.NumericExpression:
    """The regression's genotype: ALT dosage, males 0/2 on non-PAR chrX (see the module)."""
    x = alt_dosage(mt)
    haploid = mt.GT.ploidy == 1
    male = hl.case().when(haploid, 2 * x).when(mt.GT.is_het(), hl.missing(x.dtype)).default(x)
    if has_dosages(mt):  # a hard call may be missing where the dosage is not
        male = hl.if_else(hl.is_defined(mt.GT), male, x)
    return hl.if_else(_hemizygous(mt), male, x)


def allele_counts(mt: hl.MatrixTable) -> hl.StructExpression:
    """An entry's ALT count and allele number: a hemizygous male has one allele."""
    x = coded_dosage(mt)
    hemizygous = _hemizygous(mt)
    half = x // 2 if x.dtype == hl.tint32 else x / 2
    return hl.or_missing(
        hl.is_defined(x) & hl.is_defined(hemizygous),
        hl.struct(
            alt=hl.if_else(hemizygous, half, x),
            alleles=hl.if_else(hemizygous, 1, 2),
        ),
    )


def hwe_p_value(mt: hl.MatrixTable, all_samples_p: hl.Float64Expression) -> hl.Float64Expression:
    """HWE p-value per variant: females only on non-PAR chrX (a row aggregation)."""
    if "pheno" not in mt.col or "sex" not in mt.pheno:
        return all_samples_p
    female = hl.float64(mt.pheno.sex) == 0.0
    females_p = hl.agg.filter(female, hl.agg.hardy_weinberg_test(mt.GT)).p_value
    return hl.if_else(in_x_nonpar(mt.locus), females_p, all_samples_p)


def exclude_chromosomes(
    mt: hl.MatrixTable, excluded: tuple[str, ...]
) -> tuple[hl.MatrixTable, int]:
    """Drop variants on the excluded chromosomes (bare names: Y, MT); return how many."""
    if not excluded:
        return mt, 0
    contigs = mt.locus.dtype.reference_genome.contigs
    dropped = hl.literal({contig for contig in contigs if bare_chromosome(contig) in excluded})
    count = mt.aggregate_rows(hl.agg.count_where(dropped.contains(mt.locus.contig)))
    return mt.filter_rows(~dropped.contains(mt.locus.contig)), int(count)
