"""federation.node.lock: one agent per node; a second one is told who holds the lock; the
kernel frees the lock when its holder dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from federation.errors import AgentBusy, ExitCode
from federation.node.lock import AgentLock


def test_a_second_agent_is_refused_at_once_and_told_who_holds_the_lock(tmp_path: Path):
    with AgentLock(tmp_path, "fi"):
        with pytest.raises(AgentBusy) as busy:
            AgentLock(tmp_path, "fi").__enter__()
        message = str(busy.value)
        assert f"node 'fi': another agent holds {tmp_path / 'agent.lock'}" in message
        assert f"pid {os.getpid()}" in message and "\n" not in message
        assert busy.value.exit_code == ExitCode.BUSY == 75
    with AgentLock(tmp_path, "fi"):  # released on exit: the next one gets it
        pass


def test_an_agent_killed_with_sigkill_leaves_the_lock_free(tmp_path: Path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                from federation.node.lock import AgentLock
                with AgentLock(Path({str(tmp_path)!r}), "fi"):
                    print("held", flush=True)
                    time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(AgentBusy, match=f"pid {holder.pid}"):
            AgentLock(tmp_path, "fi").__enter__()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with AgentLock(tmp_path, "fi"):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
