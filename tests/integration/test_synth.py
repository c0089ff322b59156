"""`federation synth` with real Hail, checked by independent tools (plink2, bcftools, tabix).

Checks: the file layout, VCF and PLINK encode the same genotypes, chromosomes 1-22 with
increasing positions, truth.json agrees with the files, the same seed gives the same bytes,
and the planted variants really drive the traits (plink2 --glm).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from federation.sandbox.synth import GRCH38_AUTOSOME_LENGTHS, NodeCohort, SynthResult, synthesize

pytestmark = [
    pytest.mark.integration,
]
GENOME_WIDE = 5e-8
COHORT_FILES = (
    "genotypes.vcf.bgz",
    "genotypes.vcf.bgz.tbi",
    "genotypes.bed",
    "genotypes.bim",
    "genotypes.fam",
    "phenotypes.tsv",
)


def run(*command: str | Path) -> str:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{command[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    return done.stdout


def plink2(out: Path, *arguments: str | Path) -> None:
    run("plink2", "--memory", "1500", "--threads", "2", *arguments, "--out", out)


def truth_of(result: SynthResult) -> dict:
    return json.loads(result.truth.read_text())


def bim(cohort: NodeCohort) -> pd.DataFrame:
    names = ["contig", "variant_id", "cm", "position", "alt", "ref"]
    return pd.read_csv(f"{cohort.plink_prefix}.bim", sep="\t", names=names)


def phenotypes(cohort: NodeCohort) -> pd.DataFrame:
    return pd.read_csv(cohort.phenotypes, sep="\t", dtype={"sample_id": str})


def plink_phenotypes(frames: list[pd.DataFrame], path: Path) -> Path:
    """plink2's phenotype/covariate file: #IID first, cases 2 and controls 1."""
    frame = pd.concat(frames).rename(columns={"sample_id": "#IID"})
    frame.assign(binary_trait=frame.binary_trait + 1).to_csv(path, sep="\t", index=False)
    return path


def digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# --- layout ----------------------------------------------------------------------------


def test_every_node_has_vcf_plink_and_phenotypes_and_nothing_else(synthetic_federation):
    out = synthetic_federation.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["ee", "fi", "nl", "truth.json"]
    assert [c.node_id for c in synthetic_federation.nodes] == ["fi", "ee", "nl"]
    for cohort in synthetic_federation.nodes:
        assert sorted(p.name for p in cohort.directory.iterdir()) == sorted(COHORT_FILES)
    assert not list(out.parent.glob(".*partial*"))  # the staging directory is gone


def test_samples_are_unique_and_agree_across_files(synthetic_federation):
    seen: list[str] = []
    for cohort in synthetic_federation.nodes:
        table = phenotypes(cohort)
        assert list(table.columns) == ["sample_id", "age", "sex", "quant_trait", "binary_trait"]
        assert len(table) == cohort.n_samples
        assert table.sample_id.str.startswith(f"{cohort.node_id}_").all()
        fam = pd.read_csv(f"{cohort.plink_prefix}.fam", sep=r"\s+", header=None, dtype=str)
        assert fam[1].tolist() == table.sample_id.tolist()
        assert (fam[4].astype(int) == np.where(table.sex == 1, 1, 2)).all()  # PLINK: 1 male
        header = run("bcftools", "query", "-l", cohort.vcf).split()
        assert header == table.sample_id.tolist()
        assert table.age.between(30, 80).all() and set(table.sex) == {0, 1}
        assert 0.3 <= table.binary_trait.mean() <= 0.5
        seen += table.sample_id.tolist()
    assert len(seen) == len(set(seen))


def test_variants_cover_chromosomes_1_to_22_with_increasing_positions(synthetic_cohort):
    (cohort,) = synthetic_cohort.nodes
    table = bim(cohort)
    assert len(table) == 5_000
    assert table.contig.unique().tolist() == [f"chr{i}" for i in range(1, 23)]
    for number, length in enumerate(GRCH38_AUTOSOME_LENGTHS, start=1):
        positions = table.position[table.contig == f"chr{number}"].to_numpy()
        assert (np.diff(positions) > 0).all() and positions.max() < length
    assert (table.ref != table.alt).all()
    assert set(table.ref) | set(table.alt) == {"A", "C", "G", "T"}
    expected = table.contig.str.removeprefix("chr") + ":" + table.position.astype(str)
    assert (table.variant_id == expected + ":" + table.ref + ":" + table.alt).all()


def test_vcf_is_grch38_bgzipped_and_tabix_indexed(synthetic_cohort):
    (cohort,) = synthetic_cohort.nodes
    header = run("bcftools", "view", "-h", cohort.vcf)
    assert "##contig=<ID=chr1,length=248956422,assembly=GRCh38>" in header
    if shutil.which("tabix"):
        assert run("tabix", "-l", cohort.vcf).split() == [f"chr{i}" for i in range(1, 23)]
    on_chr21 = run("bcftools", "view", "-H", "-r", "chr21", cohort.vcf).splitlines()
    table = bim(cohort)
    assert len(on_chr21) == (table.contig == "chr21").sum() > 0
    first = on_chr21[0].split("\t")
    row = table[table.variant_id == first[2]].iloc[0]
    assert (first[0], int(first[1]), first[3], first[4]) == (
        "chr21",
        row.position,
        row.ref,
        row.alt,
    )


def test_vcf_and_plink_encode_the_same_genotypes(synthetic_cohort, tmp_path):
    (cohort,) = synthetic_cohort.nodes
    plink2(tmp_path / "from_vcf", "--vcf", cohort.vcf, "--freq", "counts", "--missing")
    plink2(tmp_path / "from_bed", "--bfile", cohort.plink_prefix, "--freq", "counts", "--missing")
    for suffix in (".acount", ".vmiss", ".smiss"):
        from_vcf = pd.read_csv(tmp_path / f"from_vcf{suffix}", sep="\t")
        from_bed = pd.read_csv(tmp_path / f"from_bed{suffix}", sep="\t")
        if "#FID" in from_bed:  # the .fam has FID 0; the VCF has no family IDs
            from_bed = from_bed.drop(columns="#FID").rename(columns={"IID": "#IID"})
        pd.testing.assert_frame_equal(from_vcf, from_bed)


# --- truth.json ------------------------------------------------------------------------


def test_truth_describes_the_files(synthetic_federation, tmp_path):
    truth = truth_of(synthetic_federation)
    assert truth["seed"] == 12 and truth["reference_genome"] == "GRCh38"
    assert [(n["node_id"], n["n_samples"]) for n in truth["nodes"]] == [
        ("fi", 1000),
        ("ee", 1400),
        ("nl", 1200),
    ]
    assert all(0.01 <= n["fst"] <= 0.05 for n in truth["nodes"])
    causal = truth["causal_variants"]
    assert len(causal) == 5 == len({c["chromosome"] for c in causal})
    assert set(truth["covariate_effects"]) == {"age_centred_at", "quant_trait", "binary_trait"}
    for cohort in synthetic_federation.nodes:
        table = bim(cohort).set_index("variant_id")
        plink2(tmp_path / cohort.node_id, "--bfile", cohort.plink_prefix, "--freq")
        freq = pd.read_csv(tmp_path / f"{cohort.node_id}.afreq", sep="\t").set_index("ID")
        for variant in causal:
            row = table.loc[variant["variant_id"]]
            assert (
                row.contig == f"chr{variant['chromosome']}" and row.position == variant["position"]
            )
            assert (row.ref, row.alt) == (variant["ref"], variant["alt"])
            assert 0.2 <= variant["ancestral_alt_af"] <= 0.5
            observed = freq.loc[variant["variant_id"], "ALT_FREQS"]
            assert abs(observed - variant["node_alt_af"][cohort.node_id]) < 0.06


def test_low_call_rate_samples_and_variants_are_where_truth_says(synthetic_cohort, tmp_path):
    (cohort,) = synthetic_cohort.nodes
    low = truth_of(synthetic_cohort)["low_call_rate"]
    assert low["missing_rate"] == 0.25 and len(low["samples"]) == 6 and len(low["variants"]) == 25
    plink2(tmp_path / "missing", "--bfile", cohort.plink_prefix, "--missing")
    samples = pd.read_csv(tmp_path / "missing.smiss", sep="\t").set_index("IID")["F_MISS"]
    variants = pd.read_csv(tmp_path / "missing.vmiss", sep="\t").set_index("ID")["F_MISS"]
    assert samples[low["samples"]].between(0.2, 0.3).all()
    assert samples.drop(low["samples"]).max() < 0.05
    assert variants[low["variants"]].between(0.15, 0.35).all()
    assert variants.drop(low["variants"]).between(0.0, 0.06).all()
    assert 0.005 < variants.drop(low["variants"]).median() < 0.02  # 1%, more on low samples


# --- determinism -----------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_and_another_seed_other_data(synthetic_cohort, tmp_path):
    seed = truth_of(synthetic_cohort)["seed"]
    again = tmp_path / "again"
    command = [sys.executable, "-m", "federation", "synth", "--out", again, "--nodes", "1"]
    options = ["--samples-per-node", "1200", "--variants", "5000", "--missing-rate", "0.01"]
    done = subprocess.run(
        [str(part) for part in [*command, *options, "--seed", str(seed)]],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "synth: fi: 1200 samples, 5000 variants" in done.stderr
    # The JVM may log to stdout too; the command's own output is the last line.
    assert done.stdout.strip().splitlines()[-1] == str(again / "truth.json")
    assert digests(again) == digests(synthetic_cohort.out_dir)

    other = synthesize(tmp_path / "other", 1, 1200, 5_000, seed=seed + 1, missing_rate=0.01)
    first, second = digests(synthetic_cohort.out_dir), digests(other.out_dir)
    assert first.keys() == second.keys()
    differing = {name for name in first if first[name] != second[name]}
    assert {"fi/genotypes.vcf.bgz", "fi/genotypes.bed", "fi/phenotypes.tsv"} <= differing
    assert (
        bim(other.nodes[0]).variant_id.tolist()
        != bim(synthetic_cohort.nodes[0]).variant_id.tolist()
    )


def test_existing_cohort_is_refused_without_force(synthetic_cohort):
    from federation.cli import main

    out = str(synthetic_cohort.out_dir)
    assert main(["synth", "--out", out, "--nodes", "1"]) == 2


# --- the planted signal ----------------------------------------------------------------


def lambda_gc(p_values: np.ndarray) -> float:
    return float(np.median(stats.chi2.isf(p_values, 1)) / stats.chi2.ppf(0.5, 1))


def quant_gwas(cohort: NodeCohort, work: Path) -> pd.DataFrame:
    """plink2 --glm of quant_trait on each variant, adjusted for age and sex."""
    pheno = plink_phenotypes([phenotypes(cohort)], work / f"{cohort.node_id}.pheno.tsv")
    plink2(
        work / cohort.node_id,
        "--bfile",
        cohort.plink_prefix,
        "--pheno",
        pheno,
        "--pheno-name",
        "quant_trait",
        "--covar",
        pheno,
        "--covar-name",
        "age",
        "sex",
        "--glm",
        "hide-covar",
    )
    return pd.read_csv(work / f"{cohort.node_id}.quant_trait.glm.linear", sep="\t").set_index("ID")


def test_causal_variants_drive_the_quantitative_trait(synthetic_cohort, tmp_path):
    result = quant_gwas(synthetic_cohort.nodes[0], tmp_path)
    truth = truth_of(synthetic_cohort)
    causal = [variant["variant_id"] for variant in truth["causal_variants"]]
    assert (result.loc[causal, "P"] < GENOME_WIDE).all(), result.loc[causal]
    for variant in truth["causal_variants"]:
        row = result.loc[variant["variant_id"]]
        sign = 1 if variant["alt"] == row.A1 else -1
        assert abs(sign * row.BETA - variant["beta_quant_trait"]) < 0.15
    null = result.drop(causal).P.dropna().to_numpy()
    assert 0.9 <= lambda_gc(null) <= 1.1
    assert (null < GENOME_WIDE).sum() == 0


def test_causal_variants_are_genome_wide_significant_in_every_node(synthetic_federation, tmp_path):
    causal = [v["variant_id"] for v in truth_of(synthetic_federation)["causal_variants"]]
    for cohort in synthetic_federation.nodes:
        result = quant_gwas(cohort, tmp_path)
        assert (result.loc[causal, "P"] < GENOME_WIDE).all(), (cohort.node_id, result.loc[causal])
        assert 0.9 <= lambda_gc(result.drop(causal).P.dropna().to_numpy()) <= 1.1


def test_covariates_shift_the_traits(synthetic_federation):
    table = pd.concat(phenotypes(cohort) for cohort in synthetic_federation.nodes)
    effects = truth_of(synthetic_federation)["covariate_effects"]["quant_trait"]
    design = np.column_stack([np.ones(len(table)), table.age, table.sex])
    fitted, *_ = np.linalg.lstsq(design, table.quant_trait, rcond=None)
    assert abs(fitted[1] - effects["age_per_year"]) < 0.01
    assert abs(fitted[2] - effects["sex_male"]) < 0.2
    assert table.groupby("sex").binary_trait.mean().diff().iloc[-1] > 0.03


def test_causal_variants_drive_the_binary_trait_in_the_pooled_cohort(
    synthetic_federation, tmp_path
):
    nodes = synthetic_federation.nodes
    pooled = tmp_path / "pooled.vcf.gz"
    run("bcftools", "merge", "-Oz", "-o", pooled, *(cohort.vcf for cohort in nodes))
    pheno = plink_phenotypes([phenotypes(cohort) for cohort in nodes], tmp_path / "pheno.tsv")
    plink2(
        tmp_path / "gwas",
        "--vcf",
        pooled,
        "--pheno",
        pheno,
        "--pheno-name",
        "binary_trait",
        "--covar",
        pheno,
        "--covar-name",
        "age",
        "sex",
        "--glm",
        "hide-covar",
    )
    result = pd.read_csv(tmp_path / "gwas.binary_trait.glm.logistic.hybrid", sep="\t")
    result = result.set_index("ID")
    truth = truth_of(synthetic_federation)
    for variant in truth["causal_variants"]:
        row = result.loc[variant["variant_id"]]
        assert row.P < GENOME_WIDE, row
        sign = 1 if variant["alt"] == row.A1 else -1
        assert abs(sign * np.log(row.OR) - variant["log_or_binary_trait"]) < 0.25
