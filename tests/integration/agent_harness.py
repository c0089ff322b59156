"""`federation node run-once` in a process of its own, the Hail pipeline faked, for tests that
kill the agent (tests/integration/test_node_processes.py).

    python -m tests.integration.agent_harness STAGE SIGNAL_DIR -- node run-once --config NODE.yaml

The fake pipeline (tests/unit/test_federation_flow.FakePipeline) runs a real child process tree
under the real process-group guard, so killing the agent has something to take down. STAGE
names where the agent pauses (it writes SIGNAL_DIR/STAGE, then waits to be killed):

    fetched    the bundle is fetched, not yet unpacked
    pipeline   the pipeline's processes are running
    sealing    the pipeline finished; the result is about to be sealed
    marker     the sealed result is in the outbox, its signed COMPLETE marker not yet
    recorded   the COMPLETE marker is out, the node ledger does not know yet
    slow       no pause: the pipeline's processes run until SIGNAL_DIR/go exists (cron overlap)
    none       no pause

Every pipeline run appends a line to SIGNAL_DIR/runs, so a test can count them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import federation.node.agent as agent_module
from federation.cli import main
from federation.node.ledger import NodeLedger
from federation.pipeline.runs import RunControl, run_guarded
from federation.protocol.messages import TaskStatus
from federation.transport.local import LocalTransport
from tests.unit.test_federation_flow import FakePipeline

# The pipeline's processes: a child that starts two grandchildren, writes all their pids,
# says "ready" and waits (killed with the group, or done after SECONDS when not paused).
TREE = """
import os, subprocess, sys, time
seconds = float(sys.argv[2])
children = [subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"]).pid for _ in range(2)]
open(sys.argv[1], "a").write(" ".join(map(str, [os.getpid(), *children])) + "\\n")
print("ready", flush=True)
go = os.path.join(os.path.dirname(sys.argv[1]), "go")
deadline = time.monotonic() + seconds
while time.monotonic() < deadline and not (len(sys.argv) > 3 and os.path.exists(go)):
    time.sleep(0.05)
"""
SLOW_SECONDS = 120.0  # at most; the test lets it finish (SIGNAL_DIR/go) when it has seen enough


def pause(signal_dir: Path, stage: str) -> None:
    (signal_dir / stage).write_text(str(time.time()))
    time.sleep(3600)  # until killed


def install(stage: str, signal_dir: Path) -> None:
    fake = FakePipeline()
    seconds = 3600.0 if stage == "pipeline" else SLOW_SECONDS if stage == "slow" else 0.2

    def processes(control: RunControl) -> None:
        with open(signal_dir / "runs", "a") as runs:
            runs.write(f"{time.time()}\n")

        def on_line(line: str) -> None:
            if stage == "pipeline" and line.strip() == "ready":
                (signal_dir / stage).write_text(str(time.time()))

        command = [sys.executable, "-c", TREE, str(signal_dir / "pids"), str(seconds)]
        if stage == "slow":
            command.append("wait-for-go")
        run_guarded(command, cwd=signal_dir, on_line=on_line, control=control)

    fake.during_run = processes
    agent_module.run_pipeline = fake  # type: ignore[assignment]
    if stage == "fetched":
        original_unpack = agent_module.unpack_bundle

        def unpack(*args: Any, **kwargs: Any) -> Any:
            pause(signal_dir, stage)
            return original_unpack(*args, **kwargs)

        agent_module.unpack_bundle = unpack  # type: ignore[assignment]
    elif stage == "sealing":
        original_seal = agent_module.seal

        def seal(*args: Any, **kwargs: Any) -> Any:
            pause(signal_dir, stage)
            return original_seal(*args, **kwargs)

        agent_module.seal = seal  # type: ignore[assignment]
    elif stage == "marker":
        original_put = LocalTransport.put_bytes

        def put_bytes(self: LocalTransport, key: str, data: bytes) -> None:
            if key.endswith("/COMPLETE"):
                pause(signal_dir, stage)
            original_put(self, key, data)

        LocalTransport.put_bytes = put_bytes  # type: ignore[method-assign]
    elif stage == "recorded":
        original_transition = NodeLedger.transition

        def transition(self: NodeLedger, task_id: str, status: TaskStatus, **changes: Any) -> bool:
            if status is TaskStatus.RELEASED:
                pause(signal_dir, stage)
            return original_transition(self, task_id, status, **changes)

        NodeLedger.transition = transition  # type: ignore[method-assign]


if __name__ == "__main__":
    stage, signal_dir, separator, *arguments = sys.argv[1:]
    assert separator == "--", "usage: agent_harness STAGE SIGNAL_DIR -- ARGS..."
    install(stage, Path(signal_dir))
    sys.exit(main(arguments))
