"""The provenance of a Snakemake run, kept on the node like cwltool's CWLProv research object.

Snakemake writes what each job did to its log (the profile sets `printshellcmds`): a timestamp,
`rule NAME:` with its input, output, log and wildcards, the shell command, then a timestamp and
`Finished jobid: N`. `snakemake_run_record` reads that log into one record per job (rule,
command, inputs and outputs with their SHA-256, start and end) and adds the software
environment (the recorded software versions and the SHA-256 of every `envs/` file of the
pipeline that ran). The record names node paths and digests of individual-level inputs, so it
stays in `work_dir/<study_id>/provenance/` and never leaves the node; every released sidecar
carries its SHA-256 instead (`provenance_sha256`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from federation.files import atomic_write, sha256_file
from federation.jsonio import canonical_json
from federation.versions import software_versions

RECORD_FORMAT = "federation.snakemake-provenance/1"
RECORD_NAME = "snakemake-run.json"
TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
JOB_FIELD = re.compile(r"^\s+(input|output|log|jobid|wildcards): (.*)$")
SHELL_COMMAND = "Shell command: "
FINISHED = re.compile(r"^Finished jobid: (\d+)")
SNAKEMAKE_TIME = "%a %b %d %H:%M:%S %Y"  # Snakemake's local time, as it prints it


@dataclass
class JobRecord:
    rule: str
    start: str | None
    jobid: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    end: str | None = None


def _iso(stamp: str) -> str:
    return datetime.strptime(stamp, SNAKEMAKE_TIME).astimezone().isoformat(timespec="seconds")


def parse_snakemake_log(lines: list[str]) -> list[JobRecord]:
    """The jobs a Snakemake log reports, in the order they started."""
    jobs: dict[str, JobRecord] = {}
    order: list[JobRecord] = []
    last_time: str | None = None
    current: JobRecord | None = None
    in_command = False
    for raw in lines:
        line = raw.rstrip("\n")
        stamp = TIMESTAMP.match(line)
        if stamp:
            last_time, in_command = _iso(stamp.group(1)), False
            continue
        started = RULE_START.match(line)
        if started:
            current = JobRecord(started.group(1), last_time)
            order.append(current)
            in_command = False
            continue
        finished = FINISHED.match(line)
        if finished:
            job = jobs.get(finished.group(1))
            if job is not None:
                job.end = last_time
            current, in_command = None, False
            continue
        if current is None:
            continue
        job_field = JOB_FIELD.match(line)
        if job_field and not in_command:
            current.fields[job_field.group(1)] = job_field.group(2).strip()
            if job_field.group(1) == "jobid":
                current.jobid = job_field.group(2).strip()
                jobs[current.jobid] = current
        elif line.startswith(SHELL_COMMAND):
            command = line.removeprefix(SHELL_COMMAND)
            if command != "None":
                current.command.append(command)
                in_command = True
        elif in_command and line.strip():
            current.command.append(line)
    return order


def _files(value: str | None, base: Path) -> list[dict[str, Any]]:
    """`a, b` as files with their SHA-256 (None for one the run did not leave behind)."""
    files = []
    for name in (part.strip() for part in (value or "").split(", ")):
        if not name:
            continue
        path = Path(name) if Path(name).is_absolute() else base / name
        files.append({"path": name, "sha256": sha256_file(path) if path.is_file() else None})
    return files


def environment_files(pipeline_root: Path) -> dict[str, str]:
    """SHA-256 of each software environment file (`envs/`) of the pipeline that ran."""
    envs = pipeline_root / "envs"
    if not envs.is_dir():
        return {}
    return {
        f"envs/{path.name}": sha256_file(path)
        for path in sorted(envs.iterdir())
        if path.is_file() and not path.name.startswith(".")
    }


def snakemake_run_record(
    log_path: Path, working_directory: Path, pipeline_root: Path
) -> dict[str, Any]:
    """The run's provenance: one entry per job, the software environment, start and end."""
    jobs = parse_snakemake_log(log_path.read_text(errors="replace").splitlines())
    records = []
    for job in jobs:
        records.append(
            {
                "rule": job.rule,
                "jobid": job.jobid,
                "wildcards": job.fields.get("wildcards"),
                "command": "\n".join(job.command) or None,
                "inputs": _files(job.fields.get("input"), working_directory),
                "outputs": _files(job.fields.get("output"), working_directory),
                "log": job.fields.get("log"),
                "start": job.start,
                "end": job.end,
            }
        )
    starts = [job.start for job in jobs if job.start]
    ends = [job.end for job in jobs if job.end]
    return {
        "format": RECORD_FORMAT,
        "engine": "snakemake",
        "working_directory": str(working_directory),
        "start": min(starts) if starts else None,
        "end": max(ends) if ends else None,
        "jobs": records,
        "software": {
            "versions": software_versions(),
            "environments": environment_files(pipeline_root),
        },
    }


def write_snakemake_provenance(
    log_path: Path, working_directory: Path, pipeline_root: Path, out_dir: Path
) -> tuple[Path, str]:
    """Write the run's record into `out_dir` (on the node); return it and its SHA-256."""
    record = snakemake_run_record(log_path, working_directory, pipeline_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = atomic_write(out_dir / RECORD_NAME, canonical_json(record) + b"\n")
    return path, sha256_file(path)
