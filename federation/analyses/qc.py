"""Sample and variant quality control on a node's cohort.

Order matters: samples are matched to phenotypes and filtered first (call rate, the sex
check, then one of each related pair: `analyses.relatedness`), and variant statistics are
computed on the samples that remain. Variants are annotated rather than dropped one rule at a
time, so each is counted under the first rule it fails and the counts add up.

The genotypes are materialised once. The QC'd cohort is a directory (`qc.mt`, the QC rule's
output) of three parts: the imported genotypes in Hail's native format (`genotypes.mt`, the
import's one checkpoint, written before any QC pass), the samples QC kept with their
phenotypes (`samples.ht`) and each QC'd variant's first failed rule (`variants.ht`: missing
where it passed; `low_maf` variants stay for allele frequencies). `read_qc_cohort` joins them
back into the QC'd MatrixTable the analyses read, so the genotypes are never written a second
time: the samples and variants tables are small (one row per sample or variant).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import hail as hl
import pandas as pd

from federation.analyses.relatedness import not_estimated, remove_related
from federation.analyses.sex_chromosomes import exclude_chromosomes, hwe_p_value
from federation.errors import SpecError
from federation.spec import QcThresholds

# chrX variants needed before the inbreeding-based sex check means anything.
MIN_CHRX_VARIANTS_FOR_SEX_CHECK = 100
# Hail's impute_sex thresholds on the chrX inbreeding coefficient F (its documented defaults).
FEMALE_F_MAX = 0.2
MALE_F_MIN = 0.8
# The parts of the QC'd cohort directory (see the module docstring).
GENOTYPES_PART = "genotypes.mt"
SAMPLES_PART = "samples.ht"
VARIANTS_PART = "variants.ht"
# The QC rule a variant may fail and still enter allele frequencies (not association).
AF_ONLY_FAILURE = "low_maf"


@dataclass(frozen=True)
class QcCounts:
    samples_genotyped: int
    samples_with_phenotypes: int
    phenotype_rows_without_genotypes: int
    samples_low_call_rate: int
    samples_sex_mismatch: int
    samples_related: int
    samples_passed: int
    sex_check: str
    relatedness_method: str
    kinship_max: float | None
    variants_input: int
    variants_low_call_rate: int
    variants_monomorphic: int
    variants_hwe: int
    variants_low_maf: int
    variants_passed_af: int
    variants_passed_gwas: int
    mean_sample_call_rate: float
    mean_variant_call_rate: float
    # Variants on chromosomes the study leaves out (chrY, MT by default), before any rule.
    variants_excluded_chromosomes: int = 0
    # Imputed inputs: the study's INFO floor and the variants below it (the first rule);
    # None and 0 for hard calls, which carry no imputation quality.
    info_min: float | None = None
    variants_low_info: int = 0
    # The kinship step: "done", "disabled by study" or "skipped: <why>" (too few variants for
    # the cohort's size: `relatedness.min_kinship_variants`), with the variants it had and needed.
    relatedness: str = "done"
    kinship_variants: int | None = None
    min_kinship_variants: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def attach_phenotypes(
    mt: hl.MatrixTable, phenotypes: pd.DataFrame
) -> tuple[hl.MatrixTable, int, int]:
    """Keep samples that have phenotypes; refuse a cohort whose IDs do not match at all."""
    genotyped = mt.s.collect()
    genotyped_set = set(genotyped)
    matched = genotyped_set.intersection(phenotypes.index)
    if not matched:
        raise SpecError(
            f"genotype/phenotype sample IDs do not match: none of {len(genotyped)} genotyped samples "
            f"(e.g. '{genotyped[0]}') is in the phenotype table (e.g. '{phenotypes.index[0]}'); "
            "use the same sample_id in both"
        )
    table = hl.Table.from_pandas(phenotypes.reset_index(), key="sample_id")
    mt = mt.annotate_cols(pheno=table[mt.s])
    mt = mt.filter_cols(hl.is_defined(mt.pheno))
    return mt, len(matched), len(set(phenotypes.index) - genotyped_set)


def _sex_check(mt: hl.MatrixTable, thresholds: QcThresholds) -> tuple[hl.MatrixTable, int, str]:
    if not thresholds.sex_check:
        return mt, 0, "disabled by study"
    if "sex" not in mt.pheno:
        return mt, 0, "skipped: no 'sex' phenotype column"
    chrx = mt.filter_rows(mt.locus.in_x_nonpar())
    if chrx.count_rows() < MIN_CHRX_VARIANTS_FOR_SEX_CHECK:
        return mt, 0, f"skipped: fewer than {MIN_CHRX_VARIANTS_FOR_SEX_CHECK} chrX variants"
    imputed = hl.impute_sex(chrx.GT, female_threshold=FEMALE_F_MAX, male_threshold=MALE_F_MIN)
    # sex is coded 0 = female, 1 = male; samples whose F is between thresholds are not judged.
    reported_female = mt.pheno.sex == 0
    inferred = imputed[mt.s].is_female
    mismatch = hl.is_defined(inferred) & hl.is_defined(mt.pheno.sex) & (inferred != reported_female)
    mt = mt.annotate_cols(sex_mismatch=mismatch)
    mismatches = mt.aggregate_cols(hl.agg.count_where(mt.sex_mismatch))
    return mt.filter_cols(~mt.sex_mismatch).drop("sex_mismatch"), mismatches, "done"


def _part(store: Path | None, name: str) -> str:
    """Where a part of the QC'd cohort is written: in `store`, else a Hail temporary file."""
    if store is None:
        stem, _, extension = name.partition(".")
        return hl.utils.new_temp_file(f"qc-{stem}", extension)
    return str(store / name)


def _kept_samples(genotypes: hl.MatrixTable, samples: hl.Table) -> hl.MatrixTable:
    """`genotypes` restricted to the samples QC kept, with their phenotypes (`pheno`)."""
    mt = genotypes.filter_cols(hl.is_defined(samples[genotypes.s]))
    return mt.annotate_cols(pheno=samples[mt.s].pheno)


def qc_cohort(genotypes: hl.MatrixTable, samples: hl.Table, variants: hl.Table) -> hl.MatrixTable:
    """The QC'd MatrixTable: `genotypes` restricted to the kept samples (with their `pheno`)
    and to the variants that pass QC for allele frequencies, rows annotated `pass_gwas`."""
    mt = _kept_samples(genotypes, samples)
    mt = mt.annotate_rows(qc=variants[mt.row_key].select("qc_failure"))
    failure = mt.qc.qc_failure
    mt = mt.filter_rows(
        hl.is_defined(mt.qc) & (hl.is_missing(failure) | (failure == AF_ONLY_FAILURE))
    )
    return mt.annotate_rows(pass_gwas=hl.is_missing(mt.qc.qc_failure)).drop("qc")


def imported_genotypes(store: Path) -> hl.MatrixTable:
    """All the imported genotypes of a QC'd cohort directory, in the import's row order."""
    return hl.read_matrix_table(str(store / GENOTYPES_PART))


def read_qc_cohort(store: Path) -> hl.MatrixTable:
    """The QC'd MatrixTable of a QC'd cohort directory written by `run_qc(..., store=...)`."""
    return qc_cohort(
        imported_genotypes(store),
        hl.read_table(str(store / SAMPLES_PART)),
        hl.read_table(str(store / VARIANTS_PART)),
    )


def run_qc(
    mt: hl.MatrixTable,
    phenotypes: pd.DataFrame,
    thresholds: QcThresholds,
    node_kinship_max: float,
    store: Path | None = None,
) -> tuple[hl.MatrixTable, QcCounts]:
    """Return the QC'd MatrixTable (rows annotated `pass_gwas`) and the counts of what was removed.

    The imported genotypes are written once (Hail's native format) before any QC pass, into
    `store` as the QC'd cohort's `genotypes.mt` (else a Hail temporary file): without that,
    every count and aggregate below re-reads the VCF/PLINK input. Per-sample call rates are
    computed in one pass into a small table; the kept samples and the variants' QC outcomes
    are written as small tables, so the genotypes are not written again.
    """
    genotypes = mt.checkpoint(_part(store, GENOTYPES_PART))
    samples_genotyped = genotypes.count_cols()
    variants_input = genotypes.count_rows()
    mt, matched, orphan_rows = attach_phenotypes(genotypes, phenotypes)

    call_rates = mt.annotate_cols(call_rate=hl.agg.fraction(hl.is_defined(mt.GT))).cols()
    call_rates = call_rates.select("call_rate").checkpoint(
        hl.utils.new_temp_file("qc-samples", "ht")
    )
    mt = mt.annotate_cols(call_rate=call_rates[mt.s].call_rate)
    sample_summary = call_rates.aggregate(
        hl.struct(
            mean=hl.agg.mean(call_rates.call_rate),
            low=hl.agg.count_where(call_rates.call_rate < thresholds.sample_call_rate_min),
        )
    )
    mean_sample_call_rate, low_call = sample_summary.mean, sample_summary.low
    mt = mt.filter_cols(mt.call_rate >= thresholds.sample_call_rate_min).drop("call_rate")
    mt, sex_mismatches, sex_status = _sex_check(mt, thresholds)
    if thresholds.relatedness:
        kinship_max = min(node_kinship_max, thresholds.kinship_max or node_kinship_max)
        mt, related = remove_related(mt, kinship_max)
    else:
        related = not_estimated()
    # The kept samples, once: the sex check and kinship are not recomputed by later passes.
    samples = mt.cols().select("pheno").checkpoint(_part(store, SAMPLES_PART))
    samples_passed = samples.count()
    if samples_passed == 0:
        raise SpecError(
            f"sample QC removed all {matched} samples (call rate < {thresholds.sample_call_rate_min}); "
            "check the genotypes or lower qc.sample_call_rate_min"
        )
    mt, excluded_variants = exclude_chromosomes(
        _kept_samples(genotypes, samples), thresholds.excluded_chromosomes
    )
    imputed = "imputation_quality" in mt.row
    mt = hl.variant_qc(mt)
    mt = mt.annotate_rows(hwe_p=hwe_p_value(mt, mt.variant_qc.p_value_hwe))
    qc = mt.variant_qc
    maf = hl.min(qc.AF[0], qc.AF[1])
    fails = hl.case()
    if imputed:  # a variant with no quality (monomorphic) is left to the later rules
        low_info = hl.coalesce(mt.imputation_quality < thresholds.info_min, False)
        fails = fails.when(low_info, "low_info")
    fails = fails.when(qc.call_rate < thresholds.variant_call_rate_min, "low_call_rate")
    fails = fails.when((qc.AC[1] == 0) | (qc.AC[0] == 0), "monomorphic")
    fails = fails.when(mt.hwe_p < thresholds.hwe_p_min, "hwe")
    fails = fails.when(maf < thresholds.maf_min, AF_ONLY_FAILURE)
    # One pass over the genotypes computes every variant's statistics into a small table.
    variants = mt.annotate_rows(qc_failure=fails.or_missing(), call_rate=qc.call_rate).rows()
    variants = variants.select("qc_failure", "call_rate").checkpoint(_part(store, VARIANTS_PART))
    summary = variants.aggregate(
        hl.struct(
            failures=hl.agg.counter(variants.qc_failure),
            mean_call_rate=hl.agg.mean(variants.call_rate),
        )
    )
    failures = {key: value for key, value in summary.failures.items() if key is not None}
    low_maf = failures.get(AF_ONLY_FAILURE, 0)
    passed_af = variants_input - excluded_variants - sum(failures.values()) + low_maf
    counts = QcCounts(
        samples_genotyped=samples_genotyped,
        samples_with_phenotypes=matched,
        phenotype_rows_without_genotypes=orphan_rows,
        samples_low_call_rate=low_call,
        samples_sex_mismatch=sex_mismatches,
        samples_related=related.samples_removed,
        samples_passed=samples_passed,
        sex_check=sex_status,
        relatedness_method=related.method,
        kinship_max=related.kinship_max,
        variants_input=variants_input,
        variants_low_call_rate=failures.get("low_call_rate", 0),
        variants_monomorphic=failures.get("monomorphic", 0),
        variants_hwe=failures.get("hwe", 0),
        variants_low_maf=low_maf,
        variants_passed_af=passed_af,
        variants_passed_gwas=passed_af - low_maf,
        mean_sample_call_rate=float(mean_sample_call_rate),
        mean_variant_call_rate=float(summary.mean_call_rate),
        variants_excluded_chromosomes=excluded_variants,
        info_min=thresholds.info_min if imputed else None,
        variants_low_info=failures.get("low_info", 0),
        relatedness=related.status,
        kinship_variants=related.kinship_variants,
        min_kinship_variants=related.min_kinship_variants,
    )
    return qc_cohort(genotypes, samples, variants), counts
