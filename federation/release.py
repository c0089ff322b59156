"""Turn a node's private aggregate tables into released files, through the disclosure gate.

This step runs without Hail. It reads what the Hail steps left in the node's work
directory, applies every disclosure rule, and writes GWAS-SSF summary statistics, the
allele-frequency table and QC metrics into the results folder. If any release-level rule
fails, nothing of that release is written and the node audit log says why.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation import sumstats
from federation.audit import append_event
from federation.disclosure import (
    DisclosurePolicy,
    DisclosureReport,
    RuleOutcome,
    allowed_columns,
    max_parameters,
    min_allele_number,
    min_carriers,
    min_cohort,
    min_minor_allele_count,
    min_residual_df,
    round_n,
    round_n_array,
)
from federation.errors import DisclosureError
from federation.settings import NodeSettings
from federation.spec import GwasAnalysis, LogisticTest, Model, StudySpec, TraitType
from federation.tails import log_chi2_sf, log_normal_two_sided, log_t_two_sided
from federation.versions import software_versions

RELEASED_GWAS_COLUMNS = (
    *sumstats.MANDATORY_COLUMNS,
    *sumstats.STANDARD_EXTRAS,
    sumstats.NEG_LOG10_P,
)
RELEASED_AF_COLUMNS = (*sumstats.ALLELE_FREQUENCY_COLUMNS, "homozygote_count", "node_id")
LN10 = math.log(10.0)
# Sample counts in QC metrics are rounded like N: exact counts would give N away by subtraction.
ROUNDED_QC_COUNTS = (
    "samples_genotyped",
    "samples_with_phenotypes",
    "phenotype_rows_without_genotypes",
    "samples_low_call_rate",
    "samples_sex_mismatch",
    "samples_passed",
)


def node_policy(node: NodeSettings, study: StudySpec) -> DisclosurePolicy:
    """Built-in defaults, tightened by the node admin, then by the study; never loosened."""
    policy = DisclosurePolicy().tightened(node.disclosure, f"node '{node.node_id}' config")
    return policy.tightened(study.disclosure, f"study '{study.study_id}'")


def _read_private(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path,
        sep="\t",
        compression="gzip"
        if path.name.endswith((".bgz", ".gz"))
        else None,  # Hail writes block gzip
        na_values=["NA"],
        keep_default_na=False,
        dtype={"chromosome": str, "ref": str, "alt": str},
    )


def _chromosome_order(chromosome: pd.Series) -> pd.Series:
    order = {str(i): i for i in range(1, 23)} | {"X": 23, "Y": 24, "MT": 25, "M": 25}
    return chromosome.map(order).fillna(26)


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
    return -np.asarray(log_p) / LN10


def _withhold(
    report: DisclosureReport, node: NodeSettings, audit_log: Path, out_path: Path
) -> None:
    append_event(audit_log, "release_withheld", node_id=node.node_id, **report.audit_record())
    for stale in (out_path, sumstats.sidecar_path(out_path)):
        stale.unlink(missing_ok=True)
    reasons = "; ".join(report.withheld_reasons())
    raise DisclosureError(
        f"node '{node.node_id}': {report.release}: {reasons}; result withheld (node policy)"
    )


def _base_metadata(
    node: NodeSettings, study: StudySpec, analysis_id: str, policy: DisclosurePolicy
) -> dict[str, Any]:
    return {
        "study_id": study.study_id,
        "node_id": node.node_id,
        "analysis": analysis_id,
        "genome_assembly": study.reference_genome,
        "coordinate_system": "1-based",
        "is_harmonised": False,
        "is_sorted": True,
        "date_metadata_last_modified": datetime.now(UTC).date().isoformat(),
        "software_versions": software_versions(),
        "disclosure_policy": policy.as_dict(),
    }


def release_gwas(
    node: NodeSettings,
    study: StudySpec,
    analysis: GwasAnalysis,
    private_path: Path,
    design_path: Path,
    qc_counts_path: Path,
    out_path: Path,
    audit_log: Path,
) -> Path:
    policy = node_policy(node, study)
    design = json.loads(design_path.read_text())
    private = _read_private(private_path)
    n_total = int(design["n_samples"])
    outcomes: list[RuleOutcome] = [
        min_cohort("min_cohort_gwas", n_total, policy.min_cohort_gwas),
        min_residual_df(n_total - int(design["n_parameters"]), policy.min_residual_df),
        max_parameters(int(design["n_parameters"]), n_total, policy.max_parameter_fraction),
    ]
    # Unfitted rows (no convergence, no variance) are QC failures, dropped like suppressed ones.
    fitted = private["converged"].astype(str).str.lower().eq("true").to_numpy() & np.isfinite(
        private["beta"].to_numpy()
    )
    fitted &= np.isfinite(private["standard_error"].to_numpy()) & (
        private["standard_error"].to_numpy() > 0
    )
    allele_number = 2 * private["gate.n_called"].to_numpy()
    alt_count = private["gate.alt_allele_count"].to_numpy()
    mac_outcome, keep = min_minor_allele_count(
        "min_mac_gwas", alt_count, allele_number, policy.min_mac_gwas
    )
    outcomes.append(mac_outcome)
    if analysis.trait_type is TraitType.BINARY:
        alt_is_minor = alt_count <= allele_number - alt_count
        cases = np.where(
            alt_is_minor, private["gate.alt_carriers_cases"], private["gate.ref_carriers_cases"]
        )
        controls = np.where(
            alt_is_minor,
            private["gate.alt_carriers_controls"],
            private["gate.ref_carriers_controls"],
        )
        carrier_outcome, carrier_keep = min_carriers(cases, controls, policy.min_carriers_per_group)
        outcomes.append(carrier_outcome)
        keep &= carrier_keep
    keep &= fitted

    rows = private[keep]
    residual_df = rows["n"].to_numpy() - int(design["n_parameters"])
    nlp = neg_log10_p(rows["statistic"].to_numpy(dtype=float), analysis, residual_df)
    released = pd.DataFrame(
        {
            "chromosome": rows["chromosome"].to_numpy(),
            "base_pair_location": rows["base_pair_location"].to_numpy(),
            "effect_allele": rows["alt"].to_numpy(),
            "other_allele": rows["ref"].to_numpy(),
            "beta": rows["beta"].to_numpy(),
            "standard_error": rows["standard_error"].to_numpy(),
            "effect_allele_frequency": alt_count[keep] / allele_number[keep],
            "p_value": sumstats.format_p_value(np.power(10.0, -nlp), nlp),
            "n": round_n_array(rows["n"].to_numpy(), policy.n_rounding),
            "variant_id": sumstats.variant_id(
                rows["chromosome"], rows["base_pair_location"], rows["ref"], rows["alt"]
            ).to_numpy(),
            sumstats.NEG_LOG10_P: nlp,
        }
    )
    released = released.sort_values(
        ["chromosome", "base_pair_location"],
        key=lambda c: _chromosome_order(c) if c.name == "chromosome" else c,
        kind="stable",
    )
    outcomes.insert(0, allowed_columns(released, RELEASED_GWAS_COLUMNS))
    report = DisclosureReport(
        f"analysis '{analysis.id}'", tuple(outcomes), len(private), len(released)
    )
    if not report.released:
        _withhold(report, node, audit_log, out_path)

    metadata = _base_metadata(node, study, analysis.id, policy)
    metadata.update(
        {
            "trait": analysis.trait,
            "trait_type": analysis.trait_type.value,
            "model": analysis.model.value,
            "test": analysis.test.value if analysis.model is Model.LOGISTIC else "t",
            "covariates": list(analysis.covariate_columns),
            "n": round_n(n_total, policy.n_rounding),
            "n_cases": round_n(design["n_cases"], policy.n_rounding)
            if design.get("n_cases") is not None
            else None,
            "n_controls": round_n(design["n_controls"], policy.n_rounding)
            if design.get("n_controls") is not None
            else None,
            "variants_released": len(released),
            "qc": released_qc_counts(qc_counts_path, policy),
            "disclosure": report.public_summary(),
        }
    )
    sumstats.write_table(released, out_path, metadata, float_format="%.8g")
    append_event(
        audit_log,
        "release_written",
        node_id=node.node_id,
        file=out_path.name,
        **report.audit_record(),
    )
    return out_path


def release_allele_frequencies(
    node: NodeSettings,
    study: StudySpec,
    analysis_id: str,
    private_path: Path,
    qc_counts_path: Path,
    out_path: Path,
    audit_log: Path,
) -> Path:
    policy = node_policy(node, study)
    private = _read_private(private_path)
    cohort = int(json.loads(qc_counts_path.read_text())["samples_passed"])
    allele_number = private["allele_number"].to_numpy()
    alt_count = private["allele_count"].to_numpy()
    outcomes: list[RuleOutcome] = [min_cohort("min_cohort_af", cohort, policy.min_cohort_af)]
    mac_outcome, keep = min_minor_allele_count(
        "min_mac_af", alt_count, allele_number, policy.min_mac_af
    )
    an_outcome, an_keep = min_allele_number(allele_number, policy.min_an_af)
    outcomes += [mac_outcome, an_outcome]
    rows = private[keep & an_keep]
    released = pd.DataFrame(
        {
            "chromosome": rows["chromosome"],
            "base_pair_location": rows["base_pair_location"],
            "ref": rows["ref"],
            "alt": rows["alt"],
            "variant_id": sumstats.variant_id(
                rows["chromosome"], rows["base_pair_location"], rows["ref"], rows["alt"]
            ),
            "allele_count": rows["allele_count"],
            "allele_number": rows["allele_number"],
            "allele_frequency": rows["allele_frequency"],
            "n_samples": round_n_array(rows["n_samples"].to_numpy(), policy.n_rounding),
            "homozygote_count": rows["homozygote_count"],
            "node_id": node.node_id,
        }
    )
    released = released.sort_values(
        ["chromosome", "base_pair_location"],
        key=lambda c: _chromosome_order(c) if c.name == "chromosome" else c,
        kind="stable",
    )
    outcomes.insert(0, allowed_columns(released, RELEASED_AF_COLUMNS))
    report = DisclosureReport(
        f"analysis '{analysis_id}'", tuple(outcomes), len(private), len(released)
    )
    if not report.released:
        _withhold(report, node, audit_log, out_path)
    metadata = _base_metadata(node, study, analysis_id, policy)
    metadata.update(
        {
            "n": round_n(cohort, policy.n_rounding),
            "variants_released": len(released),
            "qc": released_qc_counts(qc_counts_path, policy),
            "disclosure": report.public_summary(),
        }
    )
    sumstats.write_table(released, out_path, metadata, float_format="%.8g")
    append_event(
        audit_log,
        "release_written",
        node_id=node.node_id,
        file=out_path.name,
        **report.audit_record(),
    )
    return out_path


def released_qc_counts(qc_counts_path: Path, policy: DisclosurePolicy) -> dict[str, Any]:
    counts = json.loads(qc_counts_path.read_text())
    for key in ROUNDED_QC_COUNTS:
        counts[key] = round_n(counts[key], policy.n_rounding)
    return counts


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
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(".partial-" + out_path.name)
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.replace(out_path)
    return out_path
