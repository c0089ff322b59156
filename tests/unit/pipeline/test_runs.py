"""What both pipeline engines share: failure messages, categories as data, the staged publish
and the one engine switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.errors import DisclosureError, PipelineError
from federation.outcomes import (
    AnalysisOutcome,
    RefusalCategory,
    ReleaseOutcome,
    read_outcomes,
    record_outcome,
)
from federation.pipeline import run
from federation.pipeline.runs import failed, publish, start_run
from federation.pipeline.snakemake import _failure_message
from federation.settings import node_from_dict
from federation.spec import study_from_dict


@pytest.fixture()
def node(tmp_path: Path):
    return node_from_dict(
        {"node_id": "ee", "genotypes": {"format": "vcf", "path": "g"}, "phenotypes": "p"}, tmp_path
    )


def test_failure_names_rule_and_step_error(node, tmp_path):
    rule_log = tmp_path / "gwas.log"
    rule_log.write_text(
        "Traceback ...\nerror: analysis 'q': covariate 'batch' has no variance; remove it\n"
    )
    output = [
        "Building DAG of jobs...",
        "Error in rule gwas:",
        "    message: None",
        f"    log: {rule_log} (check log)",
    ]
    message = _failure_message(node, output, tmp_path / "snakemake.log")
    assert (
        message
        == "node 'ee': rule 'gwas' failed: analysis 'q': covariate 'batch' has no variance; remove it"
    )


def test_failure_without_step_message_points_at_log(node, tmp_path):
    message = _failure_message(
        node, ["MissingInputException in rule qc"], tmp_path / "snakemake.log"
    )
    assert message == f"node 'ee': snakemake failed: see {tmp_path / 'snakemake.log'}"


def test_publish_replaces_destination_whole(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "a.tsv.gz").write_text("new")
    destination = tmp_path / "results" / "nodes" / "ee"
    destination.mkdir(parents=True)
    (destination / "stale.tsv.gz").write_text("old")
    files = publish(staging, destination)
    assert [path.name for path in files] == ["a.tsv.gz"]
    assert not any(
        path.name.startswith((".incoming", ".retired")) for path in destination.parent.iterdir()
    )


def test_a_failed_run_whose_gate_could_not_complete_is_a_disclosure_failure(node, tmp_path):
    """The category comes from the outcome the release step recorded, not from any text; a
    withheld analysis does not fail a run, so it says nothing about a failure."""
    start_run(node, "s1")
    record_outcome(node.work_dir, "s1", "af", ReleaseOutcome.RELEASED)
    record_outcome(node.work_dir, "s1", "gwas", ReleaseOutcome.WITHHELD)
    assert type(failed(node, "s1", "node 'ee': rule 'x' failed")) is PipelineError
    record_outcome(node.work_dir, "s1", "bmi", ReleaseOutcome.FAILED)
    error = failed(node, "s1", "node 'ee': rule 'release_gwas' failed: see the log")
    assert isinstance(error, DisclosureError) and "release_gwas" in str(error)


def test_a_new_run_forgets_the_outcomes_of_the_last_one(node):
    record_outcome(node.work_dir, "s1", "gwas", ReleaseOutcome.WITHHELD, "cohort_too_small")
    record_outcome(node.work_dir, "s1", "af", ReleaseOutcome.RELEASED)
    assert read_outcomes(node.work_dir, "s1") == {
        "af": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "gwas": AnalysisOutcome(ReleaseOutcome.WITHHELD, RefusalCategory.COHORT_TOO_SMALL),
    }
    start_run(node, "s1")
    assert read_outcomes(node.work_dir, "s1") == {}
    assert type(failed(node, "s1", "snakemake failed")) is PipelineError


def test_the_engine_switch_runs_what_the_study_names(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(run, "run_node_pipeline", lambda *a, **k: calls.append(("snakemake", k)))
    monkeypatch.setattr(run, "run_cwl_pipeline", lambda *a, **k: calls.append(("cwl", k)))
    root = tmp_path / "bundle"
    for engine in ("snakemake", "cwl"):
        study = study_from_dict(
            {
                "study_id": "s1",
                "reference_genome": "GRCh38",
                "engine": engine,
                "analyses": [{"id": "af", "type": "allele_frequency"}],
            }
        )
        run.run_pipeline(
            tmp_path / "n.yaml", tmp_path / "s.yaml", study=study, pipeline_root=root, resume=True
        )
    (snakemake, snakemake_options), (cwl, cwl_options) = calls
    assert (snakemake, cwl) == ("snakemake", "cwl")
    assert (
        snakemake_options["snakefile"] == root / "Snakefile" and snakemake_options["unlock_first"]
    )
    assert cwl_options["workflow"] == root / "workflows" / "node_pipeline.cwl"
