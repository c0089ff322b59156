"""The bench's process-tree measurement counts the CPU of a child nobody waits for, as a Hail
driver's JVM is never waited for by the process that started it."""

from __future__ import annotations

import sys

from bench.process_tree import run_tree

BUSY_SECONDS = 1.5
# The parent starts a busy child, sees it end (a zombie, state Z, without reaping it) and
# leaves without waiting for it (os._exit): the child's CPU time reaches no parent's rusage.
UNWAITED_CHILD = f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time\\nend = time.process_time() + {BUSY_SECONDS}\\nwhile time.process_time() < end: pass"])
stat = f"/proc/{{child.pid}}/stat"
while open(stat).read().rsplit(")", 1)[1].split()[0] != "Z":
    time.sleep(0.05)
os._exit(0)
"""


def test_the_cpu_of_a_child_nobody_waits_for_is_counted() -> None:
    run = run_tree([sys.executable, "-c", UNWAITED_CHILD])
    assert run.returncode == 0
    # Sampled every half second, the child's last slice may be missed; most of it is not.
    assert run.cpu_seconds >= BUSY_SECONDS - 0.6
