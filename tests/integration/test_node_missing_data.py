"""Real node runs on messy phenotypes and missing calls, checked against plink2.

One run on the 'fi' node of the shared synthetic federation (1,000 samples, no missing calls)
with the phenotype table a real cohort would have: a covariate missing (NA, '.', empty) for
10 samples, PLINK's -9 for 5 trait values, sex in an `isFemale` true/false column, a boolean
covariate; plus an analysis whose covariate nobody has, and one without age, whose cohort
differs from the allele-frequency cohort by the 5 samples with -9 only (a cell of 5: the
guard must refuse it, whichever release comes first). A second run on
the shared 1,200-sample cohort with 1% missing calls uses `missing_genotypes: exclude` and
leaves 30 samples out for a missing covariate: it must be released (the left-out samples'
own no-calls, not the cohort's, bound their cell) and agree with plink2 on every variant,
those with missing calls included, for the linear model and, in the same study, the
logistic (Wald) one against plink2's plain logistic `--glm` (no Firth fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import node_pipeline as anchor
from federation.sandbox.synth import SynthResult
from tests.integration.node_runs import NodeRun, assert_agrees_with_plink2, plink2_glm, run_node

pytestmark = [pytest.mark.integration]

WITHHELD_EXIT = 3  # `federation node run-pipeline`: an analysis was withheld
MISSING_AGE = ["NA", ".", ""]  # how the 10 samples' missing age is written, in turn
N_MISSING_AGE, N_MINUS_NINE = 10, 5
CODING = {
    "quantitative_missing": [-9],
    "sex_column": "isFemale",
    "sex_coding": {"true": "female", "false": "male"},
}


def _messy_table(phenotypes: Path, out: Path) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The cohort's phenotypes rewritten as a real node's table; returns the values plink2
    gets (NaN for missing, 0/1 for booleans) and which samples lack what."""
    table = pd.read_csv(phenotypes, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    rng = np.random.default_rng(16)
    order = rng.permutation(table.index.to_numpy())
    groups = {
        "age": list(order[:N_MISSING_AGE]),
        "minus_nine": list(order[N_MISSING_AGE : N_MISSING_AGE + N_MINUS_NINE]),
    }
    smoker = rng.random(len(table)) < 0.3
    truth = pd.DataFrame(
        {
            anchor.QUANT_TRAIT: table[anchor.QUANT_TRAIT].where(
                ~table.index.isin(groups["minus_nine"])
            ),
            "age": table["age"].where(~table.index.isin(groups["age"])),
            "sex": table["sex"].astype(float),
            "smoker": smoker.astype(float),
        },
        index=table.index,
    )
    text = pd.DataFrame(index=table.index)
    text[anchor.QUANT_TRAIT] = table[anchor.QUANT_TRAIT].map(lambda v: f"{v:.17g}")
    text.loc[groups["minus_nine"], anchor.QUANT_TRAIT] = "-9"
    text["age"] = table["age"].map(lambda v: f"{v:.17g}")
    for i, sample in enumerate(groups["age"]):
        text.loc[sample, "age"] = MISSING_AGE[i % len(MISSING_AGE)]
    text["isFemale"] = np.where(table["sex"] == 0, "true", "false")
    text["smoker"] = np.where(smoker, "TRUE", "FALSE")
    text["nobody"] = "NA"  # a covariate no sample has
    text.reset_index().to_csv(out, sep="\t", index=False)  # no `sex` column: isFemale only
    return truth, groups


def _gwas(analysis_id: str, covariates: list[str], **options: str) -> dict:
    return {
        "id": analysis_id,
        "type": "gwas",
        "trait": anchor.QUANT_TRAIT,
        "trait_type": "quantitative",
        "covariates": covariates,
        **options,
    }


@dataclass(frozen=True)
class Messy:
    run: NodeRun  # allele frequencies, 'quant' and 'nobody'
    guard: NodeRun  # a later study on the same node: 'guard' only
    truth: pd.DataFrame
    plink_prefix: Path


@pytest.fixture(scope="module")
def messy(synthetic_federation: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Messy:
    cohort = synthetic_federation.nodes[0]
    root = tmp_path_factory.mktemp("messy")
    truth, _ = _messy_table(cohort.phenotypes, root / "phenotypes.tsv")
    genotypes = {"format": "plink", "path": str(cohort.plink_prefix)}
    analyses = [
        {"id": "af", "type": "allele_frequency"},
        _gwas("quant", ["age", "sex", "smoker"]),
        _gwas("nobody", ["age", "nobody"]),
    ]
    runs = [
        # Two studies in turn on one node (one privacy ledger), so the releases' order is fixed.
        run_node(
            root,
            cohort.node_id,
            genotypes,
            root / "phenotypes.tsv",
            {"study_id": study_id, "analyses": chosen},
            phenotype_coding=CODING,
        )
        for study_id, chosen in (
            ("messy", analyses),
            ("guard", [_gwas("guard", ["sex", "smoker"])]),
        )
    ]
    return Messy(runs[0], runs[1], truth, cohort.plink_prefix)


def test_missing_covariates_and_minus_nine_traits_leave_the_samples_out_and_match_plink2(messy):
    run, truth, plink_prefix = messy.run, messy.truth, messy.plink_prefix
    dropped = N_MISSING_AGE + N_MINUS_NINE
    assert run.outcome("quant")["outcome"] == "released"
    sidecar = run.sidecar("quant")
    assert sidecar["n"] == 1000 - dropped
    assert sidecar["samples_excluded"]["samples_dropped"] == dropped  # 15: a multiple of 5
    assert sidecar["missing_genotypes"] == "mean"
    [audited] = [
        e for e in run.audit() if e["event"] == "analysis_samples" and e["analysis"] == "quant"
    ]
    assert audited["samples_missing_covariates"] == N_MISSING_AGE
    assert audited["samples_missing_trait"] == N_MINUS_NINE
    # plink2 is given NA where the table had NA, '.', '' or -9, sex from isFemale and the
    # boolean as 0/1: it must drop the same 15 samples and fit the same model.
    plink2 = plink2_glm(
        plink_prefix, truth, anchor.QUANT_TRAIT, ["age", "sex", "smoker"], run.root / "plink2"
    )
    compared = assert_agrees_with_plink2(run.table("quant"), plink2)
    assert (compared.plink2_obs == 1000 - dropped).all()


def test_sex_is_read_from_the_configured_column(messy):
    run = messy.run
    # Found (the synthetic cohort has no chrX, so the check itself cannot run).
    assert run.qc_counts()["sex_check"] == "skipped: fewer than 100 chrX variants"
    assert "sex" in run.sidecar("quant")["covariates"]


def test_an_analysis_with_no_usable_sample_is_refused_as_such_and_the_run_exits_non_zero(messy):
    run = messy.run
    assert run.exit_code == WITHHELD_EXIT
    assert run.outcome("nobody") == {
        "analysis": "nobody",
        "outcome": "withheld",
        "category": "no_usable_data",
    }
    assert not (run.released / "nobody.tsv.gz").exists()


def test_a_cohort_five_samples_short_of_the_allele_frequency_cohort_is_refused(messy):
    """The attacker's difference of the 'af' and 'guard' cohorts is the 5 samples with -9:
    below min_cell_size 10, so the cell guard refuses 'guard'."""
    run = messy.guard
    assert run.exit_code == WITHHELD_EXIT
    assert run.outcome("guard")["category"] == "overlaps_earlier_releases"
    assert not (run.released / "guard.tsv.gz").exists()
    [withheld] = [
        e for e in run.audit() if e["event"] == "release_withheld" and "guard" in e["release"]
    ]
    rule = next(r for r in withheld["rules"] if r["rule"] == "min_cell_size")
    assert rule["observed"] == N_MINUS_NINE


def test_relatedness_ran_on_the_qc_cohort_and_found_no_relatives(messy):
    counts = messy.run.qc_counts()
    assert counts["relatedness"] == "done"  # ~4,600 common variants: above the minimum
    assert counts["kinship_variants"] >= counts["min_kinship_variants"]
    assert counts["relatedness_method"] == "king_robust" and counts["kinship_max"] == 0.0884
    assert counts["samples_related"] == 0
    assert messy.run.sidecar("quant")["qc"]["samples_related"] == 0


# ------------------------------------------- missing calls: exclude, and the split-off cell

N_LEFT_OUT = 30


def test_excluding_missing_calls_matches_plink2_linear_and_logistic_and_bounds_the_left_out_cell(
    synthetic_cohort: SynthResult, tmp_path: Path
) -> None:
    cohort = synthetic_cohort.nodes[0]
    table = pd.read_csv(cohort.phenotypes, sep="\t", dtype={"sample_id": str})
    rng = np.random.default_rng(30)
    left_out = rng.choice(len(table), N_LEFT_OUT, replace=False)
    table.loc[left_out, "age"] = np.nan
    table.to_csv(tmp_path / "phenotypes.tsv", sep="\t", index=False, na_rep="NA")
    genotypes = {"format": "plink", "path": str(cohort.plink_prefix)}
    phenotypes = tmp_path / "phenotypes.tsv"
    # The allele frequencies first (their own study), then the GWAS that leaves 30 out.
    first = {"study_id": "calls-af", "analyses": [{"id": "af", "type": "allele_frequency"}]}
    assert run_node(tmp_path / "run", cohort.node_id, genotypes, phenotypes, first).exit_code == 0
    gwas = _gwas("quant", list(anchor.COVARIATES), missing_genotypes="exclude")
    logistic = {
        **_gwas("binary", list(anchor.COVARIATES), missing_genotypes="exclude", test="wald"),
        "trait": anchor.BINARY_TRAIT,
        "trait_type": "binary",
    }
    study = {"study_id": "calls", "analyses": [gwas, logistic]}
    run = run_node(tmp_path / "run", cohort.node_id, genotypes, phenotypes, study)
    assert run.exit_code == 0, (run.outcome("quant"), run.outcome("binary"))
    released = run.table("quant")
    sidecar = run.sidecar("quant")
    assert sidecar["missing_genotypes"] == "exclude"
    qc_cohort = run.qc_samples()
    # Left out of the analysis: those without age that passed QC (a few may have failed it).
    dropped = set(table.sample_id[left_out]) & set(qc_cohort)
    analysed = len(qc_cohort) - len(dropped)
    assert sidecar["n"] == analysed and len(dropped) >= 25
    with_missing = released[released.n < analysed]
    assert len(with_missing) > 0.25 * len(released), "too few variants with missing calls"

    plink2 = plink2_glm(
        cohort.plink_prefix,
        table.set_index("sample_id"),
        anchor.QUANT_TRAIT,
        list(anchor.COVARIATES),
        tmp_path / "plink2",
        keep=qc_cohort,
    )
    compared = assert_agrees_with_plink2(released, plink2)  # N per row = plink2's OBS_CT
    assert (compared.n < analysed).sum() >= 0.9 * len(with_missing)

    # The logistic model, same samples, same rule: each variant over its called samples.
    binary = run.table("binary")
    assert run.sidecar("binary")["missing_genotypes"] == "exclude"
    plink2_logistic = plink2_glm(
        cohort.plink_prefix,
        table.set_index("sample_id"),
        anchor.BINARY_TRAIT,
        list(anchor.COVARIATES),
        tmp_path / "plink2-logistic",
        keep=qc_cohort,
        model="logistic",
    )
    compared = assert_agrees_with_plink2(binary, plink2_logistic, logistic=True)
    assert (compared.n < analysed).sum() >= 0.25 * len(compared), "too few with missing calls"

    # The guard: the 30 left-out samples form a cell against the AF cohort. Its bound is the
    # most of them uncalled at one variant, far below the AF rows' worst no-calls. Both GWAS
    # leave the same samples out; whichever is released first splits the cell off (the
    # release steps run side by side, in no fixed order), the other adds no new cell.
    events = {e["release"]: e for e in run.audit() if e["event"] == "release_written"}

    def observed(analysis: str, rule: str) -> float:
        (outcome,) = (r for r in events[f"analysis '{analysis}'"]["rules"] if r["rule"] == rule)
        return outcome["observed"]

    inherited = len(dropped) - observed("af", "max_missing_calls")
    smallest = min(observed(gwas, "min_cell_size") for gwas in ("quant", "binary"))
    print(f"\nleft-out cell: {smallest} effective (inherited bound would give {inherited:g})")
    assert inherited < 10 <= smallest < len(dropped)
