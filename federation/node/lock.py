"""One agent per node: an exclusive lock on the node's work directory.

`federation node run-once` and `watch` hold `work_dir/agent.lock` (flock, exclusive, without
waiting) for as long as they work. A second one finds it taken and stops at once with
`AgentBusy` (exit 75), naming the holder, so cron and systemd may start runs that overlap. The
kernel drops the lock when its holder dies, SIGKILL included: a crashed agent never blocks the
next one. flock works on local file systems and on NFSv4 (Linux maps it to a POSIX lock); keep
`work_dir` on such a file system (docs/node-operations.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from federation.errors import AgentBusy

LOCK_NAME = "agent.lock"


class AgentLock:
    """`with AgentLock(work_dir, node_id):` holds the node's lock or raises AgentBusy."""

    def __init__(self, work_dir: Path, node_id: str) -> None:
        self.path = work_dir / LOCK_NAME
        self.node_id = node_id
        self._descriptor: int | None = None

    def __enter__(self) -> AgentLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = os.pread(descriptor, 4096, 0).decode(errors="replace")
            os.close(descriptor)
            raise AgentBusy(
                f"node '{self.node_id}': another agent holds {self.path} ({_describe(found)}); "
                "this run exits (it will pick up new work next time)"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        self._descriptor = descriptor
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the lock
            self._descriptor = None


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
