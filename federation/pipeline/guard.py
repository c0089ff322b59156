"""The leader of a pipeline run's process group: nothing of the run outlives it or its parent.

`runs.run_guarded` starts ``python -m federation.pipeline.guard PARENT_PID -- COMMAND...`` as
the leader of a new process group, with `GROUP_MARKER` in its environment. The guard

- asks the kernel for SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`), so a node agent
  or `run-pipeline` killed with SIGKILL still takes its pipeline down with it;
- runs COMMAND in its group: Snakemake or cwltool, their jobs, the Hail steps and their JVMs all
  stay in it (none of them starts a session of its own) and all inherit the marker;
- on SIGTERM, SIGINT or SIGHUP, and once COMMAND has ended, stops every other member of the
  group (SIGTERM, then SIGKILL after `GRACE_SECONDS`), so no step or JVM is left behind.

It exits with COMMAND's status, or 128 + the signal that stopped it. `stop_marked_group` lets a
later run clean up a group whose guard was itself killed (the marker names the run, so a
process that merely inherited a reused group id is never touched).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

GROUP_MARKER = "FEDERATION_PIPELINE_RUN"  # environment variable naming the run a process serves
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GRACE_SECONDS = 10.0  # SIGTERM to SIGKILL: a Hail step needs a moment to stop its JVM
POLL_SECONDS = 0.1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PROC = Path("/proc")


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when `parent` dies; exit now if it already has (a race at start)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's own handlers stop the group
        return
    if os.getppid() != parent:
        sys.exit(128 + signal.SIGTERM)


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group `pgid` (from /proc; zombies excluded)."""
    members = []
    for entry in PROC.iterdir() if PROC.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def run_processes(marker: str) -> list[int]:
    """Every live process that serves run `marker`, in whatever group it is now."""
    pids = (int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit())
    return [pid for pid in pids if _runs(pid, marker) and alive(pid)]


def _runs(pid: int, marker: str) -> bool:
    """Whether process `pid` carries `GROUP_MARKER=marker` in its environment."""
    try:
        environment = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{GROUP_MARKER}={marker}".encode() in environment


def stop_members(members: list[int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM `members`, wait up to `grace` for them to go, SIGKILL whoever is left."""
    for pid in members:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = members
    while left and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        left = [pid for pid in left if alive(pid)]
    for pid in left:
        _signal(pid, signal.SIGKILL)


def stop_group(pgid: int, exclude: int | None = None, grace: float = GRACE_SECONDS) -> None:
    """Stop every process of group `pgid` but `exclude` (the caller itself)."""
    stop_members([pid for pid in group_members(pgid) if pid != exclude], grace)


def stop_marked_group(pgid: int, marker: str, grace: float = GRACE_SECONDS) -> list[int]:
    """Stop what is left of run `marker`'s group `pgid`; return the pids that were stopped."""
    members = [pid for pid in group_members(pgid) if pid != os.getpid() and _runs(pid, marker)]
    stop_members(members, grace)
    return members


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or not ours
        os.kill(pid, number)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(
            "usage: python -m federation.pipeline.guard PARENT_PID -- COMMAND...", file=sys.stderr
        )
        return 2
    die_with_parent(int(argv[0]))
    if os.getpgid(0) != os.getpid():  # started without a group of its own: make one
        os.setpgid(0, 0)
    received: list[int] = []

    def stop(number: int, frame: FrameType | None) -> None:
        received.append(number)

    for number in STOP_SIGNALS:
        signal.signal(number, stop)
    child = subprocess.Popen(argv[2:])
    while child.poll() is None and not received:
        try:
            child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            continue
    own_group = os.getpgid(0)
    stop_group(own_group, exclude=os.getpid())  # the command's leftovers, or all of it
    child.wait()
    if received:
        return 128 + received[0]
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
