"""Imputed inputs (VCF dosages, BGEN) and chrX on a real node run, against plink2.

One synthetic node ('fi', 1,000 samples, 2,000 autosomal variants and 300 chrX variants,
45 of them in each PAR, plus 5 chrY and 5 MT ones) is written with hard calls (PLINK),
imputed dosages (VCF GT:DS:GP with INFO/R2) and a BGEN of the same probabilities. The real
Snakemake pipeline runs on each, and plink2 2.00a3.5 reads the very same files:

- VCF dosages: `--vcf dosage=DS`. The synthetic dosages lie on plink2's 1/16384 grid, so
  both tools regress on nearly identical numbers (Hail reads DS as a 32-bit float): SE and
  -log10 p agree to 1e-4 relative and beta to 1e-4 of max(|beta|, SE) everywhere, chrX included (`--xchr-model 2`, males 0/2; `--split-par hg38`; `no-x-sex`,
  since the study's covariates already hold sex).
- BGEN: `--bgen ref-first`. BGEN holds 8-bit probabilities (k/255) that plink2 rounds to
  its 1/16384 grid (at most 3e-5 per dosage), so where a beta is near zero its relative
  difference can exceed 1e-4 from that rounding alone: beta is held to 1e-4 of
  max(|beta|, SE) there, SE and p to 1e-4 relative.
- Logistic (Wald) on the VCF dosages, against plink2's plain logistic `--glm` (`no-firth`:
  no Firth fallback, so every compared row is plink2's unpenalised fit, as ours): SE and
  -log10 p to 1e-4 relative, beta to 1e-4 of max(|beta|, SE) (plink2's logistic IRLS runs
  in single precision as well as reading 32-bit DS: a near-zero beta's relative difference
  says nothing, see `node_runs.beta_difference`).
- The INFO filter removes exactly the variants below the study's floor: from the VCF's
  INFO/R2 (read here from the file's text) and, for the BGEN, MaCH r² as
  `plink2 --freq cols=+machr2` computes it.
- Hard calls with chrX: regression and allele counts equal plink2's chrX model and
  `--freq` (AN = 2 x females + males off the PARs); PAR variants count two alleles for
  everyone; chrY and MT are not analysed.
- Relatedness is left on: with ~1,800 common autosomal variants for 1,000 samples it is
  skipped (too few to tell second-degree kinship from noise), stated in the sidecar and the
  audit log, so plink2 and the node analyse the same samples.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import node_pipeline as anchor
from federation import sumstats
from federation.genome import in_x_nonpar, in_x_par
from federation.pipeline.runs import PipelineRun
from federation.pipeline.snakemake import run_node_pipeline
from federation.sandbox.synth import Y_AND_MT_VARIANTS, NodeCohort, SynthResult, synthesize
from tests.integration.node_runs import beta_difference
from tests.integration.plink2_checks import (
    RELATIVE,
    assert_se_and_p,
    worst,
)

pytestmark = [pytest.mark.integration]

SEED = 16
N_SAMPLES, N_AUTOSOMAL, N_X = 1000, 2000, 300
INFO_MIN = 0.5
# machr2 within this of the floor could fall either side of it by plink2's dosage rounding.
INFO_ROUNDING_MARGIN = 1e-3


@dataclass(frozen=True)
class NodeRun:
    run: PipelineRun
    plink2_dir: Path

    def released(self, analysis: str) -> pd.DataFrame:
        return sumstats.read_table(self.run.released_dir / f"{analysis}.tsv.gz")

    def qc(self) -> dict:
        return sumstats.read_sidecar(self.run.released_dir / "af.tsv.gz")["qc"]

    def audit(self) -> list[dict]:
        lines = (self.plink2_dir.parent / "work" / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def plink2(self, suffix: str) -> pd.DataFrame:
        table = anchor.read_plink2_table(self.plink2_dir / f"out.{suffix}")
        # --split-par names PAR variants PAR1/PAR2; they are chrX positions.
        table["chromosome"] = table.chromosome.replace({"PAR1": "X", "PAR2": "X"})
        return table


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return synthesize(
        tmp_path_factory.mktemp("imputed") / "cohort",
        nodes=1,
        samples_per_node=N_SAMPLES,
        variants=N_AUTOSOMAL,
        seed=SEED,
        progress=lambda line: None,
        x_variants=N_X,
        imputed=True,
    )


def _plink2_sample_files(source: list[str], node: NodeCohort, out_dir: Path) -> list[str]:
    """--pheno/--covar/--update-sex arguments with the sample IDs as plink2 reads them from
    `source` (its own .psam: FID and IID, or IID alone)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _plink2([*source, "--make-just-psam"], out_dir / "ids")
    psam = pd.read_csv(out_dir / "ids.psam", sep="\t", dtype=str)
    id_columns = ["#FID", "IID"] if psam.columns[0] == "#FID" else ["#IID"]
    iid = id_columns[-1]
    table = pd.read_csv(node.phenotypes, sep="\t", dtype={"sample_id": str})
    table = psam[id_columns].merge(table, left_on=iid, right_on="sample_id", validate="1:1")
    assert len(table) == len(psam)
    pheno, covar, sex = (out_dir / name for name in ("pheno.tsv", "covar.tsv", "sex.tsv"))
    table[[*id_columns, anchor.QUANT_TRAIT, anchor.BINARY_TRAIT]].to_csv(
        pheno, sep="\t", index=False
    )
    table[[*id_columns, *anchor.COVARIATES]].to_csv(covar, sep="\t", index=False)
    # plink2 codes sex 1 = male, 2 = female; the phenotype table 1 = male, 0 = female.
    table["SEX"] = np.where(table.sex == 1, 1, 2)
    table[[*id_columns, "SEX"]].to_csv(sex, sep="\t", index=False)
    return ["--pheno", str(pheno), "--covar", str(covar), "--update-sex", str(sex)]


def _plink2(arguments: list[str], out: Path) -> None:
    command = [anchor.PLINK2, *arguments, "--threads", "2", "--memory", "2000", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"plink2 failed:\n{done.stdout[-3000:]}"


def _run_plink2(source: list[str], samples: list[str], out_dir: Path) -> None:
    arguments = [
        *source,
        *samples,
        "--split-par",
        "hg38",
        "--freq",
        "counts",
        "cols=chrom,pos,ref,alt,altfreq,machr2,nobs",
        "--1",  # the binary trait is coded 0 = control, 1 = case
        "--glm",
        "no-x-sex",  # sex is already one of the study's covariates
        "no-firth",  # plain logistic regression everywhere, as the node's Wald test
        "hide-covar",
        "log10",
        "cols=chrom,pos,ref,alt,a1freq,nobs,beta,se,tz,p,err",
        "--xchr-model",
        "2",
    ]
    _plink2(arguments, out_dir / "out")


QUANT = {
    "id": "quant",
    "type": "gwas",
    "trait": anchor.QUANT_TRAIT,
    "trait_type": "quantitative",
    "covariates": list(anchor.COVARIATES),
}
BINARY = {
    "id": "binary",
    "type": "gwas",
    "trait": anchor.BINARY_TRAIT,
    "trait_type": "binary",
    "test": "wald",
    "covariates": list(anchor.COVARIATES),
}


def _node_run(
    tmp_path_factory: pytest.TempPathFactory,
    node: NodeCohort,
    genotypes: dict,
    plink2_source: list[str],
    qc: dict | None = None,
    gwas: tuple[dict, ...] = (QUANT,),
) -> NodeRun:
    """The one builder of this module's node runs: `genotypes` through the real pipeline
    (allele frequencies and the `gwas` analyses, the study's `qc`), and plink2 on
    `plink2_source`, the same file, with the same samples, traits and covariates."""
    root = tmp_path_factory.mktemp(genotypes.get("dosage_field", genotypes["format"]).lower())
    config = {
        "node_id": node.node_id,
        "genotypes": genotypes,
        "phenotypes": str(node.phenotypes),
        "reference_genome": "GRCh38",
        "work_dir": str(root / "work"),
        "results_dir": str(root / "results"),
        "hail": {"master": "local[2]", "driver_memory": "4g"},
    }
    study = {
        "study_id": f"dosage-{root.name}",
        "reference_genome": "GRCh38",
        "qc": qc or {},
        "analyses": [{"id": "af", "type": "allele_frequency"}, *gwas],
    }
    (root / "node.yaml").write_text(yaml.safe_dump(config))
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    run = run_node_pipeline(root / "node.yaml", root / "study.yaml")
    plink2_dir = root / "plink2"
    _run_plink2(plink2_source, _plink2_sample_files(plink2_source, node, plink2_dir), plink2_dir)
    return NodeRun(run, plink2_dir)


@pytest.fixture(scope="module")
def vcf_run(cohort: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> NodeRun:
    node = cohort.nodes[0]
    return _node_run(
        tmp_path_factory,
        node,
        {"format": "vcf", "path": str(node.imputed_vcf), "dosage_field": "DS"},
        ["--vcf", str(node.imputed_vcf), "dosage=DS"],
        {"info_min": INFO_MIN},
        gwas=(QUANT, BINARY),
    )


@pytest.fixture(scope="module")
def bgen_run(cohort: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> NodeRun:
    """chrX left out here (excluded_chromosomes): machr2 of hemizygous males is plink2's own."""
    node = cohort.nodes[0]
    return _node_run(
        tmp_path_factory,
        node,
        {"format": "auto", "path": str(node.bgen)},
        ["--bgen", str(node.bgen), "ref-first", "--sample", str(node.bgen_sample)],
        {"info_min": INFO_MIN, "excluded_chromosomes": ["X", "Y", "MT"]},
    )


@pytest.fixture(scope="module")
def hard_call_run(cohort: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> NodeRun:
    node = cohort.nodes[0]
    return _node_run(
        tmp_path_factory,
        node,
        {"format": "plink", "path": str(node.plink_prefix)},
        ["--bfile", str(node.plink_prefix)],
    )


# ------------------------------------------------------------------------------ helpers


def _compared(released: pd.DataFrame, plink2: pd.DataFrame) -> pd.DataFrame:
    aligned = anchor.align_glm(released, plink2)
    compared = aligned[aligned.plink2_beta.notna() & aligned.plink2_se.notna()]
    assert len(compared) == len(released), (
        f"{len(released) - len(compared)} released rows without a plink2 result"
    )
    return compared


def _code(chromosome: str) -> str:
    """The GWAS-SSF code released files write for `chromosome` (X=23, Y=24, MT=25)."""
    return str(sumstats.CHROMOSOME_CODES[chromosome])


def _on_x(frame: pd.DataFrame) -> pd.Series:
    return sumstats.chromosome_code(frame.chromosome) == _code("X")


def _variant_ids(frame: pd.DataFrame, chromosome: str = "chromosome") -> set[str]:
    return set(
        sumstats.variant_id(
            frame[chromosome], frame.base_pair_location, frame.REF, frame.ALT
        ).tolist()
    )


def _vcf_r2(path: Path) -> pd.DataFrame:
    """chromosome, position, ref, alt and INFO/R2 of every record, read as text."""
    rows = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            contig, position, _, ref, alt, _, _, info = line.split("\t", 8)[:8]
            fields = dict(item.split("=", 1) for item in info.split(";") if "=" in item)
            rows.append((contig.removeprefix("chr"), int(position), ref, alt, float(fields["R2"])))
    frame = pd.DataFrame(rows, columns=["chromosome", "base_pair_location", "REF", "ALT", "R2"])
    frame["chromosome"] = frame.chromosome.replace({"M": "MT"})
    return frame


# ------------------------------------------------------------------------------ VCF DS


def test_vcf_dosage_regression_agrees_with_plink2_everywhere(vcf_run: NodeRun) -> None:
    released = vcf_run.released("quant")
    compared = _compared(released, vcf_run.plink2("quant_trait.glm.linear"))
    beta = beta_difference(compared)
    assert np.all(beta <= RELATIVE), f"beta differs from plink2: {worst(beta, compared)}"
    others = assert_se_and_p(compared)
    on_x = int(_on_x(compared).sum())
    assert on_x > 100, "chrX variants should be analysed"
    print(
        f"\nVCF DS: {len(compared)} rows ({on_x} chrX); max difference from plink2: beta "
        f"{beta.max():.2g} of max(|beta|, SE), {others}"
    )


def test_vcf_dosage_logistic_regression_agrees_with_plink2_without_firth(vcf_run: NodeRun) -> None:
    released = vcf_run.released("binary")
    compared = _compared(released, vcf_run.plink2("binary_trait.glm.logistic"))
    beta = beta_difference(compared)
    assert np.all(beta <= RELATIVE), f"beta differs from plink2: {worst(beta, compared)}"
    strict = anchor.relative_difference(compared.beta, compared.plink2_beta)
    others = assert_se_and_p(compared)
    assert int(_on_x(compared).sum()) > 100, "chrX variants should be analysed"
    print(
        f"\nVCF DS logistic: {len(compared)} rows; max beta difference {beta.max():.2g} of "
        f"max(|beta|, SE) ({(strict > RELATIVE).sum()} rows beyond 1e-4 of |beta| alone), {others}"
    )


def test_relatedness_is_skipped_with_its_reason_when_too_few_variants_would_make_it_noise(
    vcf_run: NodeRun,
) -> None:
    qc = vcf_run.qc()
    assert qc["relatedness"].startswith("skipped: ")
    assert qc["kinship_variants"] < qc["min_kinship_variants"]
    assert qc["samples_related"] == 0 and qc["relatedness_method"] == "none"
    [audited] = [e for e in vcf_run.audit() if e["event"] == "relatedness"]
    assert audited["status"] == qc["relatedness"]
    assert audited["kinship_variants"] == qc["kinship_variants"]
    print(f"\nrelatedness: {qc['relatedness']}")


def test_vcf_info_filter_removes_exactly_the_variants_below_the_r2_floor(
    vcf_run: NodeRun, cohort: SynthResult
) -> None:
    r2 = _vcf_r2(cohort.nodes[0].imputed_vcf)
    analysed = r2[~r2.chromosome.isin(["Y", "MT"])]
    below = _variant_ids(analysed[analysed.R2 < INFO_MIN])
    qc = vcf_run.qc()
    assert qc["info_min"] == INFO_MIN
    assert qc["variants_low_info"] == len(below) > 0
    for analysis in ("af", "quant"):
        released = set(vcf_run.released(analysis).variant_id)
        assert not released & below, f"{analysis}: a variant below the INFO floor was released"
    print(f"\nVCF INFO/R2 < {INFO_MIN}: {len(below)} of {len(analysed)} variants removed")


def test_dosage_allele_frequencies_equal_plink2_dosage_counts(vcf_run: NodeRun) -> None:
    counts = anchor.align_counts(vcf_run.released("af"), vcf_run.plink2("acount"))
    assert counts.plink2_allele_number.notna().all()
    assert (counts.allele_number == counts.plink2_allele_number).all()
    difference = np.abs(counts.allele_count - counts.plink2_alt_count)
    # plink2 prints 6 significant digits of the dosage sums (5e-6 relative), and so may the
    # released table
    assert np.all(difference <= 2e-5 * np.maximum(counts.plink2_alt_count, 1)), worst(
        difference.to_numpy(), counts
    )
    assert (counts.allele_count % 1 != 0).any(), "dosage sums should not all be whole"


# ------------------------------------------------------------------------------ BGEN


def test_bgen_dosage_regression_agrees_with_plink2(bgen_run: NodeRun) -> None:
    compared = _compared(bgen_run.released("quant"), bgen_run.plink2("quant_trait.glm.linear"))
    beta = beta_difference(compared)
    assert np.all(beta <= RELATIVE), f"beta differs from plink2: {worst(beta, compared)}"
    strict = anchor.relative_difference(compared.beta, compared.plink2_beta)
    others = assert_se_and_p(compared)
    assert set(compared.chromosome.astype(str)) <= {str(n) for n in range(1, 23)}
    print(
        f"\nBGEN: {len(compared)} rows; max beta difference {beta.max():.2g} of max(|beta|, SE) "
        f"({(strict > RELATIVE).sum()} rows beyond 1e-4 of |beta| alone), {others}"
    )


def test_bgen_info_filter_removes_exactly_the_variants_below_plink2_machr2(
    bgen_run: NodeRun,
) -> None:
    freq = bgen_run.plink2("acount")
    autosomal = freq[freq.chromosome.isin([str(n) for n in range(1, 23)])]
    below = autosomal[autosomal.MACH_R2 < INFO_MIN]
    near = (np.abs(autosomal.MACH_R2 - INFO_MIN) < INFO_ROUNDING_MARGIN).sum()
    qc = bgen_run.qc()
    assert qc["info_min"] == INFO_MIN
    assert abs(qc["variants_low_info"] - len(below)) <= near
    assert qc["variants_excluded_chromosomes"] == N_X + 2 * Y_AND_MT_VARIANTS
    released = set(bgen_run.released("quant").variant_id)
    far_below = _variant_ids(autosomal[autosomal.MACH_R2 < INFO_MIN - INFO_ROUNDING_MARGIN])
    assert not released & far_below
    print(
        f"\nBGEN MaCH r2 < {INFO_MIN}: {qc['variants_low_info']} removed, plink2 {len(below)} "
        f"({near} within {INFO_ROUNDING_MARGIN} of the floor)"
    )


# ------------------------------------------------------------------------------ chrX


def test_chrx_hard_calls_agree_with_plink2_chrx_model(hard_call_run: NodeRun) -> None:
    released = hard_call_run.released("quant")
    on_x = released[_on_x(released)]
    compared = _compared(on_x, hard_call_run.plink2("quant_trait.glm.linear"))
    beta = anchor.relative_difference(compared.beta, compared.plink2_beta)
    assert np.all(beta <= RELATIVE), f"beta differs from plink2: {worst(beta, compared)}"
    others = assert_se_and_p(compared)
    par = compared.base_pair_location.map(lambda pos: in_x_par("GRCh38", "X", pos))
    assert par.sum() > 10 and (~par).sum() > 100
    print(f"\nchrX: {len(compared)} rows ({par.sum()} PAR); beta {beta.max():.2g}, {others}")


def test_chrx_allele_numbers_count_males_once_outside_the_pars(
    hard_call_run: NodeRun, cohort: SynthResult
) -> None:
    af = hard_call_run.released("af")
    counts = anchor.align_counts(af, hard_call_run.plink2("acount"))
    assert (counts.allele_count == counts.plink2_alt_count).all()
    assert (counts.allele_number == counts.plink2_allele_number).all()
    sex = pd.read_csv(cohort.nodes[0].phenotypes, sep="\t").sex
    females, males = int((sex == 0).sum()), int((sex == 1).sum())
    on_x = counts[_on_x(counts)]
    nonpar = on_x.base_pair_location.map(lambda pos: in_x_nonpar("GRCh38", "X", pos))
    assert (on_x[nonpar].allele_number == 2 * females + males).all()
    assert (on_x[~nonpar].allele_number == 2 * (females + males)).all()
    assert (~nonpar).any() and nonpar.any()


def test_chrx_gwas_allele_frequencies_count_males_once_as_plink2_does(
    hard_call_run: NodeRun,
) -> None:
    """The regression codes males 0/2, but the GWAS file's frequency (and the gate's minor
    allele count behind it) counts a hemizygous male's one allele, as plink2 --freq does."""
    gwas = hard_call_run.released("quant").rename(
        columns={"effect_allele": "alt", "other_allele": "ref"}
    )
    counts = anchor.align_counts(gwas[_on_x(gwas)], hard_call_run.plink2("acount"))
    expected = counts.plink2_alt_count / counts.plink2_allele_number
    nonpar = counts.base_pair_location.map(lambda pos: in_x_nonpar("GRCh38", "X", pos))
    difference = np.abs(counts.effect_allele_frequency - expected).to_numpy()
    assert nonpar.sum() > 100
    assert np.all(difference <= 1e-5 * np.maximum(expected.to_numpy(), 1e-3)), worst(
        difference, counts
    )


def test_chry_and_mt_are_excluded_and_counted_and_sexes_check_out(hard_call_run: NodeRun) -> None:
    qc = hard_call_run.qc()
    assert qc["variants_excluded_chromosomes"] == 2 * Y_AND_MT_VARIANTS
    assert qc["sex_check"] == "done"
    assert qc["samples_sex_mismatch"] == 0
    for analysis in ("af", "quant"):
        chromosomes = set(sumstats.chromosome_code(hard_call_run.released(analysis).chromosome))
        assert not chromosomes & {_code("Y"), _code("MT")}
        assert _code("X") in chromosomes
