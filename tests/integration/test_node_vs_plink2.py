"""The node pipeline's released results against plink2 on the same genotypes.

The released files are those of the 'fi' node in the session's `federated_run` (the shared
synthetic federation's 1,000 samples x 5,000 variants, no missing calls, so Hail's
mean-imputation and plink2's per-sample exclusion of missing genotypes cannot differ): the
real Snakemake pipeline, run by the node's agent on the cohort's VCF, with allele
frequencies, a linear and a logistic Wald GWAS of the traits on age and sex, and the
built-in disclosure policy. plink2 2.00a3.5 then runs `--freq counts` and a Wald `--glm`
(no Firth fallback) on the cohort's PLINK files (the same genotypes: test_synth.py) with the
same phenotypes and covariates. Every released row is compared after aligning alleles. The
mean-imputation test runs the pipeline itself, on the PLINK files of the 'ee' node.

plink2 prints 6 significant digits (-log10 p too, with `log10`), Released GWAS-SSF 8, so
the printed precision (5e-6 relative) is far inside the tolerances. plink2's logistic
regression runs in single precision (float IRLS): for betas near zero its estimate can be
1e-4 relative away from the maximum-likelihood one. Where that happens, a float64 Newton
refit of the same model decides, and ours must match the refit to the same 1e-4.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from bench import node_pipeline as anchor
from federation import sumstats
from federation.pipeline.snakemake import run_node_pipeline
from federation.sandbox.synth import SynthResult
from tests.integration.federated_runs import FederatedRun
from tests.integration.node_runs import linear_study
from tests.integration.plink2_checks import (
    RELATIVE,
    assert_se_and_p,
    worst,
)

pytestmark = [
    pytest.mark.integration,
]

MIN_COMPARED_FRACTION = 0.9
# Rows where plink2's single-precision logistic fit misses the float64 one; a handful in
# thousands (betas within ~1e-3 of zero) is expected, more would point at something else.
MAX_FLOAT32_ROWS_FRACTION = 0.02
GENOME_WIDE = -math.log10(5e-8)
LAMBDA_RANGE = (0.9, 1.1)
CHI2_MEDIAN = stats.chi2.ppf(0.5, 1)  # 0.4549
# The released analyses of the federated run (tests/integration/federated_runs.py).
ANALYSES = {"quant": "quant_trait_gwas", "binary": "binary_trait_gwas", "af": "allele_frequencies"}


@dataclass(frozen=True)
class Comparison:
    released_dir: Path
    cohort_dir: Path
    truth: dict
    quant: pd.DataFrame  # released rows aligned with plink2 (see bench.node_pipeline)
    binary: pd.DataFrame
    counts: pd.DataFrame
    released_n: dict[str, int]


@pytest.fixture(scope="module")
def comparison(
    synthetic_federation: SynthResult,
    federated_run: FederatedRun,
    tmp_path_factory: pytest.TempPathFactory,
) -> Comparison:
    cohort = synthetic_federation.nodes[0]
    released_dir = federated_run.released_dir(cohort.node_id)
    plink_dir = tmp_path_factory.mktemp("node_vs_plink2") / "plink2"
    traits = [anchor.QUANT_TRAIT, anchor.BINARY_TRAIT]
    pheno, covar = anchor.write_plink2_inputs(
        cohort.phenotypes, cohort.plink_prefix, plink_dir, traits
    )
    subprocess.run(
        anchor.plink2_command(cohort.plink_prefix, pheno, covar, plink_dir / "out", threads=2),
        check=True,
        capture_output=True,
    )

    def released(analysis: str) -> pd.DataFrame:
        return sumstats.read_table(released_dir / f"{ANALYSES[analysis]}.tsv.gz")

    def plink2(suffix: str) -> pd.DataFrame:
        return anchor.read_plink2_table(plink_dir / f"out.{suffix}")

    return Comparison(
        released_dir=released_dir,
        cohort_dir=cohort.directory,
        truth=json.loads(synthetic_federation.truth.read_text()),
        quant=anchor.align_glm(released("quant"), plink2(f"{anchor.QUANT_TRAIT}.glm.linear")),
        binary=anchor.align_glm(released("binary"), plink2(f"{anchor.BINARY_TRAIT}.glm.logistic")),
        counts=anchor.align_counts(released("af"), plink2("acount")),
        released_n={
            name: int(sumstats.read_sidecar(released_dir / f"{ANALYSES[name]}.tsv.gz")["n"])
            for name in ANALYSES
        },
    )


def _compared(aligned: pd.DataFrame) -> pd.DataFrame:
    """Rows plink2 has a result for with the same alleles; at least 90% of the released ones."""
    compared = aligned[aligned.plink2_beta.notna() & aligned.plink2_se.notna()]
    assert len(aligned) > 1000, "too few released rows for a meaningful comparison"
    assert len(compared) >= MIN_COMPARED_FRACTION * len(aligned), (
        f"only {len(compared)} of {len(aligned)} released rows have a plink2 result"
    )
    return compared


def test_linear_gwas_agrees_with_plink2(comparison: Comparison) -> None:
    compared = _compared(comparison.quant)
    beta = anchor.relative_difference(compared.beta, compared.plink2_beta)
    assert np.all(beta <= RELATIVE), f"beta differs from plink2: {worst(beta, compared)}"
    others = assert_se_and_p(compared)
    print(
        f"\nlinear: {len(compared)} of {len(comparison.quant)} released rows compared; max "
        f"difference from plink2: beta {beta.max():.2g} (relative), {others}"
    )


# ------------------------------------------------------------ float64 arbiter (logistic)


def bed_alt_dosages(prefix: Path, variant_ids: list[str], alts: list[str]) -> np.ndarray:
    """(samples, variants) counts of each given ALT allele, read from the PLINK .bed."""
    bim = pd.read_csv(f"{prefix}.bim", sep="\t", header=None, dtype=str)
    # The .bim's IDs are chr:pos:ref:alt (synth), released ones GWAS-SSF's chr_pos_ref_alt.
    row_of = {variant.replace(":", "_"): index for index, variant in enumerate(bim[1])}
    n_samples = len(pd.read_csv(f"{prefix}.fam", sep=r"\s+", header=None, usecols=[1]))
    bytes_per_variant = (n_samples + 3) // 4
    bed = np.memmap(f"{prefix}.bed", dtype=np.uint8, mode="r")
    assert bed[:3].tolist() == [0x6C, 0x1B, 0x01], "not a variant-major PLINK 1 .bed"
    bed = bed[3:]
    columns = []
    for variant, alt in zip(variant_ids, alts, strict=True):
        row = row_of[variant]
        packed = bed[row * bytes_per_variant : (row + 1) * bytes_per_variant]
        codes = ((packed[:, None] >> np.array([0, 2, 4, 6])) & 3).reshape(-1)[:n_samples]
        # .bed codes: 0 = two copies of the .bim's 5th-column allele, 2 = one, 3 = none, 1 = missing
        first = np.select([codes == 0, codes == 2, codes == 3], [2.0, 1.0, 0.0], np.nan)
        columns.append(first if bim.iloc[row, 4] == alt else 2.0 - first)
    return np.column_stack(columns)


def logistic_refit(y: np.ndarray, covariates: np.ndarray, dosage: np.ndarray) -> float:
    """float64 Newton-Raphson to |step| < 1e-12: the genotype's maximum-likelihood log-OR."""
    design = np.column_stack([np.ones(len(y)), covariates, dosage])
    coef = np.zeros(design.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-design @ coef))
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        step = np.linalg.solve(hessian, design.T @ (y - p))
        coef += step
        if np.max(np.abs(step)) < 1e-12:
            return float(coef[-1])
    raise AssertionError("float64 refit did not converge")


def test_logistic_wald_gwas_agrees_with_plink2(comparison: Comparison) -> None:
    compared = _compared(comparison.binary)
    others = assert_se_and_p(compared)
    beta = anchor.relative_difference(compared.beta, compared.plink2_beta)
    off = compared[beta > RELATIVE]
    refit_note = ""
    assert len(off) <= MAX_FLOAT32_ROWS_FRACTION * len(compared), (
        f"{len(off)} of {len(compared)} logistic betas differ from plink2 by > {RELATIVE}"
    )
    if len(off):
        prefix = comparison.cohort_dir / "genotypes"
        fam = pd.read_csv(f"{prefix}.fam", sep=r"\s+", header=None, dtype=str)
        phenotypes = pd.read_csv(comparison.cohort_dir / "phenotypes.tsv", sep="\t")
        phenotypes = phenotypes.set_index("sample_id").loc[fam[1]]
        y = phenotypes[anchor.BINARY_TRAIT].to_numpy(float)
        covariates = phenotypes[list(anchor.COVARIATES)].to_numpy(float)
        dosages = bed_alt_dosages(prefix, list(off.variant_id), list(off.effect_allele))
        refit = np.array([logistic_refit(y, covariates, d) for d in dosages.T])
        ours_error = np.abs(off.beta.to_numpy() - refit)
        plink2_error = np.abs(off.plink2_beta.to_numpy() - refit)
        assert np.all(ours_error <= RELATIVE * np.abs(refit)), (
            f"ours differs from a float64 refit: {worst(ours_error / np.abs(refit), off)}"
        )
        assert np.all(plink2_error > ours_error), "plink2 closer to the float64 refit than ours"
        refit_note = (
            f"; {len(off)} betas beyond it (up to {beta.max():.2g}; plink2's float IRLS), where "
            f"ours is within {np.max(ours_error / np.abs(refit)):.2g} of a float64 refit"
        )
    print(
        f"\nlogistic: {len(compared)} of {len(comparison.binary)} released rows compared; max "
        f"difference from plink2: beta {beta[beta <= RELATIVE].max():.2g} (relative, rows within "
        f"{RELATIVE}){refit_note}, {others}"
    )


def test_allele_counts_equal_plink2_freq_counts(comparison: Comparison) -> None:
    counts = comparison.counts
    compared = counts[counts.plink2_allele_number.notna()]
    assert len(counts) > 1000
    assert len(compared) >= MIN_COMPARED_FRACTION * len(counts)
    assert (compared.allele_count == compared.plink2_alt_count).all()
    assert (compared.allele_number == compared.plink2_allele_number).all()


def test_released_n_is_plink2_observations_exactly(comparison: Comparison) -> None:
    for name, frame in (("quant", comparison.quant), ("binary", comparison.binary)):
        observed = frame.plink2_obs.dropna().astype(int).unique()
        assert len(observed) == 1  # no missing calls: every variant sees every sample
        assert comparison.released_n[name] == observed[0]  # exact (docs/privacy-model.md)
        assert (frame.n == comparison.released_n[name]).all()


def test_mean_imputed_covariates_keep_the_cohort_and_match_plink2_on_imputed_values(
    synthetic_federation: SynthResult, tmp_path: Path
) -> None:
    """17 samples lose their age: with `missing_covariates: mean` they stay in the analysis
    (N = every sample with the trait, so no cell of 17 against the AF cohort), the sidecar
    says so, and the fit equals plink2 given the mean-imputed ages."""
    cohort = synthetic_federation.nodes[1]
    phenotypes = pd.read_csv(cohort.phenotypes, sep="\t", dtype={"sample_id": str})
    blank = phenotypes.index[:: len(phenotypes) // 17][:17]
    phenotypes.loc[blank, "age"] = np.nan
    edited = tmp_path / "phenotypes.tsv"
    phenotypes.to_csv(edited, sep="\t", index=False, na_rep="NA")
    node = {
        "node_id": cohort.node_id,
        "genotypes": {"format": "plink", "path": str(cohort.plink_prefix)},
        "phenotypes": str(edited),
        "work_dir": str(tmp_path / "work"),
        "results_dir": str(tmp_path / "results"),
        "hail": {"master": "local[2]", "driver_memory": "4g"},
    }
    study = linear_study("imputed", "quant", "af", missing_covariates="mean")
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(node))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    run = run_node_pipeline(tmp_path / "node.yaml", tmp_path / "study.yaml")
    released = run.released_dir / "quant.tsv.gz"
    sidecar = sumstats.read_sidecar(released)
    with_trait = phenotypes[anchor.QUANT_TRAIT].notna()
    assert sidecar["missing_covariates"] == "mean"
    assert sidecar["n"] == sumstats.read_sidecar(run.released_dir / "af.tsv.gz")["n"]
    assert sidecar["n"] == int(with_trait.sum())

    imputed = phenotypes.copy()
    imputed["age"] = imputed["age"].fillna(imputed.loc[with_trait, "age"].mean())
    imputed_path = tmp_path / "imputed.tsv"
    imputed.to_csv(imputed_path, sep="\t", index=False, na_rep="NA")
    plink_dir = tmp_path / "plink2"
    pheno, covar = anchor.write_plink2_inputs(
        imputed_path, cohort.plink_prefix, plink_dir, [anchor.QUANT_TRAIT]
    )
    subprocess.run(
        anchor.plink2_command(cohort.plink_prefix, pheno, covar, plink_dir / "out", threads=2),
        check=True,
        capture_output=True,
    )
    aligned = anchor.align_glm(
        sumstats.read_table(released),
        anchor.read_plink2_table(plink_dir / f"out.{anchor.QUANT_TRAIT}.glm.linear"),
    )
    compared = _compared(aligned)
    beta = anchor.relative_difference(compared.beta, compared.plink2_beta)
    assert np.all(beta <= RELATIVE), f"beta differs from plink2: {worst(beta, compared)}"
    assert_se_and_p(compared)
    assert (compared.plink2_obs == sidecar["n"]).all()


def test_planted_causal_variants_are_genome_wide_significant(comparison: Comparison) -> None:
    causal = _released_ids(comparison.truth["causal_variants"])
    assert len(causal) == 5
    quant = comparison.quant.set_index("variant_id")
    assert set(causal) <= set(quant.index), "a planted variant was not released"
    assert (quant.loc[causal, sumstats.NEG_LOG10_P] > GENOME_WIDE).all()


def _released_ids(variants: list[dict]) -> list[str]:
    """truth.json's chr:pos:ref:alt IDs in the released files' chr_pos_ref_alt form."""
    return [variant["variant_id"].replace(":", "_") for variant in variants]


def _lambda_gc(aligned: pd.DataFrame, causal: set[str]) -> float:
    null = aligned[~aligned.variant_id.isin(causal)]
    chi2 = stats.chi2.isf(np.power(10.0, -null[sumstats.NEG_LOG10_P].to_numpy()), 1)
    return float(np.median(chi2) / CHI2_MEDIAN)


def test_genomic_inflation_is_near_one(comparison: Comparison) -> None:
    causal = set(_released_ids(comparison.truth["causal_variants"]))
    linear = _lambda_gc(comparison.quant, causal)
    logistic = _lambda_gc(comparison.binary, causal)
    print(f"\nlambda_GC over non-causal variants: linear {linear:.3f}, logistic {logistic:.3f}")
    assert LAMBDA_RANGE[0] <= linear <= LAMBDA_RANGE[1]
    assert LAMBDA_RANGE[0] <= logistic <= LAMBDA_RANGE[1]
