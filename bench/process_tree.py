"""Measuring a command as a process tree: wall time, CPU time and peak memory.

Tools here start helper processes (Snakemake steps and their JVMs; the meta-analysis forks a
worker per core), so one process's peak would under-report. The tree's proportional set size
(PSS: a page shared by k processes counts 1/k in each, so forked workers sharing their parent's
pages are not counted twice) is summed every POLL_SECONDS. Sampling misses short peaks, so each
process's own high-water mark (VmHWM) is a floor.
(wait4's ru_maxrss is not used: a child forked from a large benchmark process reports the
parent's size, recorded by the kernel when the child calls exec.)

CPU time has the same problem the other way round: wait4's rusage counts only descendants that
were waited for, and a Hail driver's JVM never is (its parent ends first, or leaves it to the
kernel), so the JVM doing most of a node run's work was missing. Each member's own CPU time is
therefore also read at every sample, and the larger of the two sums is reported. Both are lower
bounds: the samples miss a process's last half second and processes shorter than one sample.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # a dependency of snakemake

# Reading a process's PSS walks its page tables under its memory-map lock, which stalls that
# process's page faults: sampling a 3-process tree every 0.1 s cost 0.23 s of CPU and added 7% to
# the wall time of the meta-analysis (a tool using both cores feels it, a single-threaded one
# hardly does). Every 0.5 s costs 0.05 s and found the same peaks (VmHWM floors the rest).
POLL_SECONDS = 0.5
# The end of the command is looked for this often (wait4 costs next to nothing), so wall time
# is not rounded up to the next memory sample.
EXIT_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class TreeRun:
    wall_seconds: float
    cpu_seconds: float  # user + system of the whole tree (see above): comparable under load
    peak_rss_bytes: int  # max over samples of the tree's summed PSS, or of any one process's RSS
    returncode: int
    output: str


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _proc_field(pid: int, name: str, field: str) -> int:
    """A size in bytes from /proc/<pid>/<name> (kB there); 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def run_tree(
    command: Sequence[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    on_member: Callable[[psutil.Process], None] | None = None,
) -> TreeRun:
    """Run `command` to its end; `on_member` sees every live process of the tree at each sample."""
    with tempfile.TemporaryFile(mode="w+") as output_file:
        start = time.perf_counter()
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=output_file, stderr=subprocess.STDOUT, text=True
        )
        root = psutil.Process(process.pid)
        peak = largest_single = 0
        member_cpu: dict[tuple[int, float], float] = {}  # (pid, start time): its own CPU seconds
        next_sample = start
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() < next_sample:
                time.sleep(EXIT_POLL_SECONDS)
                continue
            total = 0
            for member in _tree(root):
                try:
                    total += _proc_field(member.pid, "smaps_rollup", "Pss:")
                    largest_single = max(
                        largest_single, _proc_field(member.pid, "status", "VmHWM:")
                    )
                    times = member.cpu_times()
                    member_cpu[(member.pid, member.create_time())] = times.user + times.system
                    if on_member is not None:
                        on_member(member)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            peak = max(peak, total)
            next_sample = time.perf_counter() + POLL_SECONDS
        wall = time.perf_counter() - start
        output_file.seek(0)
        output = output_file.read()
    return TreeRun(
        wall_seconds=wall,
        # rusage includes the reaped descendants; the samples include the orphaned JVMs
        cpu_seconds=max(usage.ru_utime + usage.ru_stime, sum(member_cpu.values())),
        peak_rss_bytes=max(peak, largest_single),
        returncode=os.waitstatus_to_exitcode(status),
        output=output,
    )
