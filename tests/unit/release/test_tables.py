"""The release step: private aggregates -> disclosure gate -> GWAS-SSF / allele-frequency files."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from federation import sumstats
from federation.errors import DisclosureError
from federation.files import sha256_file
from federation.release.tables import (
    RELEASED_BINARY_GWAS_COLUMNS,
    RELEASED_GWAS_COLUMNS,
    neg_log10_p,
    release_allele_frequencies,
    release_gwas,
    release_qc_metrics,
)
from federation.settings import node_from_dict
from federation.spec import study_from_dict
from tests import gwas_ssf

STUDY = study_from_dict(
    {
        "study_id": "s1",
        "analyses": [
            {"id": "af", "type": "allele_frequency"},
            {
                "id": "q",
                "type": "gwas",
                "trait": "height",
                "trait_type": "quantitative",
                "covariates": ["age"],
            },
            {
                "id": "b",
                "type": "gwas",
                "trait": "t2d",
                "trait_type": "binary",
                "covariates": ["age"],
            },
        ],
    }
)
QC_COUNTS = {
    "samples_genotyped": 1003,
    "samples_with_phenotypes": 1002,
    "phenotype_rows_without_genotypes": 4,
    "samples_low_call_rate": 2,
    "samples_sex_mismatch": 0,
    "samples_passed": 1000,
    "sex_check": "done",
    "variants_input": 10,
    "variants_low_call_rate": 0,
    "variants_monomorphic": 0,
    "variants_hwe": 0,
    "variants_low_maf": 0,
    "variants_passed_af": 10,
    "variants_passed_gwas": 10,
    "mean_sample_call_rate": 0.99,
    "mean_variant_call_rate": 0.99,
}


@pytest.fixture()
def node(tmp_path: Path):
    return node_from_dict(
        {
            "node_id": "fi",
            "genotypes": {"format": "vcf", "path": "g.vcf.bgz"},
            "phenotypes": "p.tsv",
        },
        tmp_path,
    )


def _write_private(frame: pd.DataFrame, path: Path) -> Path:
    with gzip.open(path, "wt") as handle:  # Hail writes block gzip; plain gzip reads the same
        frame.to_csv(handle, sep="\t", index=False, na_rep="NA")
    return path


def _gwas_private(n_rows: int, n: int, alt_counts, statistic=None, binary=False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    statistic = rng.normal(size=n_rows) if statistic is None else np.asarray(statistic, dtype=float)
    se = np.full(n_rows, 0.05)
    frame = pd.DataFrame(
        {
            "chromosome": ["2"] * (n_rows // 2) + ["10"] * (n_rows - n_rows // 2),
            "base_pair_location": np.arange(n_rows) * 100 + 1000,
            "ref": ["A"] * n_rows,
            "alt": ["G"] * n_rows,
            "gate.n_called": n,
            "gate.alt_allele_count": alt_counts,
            "gate.allele_number": 2 * n,
            "beta": statistic * se,
            "standard_error": se,
            "statistic": statistic,
            "p_value": 2 * stats.norm.sf(np.abs(statistic)),
            "n": n,
            "converged": "true",
        }
    )
    if binary:
        frame["gate.alt_carriers_cases"] = 50
        frame["gate.ref_carriers_cases"] = 300
        frame["gate.alt_carriers_controls"] = 50
        frame["gate.ref_carriers_controls"] = 600
    return frame


def _samples(tmp_path: Path, n: int, name="samples.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"S{i:05d}\n" for i in range(n)))
    return path


def _release(
    node, tmp_path, private: pd.DataFrame, analysis_id="q", n=1000, n_parameters=3, n_cases=None
):
    private_path = _write_private(private, tmp_path / "private.tsv.bgz")
    design = {
        "n_samples": n,
        "n_parameters": n_parameters,
        "n_cases": n_cases,
        "n_controls": None if n_cases is None else n - n_cases,
    }
    (tmp_path / "design.json").write_text(json.dumps(design))
    (tmp_path / "qc.json").write_text(json.dumps(QC_COUNTS))
    out = tmp_path / "release" / f"{analysis_id}.tsv.gz"
    release_gwas(
        node,
        STUDY,
        STUDY.gwas_analysis(analysis_id),
        private_path,
        tmp_path / "design.json",
        tmp_path / "qc.json",
        out,
        tmp_path / "audit.jsonl",
        samples_path=_samples(tmp_path, n),
    )
    return out


def test_gwas_release_is_gwas_ssf_and_suppresses_rare_rows(node, tmp_path):
    alt_counts = np.array([19, 20, 21, 1980, 1981, 500, 700, 900])  # MAC 19 and 19 suppressed
    out = _release(node, tmp_path, _gwas_private(8, 1000, alt_counts))
    table = sumstats.read_table(out)
    assert tuple(table.columns) == RELEASED_GWAS_COLUMNS
    assert tuple(table.columns[:8]) == sumstats.MANDATORY_COLUMNS
    assert len(table) == 6
    assert table["chromosome"].tolist() == [
        "2",
        "2",
        "2",
        "10",
        "10",
        "10",
    ]  # numeric chromosome order
    assert set(table["n"]) == {1000}
    np.testing.assert_allclose(
        table["effect_allele_frequency"], alt_counts[[1, 2, 3, 5, 6, 7]] / 2000
    )
    metadata = sumstats.read_sidecar(out)
    assert metadata["n"] == 1000 and metadata["qc"]["samples_genotyped"] == 1005  # rounded to 5
    assert metadata["data_file_sha256"] == sha256_file(out)
    assert "rows_suppressed" not in json.dumps(metadata)  # no reason per suppressed variant leaves
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    mac_rule = next(rule for rule in audit[-1]["rules"] if rule["rule"] == "min_mac_gwas")
    assert mac_rule["rows_suppressed"] == 2


def test_small_cohort_withholds_everything(node, tmp_path):
    out_dir = tmp_path / "release"
    with pytest.raises(DisclosureError) as error:
        _release(node, tmp_path, _gwas_private(4, 99, [50, 60, 70, 80]), n=99)
    assert "min_cohort_gwas: observed 99, limit 100" in str(error.value) and "withheld" in str(
        error.value
    )
    assert not out_dir.exists() or not any(out_dir.iterdir())
    assert (
        json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])["event"]
        == "release_withheld"
    )


def test_binary_release_applies_carrier_floor(node, tmp_path):
    private = _gwas_private(3, 1000, [400, 400, 400], binary=True)
    private.loc[1, "gate.alt_carriers_cases"] = 9  # alt is minor: 9 carriers among cases
    private.loc[2, "gate.alt_carriers_controls"] = 10
    out = _release(node, tmp_path, private, analysis_id="b", n_cases=350)
    table = sumstats.read_table(out)
    assert table["base_pair_location"].tolist() == [1000, 1200]
    assert sumstats.read_sidecar(out)["n_cases"] == 350


def test_unconverged_and_nonfinite_rows_are_dropped_like_qc_failures(node, tmp_path):
    private = _gwas_private(3, 1000, [400, 400, 400])
    private.loc[0, "converged"] = "false"
    private.loc[1, "standard_error"] = np.nan
    table = sumstats.read_table(_release(node, tmp_path, private))
    assert table["base_pair_location"].tolist() == [1200]


def test_extreme_p_values_survive_in_log_space(node, tmp_path):
    out = _release(node, tmp_path, _gwas_private(2, 1000, [400, 400], statistic=[60.0, 2.0]))
    table = sumstats.read_table(out)
    # t=60 on 997 df: p ~ 1e-333, below the float64 range; -log10 p must still be exact.
    # Independent reference: integrate the t density relative to its value at t=60.
    log_pdf_at_t = stats.t.logpdf(60.0, 997)
    ratio, _ = integrate.quad(lambda u: np.exp(stats.t.logpdf(u, 997) - log_pdf_at_t), 60.0, np.inf)
    expected = -(np.log(2) + log_pdf_at_t + np.log(ratio)) / np.log(10)
    assert table[sumstats.NEG_LOG10_P].iloc[0] == pytest.approx(expected, rel=1e-7)
    assert expected > 300
    raw_p = pd.read_csv(out, sep="\t", dtype={"p_value": str})["p_value"].iloc[0]  # as written
    mantissa, exponent = raw_p.split("e-")
    assert int(exponent) == int(np.ceil(expected)) and 1 <= float(mantissa) < 10


def test_neg_log10_p_matches_scipy_for_each_model():
    quantitative, binary = STUDY.gwas
    z = np.array([0.5, 3.0, 8.0])
    np.testing.assert_allclose(
        neg_log10_p(z, binary, np.array([900] * 3)), -np.log10(2 * stats.norm.sf(z))
    )
    np.testing.assert_allclose(
        neg_log10_p(z, quantitative, np.array([30] * 3)), -np.log10(2 * stats.t.sf(z, 30))
    )


def test_allele_frequency_release(node, tmp_path):
    private = pd.DataFrame(
        {
            "chromosome": ["1"] * 5,
            "base_pair_location": [10, 20, 30, 40, 50],
            "ref": "C",
            "alt": "T",
            "allele_count": [9, 10, 1990, 500, 60],
            "allele_number": [2000, 2000, 2000, 2000, 98],
            "homozygote_count": [0, 0, 990, 60, 1],
            "homozygote_ref_count": [991, 990, 0, 560, 38],
            "n_samples": [1000, 1000, 1000, 1000, 49],
            "allele_frequency": [0.0045, 0.005, 0.995, 0.25, 60 / 98],
        }
    )
    private_path = _write_private(private, tmp_path / "af.tsv.bgz")
    (tmp_path / "qc.json").write_text(json.dumps(QC_COUNTS))
    out = tmp_path / "release" / "af.tsv.gz"
    release_allele_frequencies(
        node,
        STUDY,
        "af",
        private_path,
        tmp_path / "qc.json",
        out,
        tmp_path / "a.jsonl",
        samples_path=_samples(tmp_path, 1000),
    )
    table = sumstats.read_table(out)
    # MAC 9 and AN 98 are suppressed; MAC 10 passes; released rows carry no reason.
    assert table["base_pair_location"].tolist() == [20, 30, 40]
    assert tuple(table.columns[:9]) == sumstats.ALLELE_FREQUENCY_COLUMNS
    assert "homozygote_ref_count" not in table.columns and set(table["node_id"]) == {"fi"}


def test_qc_metrics_round_sample_counts(node, tmp_path):
    (tmp_path / "qc.json").write_text(json.dumps(QC_COUNTS))
    out = release_qc_metrics(node, STUDY, tmp_path / "qc.json", tmp_path / "qc_metrics.json")
    counts = json.loads(out.read_text())["counts"]
    assert counts["samples_genotyped"] == 1005 and counts["samples_low_call_rate"] == 0
    assert counts["phenotype_rows_without_genotypes"] == 5 and counts["variants_input"] == 10


def test_study_cannot_loosen_node_policy(node, tmp_path):
    loose = study_from_dict({**STUDY.raw, "disclosure": {"min_mac_gwas": 5}})
    (tmp_path / "qc.json").write_text(json.dumps(QC_COUNTS))
    with pytest.raises(DisclosureError, match="would loosen"):
        release_qc_metrics(node, loose, tmp_path / "qc.json", tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_a_binary_release_is_read_as_it_is_by_gwas_ssf_tabix_and_the_catalog_model(node, tmp_path):
    """The GWAS Catalog's validator accepts the file, its sidecar is `<file>-meta.yaml` and fits
    the Catalog's metadata model, tabix answers a region query, and every row carries the
    analysis's case and control counts; alleles are declared REF/ALT of the build (VCF)."""
    private = _gwas_private(44, 1000, np.arange(400, 444), binary=True)
    # gwas-ssf validate wants every autosome: two variants on each.
    private["chromosome"] = [str(1 + i // 2) for i in range(44)]
    private["base_pair_location"] = 1000 + 100 * (np.arange(44) % 2)
    out = _release(node, tmp_path, private, analysis_id="b", n_cases=350)
    table = sumstats.read_table(out)
    assert tuple(table.columns) == RELEASED_BINARY_GWAS_COLUMNS
    assert set(table["n_cases"]) == {350} and set(table["n_controls"]) == {650}
    assert table["variant_id"].tolist() == [
        f"{c}_{p}_{r}_{a}"
        for c, p, r, a in zip(
            table.chromosome,
            table.base_pair_location,
            table.other_allele,
            table.effect_allele,
            strict=True,
        )
    ]
    gwas_ssf.validate(out)
    sidecar = Path(f"{out}-meta.yaml")
    assert sidecar == sumstats.sidecar_path(out) and sidecar.is_file()
    assert gwas_ssf.metadata_fields(sidecar) == ["GWAS-SSF", "v1.0", "b.tsv.gz", "GRCh38"]
    metadata = sumstats.read_sidecar(out)
    assert metadata["samples"] == [
        {"sample_size": 1000, "case_control_study": True, "case_count": 350, "control_count": 650}
    ]
    assert metadata["trait_description"] == ["t2d"] and metadata["reference_aligned"] is True
    first = table.iloc[0]
    region = f"{first.chromosome}:{first.base_pair_location}-{first.base_pair_location}"
    done = subprocess.run(["tabix", str(out), region], capture_output=True, text=True, check=True)
    assert [line.split("\t")[1] for line in done.stdout.splitlines()] == [
        str(first.base_pair_location)
    ]


def test_plink_genotypes_without_a_reference_check_are_not_declared_aligned(tmp_path):
    plink = node_from_dict(
        {"node_id": "fi", "genotypes": {"format": "plink", "path": "g"}, "phenotypes": "p.tsv"},
        tmp_path,
    )
    out = _release(plink, tmp_path, _gwas_private(3, 1000, [400, 400, 400]))
    assert sumstats.read_sidecar(out)["reference_aligned"] is False


def _dbsnp(tmp_path: Path, records: list[tuple[str, int, str, str, str]]) -> Path:
    """A small dbSNP-like VCF, bgzipped and tabix-indexed (htslib via pysam)."""
    import pysam

    header = ["##fileformat=VCFv4.2", *(f"##contig=<ID=chr{c}>" for c in ("2", "10"))]
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    lines = [f"chr{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t." for c, p, i, r, a in records]
    plain = tmp_path / "dbsnp.vcf"
    plain.write_text("\n".join([*header, *lines]) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    return tmp_path / "dbsnp.vcf.gz"


def test_a_node_naming_a_dbsnp_vcf_releases_rsids_matched_on_position_and_alleles(tmp_path):
    vcf = _dbsnp(
        tmp_path,
        [
            ("2", 1000, "rs111", "A", "G"),  # the first variant: same REF/ALT
            ("2", 1100, "rs222", "A", "C,G"),  # multi-allelic record: its second ALT matches
            ("10", 1200, "rs333", "A", "T"),  # same position, other ALT: no match
            ("10", 1300, "rs444", "A", "G"),
        ],
    )
    with_dbsnp = node_from_dict(
        {
            "node_id": "fi",
            "genotypes": {"format": "vcf", "path": "g.vcf.bgz"},
            "phenotypes": "p.tsv",
            "dbsnp_vcf": str(vcf),
        },
        tmp_path,
    )
    out = _release(with_dbsnp, tmp_path, _gwas_private(4, 1000, [400, 400, 400, 400]))
    table = sumstats.read_table(out)
    by_position = dict(zip(table.base_pair_location, table.rsid, strict=True))
    assert by_position[1000] == "rs111" and by_position[1100] == "rs222"
    assert by_position[1300] == "rs444" and pd.isna(by_position[1200])
