"""The node's Run Crate of its pipeline run: a Workflow Run / Provenance Run RO-Crate, on the node.

Both engines leave a run record in `work_dir/<study_id>/provenance/` (cwltool's CWLProv research
object, or `snakemake-run.json`). Beside it the node keeps `work_dir/<study_id>/run-crate/`, the
same run as an RO-Crate following the Workflow Run and Provenance Run Crate profiles:

- a CWL run's crate is `runcrate convert` of the research object (the reference converter,
  from its own venv `.venv-runcrate`: its pins conflict with the project's), with its metadata
  made self-contained for offline validation (`self_contained_metadata`);
- a Snakemake run's crate is written here with `rocrate` from the run record: the Snakefile as
  the `ComputationalWorkflow` (its rules and environment files as parts), one tool and step per
  rule, one `CreateAction` per job with its digested inputs and outputs, start and end, under
  one `OrganizeAction` of the Snakemake engine.

Like the record it comes from, a run crate names node paths and digests of individual-level
inputs (a converted CWL crate even holds copies of them), so it never leaves the node; every
released sidecar carries the SHA-256 of its `ro-crate-metadata.json` (`run_crate_sha256`). That
digest pins the crate: the Snakemake crate gives every file its SHA-256, and runcrate names each
data file by its SHA-1.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rocrate.rocrate import ROCrate

from federation.errors import PipelineError
from federation.files import REPO_ROOT, atomic_write, sha256_file
from federation.provenance.crate import (
    COMPLETED,
    CRATE_VERSION,
    LICENSE,
    MAIN_WORKFLOW,
    METADATA_NAME,
    RUN_CRATE_DECLARATIONS,
    SPEC,
    WORKFLOW_TYPES,
    context_entity,
    data_file,
    declare_profiles,
    declare_versions,
    federation_software,
    now_iso,
    workflow_language,
    workflow_steps,
)

RUN_CRATE_DIR = "run-crate"  # work_dir/<study_id>/run-crate: beside provenance/, on the node
# The profiles a run crate is validated against. The Snakemake crate passes ro-crate-1.2 too;
# runcrate's conversion does not (its tools and profiles lack the `url` and Profile entities
# that profile requires), so the Run Crate profiles are the common bar.
RUN_CRATE_PROFILES = ("workflow-run-crate", "provenance-run-crate")
RUNCRATE = REPO_ROOT / ".venv-runcrate" / "bin" / "runcrate"
CONVERT_TIMEOUT_SECONDS = 900  # a demo run converts in ~2 s; a hung converter must not hold a run
# runcrate (through `rocrate`) writes the RO-Crate 1.3 context, whose Bioschemas IRIs differ from
# the ones the Workflow Run profiles (0.5) check; the crate uses only terms both define, so its
# metadata names 1.2, as the project's crates do.
CONTEXT_1_3 = f"{SPEC}/1.3/context"
CONTEXT_1_2 = f"{SPEC}/{CRATE_VERSION}/context"
# runcrate also names the Workflow Run terms context by URL; the terms it uses are defined inline
# instead (the same IRIs), so the crate reads without fetching it.
WORKFLOW_RUN_TERMS_CONTEXT = "https://w3id.org/ro/terms/workflow-run"
WORKFLOW_RUN_TERMS = (
    "ContainerImage",
    "ParameterConnection",
    "connection",
    "containerImage",
    "registry",
    "sha1",
    "sourceParameter",
    "tag",
    "targetParameter",
)
SNAKEMAKE_URL = "https://snakemake.readthedocs.io"
RULE_DEFINITION = r"^(?:rule|checkpoint) {}:"  # where a rule is defined in the .smk files


def run_crate_fields(engine: str, digest: str) -> dict[str, str]:
    """What every released sidecar says of the node's run crate: its digest, and of what."""
    return {
        "run_crate_sha256": digest,
        "run_crate_digest_of": (
            f"{METADATA_NAME} of the node's Workflow Run Crate of its {engine} run "
            "(kept on the node)"
        ),
    }


def crate_digest(crate_dir: Path) -> str:
    return sha256_file(crate_dir / METADATA_NAME)


def staged_run_crate(work: Path) -> Path:
    """Where a run's crate is written until the run is published (a failed run's stays there,
    and the published run's crate stays where its released digest says)."""
    return work / f"{RUN_CRATE_DIR}.run"


def keep_run_crate(work: Path) -> Path:
    """Move the staged run crate to `work/run-crate/`, replacing the previous run's."""
    final = work / RUN_CRATE_DIR
    if final.exists():
        shutil.rmtree(final)
    return staged_run_crate(work).replace(final)


# ---------------------------------------------------------------- CWL: runcrate convert


def self_contained_metadata(document: Mapping[str, Any]) -> dict[str, Any]:
    """runcrate's metadata with the RO-Crate 1.2 context and the Workflow Run terms inline."""
    contexts = document.get("@context")
    contexts = list(contexts) if isinstance(contexts, list) else [contexts]
    rewritten: list[Any] = []
    for context in contexts:
        if context == CONTEXT_1_3:
            rewritten.append(CONTEXT_1_2)
        elif context == WORKFLOW_RUN_TERMS_CONTEXT:
            rewritten.append(
                {term: f"{WORKFLOW_RUN_TERMS_CONTEXT}#{term}" for term in WORKFLOW_RUN_TERMS}
            )
        else:
            rewritten.append(context)
    graph = []
    for entity in document.get("@graph", []):
        if entity.get("@id") == METADATA_NAME:
            entity = {
                **entity,
                "conformsTo": [{"@id": f"{SPEC}/{CRATE_VERSION}"}, {"@id": f"{SPEC}/1.1"}],
            }
        graph.append(entity)
    return {"@context": rewritten, "@graph": graph}


def runcrate_command() -> Path | None:
    found = shutil.which("runcrate")
    return RUNCRATE if RUNCRATE.is_file() else (Path(found) if found else None)


def convert_cwlprov(research_object: Path, out_dir: Path, *, name: str) -> str:
    """Convert a CWLProv research object into a Run Crate in `out_dir`; return its digest."""
    command = runcrate_command()
    if command is None:
        raise PipelineError(
            "runcrate is not installed: run scripts/bootstrap.sh (it makes .venv-runcrate) "
            "to convert the CWL run's provenance"
        )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        completed = subprocess.run(
            [str(command), "convert", str(research_object), "-o", str(out_dir), "-n", name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CONVERT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PipelineError(
            f"runcrate convert {research_object}: no result after {CONVERT_TIMEOUT_SECONDS} s"
        ) from None
    metadata = out_dir / METADATA_NAME
    if completed.returncode != 0 or not metadata.is_file():
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        raise PipelineError(
            f"runcrate convert {research_object} failed (exit {completed.returncode}): "
            f"{lines[-1] if lines else 'no output'}"
        )
    document = self_contained_metadata(json.loads(metadata.read_text()))
    atomic_write(metadata, json.dumps(document, indent=4, sort_keys=True).encode() + b"\n")
    return crate_digest(out_dir)


# ---------------------------------------------------------------- Snakemake: from the record


def _rule_file(pipeline_root: Path, rule: str) -> str:
    """The Snakefile or rules/*.smk file that defines `rule` (the Snakefile when none does)."""
    pattern = re.compile(RULE_DEFINITION.format(re.escape(rule)), re.MULTILINE)
    for path in [pipeline_root / "Snakefile", *sorted((pipeline_root / "rules").glob("*.smk"))]:
        if path.is_file() and pattern.search(path.read_text(errors="replace")):
            return path.relative_to(pipeline_root).as_posix()
    return MAIN_WORKFLOW["snakemake"]


def _job_file(crate: ROCrate, base: Path, item: Mapping[str, Any]) -> Any:
    """A file a job read or wrote, by its node path (it stays on the node), with its SHA-256."""
    path = Path(str(item["path"]))
    path = path if path.is_absolute() else base / path
    if path.is_dir():  # a Hail table or MatrixTable: a folder, without one digest
        return context_entity(
            crate, path.resolve().as_uri() + "/", {"@type": "Dataset", "name": path.name}
        )
    properties: dict[str, Any] = {"@type": "File", "name": path.name}
    if item.get("sha256"):
        properties["sha256"] = item["sha256"]
    return context_entity(crate, path.resolve().as_uri(), properties)


def write_snakemake_run_crate(
    record: Mapping[str, Any], pipeline_root: Path, out_dir: Path, *, name: str
) -> str:
    """Write the Run Crate of a Snakemake run from its record (`provenance.snakemake`) into
    `out_dir`; return its digest."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    software = record.get("software") or {}
    versions = dict(software.get("versions") or {})
    snakemake_version = str(versions.get("snakemake", "?"))
    crate = ROCrate(version=CRATE_VERSION)
    crate.name = name
    crate.root_dataset["description"] = (
        "The node's Snakemake run as a Workflow Run / Provenance Run Crate, written from its run "
        "record; it names node paths, so it stays on the node."
    )
    crate.root_dataset["datePublished"] = record.get("end") or now_iso()
    crate.root_dataset["license"] = LICENSE
    declare_profiles(crate, RUN_CRATE_DECLARATIONS)
    jobs = list(record.get("jobs") or [])
    rules = sorted({str(job["rule"]) for job in jobs})
    rule_files = {rule: _rule_file(pipeline_root, rule) for rule in rules}
    for relative in sorted(set(rule_files.values()) - {MAIN_WORKFLOW["snakemake"]}):
        data_file(crate, pipeline_root, relative)
    environments = sorted(software.get("environments") or {})
    for relative in environments:
        if (pipeline_root / relative).is_file():
            data_file(crate, pipeline_root, relative, {"description": "a software environment"})
    own_url = environments[0] if environments else MAIN_WORKFLOW["snakemake"]
    package = federation_software(crate, versions, own_url)
    tools = {
        rule: context_entity(
            crate,
            f"#rule-{rule}",
            {
                "@type": "SoftwareApplication",
                "name": f"rule {rule}",
                "version": snakemake_version,
                "url": {"@id": rule_files[rule]},
                "softwareRequirements": package,
            },
        )
        for rule in rules
    }
    steps = workflow_steps(crate, tools)
    workflow = data_file(
        crate,
        pipeline_root,
        MAIN_WORKFLOW["snakemake"],
        {
            "@type": WORKFLOW_TYPES,
            "name": "node pipeline (Snakemake)",
            "programmingLanguage": workflow_language(crate, "snakemake"),
            "hasPart": list(tools.values()),
            "step": list(steps.values()),
        },
    )
    crate.root_dataset["mainEntity"] = workflow
    base = Path(str(record.get("working_directory") or "."))
    # The run reads what no job wrote; its results are what jobs wrote and no job that writes
    # consumed (a target rule such as `all` only asks for files).
    actions, controls, read, consumed, written = [], [], [], [], []
    for job in jobs:
        inputs = [_job_file(crate, base, item) for item in job.get("inputs") or []]
        outputs = [_job_file(crate, base, item) for item in job.get("outputs") or []]
        read += [item for item in inputs if item not in read]
        consumed += [item for item in inputs if outputs and item not in consumed]
        written += [item for item in outputs if item not in written]
        properties: dict[str, Any] = {
            "@type": "CreateAction",
            "name": f"rule {job['rule']} (job {job.get('jobid')})",
            "instrument": tools[str(job["rule"])],
            "object": inputs,
            "result": outputs,
            "actionStatus": {"@id": COMPLETED},
        }
        for key, value in (("startTime", job.get("start")), ("endTime", job.get("end"))):
            if value:
                properties[key] = value
        if job.get("command"):
            properties["description"] = str(job["command"])
        action = context_entity(crate, f"#job-{job.get('jobid')}", properties)
        actions.append(action)
        controls.append(
            context_entity(
                crate,
                f"#control-{job.get('jobid')}",
                {
                    "@type": "ControlAction",
                    "name": f"orchestrate rule {job['rule']} (job {job.get('jobid')})",
                    "instrument": steps[str(job["rule"])],
                    "object": action,
                },
            )
        )
    run_properties: dict[str, Any] = {
        "@type": "CreateAction",
        "name": "the node's Snakemake run",
        "instrument": workflow,
        "object": [item for item in read if item not in written],
        "result": [item for item in written if item not in consumed],
        "actionStatus": {"@id": COMPLETED},
    }
    for key, value in (("startTime", record.get("start")), ("endTime", record.get("end"))):
        if value:
            run_properties[key] = value
    run = context_entity(crate, "#run", run_properties)
    # The jobs' files are data entities of the crate by reference (their node paths).
    job_files = [*read, *(item for item in written if item not in read)]
    crate.root_dataset["hasPart"] = [*crate.root_dataset.get("hasPart", []), *job_files]
    engine = context_entity(
        crate,
        "#snakemake",
        {
            "@type": "SoftwareApplication",
            "name": "Snakemake",
            "version": snakemake_version,
            "url": {"@id": SNAKEMAKE_URL},
        },
    )
    context_entity(
        crate,
        "#engine-run",
        {
            "@type": "OrganizeAction",
            "name": "Snakemake ran the node pipeline",
            "instrument": engine,
            "object": controls,
            "result": run,
        },
    )
    declare_versions(crate)
    crate.write(out_dir)  # the metadata and copies of the Snakefile, rule and environment files
    return crate_digest(out_dir)
