"""The node's Run Crate: written from a Snakemake run record, and runcrate's metadata made
self-contained. The crates of real runs (both engines) are validated in
tests/integration/test_provenance.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation.errors import PipelineError
from federation.files import REPO_ROOT, sha256_file
from federation.provenance.run_crate import (
    CONTEXT_1_2,
    CONTEXT_1_3,
    WORKFLOW_RUN_TERMS_CONTEXT,
    convert_cwlprov,
    run_crate_fields,
    runcrate_command,
    self_contained_metadata,
    write_snakemake_run_crate,
)
from federation.provenance.snakemake import write_snakemake_provenance
from federation.provenance.verify import validate_crate, validator_command

LOG = """\
[Thu Dec  3 06:22:40 2026]
rule qc:
    input: genotypes.vcf.bgz
    output: qc/samples.tsv
    jobid: 2
Shell command: federation step qc --out qc/samples.tsv
[Thu Dec  3 06:22:41 2026]
Finished jobid: 2 (Rule: qc)

[Thu Dec  3 06:22:41 2026]
rule gwas:
    input: genotypes.vcf.bgz, qc/samples.tsv, qc/cohort.mt
    output: gwas/quant.tsv
    jobid: 1
    wildcards: analysis=quant
Shell command: federation step gwas --analysis quant
[Thu Dec  3 06:22:44 2026]
Finished jobid: 1 (Rule: gwas)

[Thu Dec  3 06:22:44 2026]
localrule all:
    input: gwas/quant.tsv
    jobid: 0
Shell command: None
[Thu Dec  3 06:22:44 2026]
Finished jobid: 0 (Rule: all)
"""


@pytest.fixture()
def run_crate(tmp_path: Path) -> Path:
    """The run crate of a three-job run of the repository's pipeline."""
    work = tmp_path / "work"
    for name, text in (
        ("genotypes.vcf.bgz", "genotypes"),
        ("qc/samples.tsv", "s1\n"),
        ("gwas/quant.tsv", "rows\n"),
        ("qc/cohort.mt/metadata.json.gz", "hail"),
    ):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    log = tmp_path / "snakemake.log"
    log.write_text(LOG)
    record_path, _ = write_snakemake_provenance(log, work, REPO_ROOT, tmp_path / "provenance")
    record = json.loads(record_path.read_text())
    out = tmp_path / "run-crate"
    digest = write_snakemake_run_crate(record, REPO_ROOT, out, name="run of 'study' on 'fi'")
    assert digest == sha256_file(out / "ro-crate-metadata.json")
    return out


def _graph(crate: Path) -> dict[str, dict]:
    document = json.loads((crate / "ro-crate-metadata.json").read_text())
    return {entity["@id"]: entity for entity in document["@graph"]}


def test_each_job_is_a_create_action_of_its_rule_with_digested_files_and_times(
    run_crate: Path,
) -> None:
    graph = _graph(run_crate)
    gwas = graph["#job-1"]
    assert gwas["instrument"] == {"@id": "#rule-gwas"}
    assert gwas["startTime"] < gwas["endTime"]
    assert gwas["description"] == "federation step gwas --analysis quant"
    inputs = [graph[item["@id"]] for item in gwas["object"]]
    assert sorted(item["name"] for item in inputs) == [
        "cohort.mt",
        "genotypes.vcf.bgz",
        "samples.tsv",
    ]
    folder = next(item for item in inputs if item["name"] == "cohort.mt")
    assert folder["@type"] == "Dataset" and folder["@id"].endswith("/cohort.mt/")
    samples = next(item for item in inputs if item["name"] == "samples.tsv")
    assert samples["sha256"] == sha256_file(run_crate.parent / "work" / "qc" / "samples.tsv")
    assert samples["@id"].startswith("file:///")


def test_the_snakefile_is_the_main_workflow_with_its_rule_files_and_environments(
    run_crate: Path,
) -> None:
    graph = _graph(run_crate)
    assert graph["./"]["mainEntity"] == {"@id": "Snakefile"}
    assert "ComputationalWorkflow" in graph["Snakefile"]["@type"]
    assert graph["#rule-qc"]["url"] == {"@id": "rules/qc.smk"}
    assert graph["#rule-all"]["url"] == {"@id": "Snakefile"}
    for name in ("Snakefile", "rules/qc.smk", "rules/gwas.smk", "envs/federation.yaml"):
        assert (run_crate / name).read_bytes() == (REPO_ROOT / name).read_bytes()
        assert graph[name]["sha256"] == sha256_file(REPO_ROOT / name)
    run = graph["#run"]
    assert [item["@id"] for item in run["result"]] == [
        (run_crate.parent / "work" / "gwas" / "quant.tsv").resolve().as_uri()
    ]
    assert graph["#engine-run"]["result"] == {"@id": "#run"}


@pytest.mark.skipif(validator_command() is None, reason="rocrate-validator: scripts/bootstrap.sh")
def test_the_snakemake_run_crate_validates_against_the_run_crate_profiles(run_crate: Path) -> None:
    assert validate_crate(run_crate) == []


def test_runcrate_metadata_gets_the_1_2_context_and_inline_workflow_run_terms() -> None:
    document = {
        "@context": [CONTEXT_1_3, WORKFLOW_RUN_TERMS_CONTEXT],
        "@graph": [
            {
                "@id": "ro-crate-metadata.json",
                "conformsTo": {"@id": "https://w3id.org/ro/crate/1.3"},
            },
            {"@id": "./", "name": "run"},
        ],
    }
    rewritten = self_contained_metadata(document)
    base, terms = rewritten["@context"]
    assert base == CONTEXT_1_2
    assert terms["sha1"] == "https://w3id.org/ro/terms/workflow-run#sha1"
    assert rewritten["@graph"][0]["conformsTo"][0] == {"@id": "https://w3id.org/ro/crate/1.2"}
    assert rewritten["@graph"][1] == {"@id": "./", "name": "run"}
    assert document["@context"] == [CONTEXT_1_3, WORKFLOW_RUN_TERMS_CONTEXT]  # not changed


def test_released_sidecars_name_the_run_crate_digest_and_what_it_is_of() -> None:
    fields = run_crate_fields("cwltool", "ab" * 32)
    assert fields["run_crate_sha256"] == "ab" * 32
    assert "kept on the node" in fields["run_crate_digest_of"]


@pytest.mark.skipif(runcrate_command() is None, reason="runcrate: scripts/bootstrap.sh")
def test_a_folder_that_is_no_research_object_fails_conversion_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"^runcrate convert .* failed \(exit 1\): ") as error:
        convert_cwlprov(tmp_path, tmp_path / "crate", name="run")
    assert "\n" not in str(error.value) and "packed.cwl" in str(error.value)
