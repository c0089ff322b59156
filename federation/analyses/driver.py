"""One Hail session per node run: a driver process that runs every Hail step of the run.

Where it sits: between the pipeline's Hail steps (`federation step qc|allele-freq|gwas`, run by
the Snakemake rules) and `analyses.steps`. Starting Python + Hail + a JVM costs ~11 s before
any work; a run has three or more Hail steps. When the runner sets `DRIVER_ENV` (a Unix
socket path in a private 0700 directory), it starts this driver before Snakemake, which imports
Hail and starts its session while Snakemake starts (else the first step starts it), and every step
sends it one `StepRequest` ("run step X with these paths") and waits for its answer; the
driver runs the same step entry points (`analyses.steps`) in its one Hail session. Without
`DRIVER_ENV` (a CWL run, Slurm jobs on other hosts, an admin running a rule by hand) a step
runs in its own process exactly as before: the released files are the same either way.

Guarantees:
- one request at a time (Hail's session is not thread-safe): concurrent steps queue;
- a step's failure reaches its caller as the same one-line error it would have raised in
  process (`SpecError` stays bad input, exit 2); the traceback stays in the driver's log;
- the driver never outlives its run: the Snakefile's onsuccess/onerror ask it to stop, the
  run's process-group guard stops it with the run (one the runner started ahead of Snakemake,
  `driver_client.start_driver`, ends with the runner: `guard.die_with_parent`), and it exits
  after `IDLE_SECONDS` idle;
- it listens only on its socket (no TCP); the socket's directory is the node user's alone.

The protocol and the calling side (socket, start, stop) are `pipeline.driver_client`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from federation.errors import FederationError, SpecError
from federation.pipeline.driver_client import (
    DRIVER_ENV,
    DRIVER_LOG_ENV,
    ERROR_KINDS,
    IDLE_SECONDS,
    SHUTDOWN,
    DriverError,
    StepRequest,
    ensure_driver,
    exchange,
    read_line,
)
from federation.pipeline.guard import die_with_parent


def execute(request: StepRequest) -> None:
    """Run one Hail step in this process (and its Hail session, started on first use)."""
    from federation.analyses import steps  # imports Hail: only where a step really runs
    from federation.settings import load_node, with_input_paths
    from federation.spec import load_study

    node = with_input_paths(
        load_node(Path(request.node_config)),
        Path(request.genotypes) if request.genotypes else None,
        Path(request.phenotypes) if request.phenotypes else None,
    )
    if request.step == "allele-freq":
        steps.allele_frequency_step(
            node, request.required_path("qc_mt"), request.required_path("out")
        )
        return
    if request.study_config is None:
        raise SpecError(f"driver request 'study_config': missing; the {request.step} step needs it")
    study = load_study(Path(request.study_config))
    if request.step == "qc":
        steps.qc_step(
            node,
            study,
            request.required_path("out_mt"),
            request.required_path("counts"),
            request.path("samples"),
        )
        return
    if request.analysis is None:
        raise SpecError("driver request 'analysis': missing; the gwas step needs an analysis id")
    steps.gwas_step(
        node,
        study,
        study.gwas_analysis(request.analysis),
        request.required_path("qc_mt"),
        request.required_path("out"),
        request.required_path("design"),
        request.path("samples"),
    )


def run_step(request: StepRequest) -> None:
    """Run `request` in the run's driver when the runner asked for one, else in this process."""
    socket_path = os.environ.get(DRIVER_ENV)
    if not socket_path:
        execute(request)
        return
    ensure_driver(Path(socket_path))
    answer = exchange(Path(socket_path), request.to_json())
    if not answer.get("ok"):
        error_class = ERROR_KINDS.get(str(answer.get("kind")), DriverError)
        raise error_class(str(answer.get("error", "the Hail driver failed without a message")))


# ---------------------------------------------------------------- the driver itself


def answer_for(line: str) -> tuple[dict[str, Any], bool]:
    """The answer to one request line, and whether the driver should stop afterwards."""
    try:
        data = json.loads(line)
        if isinstance(data, dict) and data.get("step") == SHUTDOWN:
            return {"ok": True}, True
        execute(StepRequest.from_json(line))
    except FederationError as error:
        return {"ok": False, "kind": type(error).__name__, "error": str(error)}, False
    except Exception as error:  # a Hail or Spark failure: one line back, the rest in the log
        traceback.print_exc()
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        log = os.environ.get(DRIVER_LOG_ENV, "the driver log")
        return {"ok": False, "kind": type(error).__name__, "error": f"{first} (see {log})"}, False
    return {"ok": True}, False


def serve(socket_path: Path, idle_seconds: float = IDLE_SECONDS) -> None:
    """Answer requests on `socket_path` one at a time until asked to stop or left idle."""
    socket_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(socket_path))
        os.chmod(socket_path, 0o600)
        server.listen(16)
        server.settimeout(idle_seconds)
        try:
            while True:
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    print(f"driver idle for {idle_seconds:g}s: exiting", flush=True)
                    return
                with connection:
                    connection.settimeout(None)
                    line = read_line(connection)
                    if not line:  # a probe (`listening`): connected, asked nothing
                        continue
                    answer, stop = answer_for(line)
                    with contextlib.suppress(OSError):  # the step may have been killed
                        connection.sendall(json.dumps(answer).encode() + b"\n")
                if stop:
                    return
        finally:
            socket_path.unlink(missing_ok=True)


def warm(node_config: Path, work_dir: Path) -> None:
    """Import Hail and start the session the run's first step (QC, in `work_dir`) would start:
    a session is started once per process, so the steps then find it ready."""
    from federation.analyses import steps
    from federation.settings import load_node

    steps.open_session(load_node(node_config), work_dir)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 3):
        print(
            "usage: python -m federation.analyses.driver SOCKET_PATH [NODE_CONFIG WORK_DIR]",
            file=sys.stderr,
        )
        return 2
    print(f"Hail driver pid {os.getpid()} on {argv[0]}", flush=True)
    if len(argv) == 3:
        # Started by the runner itself, outside the run's guarded group: end with the runner.
        die_with_parent(os.getppid())
        warm(Path(argv[1]), Path(argv[2]))
        print("Hail session started", flush=True)
    serve(Path(argv[0]))
    # Hail's own shutdown takes ~10 s; the JVM ends with this process (its gateway's stdin).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
