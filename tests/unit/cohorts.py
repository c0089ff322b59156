"""Small synthetic cohorts and a numpy stand-in for the Hail steps (no JVM).

`Cohort` holds individual-level data (genotypes, phenotype, covariates) the way a node does;
`write_inputs` writes what the Hail steps would leave for the release step: the private
association and allele-frequency tables, the design and QC counts, and the cohort's
sample list. The statistics are plain least squares: the release step only needs numbers
of the right shape, the gate's counts are what these tests are about.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from federation.settings import NodeSettings, node_from_dict
from federation.spec import StudySpec, study_from_dict


@dataclass(frozen=True)
class Cohort:
    sample_ids: list[str]
    genotypes: np.ndarray  # samples x variants, 0/1/2 alt alleles, NaN missing
    phenotype: np.ndarray  # 0/1 for binary traits
    covariates: np.ndarray  # samples x k
    positions: np.ndarray

    def subset(self, keep: np.ndarray) -> Cohort:
        return Cohort(
            [s for s, k in zip(self.sample_ids, keep, strict=True) if k],
            self.genotypes[keep],
            self.phenotype[keep],
            self.covariates[keep],
            self.positions,
        )


def random_cohort(
    rng: np.random.Generator,
    n: int,
    frequencies: list[float],
    binary: bool,
    covariates: int = 1,
    missing: float = 0.0,
    prefix: str = "S",
) -> Cohort:
    genotypes = rng.binomial(2, np.asarray(frequencies)[None, :], size=(n, len(frequencies)))
    genotypes = genotypes.astype(float)
    genotypes[rng.random(genotypes.shape) < missing] = np.nan
    phenotype = rng.random(n) < 0.4 if binary else rng.normal(170, 10, n)
    return Cohort(
        [f"{prefix}{i:05d}" for i in range(n)],
        genotypes,
        phenotype.astype(float),
        rng.normal(size=(n, covariates)),
        np.arange(len(frequencies)) * 1000 + 10_000,
    )


def gwas_table(cohort: Cohort, binary: bool) -> pd.DataFrame:
    rows = []
    y, cases = cohort.phenotype, cohort.phenotype == 1
    design = np.column_stack([np.ones(len(y)), cohort.covariates])
    for j, position in enumerate(cohort.positions):
        g = cohort.genotypes[:, j]
        called = ~np.isnan(g)
        x = np.where(called, g, np.nanmean(g) if called.any() else 0.0)
        full = np.column_stack([design, x])
        coef, *_ = np.linalg.lstsq(full, y, rcond=None)
        residual = y - full @ coef
        df = len(y) - full.shape[1]
        try:
            covariance = np.linalg.inv(full.T @ full) * (residual @ residual) / max(df, 1)
            se = float(np.sqrt(covariance[-1, -1]))
        except np.linalg.LinAlgError:
            se = float("nan")
        row = {
            "chromosome": "1",
            "base_pair_location": int(position),
            "ref": "A",
            "alt": "G",
            "gate.n_called": int(called.sum()),
            "gate.alt_allele_count": int(np.nansum(g)),
            "gate.allele_number": 2 * int(called.sum()),
            "beta": coef[-1],
            "standard_error": se,
            "statistic": coef[-1] / se if se else np.nan,
            "p_value": 0.5,
            "n": len(y),
            "converged": "true" if np.isfinite(se) and se > 0 else "false",
        }
        if binary:
            for group, members in (("cases", cases), ("controls", ~cases)):
                row[f"gate.alt_carriers_{group}"] = int((members & (g > 0)).sum())
                row[f"gate.ref_carriers_{group}"] = int((members & (g < 2)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def af_table(cohort: Cohort) -> pd.DataFrame:
    g = cohort.genotypes
    called = (~np.isnan(g)).sum(axis=0)
    alt = np.nansum(g, axis=0).astype(int)
    return pd.DataFrame(
        {
            "chromosome": "1",
            "base_pair_location": cohort.positions,
            "ref": "A",
            "alt": "G",
            "allele_count": alt,
            "allele_number": 2 * called,
            "homozygote_count": (g == 2).sum(axis=0),
            "homozygote_ref_count": (g == 0).sum(axis=0),
            "n_samples": called,
            "allele_frequency": np.where(called > 0, alt / np.maximum(2 * called, 1), np.nan),
        }
    )


def write_private(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:  # Hail writes block gzip; plain gzip reads the same
        frame.to_csv(handle, sep="\t", index=False, na_rep="NA")
    return path


def read_private(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", compression="gzip")


QC_COUNTS = {
    "samples_genotyped": 0,
    "samples_with_phenotypes": 0,
    "phenotype_rows_without_genotypes": 0,
    "samples_low_call_rate": 0,
    "samples_sex_mismatch": 0,
    "samples_passed": 0,
    "sex_check": "done",
    "variants_input": 0,
    "variants_low_call_rate": 3,
    "variants_monomorphic": 2,
    "variants_hwe": 1,
    "variants_low_maf": 4,
    "variants_passed_af": 0,
    "variants_passed_gwas": 0,
    "mean_sample_call_rate": 0.99,
    "mean_variant_call_rate": 0.99,
}


@dataclass(frozen=True)
class Inputs:
    gwas: Path
    af: Path
    design: Path
    qc_counts: Path
    samples: Path


def write_inputs(cohort: Cohort, directory: Path, binary: bool) -> Inputs:
    directory.mkdir(parents=True, exist_ok=True)
    n = len(cohort.sample_ids)
    cases = int((cohort.phenotype == 1).sum()) if binary else None
    design = {
        "n_samples": n,
        "n_parameters": 2 + cohort.covariates.shape[1],
        "n_cases": cases,
        "n_controls": None if cases is None else n - cases,
    }
    (directory / "design.json").write_text(json.dumps(design))
    counts = {
        **QC_COUNTS,
        "samples_genotyped": n,
        "samples_with_phenotypes": n,
        "samples_passed": n,
        "variants_input": len(cohort.positions) + 10,
    }
    (directory / "qc_counts.json").write_text(json.dumps(counts))
    (directory / "samples.txt").write_text("".join(s + "\n" for s in cohort.sample_ids))
    return Inputs(
        write_private(gwas_table(cohort, binary), directory / "gwas.tsv.bgz"),
        write_private(af_table(cohort), directory / "af.tsv.bgz"),
        directory / "design.json",
        directory / "qc_counts.json",
        directory / "samples.txt",
    )


def make_node(directory: Path, **disclosure: object) -> NodeSettings:
    document = {
        "node_id": "fi",
        "genotypes": {"format": "vcf", "path": "g.vcf.bgz"},
        "phenotypes": "p.tsv",
        "disclosure": disclosure,
    }
    return node_from_dict(document, directory)


def make_study(
    study_id: str,
    traits: tuple[str, ...] = ("trait",),
    binary: bool = False,
    covariates: int = 1,
    **disclosure: object,
) -> StudySpec:
    analyses = [{"id": "af", "type": "allele_frequency"}]
    analyses += [
        {
            "id": f"gwas_{trait}",
            "type": "gwas",
            "trait": trait,
            "trait_type": "binary" if binary else "quantitative",
            "covariates": [f"c{i}" for i in range(covariates)],
        }
        for trait in traits
    ]
    return study_from_dict({"study_id": study_id, "analyses": analyses, "disclosure": disclosure})


def release_gwas_of(
    node: NodeSettings, study: StudySpec, inputs: Inputs, trait: str, out_dir: Path, audit_log: Path
) -> Path:
    from federation.release.tables import release_gwas

    analysis = study.gwas_analysis(f"gwas_{trait}")
    return release_gwas(
        node,
        study,
        analysis,
        inputs.gwas,
        inputs.design,
        inputs.qc_counts,
        out_dir / f"{analysis.id}.tsv.gz",
        audit_log,
        samples_path=inputs.samples,
    )


def release_af_of(
    node: NodeSettings, study: StudySpec, inputs: Inputs, out_dir: Path, audit_log: Path
) -> Path:
    from federation.release.tables import release_allele_frequencies

    return release_allele_frequencies(
        node,
        study,
        "af",
        inputs.af,
        inputs.qc_counts,
        out_dir / "af.tsv.gz",
        audit_log,
        samples_path=inputs.samples,
    )
