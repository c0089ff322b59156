"""The calling side of the run's shared Hail driver: its socket, its requests, its start and stop.

Where it sits: used by the runner (`pipeline.snakemake`, which decides whether a run shares a
driver and stops it at the end) and by the Hail steps (`analyses.driver.run_step`), without
importing Hail. The driver itself (`analyses.driver`) runs the steps in one Hail session.

Protocol: one JSON line per connection each way, over a Unix socket in a private 0700
directory. Request: `StepRequest.to_json()` or `{"step": "shutdown"}`. Answer: `{"ok": true}`
or `{"ok": false, "kind": ..., "error": ...}`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from federation.errors import FederationError, SpecError
from federation.pipeline.guard import alive

DRIVER_ENV = "FEDERATION_HAIL_DRIVER"  # the driver's socket path; unset: each step runs alone
DRIVER_LOG_ENV = "FEDERATION_HAIL_DRIVER_LOG"  # where the driver's own output goes
HAIL_STEPS = ("qc", "allele-freq", "gwas")
SHUTDOWN = "shutdown"
# Python + `import hail` + JVM start take ~11 s on 2 busy cores; allow for a loaded machine.
START_TIMEOUT_SECONDS = 180.0
# A driver nobody talks to for this long has lost its run (a killed Snakemake): it exits.
IDLE_SECONDS = 1800.0
POLL_SECONDS = 0.1
MAX_MESSAGE_BYTES = 1 << 20  # a request is a handful of paths; anything larger is not ours
# Errors whose class the caller must see (exit codes differ); anything else is a failure.
ERROR_KINDS: dict[str, type[FederationError]] = {"SpecError": SpecError}


class DriverError(FederationError):
    """The Hail driver could not be started or reached, or a step failed inside it."""


@dataclass(frozen=True)
class StepRequest:
    """One Hail step's arguments, as the `federation step` command line received them."""

    step: str
    node_config: str
    study_config: str | None = None
    genotypes: str | None = None
    phenotypes: str | None = None
    analysis: str | None = None
    paths: dict[str, str | None] = field(default_factory=dict)  # the step's inputs/outputs

    def __post_init__(self) -> None:
        if self.step not in HAIL_STEPS:
            raise SpecError(
                f"driver request 'step': unknown step '{self.step}'; use one of {', '.join(HAIL_STEPS)}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StepRequest:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise SpecError("driver request: not a JSON object; send StepRequest.to_json()")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"driver request: unknown field '{unknown[0]}'; known: {sorted(known)}")
        return cls(**data)

    def path(self, name: str) -> Path | None:
        value = self.paths.get(name)
        return Path(value) if value is not None else None

    def required_path(self, name: str) -> Path:
        value = self.path(name)
        if value is None:
            raise SpecError(
                f"driver request 'paths.{name}': missing; the {self.step} step needs it"
            )
        return value


def shutdown_driver(socket_path: Path | None = None) -> bool:
    """Ask the run's driver to exit; False if none is listening (nothing to stop)."""
    path = socket_path or (Path(os.environ[DRIVER_ENV]) if os.environ.get(DRIVER_ENV) else None)
    if path is None or not listening(path):
        return False
    with contextlib.suppress(OSError, DriverError):
        exchange(path, json.dumps({"step": SHUTDOWN}))
    return True


def start_driver(
    socket_path: Path, node_config: Path, work_dir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start the run's driver and return at once; it imports Hail and starts its session for
    `node_config` (the session the first Hail step, QC in `work_dir`, would start) before it
    listens. The runner calls this before Snakemake, so the ~11 s of Python, Hail and JVM
    start-up overlap Snakemake's own; the first step waits for it (`ensure_driver`). `env`
    is the environment the run's steps get (the driver's log path among it)."""
    with _start_lock(socket_path):
        return _spawn(socket_path, [str(node_config), str(work_dir)], env)


def ensure_driver(socket_path: Path) -> int | None:
    """Start the driver unless one already listens on `socket_path` or is starting (its pid
    file beside the socket names a live process); wait until it listens.

    Returns the pid of the driver it started, None when one was already there.

    A lock file beside the socket makes two steps starting together start one driver. The
    driver stays in the caller's process group (no new session), so the run's guard stops it
    with the run whatever else happens.
    """
    if listening(socket_path):
        return None
    with _start_lock(socket_path):
        if listening(socket_path):
            return None
        starting = _starting_pid(socket_path)
        process = None if starting else _spawn(socket_path, [])
        _wait_until_listening(socket_path, process, starting)
        return None if process is None else process.pid


def _wait_until_listening(
    socket_path: Path, process: subprocess.Popen[bytes] | None, starting: int | None
) -> None:
    """Wait for the driver we started (`process`) or found starting (pid `starting`)."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not listening(socket_path):
        if process is not None and process.poll() is not None:
            raise DriverError(
                f"Hail driver exited with code {process.returncode} while starting; "
                f"see {_log_path(socket_path)}"
            )
        if starting is not None and not alive(starting):
            raise DriverError(f"Hail driver exited while starting; see {_log_path(socket_path)}")
        if time.monotonic() > deadline:
            if process is not None:
                process.terminate()
            raise DriverError(
                f"Hail driver not listening on '{socket_path}' after {START_TIMEOUT_SECONDS:g}s; "
                f"see {_log_path(socket_path)}"
            )
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def _start_lock(socket_path: Path) -> Iterator[None]:
    with open(socket_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _log_path(socket_path: Path, env: dict[str, str] | None = None) -> Path:
    configured = (os.environ if env is None else env).get(DRIVER_LOG_ENV)
    return Path(configured or socket_path.with_suffix(".log"))


def _spawn(
    socket_path: Path, warm_arguments: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the driver process (the caller holds the start lock) and note its pid."""
    log_path = _log_path(socket_path, env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "federation.analyses.driver", str(socket_path), *warm_arguments],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    socket_path.with_suffix(".pid").write_text(f"{process.pid}\n")
    return process


def _starting_pid(socket_path: Path) -> int | None:
    """The pid of a driver started for this socket that is still alive, if any."""
    try:
        pid = int(socket_path.with_suffix(".pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def listening(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


def exchange(socket_path: Path, line: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(str(socket_path))
            connection.sendall(line.encode() + b"\n")
            connection.shutdown(socket.SHUT_WR)
            reply = read_line(connection)
        except OSError as error:
            raise DriverError(f"Hail driver at '{socket_path}' unreachable: {error}") from None
    if not reply:
        raise DriverError(f"Hail driver at '{socket_path}' closed the connection without an answer")
    answer = json.loads(reply)
    if not isinstance(answer, dict):
        raise DriverError(f"Hail driver at '{socket_path}' answered {reply[:80]!r}, not an object")
    return answer


def read_line(connection: socket.socket) -> str:
    data = b""
    while b"\n" not in data and len(data) < MAX_MESSAGE_BYTES:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode()
