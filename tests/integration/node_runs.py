"""Helpers of the node-pipeline tests: the small studies they run, node configs, runs through
the command line (so exit codes are the real ones), plink2 on the same samples, and what a run
left."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from bench import node_pipeline as anchor
from federation import sumstats
from federation.cli import main

RELATIVE = 1e-4  # beta and SE against plink2, as tests/integration/test_node_vs_plink2.py
NEG_LOG10_P_ABSOLUTE = 1e-3
CHI2_MEDIAN = stats.chi2.ppf(0.5, 1)


def linear_study(
    study_id: str,
    gwas_id: str = "quant_gwas",
    frequencies_id: str | None = "allele_frequencies",
    **gwas_settings: Any,
) -> dict[str, Any]:
    """A node study on GRCh38: allele frequencies (as `frequencies_id`; none if None), then a
    linear GWAS of quant_trait with age and sex (as `gwas_id`, with `gwas_settings` added,
    e.g. `missing_covariates="mean"`)."""
    frequencies = [{"id": frequencies_id, "type": "allele_frequency"}] if frequencies_id else []
    gwas = {
        "id": gwas_id,
        "type": "gwas",
        "trait": anchor.QUANT_TRAIT,
        "trait_type": "quantitative",
        "covariates": list(anchor.COVARIATES),
        **gwas_settings,
    }
    return {"study_id": study_id, "reference_genome": "GRCh38", "analyses": [*frequencies, gwas]}


@dataclass(frozen=True)
class NodeRun:
    root: Path
    study_id: str
    node_id: str
    exit_code: int

    @property
    def work(self) -> Path:
        return self.root / "work" / self.study_id

    @property
    def released(self) -> Path:
        return self.root / "results" / self.study_id / "nodes" / self.node_id

    def table(self, analysis: str) -> pd.DataFrame:
        return sumstats.read_table(self.released / f"{analysis}.tsv.gz")

    def sidecar(self, analysis: str) -> dict[str, Any]:
        return sumstats.read_sidecar(self.released / f"{analysis}.tsv.gz")

    def outcome(self, analysis: str) -> dict[str, Any]:
        return json.loads((self.work / "outcomes" / f"{analysis}.json").read_text())

    def qc_counts(self) -> dict[str, Any]:
        return json.loads((self.work / "qc_counts.json").read_text())

    def qc_samples(self) -> list[str]:
        return (self.work / "private" / "qc.samples.txt").read_text().split()

    def audit(self) -> list[dict[str, Any]]:
        lines = (self.root / "work" / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def run_node(
    root: Path,
    node_id: str,
    genotypes: dict[str, str],
    phenotypes: Path,
    study: dict[str, Any],
    **node_settings: Any,
) -> NodeRun:
    """Write the node and study configs under `root` and run `federation node run-pipeline`."""
    root.mkdir(parents=True, exist_ok=True)
    node = {
        "node_id": node_id,
        "genotypes": genotypes,
        "phenotypes": str(phenotypes),
        "work_dir": str(root / "work"),
        "results_dir": str(root / "results"),
        "hail": {"master": "local[2]", "driver_memory": "4g"},
        **node_settings,
    }
    (root / "node.yaml").write_text(yaml.safe_dump(node))
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    code = main(
        [
            "node",
            "run-pipeline",
            "--node-config",
            str(root / "node.yaml"),
            "--study-config",
            str(root / "study.yaml"),
        ]
    )
    return NodeRun(root, study["study_id"], node_id, code)


def plink2_glm(
    plink_prefix: Path,
    phenotypes: pd.DataFrame,
    trait: str,
    covariates: list[str],
    out_dir: Path,
    keep: list[str] | None = None,
    model: str = "linear",
) -> pd.DataFrame:
    """plink2 --glm of `trait` on `phenotypes` (sample_id index, NaN = missing), optionally on
    the samples in `keep` only; its table for `model` ("linear", or "logistic": plain
    logistic regression, no Firth fallback)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "phenotypes.tsv"
    phenotypes.reset_index().to_csv(table, sep="\t", index=False, na_rep="NA")
    pheno, covar = anchor.write_plink2_inputs(table, plink_prefix, out_dir, [trait], covariates)
    command = anchor.plink2_command(plink_prefix, pheno, covar, out_dir / "out", threads=2)
    if keep is not None:
        fam = pd.read_csv(f"{plink_prefix}.fam", sep=r"\s+", header=None, dtype=str)
        kept = fam[fam[1].isin(set(keep))][[0, 1]]
        kept.to_csv(out_dir / "keep.txt", sep="\t", header=False, index=False)
        command += ["--keep", str(out_dir / "keep.txt")]
    subprocess.run(command, check=True, capture_output=True)
    return anchor.read_plink2_table(out_dir / f"out.{trait}.glm.{model}")


def assert_agrees_with_plink2(
    released: pd.DataFrame, plink2: pd.DataFrame, logistic: bool = False
) -> pd.DataFrame:
    """Every released row with a plink2 result for the same alleles matches it (beta and SE
    within RELATIVE, -log10 p within NEG_LOG10_P_ABSOLUTE, N = plink2's OBS_CT). Logistic
    betas are held to RELATIVE of max(|beta|, SE) (`beta_difference`)."""
    aligned = anchor.align_glm(released, plink2)
    compared = aligned[aligned.plink2_beta.notna() & aligned.plink2_se.notna()]
    assert len(compared) >= 0.9 * len(aligned) and len(compared) > 1000
    if logistic:
        beta = beta_difference(compared)
    else:
        beta = anchor.relative_difference(compared.beta, compared.plink2_beta)
    se = anchor.relative_difference(compared.standard_error, compared.plink2_se)
    nlp = np.abs(compared[sumstats.NEG_LOG10_P].to_numpy() - compared.plink2_nlp.to_numpy())
    assert beta.max() <= RELATIVE, f"beta differs from plink2 by up to {beta.max():.3g}"
    assert se.max() <= RELATIVE, f"SE differs from plink2 by up to {se.max():.3g}"
    assert nlp.max() <= NEG_LOG10_P_ABSOLUTE, f"-log10 p differs by up to {nlp.max():.3g}"
    assert (compared.n.to_numpy() == compared.plink2_obs.to_numpy()).all()
    print(
        f"\n{len(compared)} rows vs plink2: beta {beta.max():.2g}, SE {se.max():.2g} (relative), "
        f"-log10 p {nlp.max():.2g}"
    )
    return compared


def lambda_gc(table: pd.DataFrame, causal: set[str]) -> float:
    """Median chi-square of the non-causal variants over its null median (λGC)."""
    null = table[~table.variant_id.isin(causal)]
    chi2 = stats.chi2.isf(np.power(10.0, -null[sumstats.NEG_LOG10_P].to_numpy()), 1)
    return float(np.median(chi2) / CHI2_MEDIAN)


# ------------------------------------------------ logistic and dosage comparisons (issue 16)


def beta_difference(compared: pd.DataFrame) -> np.ndarray:
    """|beta - plink2's| on the scale max(|beta|, SE): a relative difference where beta is
    clearly non-zero, and stable where it is near zero. There, a relative difference says
    nothing: one dosage's float rounding (VCF DS is read as 32-bit, BGEN as k/255) or plink2's
    single-precision logistic IRLS moves a near-zero beta by much more than 1e-4 of itself,
    yet by far less than 1e-4 of its SE (test_node_vs_plink2 refits such rows in float64)."""
    scale = np.maximum(np.abs(compared.plink2_beta), compared.plink2_se)
    return np.abs(compared.beta - compared.plink2_beta).to_numpy() / scale.to_numpy()
