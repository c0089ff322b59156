"""Turn a node's private aggregate tables into released files, through the disclosure gate.

This step runs without Hail. It reads what the Hail steps left in the node's work
directory, applies every disclosure rule, consults the node's privacy ledger (cell guard,
per-person phenotype budget, identical repeats) and writes GWAS-SSF summary statistics, the
allele-frequency table and QC metrics into the release folder. If any release-level rule
fails, or anything goes wrong while checking, nothing of that release is written and the
node audit log says why.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation import sumstats
from federation.audit import append_event
from federation.files import atomic_write_json
from federation.jsonio import parse_json_strictly
from federation.release.gate import (
    ReleaseWithheld,
    node_policy,
    opened_gate,
    withhold_unanalysed,
)
from federation.release.rsids import rsids
from federation.release.rules import (
    DisclosurePolicy,
    DisclosureReport,
    RuleOutcome,
    Verdict,
    allowed_columns,
    cohort_listed,
    guarded_rows,
    max_parameters,
    min_allele_number,
    min_carriers,
    min_cohort,
    min_minor_allele_count,
    min_residual_df,
    min_usable_samples,
    private_columns,
    round_count,
)
from federation.settings import NodeSettings
from federation.spec import GwasAnalysis, LogisticTest, Model, StudySpec, TraitType
from federation.stats.tails import log_chi2_sf, log_normal_two_sided, log_t_two_sided, neg_log10
from federation.versions import software_versions

__all__ = [
    "RELEASED_AF_COLUMNS",
    "RELEASED_GWAS_COLUMNS",
    "ReleaseWithheld",
    "neg_log10_p",
    "node_policy",
    "release_allele_frequencies",
    "release_gwas",
    "release_qc_metrics",
]
RELEASED_GWAS_COLUMNS = (
    *sumstats.MANDATORY_COLUMNS,
    *sumstats.STANDARD_EXTRAS,
    sumstats.NEG_LOG10_P,
)
# Binary traits add the analysis's case and control counts (already in the sidecar).
RELEASED_BINARY_GWAS_COLUMNS = (*RELEASED_GWAS_COLUMNS, *sumstats.CASE_CONTROL_COLUMNS)
RELEASED_AF_COLUMNS = (*sumstats.ALLELE_FREQUENCY_COLUMNS, "homozygote_count", "node_id")
# What the Hail steps write (analyses/gwas.py, allele_freq.py). Anything else in a private
# table means the step is not the approved one, and the release stops.
VARIANT_COLUMNS = frozenset({"chromosome", "base_pair_location", "ref", "alt"})
GWAS_PRIVATE_COLUMNS = VARIANT_COLUMNS | {
    "gate.n_called",
    "gate.alt_allele_count",
    "gate.allele_number",  # not 2 x n_called: hemizygous males carry one allele on chrX
    "beta",
    "standard_error",
    "statistic",
    "p_value",
    "n",
    "converged",
}
CARRIER_COLUMNS = frozenset(
    {
        "gate.alt_carriers_cases",
        "gate.ref_carriers_cases",
        "gate.alt_carriers_controls",
        "gate.ref_carriers_controls",
    }
)
AF_PRIVATE_COLUMNS = VARIANT_COLUMNS | {
    "allele_count",
    "allele_number",
    "homozygote_count",
    "homozygote_ref_count",
    "n_samples",
    "allele_frequency",
}
# Released QC counts: cohort sizes are exact like every released N (docs/privacy-model.md);
# the counts of samples that failed a check or lacked data - small groups no statistic is
# computed on - are rounded to qc_count_rounding. No variant count per reason: a variant the
# gate suppressed must not be told apart from one QC removed, not even in number.
ROUNDED_QC_COUNTS = (
    "samples_genotyped",
    "samples_with_phenotypes",
    "phenotype_rows_without_genotypes",
    "samples_low_call_rate",
    "samples_sex_mismatch",
    "samples_related",
)
RELEASED_QC_FIELDS = (
    *ROUNDED_QC_COUNTS,
    "samples_passed",  # the QC cohort's exact size, as its allele-frequency N
    "sex_check",
    "relatedness",  # "done", "disabled by study" or "skipped: <why>"
    "relatedness_method",
    "kinship_max",
    "kinship_variants",
    "min_kinship_variants",
    "variants_input",
    "variants_excluded_chromosomes",
    "info_min",  # imputed inputs: the imputation-quality floor applied
    "variants_low_info",
    "mean_sample_call_rate",
    "mean_variant_call_rate",
)


def _read_private(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path,
        sep="\t",
        compression="gzip" if path.name.endswith((".bgz", ".gz")) else None,  # Hail: block gzip
        na_values=["NA"],
        keep_default_na=False,
        dtype={"chromosome": str, "ref": str, "alt": str},
    )


def _chromosome_order(chromosome: pd.Series) -> pd.Series:
    return chromosome.map(sumstats.CHROMOSOME_CODES).fillna(26)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(
        ["chromosome", "base_pair_location"],
        key=lambda c: _chromosome_order(c) if c.name == "chromosome" else c,
        kind="stable",
    )


def neg_log10_p(
    statistic: np.ndarray, analysis: GwasAnalysis, residual_df: np.ndarray
) -> np.ndarray:
    """-log10 of the two-sided p in log space, so p far below 1e-300 keeps its value.

    Linear: Student t with the model's residual df (as Hail and plink2 use); logistic Wald:
    standard normal; Firth: chi-square with 1 df (Hail's penalised likelihood-ratio test).
    """
    if analysis.model is Model.LINEAR:
        log_p = log_t_two_sided(statistic, residual_df)
    elif analysis.test is LogisticTest.WALD:
        log_p = log_normal_two_sided(statistic)
    else:
        log_p = log_chi2_sf(statistic, 1)
    return neg_log10(log_p)


def alleles_are_reference(node: NodeSettings) -> bool:
    """Whether the released other/effect alleles are REF/ALT of the declared build: a VCF's
    are by its specification, and a REF check against `reference_fasta` confirms any input's.
    PLINK's A1/A2 and a MatrixTable's alleles carry no such promise."""
    return node.genotype_format == "vcf" or node.reference_fasta is not None


def _base_metadata(
    node: NodeSettings,
    study: StudySpec,
    analysis_id: str,
    policy: DisclosurePolicy,
    catalog: dict[str, Any],
) -> dict[str, Any]:
    """The sidecar: the GWAS Catalog fields (`catalog`, see `sumstats.gwas_catalog_fields`),
    then the project's own."""
    versions = software_versions()
    return {
        **sumstats.gwas_catalog_fields(
            genome_assembly=study.reference_genome,
            analysis_software=f"federation {versions.get('federation', '?')} (Hail)",
            **catalog,
        ),
        "date_metadata_last_modified": datetime.now(UTC).date().isoformat(),
        "study_id": study.study_id,
        "node_id": node.node_id,
        "analysis": analysis_id,
        sumstats.REFERENCE_ALIGNED: alleles_are_reference(node),
        "software_versions": versions,
        "disclosure_policy": policy.as_dict(),
    }


def _gwas_request(analysis: GwasAnalysis) -> dict[str, Any]:
    """What the release asks for: with the cohort, the key of an identical repeat."""
    return {
        "kind": "gwas",
        "id": analysis.id,
        "trait": analysis.trait,
        "trait_type": analysis.trait_type.value,
        "model": analysis.model.value,
        "test": analysis.test.value,
        "covariates": list(analysis.covariates),
        "principal_components": analysis.principal_components,
        "missing_covariates": analysis.missing_covariates.value,
        "missing_genotypes": analysis.missing_genotypes.value,
    }


# What the GWAS step counted about missing phenotypes (analyses/gwas.py `Exclusions`): exact in
# the node's audit log, rounded like the other counts of excluded samples in the sidecar.
EXCLUSION_COUNTS = ("samples_missing_trait", "samples_missing_covariates", "samples_dropped")
IMPUTED_COUNT = "samples_covariates_imputed"
NO_CALL_PROFILE_SUFFIX = ".nocalls.json"  # beside the cohort file (analyses/steps.py)


def _exclusions(
    design: dict[str, Any], node: NodeSettings, study: StudySpec, analysis: GwasAnalysis, log: Path
) -> dict[str, int]:
    """Audit the exact numbers of samples dropped for missing phenotypes (or imputed), and
    return them (the sidecar gets them rounded to `qc_count_rounding`)."""
    exact = {key: int(design.get(key, 0)) for key in (*EXCLUSION_COUNTS, IMPUTED_COUNT)}
    append_event(
        log,
        "analysis_samples",
        node_id=node.node_id,
        study_id=study.study_id,
        analysis=analysis.id,
        samples_analysed=int(design["n_samples"]),
        **exact,
    )
    return exact


def _refuse_without_samples(
    node: NodeSettings,
    study: StudySpec,
    analysis: GwasAnalysis,
    design_path: Path,
    out_path: Path,
    audit_log: Path,
) -> None:
    """Withhold (no_usable_data) an analysis whose design says no sample was analysed; its
    cohort file is empty, so it never reaches the ledger. A design that cannot be read is
    left to the gate, which reads it again and fails closed."""
    try:
        design = parse_json_strictly(design_path.read_bytes())
        n_samples = int(design["n_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    usable = min_usable_samples(n_samples)
    if usable.verdict is Verdict.WITHHOLD:
        _exclusions(design, node, study, analysis, audit_log)
        report = DisclosureReport(f"analysis '{analysis.id}'", (usable,), 0, 0)
        withhold_unanalysed(node, study, analysis.id, report, out_path, audit_log)


def no_call_profiles(samples_path: Path) -> dict[str, list[int]]:
    """The no-call profiles the GWAS step wrote beside its cohort file ({} if none)."""
    path = samples_path.with_suffix(NO_CALL_PROFILE_SUFFIX)
    if not path.is_file():
        return {}
    document = parse_json_strictly(path.read_bytes())
    return {str(sample): list(map(int, v)) for sample, v in document["samples"].items()}


def _gwas_row_rules(
    private: pd.DataFrame, policy: DisclosurePolicy, binary: bool
) -> tuple[list[RuleOutcome], np.ndarray]:
    """Row-level rules of an association table: MAC, and carriers per group for binary traits.

    Returns the outcomes and the rows to keep; unfitted rows (no convergence, no variance) are
    dropped like suppressed ones: a QC failure and a suppressed row look the same.
    """
    se = private["standard_error"].to_numpy(dtype=float)
    fitted = private["converged"].astype(str).str.lower().eq("true").to_numpy()
    fitted &= np.isfinite(private["beta"].to_numpy(dtype=float)) & np.isfinite(se) & (se > 0)
    allele_number = private["gate.allele_number"].to_numpy()
    alt_count = private["gate.alt_allele_count"].to_numpy()
    mac_outcome, keep = guarded_rows(
        "min_mac_gwas",
        len(private),
        min_minor_allele_count,
        "min_mac_gwas",
        alt_count,
        allele_number,
        policy.min_mac_gwas,
    )
    outcomes = [mac_outcome]
    if binary:
        alt_is_minor = alt_count <= allele_number - alt_count
        minor = {
            group: np.where(
                alt_is_minor,
                private[f"gate.alt_carriers_{group}"],
                private[f"gate.ref_carriers_{group}"],
            )
            for group in ("cases", "controls")
        }
        carrier_outcome, carrier_keep = guarded_rows(
            "min_carriers_per_group",
            len(private),
            min_carriers,
            minor["cases"],
            minor["controls"],
            policy.min_carriers_per_group,
        )
        outcomes.append(carrier_outcome)
        keep &= carrier_keep
    return outcomes, keep & fitted


def _gwas_table(
    private: pd.DataFrame,
    keep: np.ndarray,
    analysis: GwasAnalysis,
    n_parameters: int,
    policy: DisclosurePolicy,
    case_control: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """The GWAS-SSF rows of the kept variants, sorted by chromosome and position; for a
    binary trait (`case_control`: the analysed cases and controls) with n_cases, n_controls."""
    rows = private[keep]
    alt_count = rows["gate.alt_allele_count"].to_numpy()
    allele_number = rows["gate.allele_number"].to_numpy()
    residual_df = rows["n"].to_numpy() - n_parameters
    nlp = neg_log10_p(rows["statistic"].to_numpy(dtype=float), analysis, residual_df)
    extras = (
        {}
        if case_control is None
        else dict(zip(sumstats.CASE_CONTROL_COLUMNS, case_control, strict=True))
    )
    return _sorted(
        pd.DataFrame(
            index=rows.index,  # the private table's rows: the gate looks up their no-calls
            data={
                "chromosome": sumstats.chromosome_code(rows["chromosome"]).to_numpy(),
                "base_pair_location": rows["base_pair_location"].to_numpy(),
                "effect_allele": rows["alt"].to_numpy(),
                "other_allele": rows["ref"].to_numpy(),
                "beta": rows["beta"].to_numpy(dtype=float),
                "standard_error": rows["standard_error"].to_numpy(dtype=float),
                "effect_allele_frequency": (alt_count / allele_number).astype(float),
                "p_value": sumstats.format_p_value(np.power(10.0, -nlp), nlp),
                "n": rows["n"].to_numpy(),
                "variant_id": _variant_ids(rows),
                sumstats.NEG_LOG10_P: nlp,
                **extras,
            },
        )
    )


def release_gwas(
    node: NodeSettings,
    study: StudySpec,
    analysis: GwasAnalysis,
    private_path: Path,
    design_path: Path,
    qc_counts_path: Path,
    out_path: Path,
    audit_log: Path,
    *,
    samples_path: Path,
) -> Path:
    """Gate one association analysis of the cohort listed in `samples_path` into GWAS-SSF."""
    request = _gwas_request(analysis)
    _refuse_without_samples(node, study, analysis, design_path, out_path, audit_log)
    with opened_gate(node, study, request, samples_path, out_path, audit_log) as gate:
        if gate.repeat():
            return out_path
        design = parse_json_strictly(design_path.read_bytes())
        excluded = _exclusions(design, node, study, analysis, audit_log)
        gate = replace(gate, no_calls=gate.ledger.no_call_profiles(no_call_profiles(samples_path)))
        policy = gate.policy
        private = _read_private(private_path)
        binary = analysis.trait_type is TraitType.BINARY
        expected = GWAS_PRIVATE_COLUMNS | (CARRIER_COLUMNS if binary else frozenset())
        columns = private_columns(private, expected)
        if columns.verdict is Verdict.WITHHOLD:
            gate.withhold(DisclosureReport(gate.label, (columns,), len(private), 0))
        n_total, n_parameters = int(design["n_samples"]), int(design["n_parameters"])
        outcomes: list[RuleOutcome] = [
            columns,
            cohort_listed(n_total, gate.cohort.size),
            min_cohort("min_cohort_gwas", n_total, policy.min_cohort_gwas),
            min_residual_df(n_total - n_parameters, policy.min_residual_df),
            max_parameters(n_parameters, n_total, policy.max_parameter_fraction),
        ]
        row_outcomes, keep = _gwas_row_rules(private, policy, binary)
        outcomes += row_outcomes
        case_control = (
            (int(design["n_cases"]), int(design["n_controls"]))
            if binary and design.get("n_cases") is not None
            else None
        )
        released = _gwas_table(private, keep, analysis, n_parameters, policy, case_control)
        allowed = RELEASED_BINARY_GWAS_COLUMNS if binary else RELEASED_GWAS_COLUMNS
        if node.dbsnp_vcf is not None:
            alleles = {"other_allele": "ref", "effect_allele": "alt"}
            released[sumstats.RSID] = rsids(released.rename(columns=alleles), node.dbsnp_vcf)
            allowed = (*allowed, sumstats.RSID)
        outcomes.insert(0, allowed_columns(released, allowed))
        catalog = {
            "trait": analysis.trait,
            "covariates": list(analysis.covariate_columns),
            "n": n_total,
            "n_cases": case_control[0] if case_control else None,
            "n_controls": case_control[1] if case_control else None,
        }
        metadata = _base_metadata(node, study, analysis.id, policy, catalog)
        metadata.update(
            {
                "trait": analysis.trait,
                "trait_type": analysis.trait_type.value,
                "model": analysis.model.value,
                "test": analysis.test.value if analysis.model is Model.LOGISTIC else "t",
                "covariates": list(analysis.covariate_columns),
                "missing_covariates": analysis.missing_covariates.value,
                "missing_genotypes": analysis.missing_genotypes.value,
                "samples_excluded": {
                    key: round_count(value, policy.qc_count_rounding)
                    for key, value in excluded.items()
                },
                "n": n_total,
                "n_cases": design.get("n_cases"),
                "n_controls": design.get("n_controls"),
                "variants_released": len(released),
                "qc": released_qc_counts(qc_counts_path, policy),
            }
        )
        # Members without a call at the row: mean-imputed there, or left out of its fit.
        no_calls = n_total - private["gate.n_called"]
        return gate.finish(analysis.trait, outcomes, len(private), released, metadata, no_calls)


def release_allele_frequencies(
    node: NodeSettings,
    study: StudySpec,
    analysis_id: str,
    private_path: Path,
    qc_counts_path: Path,
    out_path: Path,
    audit_log: Path,
    *,
    samples_path: Path,
) -> Path:
    """Gate the allele-frequency table of the QC'd cohort listed in `samples_path`."""
    request = {"kind": "allele_frequency", "id": analysis_id}
    with opened_gate(node, study, request, samples_path, out_path, audit_log) as gate:
        if gate.repeat():
            return out_path
        policy, cohort = gate.policy, gate.cohort
        private = _read_private(private_path)
        columns = private_columns(private, AF_PRIVATE_COLUMNS)
        if columns.verdict is Verdict.WITHHOLD:
            gate.withhold(DisclosureReport(gate.label, (columns,), len(private), 0))
        passed = int(parse_json_strictly(qc_counts_path.read_bytes())["samples_passed"])
        allele_number = private["allele_number"].to_numpy()
        alt_count = private["allele_count"].to_numpy()
        mac_outcome, keep = guarded_rows(
            "min_mac_af",
            len(private),
            min_minor_allele_count,
            "min_mac_af",
            alt_count,
            allele_number,
            policy.min_mac_af,
        )
        an_outcome, an_keep = guarded_rows(
            "min_an_af", len(private), min_allele_number, allele_number, policy.min_an_af
        )
        outcomes: list[RuleOutcome] = [
            columns,
            cohort_listed(passed, cohort.size),
            min_cohort("min_cohort_af", cohort.size, policy.min_cohort_af),
            mac_outcome,
            an_outcome,
        ]
        rows = private[keep & an_keep]
        released = _sorted(
            pd.DataFrame(
                {
                    "chromosome": sumstats.chromosome_code(rows["chromosome"]),
                    "base_pair_location": rows["base_pair_location"],
                    "ref": rows["ref"],
                    "alt": rows["alt"],
                    "variant_id": _variant_ids(rows),
                    "allele_count": rows["allele_count"],
                    "allele_number": rows["allele_number"],
                    "allele_frequency": rows["allele_frequency"],
                    "n_samples": rows["n_samples"],
                    "homozygote_count": rows["homozygote_count"],
                    "node_id": node.node_id,
                }
            )
        )
        outcomes.insert(0, allowed_columns(released, RELEASED_AF_COLUMNS))
        metadata = _base_metadata(
            node, study, analysis_id, policy, {"trait": None, "n": cohort.size}
        )
        metadata.update(
            {
                "n": cohort.size,
                "variants_released": len(released),
                "qc": released_qc_counts(qc_counts_path, policy),
            }
        )
        no_calls = cohort.size - private["n_samples"]  # members without a call at the row
        return gate.finish(None, outcomes, len(private), released, metadata, no_calls)


def _variant_ids(rows: pd.DataFrame) -> np.ndarray:
    return sumstats.variant_id(
        rows["chromosome"], rows["base_pair_location"], rows["ref"], rows["alt"]
    ).to_numpy()


def released_qc_counts(qc_counts_path: Path, policy: DisclosurePolicy) -> dict[str, Any]:
    counts = parse_json_strictly(qc_counts_path.read_bytes())
    released = {key: counts[key] for key in RELEASED_QC_FIELDS if key in counts}
    for key in ROUNDED_QC_COUNTS:
        if key in released:
            released[key] = round_count(released[key], policy.qc_count_rounding)
    return released


def release_qc_metrics(
    node: NodeSettings, study: StudySpec, qc_counts_path: Path, out_path: Path
) -> Path:
    policy = node_policy(node, study)
    document = {
        "study_id": study.study_id,
        "node_id": node.node_id,
        "qc_thresholds": study.raw.get("qc", {}),
        "counts": released_qc_counts(qc_counts_path, policy),
        "software_versions": software_versions(),
    }
    return atomic_write_json(out_path, document)
