"""The CWL runner's pure parts: the job object, failure messages, provenance digests."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from federation.errors import PipelineError, SpecError
from federation.files import REPO_ROOT
from federation.pipeline.cwl import (
    _failure_message,
    _released_files,
    add_provenance_digest,
    cwl_job,
    cwltool_command,
    provenance_digest,
)
from federation.protocol.bundle import pipeline_files
from federation.settings import node_from_dict, with_input_paths


@pytest.fixture()
def node(tmp_path: Path):
    document = {
        "node_id": "ee",
        "genotypes": {"format": "vcf", "path": "data/g.vcf.bgz"},
        "phenotypes": "data/p.tsv",
    }
    return node_from_dict(document, tmp_path)


def test_input_paths_replace_the_configs_and_keep_the_rest(node, tmp_path):
    staged = tmp_path / "stg1" / "g.vcf.bgz"
    replaced = with_input_paths(node, genotypes=staged, phenotypes=Path("relative/p.tsv"))
    assert replaced.genotype_path == staged
    assert replaced.phenotypes == Path.cwd() / "relative" / "p.tsv"
    assert replaced.work_dir == node.work_dir and replaced.node_id == "ee"
    assert with_input_paths(node) is node


def test_input_paths_keep_a_link_name_so_plink_siblings_stay_beside_it(node, tmp_path):
    store, staged = tmp_path / "store", tmp_path / "stg"
    store.mkdir()
    staged.mkdir()
    (store / "3f9a").write_bytes(b"\x6c\x1b\x01")
    (staged / "g.bed").symlink_to(store / "3f9a")
    assert with_input_paths(node, genotypes=staged / "g.bed").genotype_path == staged / "g.bed"


def _study(tmp_path: Path):
    from federation.spec import study_from_dict

    return study_from_dict(
        {
            "study_id": "s1",
            "analyses": [
                {"id": "af", "type": "allele_frequency"},
                {"id": "height", "type": "gwas", "trait": "h", "trait_type": "quantitative"},
                {"id": "t2d", "type": "gwas", "trait": "d", "trait_type": "binary"},
            ],
        }
    )


def test_job_declares_the_node_data_as_files_with_formats(node, tmp_path):
    job = cwl_job(
        node,
        _study(tmp_path),
        tmp_path / "node.yaml",
        tmp_path / "study.yaml",
        tmp_path / "audit.jsonl",
    )
    assert job["genotypes"] == {
        "class": "File",
        "location": (tmp_path / "data" / "g.vcf.bgz").as_uri(),
        "format": "http://edamontology.org/format_3016",
    }
    assert job["phenotypes"]["format"] == "http://edamontology.org/format_3475"
    assert (
        job["node_config"]["format"]
        == job["study_config"]["format"]
        == "http://edamontology.org/format_3750"
    )
    assert job["gwas_analyses"] == ["height", "t2d"] and job["allele_frequency_analyses"] == ["af"]
    assert job["audit_log"] == str(tmp_path / "audit.jsonl")


def test_job_names_the_bed_of_a_plink_prefix(tmp_path):
    plink = node_from_dict(
        {
            "node_id": "ee",
            "genotypes": {"format": "plink", "path": "data/g"},
            "phenotypes": "p.tsv",
        },
        tmp_path,
    )
    job = cwl_job(
        plink, _study(tmp_path), tmp_path / "n.yaml", tmp_path / "s.yaml", tmp_path / "a.jsonl"
    )
    assert job["genotypes"]["location"].endswith("/data/g.bed")
    assert job["genotypes"]["format"] == "https://www.cog-genomics.org/plink/1.9/formats#bed"


def test_a_matrix_table_node_is_told_how_to_take_part(tmp_path):
    hail = node_from_dict(
        {"node_id": "ee", "genotypes": {"format": "hail", "path": "g.mt"}, "phenotypes": "p.tsv"},
        tmp_path,
    )
    with pytest.raises(
        SpecError, match="'genotypes.format': 'hail' cannot be staged as a CWL File; export"
    ):
        cwl_job(
            hail, _study(tmp_path), tmp_path / "n.yaml", tmp_path / "s.yaml", tmp_path / "a.jsonl"
        )


def test_failure_names_the_step_and_its_error_line(node, tmp_path):
    step_logs = tmp_path / "cwl"
    (step_logs / "release_gwas_2").mkdir(parents=True)
    (step_logs / "release_gwas_2" / "release.t2d.log").write_text(
        "Traceback ...\nerror: node 'ee': analysis 't2d': 12 cases < 50; result withheld (node policy)\n"
    )
    output = [
        "INFO [job gwas] completed success",
        "WARNING [job release_gwas_2] exited with status: 1",
        "WARNING [job release_gwas_2] completed permanentFail",
        "WARNING [step release_gwas] completed permanentFail",
    ]
    message = _failure_message(node, output, step_logs, tmp_path / "cwltool.log")
    assert message == (
        "node 'ee': step 'release_gwas' failed: node 'ee': analysis 't2d': 12 cases < 50; result withheld (node policy)"
    )


def test_failure_without_a_step_error_points_at_the_logs(node, tmp_path):
    output = ["\x1b[1;30mWARNING\x1b[0m [job qc] completed permanentFail"]
    message = _failure_message(node, output, tmp_path / "cwl", tmp_path / "cwltool.log")
    assert message == f"node 'ee': step 'qc' failed: see {tmp_path / 'cwl' / 'qc'}"
    message = _failure_message(
        node, ["ERROR Workflow error: bad job", "more"], tmp_path, tmp_path / "c.log"
    )
    assert message == "node 'ee': cwltool failed: Workflow error: bad job"
    assert (
        _failure_message(node, [], tmp_path, tmp_path / "c.log")
        == f"node 'ee': cwltool failed: see {tmp_path / 'c.log'}"
    )


def test_released_files_are_the_release_outputs_only(tmp_path):
    outputs = {
        "qc_metrics": {"class": "File", "path": "/o/qc_metrics.json"},
        "gwas_summary_statistics": [{"class": "File", "path": "/o/h.tsv.gz"}],
        "gwas_sidecars": [{"class": "File", "path": "/o/h.tsv.gz-meta.yaml"}],
        "gwas_indexes": [{"class": "File", "path": "/o/h.tsv.gz.tbi"}],
        "allele_frequency_tables": [],
        "allele_frequency_sidecars": [],
        "private_table": {"class": "File", "path": "/o/private.tsv.bgz"},
    }
    assert [path.name for path in _released_files(outputs)] == [
        "qc_metrics.json",
        "h.tsv.gz",
        "h.tsv.gz-meta.yaml",
        "h.tsv.gz.tbi",
    ]


def test_provenance_digest_goes_into_every_sidecar_and_leaves_the_data_checksums(tmp_path):
    research_object = tmp_path / "provenance"
    research_object.mkdir()
    (research_object / "tagmanifest-sha256.txt").write_text("abc  bagit.txt\n")
    digest = provenance_digest(research_object)
    assert digest == hashlib.sha256(b"abc  bagit.txt\n").hexdigest()
    staging = tmp_path / "release"
    staging.mkdir()
    (staging / "h.tsv.gz-meta.yaml").write_text(
        yaml.safe_dump({"study_id": "s1", "data_file_sha256": "f00"}, sort_keys=False)
    )
    (staging / "qc_metrics.json").write_text("{}\n")
    add_provenance_digest(staging, digest)
    sidecar = yaml.safe_load((staging / "h.tsv.gz-meta.yaml").read_text())
    assert sidecar["provenance_sha256"] == digest and sidecar["data_file_sha256"] == "f00"
    assert list(sidecar)[:2] == ["study_id", "data_file_sha256"]
    assert (staging / "qc_metrics.json").read_text() == "{}\n"


def test_missing_research_object_fails_the_run(tmp_path):
    with pytest.raises(PipelineError, match="no tagmanifest-sha256.txt"):
        provenance_digest(tmp_path)


def test_cwltool_runs_without_containers_and_keeps_everything_in_the_work_dir(tmp_path):
    command = cwltool_command(
        Path("w.cwl"), Path("job.yml"), tmp_path / "cwl", tmp_path / "logs", tmp_path / "prov"
    )
    assert "--no-container" in command and command[-2:] == ["w.cwl", "job.yml"]
    for option in (
        "--outdir",
        "--tmpdir-prefix",
        "--tmp-outdir-prefix",
        "--log-dir",
        "--provenance",
    ):
        assert command[command.index(option) + 1].startswith(str(tmp_path)), option


def test_bundles_carry_the_cwl_files(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("study_id: s1\n")
    files = pipeline_files(REPO_ROOT, study)
    assert "workflows/node_pipeline.cwl" in files
    assert {name for name in files if name.startswith("workflows/tools/")} == {
        f"workflows/tools/{path.name}" for path in (REPO_ROOT / "workflows" / "tools").glob("*.cwl")
    }
    assert not any(name.startswith(("workflows/jobs", "workflows/tests")) for name in files)


def test_a_failing_workflow_gives_cwltool_a_failing_exit_status(tmp_path):
    """The runner's cwltool call keeps cwltool's exit status (`python -m cwltool` drops it)."""
    tool = tmp_path / "fails.cwl"
    tool.write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: 'false'\ninputs: {}\noutputs: {}\n"
    )
    job = tmp_path / "job.yml"
    job.write_text("{}\n")
    (tmp_path / "cwl" / "tmp").mkdir(parents=True)
    command = cwltool_command(tool, job, tmp_path / "cwl", tmp_path / "logs", tmp_path / "prov")
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Final process status is permanentFail" in done.stderr
