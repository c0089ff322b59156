"""federation.pipeline.guard and runs.run_guarded: a pipeline run is one process group that
nothing outlives, whether it is cancelled, its caller is interrupted, or its caller is killed
with SIGKILL; a clean-up by marker touches only the run it names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from federation.errors import PipelineCancelled
from federation.pipeline.guard import (
    GROUP_MARKER,
    alive,
    group_members,
    run_processes,
    stop_marked_group,
)
from federation.pipeline.runs import RunControl, run_guarded

# A process that starts two grandchildren, writes all three pids, says "ready" and waits.
TREE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]).pid
        for _ in range(2)
    ]
    open(sys.argv[1], "w").write(" ".join(map(str, [os.getpid(), *children])))
    print("ready", flush=True)
    time.sleep(300)
    """
)
GONE_WITHIN_SECONDS = 20.0


def wait_until_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def tree_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().split()) == 3:
            return [int(pid) for pid in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError("the process tree did not start")


def test_a_command_runs_in_its_own_group_and_its_lines_and_status_come_back(tmp_path: Path):
    lines: list[str] = []
    groups: list[int] = []
    code = run_guarded(
        [sys.executable, "-c", "import os; print(os.getpgid(0)); raise SystemExit(3)"],
        cwd=tmp_path,
        on_line=lines.append,
        control=RunControl(on_start=groups.append, label="status"),
    )
    assert code == 3
    assert lines and int(lines[0]) == groups[0] != os.getpgid(0)


def test_a_stopped_run_leaves_no_process_behind(tmp_path: Path):
    pids_file = tmp_path / "pids"
    ready = []

    def should_stop() -> bool:
        return bool(ready)

    with pytest.raises(PipelineCancelled):
        run_guarded(
            [sys.executable, "-c", TREE, str(pids_file)],
            cwd=tmp_path,
            on_line=lambda line: ready.append(line),
            control=RunControl(should_stop=should_stop, poll_seconds=0.1, label="stopped"),
        )
    assert wait_until_gone(tree_pids(pids_file)) == []


def test_an_interrupted_caller_stops_the_run_before_the_exception_goes_on(tmp_path: Path):
    pids_file = tmp_path / "pids"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_guarded(
            [sys.executable, "-c", TREE, str(pids_file)],
            cwd=tmp_path,
            on_line=interrupt,
            control=RunControl(label="interrupted"),
        )
    assert wait_until_gone(tree_pids(pids_file)) == []


def test_a_caller_killed_with_sigkill_takes_its_run_down(tmp_path: Path):
    pids_file = tmp_path / "pids"
    caller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from pathlib import Path
                from federation.pipeline.runs import RunControl, run_guarded
                run_guarded(
                    [sys.executable, "-c", {TREE!r}, {str(pids_file)!r}],
                    cwd=Path({str(tmp_path)!r}),
                    on_line=lambda line: None,
                    control=RunControl(label="killed"),
                )
                """
            ),
        ]
    )
    try:
        pids = tree_pids(pids_file)
        guard = int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        assert alive(guard) and guard != caller.pid
        caller.send_signal(signal.SIGKILL)
        caller.wait(timeout=30)
        assert wait_until_gone([guard, *pids]) == []
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()


def test_a_clean_up_by_marker_stops_only_the_run_it_names(tmp_path: Path):
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"],
        env={**os.environ, GROUP_MARKER: "fi/task-1"},
        process_group=0,
    )
    try:
        deadline = time.monotonic() + GONE_WITHIN_SECONDS
        while sleeper.pid not in group_members(sleeper.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stop_marked_group(sleeper.pid, "fi/task-2") == []
        assert alive(sleeper.pid) and run_processes("fi/task-1") == [sleeper.pid]
        assert stop_marked_group(sleeper.pid, "fi/task-1") == [sleeper.pid]
        sleeper.wait(timeout=30)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
