"""The genome-build check on a real run: a GRCh37 cohort declared GRCh38 is refused.

The test writes two synthetic chromosome-1 sequences, one standing for each build, as FASTA
files with .fai indexes, and a VCF whose REF alleles are read from the 'GRCh37' one. Declared
as GRCh38 with the 'GRCh38' FASTA the node refuses it before any analysis, with one line
naming the likely build; declared as GRCh37 with the 'GRCh37' FASTA it runs. Nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.node_runs import NodeRun, run_node
from tests.unit.test_fasta import write_fasta

pytestmark = [pytest.mark.integration]

SEQUENCE_LENGTH = 60_000
N_SAMPLES, N_VARIANTS = 80, 400
BAD_INPUT_EXIT = 2


def _vcf(path: Path, sequence: str, rng: np.random.Generator) -> None:
    positions = np.sort(
        rng.choice(np.arange(100, SEQUENCE_LENGTH - 100), N_VARIANTS, replace=False)
    )
    samples = [f"S{i:03d}" for i in range(N_SAMPLES)]
    lines = [
        "##fileformat=VCFv4.2",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "##contig=<ID=1>",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples),
    ]
    calls = np.array(["0/0", "0/1", "1/1"])
    for position in positions:
        ref = sequence[position - 1]
        alt = rng.choice([base for base in "ACGT" if base != ref])
        genotypes = calls[rng.binomial(2, rng.uniform(0.2, 0.5), N_SAMPLES)]
        lines.append(f"1\t{position}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(genotypes))
    path.write_text("\n".join(lines) + "\n")
    phenotypes = path.with_name("phenotypes.tsv")
    phenotypes.write_text(
        "sample_id\tage\n" + "".join(f"{s}\t{40 + i % 30}\n" for i, s in enumerate(samples))
    )


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("builds")
    rng = np.random.default_rng(37)
    grch37, grch38 = ("".join(rng.choice(list("ACGT"), SEQUENCE_LENGTH)) for _ in range(2))
    write_fasta(root / "grch37.fa", {"1": grch37})
    write_fasta(root / "grch38.fa", {"chr1": grch38})
    _vcf(root / "genotypes.vcf", grch37, rng)
    return root


def _study(build: str) -> dict:
    return {
        "study_id": f"build-{build.lower()}",
        "reference_genome": build,
        "qc": {"relatedness": False, "sex_check": False},
        "analyses": [{"id": "af", "type": "allele_frequency"}],
    }


def _run_declared(builds: Path, root: Path, build: str) -> NodeRun:
    """The cohort (REF from the 'GRCh37' sequence) declared as `build`, with its FASTA."""
    return run_node(
        root,
        "fi",
        {"format": "vcf", "path": str(builds / "genotypes.vcf")},
        builds / "phenotypes.tsv",
        _study(build),
        reference_genome=build,
        reference_fasta=str(builds / f"{build.lower()}.fa"),
    )


def test_a_grch37_cohort_declared_grch38_is_refused_naming_the_likely_build(
    builds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_declared(builds, tmp_path, "GRCh38")
    error = capsys.readouterr().err
    assert run.exit_code != 0
    assert "REF alleles differ from 'grch38.fa'" in error
    assert "not GRCh38 (likely GRCh37)" in error
    assert not run.released.exists()


def test_the_same_cohort_declared_with_its_own_build_passes_the_check(
    builds: Path, tmp_path: Path
) -> None:
    run = _run_declared(builds, tmp_path, "GRCh37")
    assert run.exit_code == 0
    assert run.outcome("af")["outcome"] == "released"
