"""Bad input to `federation node run-pipeline` stops before any JVM or file, in one line.

Each case changes one thing in an otherwise valid node (a tiny VCF and phenotype table) and
runs the real command line. Exit code 2 (bad input), a single `error: ...` line on stderr
that names the problem, and nothing written: no results folder, no work folder.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from federation.cli import main
from federation.errors import SpecError
from federation.pipeline.genotype_files import PLINK_BED_MAGIC
from federation.pipeline.preflight import check_node_inputs, vcf_sample_ids
from federation.settings import load_node
from federation.spec import load_study

STUDY_ID = "preflight-study"
SAMPLES = [f"s{i}" for i in range(1, 9)]
VCF_HEADER = [
    "##fileformat=VCFv4.2",
    "##contig=<ID=chr1,length=248956422>",
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
]
VCF_COLUMNS = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]


def write_vcf(path: Path, samples: list[str]) -> Path:
    """A gzip VCF with two records; with no samples, no FORMAT column either (as bcftools -G)."""
    header = VCF_COLUMNS + (["FORMAT", *samples] if samples else [])
    lines = [*VCF_HEADER, "\t".join(header)]
    for position in (1_000_000, 2_000_000):
        record = ["chr1", str(position), ".", "A", "G", ".", "PASS", "."]
        lines.append("\t".join(record + (["GT"] + ["0/1"] * len(samples) if samples else [])))
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def write_phenotypes(path: Path, ids: list[str]) -> Path:
    rows = ["sample_id\tage\tsex\tquant_trait\tbinary_trait\tcentre"]
    for index, sample in enumerate(ids):
        rows.append(f"{sample}\t{40 + index}\t{index % 2}\t{0.1 * index:.2f}\t{index % 2}\t7")
    path.write_text("\n".join(rows) + "\n")
    return path


class Node:
    """A valid node and study in tmp_path; tests break one thing, then run the command."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.vcf = write_vcf(root / "genotypes.vcf.gz", SAMPLES)
        self.phenotypes = write_phenotypes(root / "phenotypes.tsv", SAMPLES)
        self.node = {
            "node_id": "fi",
            "genotypes": {"format": "vcf", "path": str(self.vcf)},
            "phenotypes": str(self.phenotypes),
            "reference_genome": "GRCh38",
            "work_dir": str(root / "work"),
            "results_dir": str(root / "results"),
        }
        self.study = {
            "study_id": STUDY_ID,
            "reference_genome": "GRCh38",
            "analyses": [
                {"id": "af", "type": "allele_frequency"},
                {
                    "id": "quant",
                    "type": "gwas",
                    "trait": "quant_trait",
                    "trait_type": "quantitative",
                    "covariates": ["age", "sex"],
                },
                {
                    "id": "binary",
                    "type": "gwas",
                    "trait": "binary_trait",
                    "trait_type": "binary",
                    "covariates": ["age"],
                },
            ],
        }
        self.node_text: str | None = None  # raw text instead of the YAML dump
        self.study_text: str | None = None

    def write(self) -> tuple[Path, Path]:
        node_path, study_path = self.root / "node.yaml", self.root / "study.yaml"
        node_path.write_text(self.node_text or yaml.safe_dump(self.node))
        study_path.write_text(self.study_text or yaml.safe_dump(self.study))
        return node_path, study_path

    def run(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        node_path, study_path = self.write()
        argv = ["node", "run-pipeline", "--node-config", str(node_path)]
        code = main([*argv, "--study-config", str(study_path)])
        return code, capsys.readouterr().err


@pytest.fixture()
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def _gwas(node: Node, analysis_id: str) -> dict:
    return next(a for a in node.study["analyses"] if a["id"] == analysis_id)


def missing_column(node: Node) -> None:
    _gwas(node, "quant")["trait"] = "ldl"


def covariate_without_variance(node: Node) -> None:
    _gwas(node, "quant")["covariates"] = ["age", "centre"]


def vcf_without_samples(node: Node) -> None:
    write_vcf(node.vcf, [])


def ids_do_not_match(node: Node) -> None:
    write_phenotypes(node.phenotypes, [f"EE{sample}" for sample in SAMPLES])


def study_bad_yaml(node: Node) -> None:
    node.study_text = "study_id: x\nanalyses: [\n  {id: af, type: allele_frequency\n"


def study_unknown_trait_type(node: Node) -> None:
    _gwas(node, "quant")["trait_type"] = "continuous"


def study_unknown_field(node: Node) -> None:
    node.study["analysis"] = node.study.pop("analyses")


def node_bad_yaml(node: Node) -> None:
    node.node_text = "node_id: fi\ngenotypes: {format: vcf, path: g.vcf.gz\n"


def node_unknown_format(node: Node) -> None:
    node.node["genotypes"]["format"] = "bgen"


def node_missing_phenotypes_key(node: Node) -> None:
    del node.node["phenotypes"]


def node_hg19(node: Node) -> None:
    node.node["reference_genome"] = "hg19"


def study_on_other_build(node: Node) -> None:
    node.study["reference_genome"] = "GRCh37"


def binary_trait_coded_1_2(node: Node) -> None:
    node.phenotypes.write_text(node.phenotypes.read_text().replace("\t1\t7\n", "\t2\t7\n"))


def genotypes_not_found(node: Node) -> None:
    node.vcf.unlink()


def not_a_vcf(node: Node) -> None:
    with gzip.open(node.vcf, "wt") as handle:
        handle.write("chr1\t1000000\tA\tG\n")


BAD_INPUT: dict[str, tuple[Callable[[Node], None], tuple[str, ...]]] = {
    "missing phenotype column": (missing_column, ("phenotype column 'ldl' not found", "quant")),
    "covariate without variance": (
        covariate_without_variance,
        ("covariate 'centre' has no variance", "remove it"),
    ),
    "VCF with no samples": (vcf_without_samples, ("has no samples",)),
    "sample IDs do not match": (ids_do_not_match, ("sample IDs do not match", "'s1'", "'EEs1'")),
    "study: bad YAML": (study_bad_yaml, ("study config", "not valid YAML", "line")),
    "study: unknown trait_type": (
        study_unknown_trait_type,
        ("trait_type", "continuous", "quantitative"),
    ),
    "study: unknown field": (study_unknown_field, ("study config", "'analysis' was unexpected")),
    "node: bad YAML": (node_bad_yaml, ("node config", "not valid YAML")),
    "node: unknown genotype format": (node_unknown_format, ("genotypes.format", "bgen", "vcf")),
    "node: no phenotypes": (node_missing_phenotypes_key, ("node config", "phenotypes")),
    "node: hg19": (node_hg19, ("unknown reference genome 'hg19'", "GRCh37")),
    "study on another build": (study_on_other_build, ("GRCh37", "GRCh38", "reference_genome")),
    "binary trait coded 1/2": (binary_trait_coded_1_2, ("binary_trait", "cases as 1")),
    "genotypes not found": (genotypes_not_found, ("genotypes.path", "not found")),
    "not a VCF": (not_a_vcf, ("genotypes.path", "is not a VCF")),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_stops_in_one_line_and_writes_nothing(
    node: Node, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    change, key_words = BAD_INPUT[case]
    change(node)
    code, stderr = node.run(capsys)
    assert code == 2, stderr
    assert stderr.startswith("error: ") and stderr.endswith("\n")
    assert stderr.count("\n") == 1, f"not one line: {stderr!r}"
    for words in key_words:
        assert words in stderr, f"{words!r} not in {stderr!r}"
    assert not (node.root / "results").exists()
    assert not (node.root / "work").exists()


def test_valid_node_passes_preflight(node: Node) -> None:
    node_path, study_path = node.write()
    check_node_inputs(load_node(node_path), load_study(study_path))


def test_header_only_bgzip_vcf_has_no_samples(tmp_path: Path) -> None:
    assert vcf_sample_ids(write_vcf(tmp_path / "empty.vcf.gz", [])) == []
    assert vcf_sample_ids(write_vcf(tmp_path / "two.vcf.gz", ["a", "b"])) == ["a", "b"]


def test_plink_fam_ids_are_checked(node: Node) -> None:
    (node.root / "g.fam").write_text("0 x1 0 0 1 -9\n0 x2 0 0 2 -9\n")
    (node.root / "g.bed").write_bytes(PLINK_BED_MAGIC)
    node.node["genotypes"] = {"format": "plink", "path": str(node.root / "g")}
    node_path, study_path = node.write()
    with pytest.raises(SpecError, match="none of 2 genotyped samples .*'x1'"):
        check_node_inputs(load_node(node_path), load_study(study_path))


def test_plink_without_fam_names_the_file(node: Node) -> None:
    node.node["genotypes"] = {"format": "plink", "path": str(node.root / "missing.bed")}
    node_path, study_path = node.write()
    with pytest.raises(SpecError, match=r"missing\.fam' not found"):
        check_node_inputs(load_node(node_path), load_study(study_path))
