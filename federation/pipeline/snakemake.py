"""Run the node pipeline with Snakemake in a subprocess, and publish its release.

A subprocess (not the Snakemake API) keeps the runner's process free of Snakemake's global
state and makes the run exactly what an admin gets from the command line. The node's
resources (node.yaml `resources`) choose the profile (`profiles/local`, `profiles/slurm` or the
node's own) and override its cores and memory budget. The released files are staged inside
the node's work directory and published (`runs.finish`) only when every rule succeeded.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from federation.errors import SpecError
from federation.files import REPO_ROOT
from federation.pipeline.preflight import check_node_inputs
from federation.pipeline.runs import (
    PROVENANCE_DIR,
    RELEASE_DIR,
    PipelineRun,
    RunControl,
    failed,
    finish,
    first_error_line,
    run_guarded,
    start_run,
)
from federation.provenance.sidecars import add_to_sidecars
from federation.provenance.snakemake import RECORD_NAME, write_snakemake_provenance
from federation.settings import NodeResources, NodeSettings, load_node
from federation.spec import StudySpec, load_study

SNAKEFILE = REPO_ROOT / "Snakefile"
# A profile naming an executor needs its plugin installed: say so before Snakemake starts.
EXECUTOR_PLUGINS = {"slurm": "snakemake_executor_plugin_slurm"}
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


def resource_options(resources: NodeResources, cores: int | None = None) -> list[str]:
    """Snakemake options for the node's resources: its profile, cores and memory budget."""
    executor = yaml.safe_load((resources.profile_dir / "config.yaml").read_text()) or {}
    plugin = EXECUTOR_PLUGINS.get(str(executor.get("executor", "")))
    if plugin is not None and importlib.util.find_spec(plugin) is None:
        raise SpecError(
            f"node config 'resources.profile': '{resources.profile}' runs jobs with executor "
            f"'{executor['executor']}', whose plugin {plugin} is not installed; install it or "
            "use profile local"
        )
    options = ["--profile", str(resources.profile_dir), "--cores", str(cores or resources.cores)]
    if resources.memory_mb is not None:
        options += ["--resources", f"mem_mb={resources.memory_mb}"]
    return options


def run_node_pipeline(
    node_config: Path,
    study_config: Path,
    *,
    cores: int | None = None,
    snakefile: Path = SNAKEFILE,
    unlock_first: bool = False,
    progress: Callable[[str], None] | None = None,
    control: RunControl | None = None,
) -> PipelineRun:
    """Run the Snakemake node pipeline for one study on one node and publish its release.

    `snakefile` is the repository's by default; the node agent passes the one from a
    verified, approved bundle. `unlock_first` clears the lock a killed run left behind.
    `cores` overrides the node's `resources.cores` (an admin's `run-pipeline --cores`).
    """
    control = control or RunControl()
    node: NodeSettings = load_node(node_config)
    study: StudySpec = load_study(study_config)
    check_node_inputs(node, study)  # bad input stops here, before a JVM or a file
    options = resource_options(node.resources, cores)
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
    command = [*snakemake, *options, *configs]
    output: list[str] = []
    with open(log_path, "w") as log:

        def on_line(line: str) -> None:
            log.write(line)
            output.append(line.rstrip("\n"))
            if progress and PROGRESS_LINE.match(line.strip()):
                progress(f"[{node.node_id}] {line.strip()}")

        returncode = run_guarded(command, cwd=snakefile.parent, on_line=on_line, control=control)
    if returncode != 0:
        raise failed(node, study.study_id, _failure_message(node, output, log_path))
    staging = work / RELEASE_DIR
    # The run's provenance stays on the node (like the CWLProv record); its digest is released.
    _, digest = write_snakemake_provenance(
        log_path, node.work_dir, snakefile.parent, work / PROVENANCE_DIR
    )
    add_to_sidecars(
        staging,
        {
            "provenance_sha256": digest,
            "provenance_digest_of": f"{RECORD_NAME} of the node's Snakemake run",
        },
    )
    return finish(node, study, staging, log_path, control, pipeline_root=snakefile.parent)
