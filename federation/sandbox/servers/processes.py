"""Running a local server process: loopback ports, start with a log, stop by its own pid.

Shared by the SeaweedFS and OpenSSH helpers (see `federation.sandbox.servers`).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from federation.errors import TransportError

LOOPBACK = "127.0.0.1"  # never anything else: these servers are for one machine
STARTUP_TIMEOUT_SECONDS = 60.0  # SeaweedFS needs ~2 s on 2 cores, sshd well under 1 s
STOP_GRACE_SECONDS = 15.0  # SeaweedFS drains its volume server for ~3 s on SIGTERM
POLL_SECONDS = 0.1  # readiness polling: quick to notice, cheap for the server
LOG_TAIL_LINES = 15  # enough of a server log to say why it did not start


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def log_tail(log: Path) -> str:
    """The last lines of a server log, joined into one line for an error message."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:] if line.strip())


class ManagedProcess:
    """One server process: output appended to a log file, stopped by its own pid."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(
        self,
        command: list[str],
        *,
        cwd: Path,
        wait_until_ready: Callable[[], None],
        env: dict[str, str] | None = None,
    ) -> None:
        """Spawn `command` (in `env`, default ours), then call `wait_until_ready`; on any
        failure stop it again."""
        self.stop()  # reap a previous run that exited by itself, and close its log
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def fail_if_exited(self) -> None:
        """While starting: a server that already exited will not become ready."""
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            raise TransportError(
                f"{self.name} exited with code {code} while starting; log {self.log_path}: {log_tail(self.log_path)}",
                retryable=False,
            )

    def poll_until(self, ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Call `ready()` until it returns True; give up at `timeout` or if the process exits."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self.fail_if_exited()
            try:
                if ready():
                    return
            except (OSError, TransportError) as error:  # not listening, or not ready yet
                last_error = error
            time.sleep(POLL_SECONDS)
        raise TransportError(
            f"{what} not ready after {timeout:g}s (last: {last_error}); log {self.log_path}: {log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM our own process, SIGKILL it if it lingers, and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class ServerContext:
    """`with Server(...) as server:` starts it and always stops it, error or not."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
