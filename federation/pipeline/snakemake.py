"""Run the node pipeline with Snakemake in a subprocess, and publish its release.

A subprocess (not the Snakemake API) keeps the runner's process free of Snakemake's global
state and makes the run exactly what an admin gets from the command line. The released
files are staged inside the node's work directory and published to
`results_dir/<study_id>/nodes/<node_id>/` only when every rule succeeded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from federation.files import REPO_ROOT
from federation.pipeline.preflight import check_node_inputs
from federation.pipeline.runs import (
    PipelineRun,
    failed,
    first_error_line,
    publish,
    release_destination,
    start_run,
)
from federation.settings import NodeSettings, load_node
from federation.spec import StudySpec, load_study

SNAKEFILE = REPO_ROOT / "Snakefile"
LOCAL_PROFILE = REPO_ROOT / "profiles" / "local"
PROGRESS_LINE = re.compile(r"^(\d+ of \d+ steps \(\d+%\) done|(local)?rule \w+:)")
FAILED_RULE = re.compile(r"^Error in rule (\w+):")
RULE_LOG = re.compile(r"^\s+log: (\S+)")


def _failure_message(node: NodeSettings, output: list[str], log_path: Path) -> str:
    rule, rule_log = None, None
    for index, line in enumerate(output):
        match = FAILED_RULE.match(line)
        if match:
            rule = match.group(1)
            for follower in output[index + 1 : index + 8]:
                log_match = RULE_LOG.match(follower)
                if log_match:
                    rule_log = Path(log_match.group(1))
                    break
            break
    detail = first_error_line(rule_log) if rule_log else None
    where = f"rule '{rule}'" if rule else "snakemake"
    reason = detail or f"see {rule_log or log_path}"
    return f"node '{node.node_id}': {where} failed: {reason}"


def run_node_pipeline(
    node_config: Path,
    study_config: Path,
    *,
    cores: int = 2,
    profile: Path = LOCAL_PROFILE,
    snakefile: Path = SNAKEFILE,
    unlock_first: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PipelineRun:
    """Run the Snakemake node pipeline for one study on one node and publish its release.

    `snakefile` is the repository's by default; the node agent passes the one from a
    verified, approved bundle. `unlock_first` clears the lock a killed run left behind.
    """
    node: NodeSettings = load_node(node_config)
    study: StudySpec = load_study(study_config)
    check_node_inputs(node, study)  # bad input stops here, before a JVM or a file
    work = start_run(node, study.study_id)
    log_path = work / "logs" / "snakemake.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    snakemake = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(node.work_dir),
    ]
    configs = [
        "--config",
        f"node_config={node_config.resolve()}",
        f"study_config={study_config.resolve()}",
    ]
    if unlock_first:
        subprocess.run(
            [*snakemake, "--unlock", *configs],
            cwd=snakefile.parent,
            capture_output=True,
            check=False,
        )
    command = [*snakemake, "--profile", str(profile), "--cores", str(cores), *configs]
    output: list[str] = []
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=snakefile.parent,
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            output.append(line.rstrip("\n"))
            if progress and PROGRESS_LINE.match(line.strip()):
                progress(f"[{node.node_id}] {line.strip()}")
        returncode = process.wait()
    if returncode != 0:
        raise failed(node, study.study_id, _failure_message(node, output, log_path))
    destination = release_destination(node, study.study_id)
    files = publish(work / "release", destination)
    return PipelineRun(node.node_id, study.study_id, destination, files, log_path)
