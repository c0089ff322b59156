"""What both pipeline engines share: the guarded processes, the run's record, the staged publish,
failure reading.

A run's processes are one process group led by `pipeline.guard`: stopping the run (a signed
cancellation, the node agent or `run-pipeline` being stopped or killed) stops all of them.
Each release step records its decision per analysis (`federation.outcomes`): an analysis the
gate withholds does not stop the others, and the run's record says which analyses were
released and which withheld (the category travels as data, not as text). The run stages what
passed the gate in `work_dir/<study_id>/release/` and publishes it, in one rename, only when
every step succeeded and at least one analysis was released: to
`results_dir/<study_id>/nodes/<node_id>/`, or where the caller says (the node agent's review
area). A failed run says in one line which step failed and why (the step's own `error: ...`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from federation.errors import DisclosureError, FederationError, PipelineCancelled, PipelineError
from federation.outcomes import (
    AnalysisOutcome,
    ReleaseOutcome,
    outcomes_dir,
    read_outcomes,
    refusal_categories,
)
from federation.pipeline.guard import GRACE_SECONDS, GROUP_MARKER, stop_marked_group
from federation.provenance.identity import pipeline_identity
from federation.provenance.sidecars import add_to_sidecars
from federation.settings import NodeSettings
from federation.spec import StudySpec
from federation.versions import IDENTITY_KEY

RELEASE_DIR = "release"  # work_dir/<study_id>/release: the staged release of the latest run
PROVENANCE_DIR = "provenance"  # work_dir/<study_id>/provenance: the run's record (node only)


@dataclass(frozen=True)
class RunControl:
    """How a caller steers a run: where its release goes, when to stop it, who its processes are."""

    destination: Path | None = None  # None: results_dir/<study_id>/nodes/<node_id>
    should_stop: Callable[[], bool] | None = None  # asked every `poll_seconds` while it runs
    poll_seconds: float = 30.0
    on_start: Callable[[int], None] | None = None  # told the process group id of the run
    label: str = "manual"  # marks the run's processes (GROUP_MARKER) for a later clean-up
    bundle_sha256: str | None = None  # the verified bundle that runs (the agent's), for the record


@dataclass(frozen=True)
class PipelineRun:
    node_id: str
    study_id: str
    released_dir: Path
    released_files: tuple[Path, ...]  # empty when the gate withheld every analysis
    log_path: Path
    outcomes: Mapping[str, AnalysisOutcome] = field(default_factory=dict)

    def analyses(self, outcome: ReleaseOutcome) -> list[str]:
        return [name for name, decided in self.outcomes.items() if decided.outcome is outcome]


def study_work_dir(node: NodeSettings, study_id: str) -> Path:
    """Node-private scratch of one study (individual-level intermediates stay here)."""
    return node.work_dir / study_id


def release_destination(node: NodeSettings, study_id: str) -> Path:
    return node.results_dir / study_id / "nodes" / node.node_id


def start_run(node: NodeSettings, study_id: str) -> Path:
    """The study's work dir, with the previous run's release outcomes and staged release
    cleared (the release steps run again: an identical request gets its stored bytes back)."""
    work = study_work_dir(node, study_id)
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(outcomes_dir(node.work_dir, study_id), ignore_errors=True)
    shutil.rmtree(work / RELEASE_DIR, ignore_errors=True)
    return work


def run_guarded(
    command: list[str],
    *,
    cwd: Path,
    on_line: Callable[[str], None],
    control: RunControl,
    env: Mapping[str, str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Run `command` under `pipeline.guard` in a process group of its own; return its status.

    Lines of its output go to `on_line`: stdout and stderr together, or stderr alone when
    `stdout` is a file (cwltool prints its result object there). `control.should_stop` is asked
    every `control.poll_seconds`; when it says so the whole group is stopped and
    PipelineCancelled raised. If the caller is interrupted (KeyboardInterrupt, SystemExit) the
    group is stopped before the exception goes on.
    """
    environment = {**(env if env is not None else os.environ), GROUP_MARKER: control.label}
    guarded = [sys.executable, "-m", "federation.pipeline.guard", str(os.getpid()), "--", *command]
    stopped = threading.Event()
    finished = threading.Event()
    with subprocess.Popen(
        guarded,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE if stdout is not None else subprocess.STDOUT,
        text=True,
        process_group=0,  # the guard leads a new group; everything below inherits it
    ) as process:
        if control.on_start is not None:
            control.on_start(process.pid)

        def watch(should_stop: Callable[[], bool]) -> None:
            while not finished.wait(control.poll_seconds):
                if should_stop():
                    stopped.set()
                    process.send_signal(signal.SIGTERM)
                    return

        watcher = None
        if control.should_stop is not None:
            watcher = threading.Thread(target=watch, args=(control.should_stop,), daemon=True)
            watcher.start()
        stream = process.stderr if stdout is not None else process.stdout
        assert stream is not None
        try:
            for line in stream:
                on_line(line)
            returncode = process.wait()
        except BaseException:
            process.send_signal(signal.SIGTERM)  # the guard stops its group, then exits
            try:
                process.wait(timeout=GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        finally:
            finished.set()
            if watcher is not None:
                watcher.join()
            stop_marked_group(process.pid, control.label)  # if the guard itself was killed
    if stopped.is_set():
        raise PipelineCancelled("the run was stopped on request; nothing was released")
    return returncode


def first_error_line(log: Path) -> str | None:
    """The one-line `error: ...` a failed step printed (see `federation.cli.main`), if any."""
    if not log.is_file():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return None


def failed(node: NodeSettings, study_id: str, message: str) -> FederationError:
    """The error a failed run raises: a DisclosureError when a release step recorded that the
    gate could not complete (fail closed), else a PipelineError; `message` names the step."""
    outcomes = read_outcomes(node.work_dir, study_id)
    if any(decided.outcome is ReleaseOutcome.FAILED for decided in outcomes.values()):
        return DisclosureError(message, tuple(refusal_categories(node.work_dir, study_id)))
    return PipelineError(message)


def finish(
    node: NodeSettings,
    study: StudySpec,
    staging: Path,
    log_path: Path,
    control: RunControl,
    *,
    pipeline_root: Path,
) -> PipelineRun:
    """After every step succeeded: read each analysis's release decision and publish the
    staged release, unless the gate withheld every analysis (then nothing is published).
    Every staged sidecar names the code that ran (`provenance.identity`)."""
    add_to_sidecars(
        staging, {IDENTITY_KEY: pipeline_identity(pipeline_root, control.bundle_sha256)}
    )
    outcomes = read_outcomes(node.work_dir, study.study_id)
    missing = [analysis for analysis in study.analysis_ids if analysis not in outcomes]
    if missing:
        raise PipelineError(
            f"node '{node.node_id}': analysis '{missing[0]}' has no release decision; see {log_path}"
        )
    outcomes = {analysis: outcomes[analysis] for analysis in study.analysis_ids}
    destination = control.destination or release_destination(node, study.study_id)
    files: tuple[Path, ...] = ()
    if any(decided.released for decided in outcomes.values()):
        files = publish(staging, destination)
    return PipelineRun(node.node_id, study.study_id, destination, files, log_path, outcomes)


def publish(staging: Path, destination: Path) -> tuple[Path, ...]:
    """Replace `destination` with a copy of `staging` in one rename; return the files."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    incoming = destination.with_name(".incoming-" + destination.name)
    if incoming.exists():
        shutil.rmtree(incoming)
    shutil.copytree(staging, incoming)
    if destination.exists():
        retired = destination.with_name(".retired-" + destination.name)
        destination.replace(retired)
        incoming.replace(destination)
        shutil.rmtree(retired)
    else:
        incoming.replace(destination)
    return tuple(sorted(path for path in destination.rglob("*") if path.is_file()))
