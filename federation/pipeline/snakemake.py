"""Run the node pipeline with Snakemake in a subprocess, and publish its release.

A subprocess (not the Snakemake API) keeps the runner's process free of Snakemake's global
state and makes the run exactly what an admin gets from the command line. The node's
resources (node.yaml `resources`) choose the profile (`profiles/local`, `profiles/slurm` or the
node's own) and override its cores and memory budget. The released files are staged inside
the node's work directory and published (`runs.finish`) only when every rule succeeded.

When the profile runs jobs on this machine, the run's Hail steps share one Hail driver
(`analyses.driver`: one JVM per run instead of one per step); a cluster executor (Slurm) runs
each step as its own job with its own session. Stage progress comes from `pipeline.progress`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from federation.errors import SpecError
from federation.files import REPO_ROOT
from federation.jsonio import parse_json_strictly
from federation.pipeline.driver_client import (
    DRIVER_ENV,
    DRIVER_LOG_ENV,
    shutdown_driver,
    start_driver,
)
from federation.pipeline.guard import GROUP_MARKER
from federation.pipeline.preflight import check_node_inputs
from federation.pipeline.progress import StageProgress, append_node_log, stage_plan
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
from federation.provenance.run_crate import (
    keep_run_crate,
    run_crate_fields,
    staged_run_crate,
    write_snakemake_run_crate,
)
from federation.provenance.sidecars import add_to_sidecars
from federation.provenance.snakemake import RECORD_NAME, write_snakemake_provenance
from federation.settings import NodeResources, NodeSettings, load_node
from federation.spec import StudySpec, load_study

SNAKEFILE = REPO_ROOT / "Snakefile"
# A profile naming an executor needs its plugin installed: say so before Snakemake starts.
EXECUTOR_PLUGINS = {"slurm": "snakemake_executor_plugin_slurm"}
LOCAL_EXECUTORS = ("local", "dryrun", "touch")  # jobs run on this machine, as our children
FAILED_RULE = re.compile(r"^Error in rule (\w+):")
RULE_LOG = re.compile(r"^\s+log: (\S+)")
# A driver asked to stop exits at once (os._exit); one that has not after this is ended.
DRIVER_STOP_SECONDS = 10.0


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


def profile_executor(resources: NodeResources) -> str:
    """The Snakemake executor the node's profile names ("local" when it names none)."""
    profile = yaml.safe_load((resources.profile_dir / "config.yaml").read_text()) or {}
    return str(profile.get("executor") or "local")


def shares_hail_driver(resources: NodeResources) -> bool:
    """Whether the run's Hail steps can share one driver: only when they run on this machine.
    A cluster executor places each job on some compute node, where no driver of ours runs."""
    return profile_executor(resources) in LOCAL_EXECUTORS


def resource_options(resources: NodeResources, cores: int | None = None) -> list[str]:
    """Snakemake options for the node's resources: its profile, cores and memory budget."""
    executor = {"executor": profile_executor(resources)}
    plugin = EXECUTOR_PLUGINS.get(executor["executor"])
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


@contextmanager
def _driver_stopped(
    driver_dir: Path | None, driver: subprocess.Popen[bytes] | None = None
) -> Iterator[None]:
    """Whatever happens to the run, its Hail driver (if one started) is asked to stop and its
    socket directory removed; the run's guard has already stopped it if Snakemake died. The
    driver the runner started itself is ended if it does not stop (it may still be starting
    when Snakemake fails)."""
    try:
        yield
    finally:
        stopped = False
        if driver_dir is not None:
            stopped = shutdown_driver(driver_dir / "hail.sock")
            shutil.rmtree(driver_dir, ignore_errors=True)
        if driver is not None:
            if not stopped:  # still starting, or never reached: nothing else will end it
                driver.terminate()
            try:
                driver.wait(timeout=DRIVER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()


def study_stages(study: StudySpec) -> list[str]:
    """The stages of `study`'s run, in the order they can start (for "what is next")."""
    kinds = {analysis.id: "gwas" for analysis in study.gwas}
    kinds |= {analysis.id: "allele_frequency" for analysis in study.allele_frequencies}
    return stage_plan([(analysis_id, kinds[analysis_id]) for analysis_id in study.analysis_ids])


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
    environment = dict(os.environ)
    driver_dir = driver = None
    if shares_hail_driver(node.resources):
        # A short private path: a Unix socket's path is limited to 108 bytes.
        driver_dir = Path(tempfile.mkdtemp(prefix="federation-driver-"))
        environment[DRIVER_ENV] = str(driver_dir / "hail.sock")
        environment[DRIVER_LOG_ENV] = str(log_path.parent / "hail-driver.log")
        # Hail and its JVM start while Snakemake does (the QC step's session: in `work`).
        # It carries the run's marker like every process of the run (the guard's clean-up of a
        # killed run, and the count of a run's processes, find it by that).
        driver_environment = {**environment, GROUP_MARKER: control.label}
        driver = start_driver(
            driver_dir / "hail.sock", node_config.resolve(), work, driver_environment
        )
    stages = StageProgress(node.node_id, study_stages(study))
    with open(log_path, "w") as log, _driver_stopped(driver_dir, driver):

        def on_line(line: str) -> None:
            log.write(line)
            output.append(line.rstrip("\n"))
            for stage_line in stages.feed(line):
                append_node_log(node.work_dir, stage_line)
                if progress:
                    progress(stage_line)

        returncode = run_guarded(
            command, cwd=snakefile.parent, on_line=on_line, control=control, env=environment
        )
    if returncode != 0:
        raise failed(node, study.study_id, _failure_message(node, output, log_path))
    staging = work / RELEASE_DIR
    # The run's provenance and its Run Crate stay on the node (like the CWLProv record and its
    # crate); their digests are released.
    record, digest = write_snakemake_provenance(
        log_path, node.work_dir, snakefile.parent, work / PROVENANCE_DIR
    )
    crate_digest = write_snakemake_run_crate(
        parse_json_strictly(record.read_bytes()),
        snakefile.parent,
        staged_run_crate(work),
        name=f"node '{node.node_id}': Snakemake run of study '{study.study_id}'",
    )
    add_to_sidecars(
        staging,
        {
            "provenance_sha256": digest,
            "provenance_digest_of": f"{RECORD_NAME} of the node's Snakemake run",
            **run_crate_fields("Snakemake", crate_digest),
        },
    )
    keep_run_crate(work)
    return finish(node, study, staging, log_path, control, pipeline_root=snakefile.parent)
