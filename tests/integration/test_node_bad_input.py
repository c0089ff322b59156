"""Bad input and mid-way refusals of `federation node run-pipeline` on a real cohort.

The fast cases (configs, phenotype columns, hand-written VCFs) are unit tests in
tests/unit/test_preflight.py. Here: genotype files made by real tools from the shared
synthetic federation's 'fi' node (bcftools, the synthesised PLINK files), and a run whose
only analysis the disclosure gate withholds after its Hail jobs have run (a cohort below
min_cohort_gwas). Nothing may reach the results folder, the run exits 3 (refused), and the
node's admin is told which analysis was withheld and where the reason is.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from federation.cli import main
from federation.release.rules import DisclosurePolicy
from federation.sandbox.synth import NodeCohort, SynthResult
from tests.integration.node_runs import linear_study

pytestmark = pytest.mark.integration

STUDY_ID = "bad-input"
ANALYSIS = "quant_gwas"
# Fewer than the default min_cohort_gwas (100) but enough for allele frequencies (50).
SMALL_COHORT = 60


def _node_config(root: Path, genotypes: dict, phenotypes: Path) -> Path:
    node = {
        "node_id": "fi",
        "genotypes": genotypes,
        "phenotypes": str(phenotypes),
        "reference_genome": "GRCh38",
        "work_dir": str(root / "work"),
        "results_dir": str(root / "results"),
        "hail": {"master": "local[2]", "driver_memory": "4g"},
    }
    path = root / "node.yaml"
    path.write_text(yaml.safe_dump(node))
    return path


def _study_config(root: Path) -> Path:
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(linear_study(STUDY_ID, ANALYSIS, frequencies_id=None)))
    return path


def _run(node: Path, study: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    argv = ["node", "run-pipeline", "--node-config", str(node), "--study-config", str(study)]
    code = main(argv)
    return code, capsys.readouterr().err.splitlines()


def _error_line(stderr: list[str]) -> str:
    """The run's one `error:` line, which must also be its last line on stderr."""
    errors = [line for line in stderr if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-5:]
    assert stderr[-1] == errors[0]
    return errors[0]


@pytest.fixture()
def fi(synthetic_federation: SynthResult) -> NodeCohort:
    return synthetic_federation.nodes[0]


def test_vcf_without_samples_from_bcftools(
    fi: NodeCohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_samples = tmp_path / "no_samples.vcf.gz"
    subprocess.run(
        ["bcftools", "view", "--drop-genotypes", "-Oz", "-o", str(no_samples), str(fi.vcf)],
        check=True,
        capture_output=True,
    )
    node = _node_config(tmp_path, {"format": "vcf", "path": str(no_samples)}, fi.phenotypes)
    code, stderr = _run(node, _study_config(tmp_path), capsys)
    assert code == 2
    assert stderr == [
        f"error: genotypes '{no_samples}': the file has no samples; "
        "export genotypes with sample columns"
    ]
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "work").exists()


def test_plink_sample_ids_that_do_not_match_the_phenotypes(
    fi: NodeCohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phenotypes = tmp_path / "phenotypes.tsv"
    lines = fi.phenotypes.read_text().splitlines()
    phenotypes.write_text("\n".join([lines[0], *(f"x{line}" for line in lines[1:])]) + "\n")
    node = _node_config(tmp_path, {"format": "plink", "path": str(fi.plink_prefix)}, phenotypes)
    code, stderr = _run(node, _study_config(tmp_path), capsys)
    assert code == 2
    (line,) = stderr
    assert "sample IDs do not match" in line
    assert "'fi_00001'" in line and "'xfi_00001'" in line
    assert not (tmp_path / "results").exists()


def test_a_release_withheld_after_the_hail_jobs_publishes_nothing(
    fi: NodeCohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GWAS of 60 samples passes preflight and runs QC and the regression in Hail; the gate
    then withholds it (min_cohort_gwas = 100): the run ends with exit 3, nothing published."""
    limit = DisclosurePolicy().min_cohort_gwas
    assert limit > SMALL_COHORT
    phenotypes = tmp_path / "phenotypes.tsv"
    lines = fi.phenotypes.read_text().splitlines()
    phenotypes.write_text("\n".join(lines[: SMALL_COHORT + 1]) + "\n")
    node = _node_config(tmp_path, {"format": "plink", "path": str(fi.plink_prefix)}, phenotypes)

    code, stderr = _run(node, _study_config(tmp_path), capsys)

    assert code == 3  # refused by the node's policy: neither a failure nor bad input
    assert not [line for line in stderr if line.startswith("error: ")]
    withheld = [line for line in stderr if f"analysis '{ANALYSIS}': withheld" in line]
    assert len(withheld) == 1 and "audit.jsonl says why" in withheld[0], stderr[-5:]
    # Mid-way: the Hail jobs (QC, regression) finished and left their private outputs...
    work = tmp_path / "work" / STUDY_ID
    assert (work / "qc.mt").is_dir()
    assert (work / "private" / "gwas" / f"{ANALYSIS}.tsv.bgz").is_file()
    assert json.loads((work / "outcomes" / f"{ANALYSIS}.json").read_text())["outcome"] == "withheld"
    # ...but the withheld release left nothing, staged or published.
    assert not (work / "release" / f"{ANALYSIS}.tsv.gz").exists()
    assert not (tmp_path / "results" / STUDY_ID).exists()
    audit = (tmp_path / "work" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(row) for row in audit]
    withheld_events = [event for event in events if event["event"] == "release_withheld"]
    assert [event["release"] for event in withheld_events] == [f"analysis '{ANALYSIS}'"]
    rules = {rule["rule"]: rule for rule in withheld_events[0]["rules"]}
    assert rules["min_cohort_gwas"]["observed"] == SMALL_COHORT
    assert rules["min_cohort_gwas"]["threshold"] == limit
    assert not [e for e in events if e["event"] == "release_written" and ANALYSIS in e["file"]]
