"""The node agent as cron and systemd run it: real processes, killed with SIGKILL.

Each agent here is `federation node run-once` in a process of its own
(tests/integration/agent_harness.py: the Hail pipeline faked by a real process tree under the
real process-group guard). Killed with SIGKILL at each stage of a task, the agent leaves no
process behind, and the next run finishes the task exactly once: one signed result, one
`result_published`, one result at the coordinator. Runs started by cron while one is at work
exit at once with 75 and a line that says why; the task runs once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from federation.files import REPO_ROOT
from federation.pipeline.guard import alive, run_processes
from federation.protocol.bundle import pipeline_workflow_digest
from federation.protocol.messages import MailboxKeys, TaskStatus
from federation.sandbox.demo import demo_study, mailboxes, write_federation_configs
from federation.sandbox.synth import NodeCohort
from tests.unit.test_federation_flow import NODES, STUDY_ID, Federation

pytestmark = pytest.mark.integration

# Stage -> how often the pipeline has run once the task is done: a kill after the result is
# signed reuses it; a kill before, or while a result is half-published, runs the pipeline
# again (the privacy ledger gives a repeated request its stored bytes).
PIPELINE_RUNS = {"fetched": 1, "pipeline": 2, "sealing": 2, "marker": 2, "recorded": 1}
WAIT_SECONDS = 60.0  # a Python start with federation imported is ~1-2 s on a busy machine
GONE_SECONDS = 20.0  # SIGTERM, the guard's grace period, SIGKILL


@pytest.fixture()
def world(tmp_path: Path) -> Federation:
    cohorts = [NodeCohort(node, 800, 0.01, tmp_path / "cohorts" / node) for node in NODES]
    digest = pipeline_workflow_digest()
    with mailboxes("local", tmp_path, list(NODES), lambda line: None) as boxes:
        configs = write_federation_configs(tmp_path, cohorts, boxes, [digest])
    world = Federation(tmp_path, configs, tmp_path / "study.yaml", digest)
    world.study_path.write_text(yaml.safe_dump({**demo_study(list(NODES)), "study_id": STUDY_ID}))
    return world


def agent_process(world: Federation, stage: str, signals: Path) -> subprocess.Popen[str]:
    signals.mkdir(parents=True, exist_ok=True)
    config = str(world.configs.nodes["fi"])
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.agent_harness",
            stage,
            str(signals),
            "--",
            "node",
            "run-once",
            "--config",
            config,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"the agent exited ({process.returncode}): {process.stderr.read() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"the agent never reached {path.name}")
        time.sleep(0.05)


def gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_SECONDS
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


@pytest.mark.parametrize("stage", sorted(PIPELINE_RUNS))
def test_an_agent_killed_at_any_stage_leaves_nothing_running_and_the_next_run_finishes_once(
    world: Federation, tmp_path: Path, stage: str
) -> None:
    coordinator = world.coordinator()
    task_id = coordinator.submit(world.study_path).tasks["fi"]
    label = f"fi/{task_id}"
    signals = tmp_path / "signals"
    agent = agent_process(world, stage, signals)
    try:
        wait_for(signals / stage, agent)
        pipeline = (
            [int(pid) for pid in (signals / "pids").read_text().split()]
            if stage == "pipeline"
            else []
        )
        assert all(alive(pid) for pid in pipeline)
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert gone(pipeline) == [] and gone(run_processes(label)) == []

    again = agent_process(world, "none", signals)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert out.splitlines() == [
        f"{task_id}\treleased\tallele_frequencies released, quant_trait_gwas released, "
        "binary_trait_gwas released"
    ]
    assert run_processes(label) == []
    assert len((signals / "runs").read_text().splitlines()) == PIPELINE_RUNS[stage]
    events = [entry["event"] for entry in world.audit("fi")]
    assert events.count("result_published") == 1, events
    assert world.agent("fi").ledger.status(task_id) is TaskStatus.RELEASED
    assert world.node_mailbox("fi").exists(MailboxKeys.completion(task_id))
    collection = world.coordinator().collect(STUDY_ID)
    assert "fi" in collection.released
    received = [
        e for e in world.coordinator().ledger.events(STUDY_ID) if e["event"] == "result_received"
    ]
    assert [e["node_id"] for e in received] == ["fi"]


def test_cron_starting_runs_while_one_works_never_runs_a_task_twice(
    world: Federation, tmp_path: Path
) -> None:
    world.coordinator().submit(world.study_path)
    signals = tmp_path / "signals"
    first = agent_process(world, "slow", signals)
    late: list[subprocess.Popen[str]] = []
    try:
        wait_for(signals / "pids", first)  # the first run's pipeline is at work
        for _ in range(3):  # cron fires again, and again, while it works
            late.append(agent_process(world, "slow", signals))
            time.sleep(0.5)
        answers = [process.communicate(timeout=60) for process in late]
        assert first.poll() is None, "the first run ended early"
        (signals / "go").write_text("")  # now the first run's pipeline may finish
        out, err = first.communicate(timeout=120)
    finally:
        for process in (first, *late):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert first.returncode == 0, err
    for process, (_, late_err) in zip(late, answers, strict=True):
        assert process.returncode == 75, late_err
        errors = [line for line in late_err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another agent holds" in errors[0]
        assert f"pid {first.pid}" in errors[0]
    assert len((signals / "runs").read_text().splitlines()) == 1
    after = agent_process(world, "none", signals)
    out, err = after.communicate(timeout=60)
    assert after.returncode == 0 and out == ""  # nothing left to do
    audit = [
        json.loads(line) for line in (world.work_dir("fi") / "audit.jsonl").read_text().splitlines()
    ]
    assert [entry["event"] for entry in audit].count("result_published") == 1
