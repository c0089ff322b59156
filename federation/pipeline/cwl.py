"""Run the node pipeline with cwltool in a subprocess, and publish its release.

The CWL twin of `federation.pipeline.snakemake`: the same steps (`federation step ...`),
the same staged publish (nothing reaches `results_dir/<study_id>/nodes/<node_id>/` unless
every step succeeded), the same `PipelineRun` and one-line `PipelineError`. Everything
cwltool writes stays in the node's work directory:

    work_dir/<study_id>/cwl/job.yml        the job (node paths; never leaves the node)
    work_dir/<study_id>/cwl/tmp/           job and intermediate directories (individual-level)
    work_dir/<study_id>/cwl/outputs/       the workflow outputs (candidates for release)
    work_dir/<study_id>/provenance/        the CWLProv research object of the published run
    work_dir/<study_id>/provenance.run/    the one of the latest run, until it succeeds
    work_dir/<study_id>/run-crate/         that research object as a Workflow Run Crate
                                           (`runcrate convert`; run-crate.run/ likewise)
    work_dir/<study_id>/logs/              cwltool.log and one log per step (cwl/<job>/)
    work_dir/<study_id>/release/           the staged release, published on success

The research object copies every input and intermediate file and records paths, so it never
leaves the node, nor does its Run Crate; the released sidecars carry the SHA-256 of the research
object's tag manifest and of the Run Crate's metadata instead.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from federation.errors import PipelineError, SpecError
from federation.files import REPO_ROOT, sha256_file
from federation.jsonio import parse_json_strictly
from federation.pipeline.preflight import check_node_inputs
from federation.pipeline.runs import (
    RELEASE_DIR,
    PipelineRun,
    RunControl,
    failed,
    finish,
    first_error_line,
    run_guarded,
    start_run,
)
from federation.provenance.run_crate import (
    convert_cwlprov,
    keep_run_crate,
    run_crate_fields,
    staged_run_crate,
)
from federation.provenance.sidecars import add_to_sidecars
from federation.settings import NodeSettings, load_node
from federation.spec import StudySpec, load_study

# Where the workflow sits in the repository and in a signed bundle (bundle.PIPELINE_PATTERNS).
BUNDLED_WORKFLOW = Path("workflows") / "node_pipeline.cwl"
WORKFLOW = REPO_ROOT / BUNDLED_WORKFLOW
EDAM = "http://edamontology.org/"
# EDAM has no term for PLINK binary genotypes (format_3003 is UCSC BED); PLINK's own format
# specification identifies it, as in the CWL tools.
PLINK_BED = "https://www.cog-genomics.org/plink/1.9/formats#bed"
GENOTYPE_FORMATS = {"vcf": EDAM + "format_3016", "plink": PLINK_BED}
YAML_FORMAT = EDAM + "format_3750"
TSV_FORMAT = EDAM + "format_3475"
# Workflow outputs that are released (node_pipeline.cwl `outputs`); nothing else is staged.
RELEASED_OUTPUTS = (
    "qc_metrics",
    "allele_frequency_tables",
    "allele_frequency_sidecars",
    "allele_frequency_indexes",
    "gwas_summary_statistics",
    "gwas_sidecars",
    "gwas_indexes",
)
# cwltool passes only PATH to a tool without a container; Hail/Spark also read these.
PRESERVED_ENVIRONMENT = ("JAVA_HOME", "SPARK_HOME", "SPARK_LOCAL_IP", "PYSPARK_PYTHON")
# The bag's tag manifest lists the SHA-256 of the data manifest and of every metadata file,
# so its own digest pins the whole research object.
PROVENANCE_DIGEST_FILE = "tagmanifest-sha256.txt"
# `python -m cwltool` drops cwltool's exit status (its __main__ calls run() without exit),
# so a failed workflow would look like a success; this is what its console script does.
CWLTOOL_MAIN = "import sys; from cwltool.main import run; sys.exit(run(sys.argv[1:]))"
SUCCESS_LINE = "Final process status is success"
PROGRESS_LINE = re.compile(r"\[(step \w+)\] (start|completed \w+)")
FAILED_JOB = re.compile(r"\[job (\w+)\] completed (permanentFail|temporaryFail)")
SCATTER_SUFFIX = re.compile(r"_\d+$")  # cwltool names the n-th job of a step `<step>_<n>`
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _file(path: Path, file_format: str) -> dict[str, Any]:
    return {"class": "File", "location": path.resolve().as_uri(), "format": file_format}


def _genotype_file(node: NodeSettings) -> dict[str, Any]:
    if node.genotype_format not in GENOTYPE_FORMATS:
        raise SpecError(
            f"node '{node.node_id}' config 'genotypes.format': '{node.genotype_format}' cannot be "
            "staged as a CWL File; export the MatrixTable to VCF or PLINK, or run snakemake studies"
        )
    path = node.genotype_path
    if node.genotype_format == "plink" and path.suffix != ".bed":
        path = path.with_name(path.name + ".bed")  # the config names the prefix
    return _file(path, GENOTYPE_FORMATS[node.genotype_format])


def cwl_job(
    node: NodeSettings, study: StudySpec, node_config: Path, study_config: Path, audit_log: Path
) -> dict[str, Any]:
    """The workflow's job object: the node's data as Files, the study's analysis ids."""
    return {
        "node_config": _file(node_config, YAML_FORMAT),
        "study_config": _file(study_config, YAML_FORMAT),
        "genotypes": _genotype_file(node),
        "phenotypes": _file(node.phenotypes, TSV_FORMAT),
        "gwas_analyses": [analysis.id for analysis in study.gwas],
        "allele_frequency_analyses": [analysis.id for analysis in study.allele_frequencies],
        "audit_log": str(audit_log.resolve()),
    }


def _failure_message(node: NodeSettings, output: list[str], step_logs: Path, log: Path) -> str:
    """`node 'fi': step 'gwas' failed: <the step's one-line error>` (or where to look)."""
    lines = [ANSI_ESCAPE.sub("", line) for line in output]
    job = next((match.group(1) for line in lines if (match := FAILED_JOB.search(line))), None)
    if job is None:
        first_error = next((line for line in lines if line.startswith("ERROR ")), None)
        reason = first_error.removeprefix("ERROR ").strip() if first_error else f"see {log}"
        return f"node '{node.node_id}': cwltool failed: {reason}"
    step = SCATTER_SUFFIX.sub("", job)
    details = (first_error_line(path) for path in sorted((step_logs / job).glob("*.log")))
    detail = next((found for found in details if found), None)
    return f"node '{node.node_id}': step '{step}' failed: {detail or f'see {step_logs / job}'}"


def _released_files(outputs: dict[str, Any]) -> list[Path]:
    files: list[Path] = []
    for name in RELEASED_OUTPUTS:
        value = outputs.get(name)
        for entry in value if isinstance(value, list) else [value]:
            if entry is not None:
                files.append(Path(entry["path"]))
    return files


def provenance_digest(research_object: Path) -> str:
    manifest = research_object / PROVENANCE_DIGEST_FILE
    if not manifest.is_file():
        raise PipelineError(
            f"cwltool research object {research_object}: no {PROVENANCE_DIGEST_FILE}"
        )
    return sha256_file(manifest)


def add_provenance_digest(staging: Path, digest: str) -> None:
    """Record the research object's digest in every staged sidecar.

    The release steps write the sidecars inside the workflow, before cwltool finalises the
    research object, so the digest can only be added here. The sidecars' data checksums
    cover the .tsv.gz tables, which stay as they are.
    """
    add_to_sidecars(
        staging,
        {
            "provenance_sha256": digest,
            "provenance_digest_of": f"{PROVENANCE_DIGEST_FILE} of the node's CWLProv research object",
        },
    )


def _stage(files: list[Path], staging: Path) -> None:
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for path in files:
        target = staging / path.name
        if target.exists():  # analysis ids are unique, so two outputs never share a name
            raise PipelineError(f"workflow outputs: two released files named '{path.name}'")
        shutil.copy2(path, target)


def _fresh(*directories: Path) -> None:
    for directory in directories:
        if directory.exists():
            shutil.rmtree(directory)


def cwltool_command(
    workflow: Path, job: Path, cwl_dir: Path, logs: Path, provenance: Path
) -> list[str]:
    preserved = [
        f"--preserve-environment={name}" for name in PRESERVED_ENVIRONMENT if name in os.environ
    ]
    return [
        sys.executable,
        "-c",
        CWLTOOL_MAIN,
        "--no-container",  # the node's own environment; DockerRequirement is a hint only
        "--disable-color",
        "--on-error",
        "stop",
        "--outdir",
        str(cwl_dir / "outputs"),
        # Job and intermediate directories hold individual-level data: never the system /tmp.
        "--tmpdir-prefix",
        str(cwl_dir / "tmp") + os.sep,
        "--tmp-outdir-prefix",
        str(cwl_dir / "tmp") + os.sep,
        "--log-dir",
        str(logs / "cwl"),
        "--provenance",
        str(provenance),
        *preserved,
        str(workflow),
        str(job),
    ]


def _final_outputs(outputs_path: Path, log_path: Path) -> dict[str, Any]:
    """The output object cwltool printed on stdout."""
    try:
        document = parse_json_strictly(outputs_path.read_bytes())
    except ValueError:  # not JSON, or JSON with a duplicate key
        document = None
    if not isinstance(document, dict):
        raise PipelineError(f"cwltool finished without an output object; see {log_path}")
    return document


def run_cwl_pipeline(
    node_config: Path,
    study_config: Path,
    *,
    workflow: Path = WORKFLOW,
    progress: Callable[[str], None] | None = None,
    control: RunControl | None = None,
) -> PipelineRun:
    """Run the CWL node pipeline for one study on one node and publish its release.

    `workflow` is the repository's by default; the node agent passes the one from a
    verified, approved bundle. cwltool runs one step at a time; the node's Spark master and
    driver memory (node.yaml) size each Hail step.
    """
    control = control or RunControl()
    node = load_node(node_config)
    study = load_study(study_config)
    check_node_inputs(node, study)  # bad input stops here, before a JVM or a file
    work = start_run(node, study.study_id)
    cwl_dir, logs = work / "cwl", work / "logs"
    # The research object of the release stays where its digest says until a later run
    # succeeds; a failed run's is left in provenance.run for the admin.
    provenance, run_provenance = work / "provenance", work / "provenance.run"
    _fresh(cwl_dir, logs / "cwl", run_provenance)
    (cwl_dir / "tmp").mkdir(parents=True)
    logs.mkdir(parents=True, exist_ok=True)
    audit_log = node.federation.audit_log if node.federation else node.work_dir / "audit.jsonl"
    job_path = cwl_dir / "job.yml"
    job_path.write_text(yaml.safe_dump(cwl_job(node, study, node_config, study_config, audit_log)))
    log_path = logs / "cwltool.log"
    outputs_path = cwl_dir / "outputs.json"
    # The steps run `federation`: the installation that runs this runner, as with Snakemake.
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), environment.get("PATH", "")]
    )
    output: list[str] = []
    with open(log_path, "w") as log, open(outputs_path, "w") as outputs_file:

        def on_line(line: str) -> None:
            log.write(line)
            output.append(line.rstrip("\n"))
            match = PROGRESS_LINE.search(line)
            if progress and match:
                progress(f"[{node.node_id}] {match.group(1)}: {match.group(2)}")

        returncode = run_guarded(
            cwltool_command(workflow, job_path, cwl_dir, logs, run_provenance),
            cwd=work,
            env=environment,
            stdout=outputs_file,  # the output object; the log goes to stderr
            on_line=on_line,
            control=control,
        )
    if returncode != 0 or not any(line.endswith(SUCCESS_LINE) for line in output):
        raise failed(node, study.study_id, _failure_message(node, output, logs / "cwl", log_path))
    outputs = _final_outputs(outputs_path, log_path)
    staging = work / RELEASE_DIR
    _stage(_released_files(outputs), staging)
    add_provenance_digest(staging, provenance_digest(run_provenance))
    try:
        crate_name = f"node '{node.node_id}': cwltool run of study '{study.study_id}'"
        digest = convert_cwlprov(run_provenance, staged_run_crate(work), name=crate_name)
    except PipelineError as error:
        raise PipelineError(f"node '{node.node_id}': {error}") from None
    add_to_sidecars(staging, run_crate_fields("cwltool", digest))
    _fresh(provenance)
    run_provenance.replace(provenance)
    keep_run_crate(work)
    return finish(node, study, staging, log_path, control, pipeline_root=workflow.parent.parent)
