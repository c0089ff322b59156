"""The demo's node runs (`sandbox.demo.run_nodes`): every node's real agent runs once, side by
side (the Hail pipeline replaced by tests/unit/test_federation_flow.py's fake), and a node whose
task does not end as the demo needs fails the demo, named with its reason."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from federation.errors import PipelineError
from federation.node.agent import NodeAgent, TaskOutcome
from federation.protocol.messages import TaskStatus
from federation.sandbox.demo import (
    mailboxes,
    require_status,
    review_releases,
    run_nodes,
    write_federation_configs,
)
from federation.sandbox.side_by_side import NodeRunsFailed
from federation.sandbox.synth import NodeCohort
from tests.unit.test_federation_flow import (
    N_PER_NODE,
    NODES,
    STUDY_ID,
    FakePipeline,
    Federation,
)

MEET_SECONDS = 10.0


def agents_of(federation: Federation) -> dict[str, NodeAgent]:
    return {node: federation.agent(node) for node in NODES}


def test_the_demo_runs_every_nodes_pipeline_once_side_by_side(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    submission = federation.coordinator().submit(federation.study_path)
    together = threading.Barrier(len(NODES), timeout=MEET_SECONDS)  # breaks if run one by one
    fake_pipeline.before_run = lambda node_config, study_config: together.wait()
    lines: list[str] = []

    outcomes = run_nodes(agents_of(federation), TaskStatus.RELEASED, lines.append)

    assert sorted(fake_pipeline.nodes_called()) == sorted(NODES)
    assert outcomes == {
        node: [TaskOutcome(submission.tasks[node], TaskStatus.RELEASED)] for node in NODES
    }
    ended = [line for line in lines if " run ended after " in line]
    assert sorted(line.split("]")[0] for line in ended) == sorted(f"[{node}" for node in NODES)
    assert all(
        re.match(r"^\[\w+\] \d\d:\d\d:\d\d run ended after [\d.]+ s$", line) for line in ended
    )
    assert federation.coordinator().collect(STUDY_ID).missing == []


def test_a_node_whose_pipeline_fails_fails_the_demo_naming_the_node_and_why(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    submission = federation.coordinator().submit(federation.study_path)

    def qc_fails_at_ee(node_config: Path, study_config: Path) -> None:
        if node_config.parent.name == "ee":
            raise PipelineError("step qc failed: 0 samples pass the call-rate filter")

    fake_pipeline.before_run = qc_fails_at_ee
    with pytest.raises(PipelineError) as raised:
        run_nodes(agents_of(federation), TaskStatus.RELEASED, lambda line: None)
    message = str(raised.value)
    assert message.startswith(
        f"node 'ee': task {submission.tasks['ee']} failed, not released: step qc failed: "
        "0 samples pass the call-rate filter; see "
    )
    assert str(federation.work_dir("ee")) in message
    assert sorted(fake_pipeline.nodes_called()) == sorted(NODES)  # the others still ran
    assert federation.coordinator().collect(STUDY_ID).statuses["fi"] is TaskStatus.RELEASED


def test_a_node_agent_that_raises_fails_the_demo_naming_the_node(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.coordinator().submit(federation.study_path)
    agents = agents_of(federation)
    (federation.root / "mailboxes" / "nl").rename(federation.root / "mailbox-gone")
    with pytest.raises(NodeRunsFailed, match=r"^node 'nl': .*mailbox directory does not exist"):
        run_nodes(agents, TaskStatus.RELEASED, lambda line: None)
    assert sorted(fake_pipeline.nodes_called()) == ["ee", "fi"]


def test_a_node_with_no_task_to_run_fails_the_demo(federation: Federation) -> None:
    agent = federation.agent("fi")
    with pytest.raises(PipelineError, match="node 'fi': its agent found no task to run"):
        require_status(agent, [], TaskStatus.RELEASED)


def test_under_output_review_the_first_pass_must_leave_every_release_waiting(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.coordinator().submit(federation.study_path)
    with pytest.raises(PipelineError, match=r"released, not in_review"):
        run_nodes(agents_of(federation), TaskStatus.IN_REVIEW, lambda line: None)


def test_with_output_review_the_nodes_run_side_by_side_wait_for_both_reviewers_then_release(
    tmp_path: Path, fake_pipeline: FakePipeline, approved_digest: str
) -> None:
    cohorts = [NodeCohort(node, N_PER_NODE, 0.01, tmp_path / "cohorts" / node) for node in NODES]
    with mailboxes("local", tmp_path, list(NODES), lambda line: None) as boxes:
        configs = write_federation_configs(
            tmp_path, cohorts, boxes, [approved_digest], output_review="two"
        )
    fed = Federation(tmp_path, configs, tmp_path / "study.yaml", approved_digest)
    submission = fed.coordinator().submit(fed.write_study(STUDY_ID))
    agents = agents_of(fed)
    lines: list[str] = []

    run_nodes(agents, TaskStatus.IN_REVIEW, lines.append)
    assert fed.coordinator().collect(STUDY_ID).meta_files == []  # nothing left yet
    for agent in agents.values():
        review_releases(agent, tmp_path / "keys", lines.append)
    outcomes = run_nodes(agents, TaskStatus.RELEASED, lines.append)

    assert outcomes == {
        node: [TaskOutcome(submission.tasks[node], TaskStatus.RELEASED)] for node in NODES
    }
    assert sorted(fake_pipeline.nodes_called()) == sorted(NODES)  # each pipeline ran once
    for node in NODES:
        assert f"[{node}] reviewer-b approved task {submission.tasks[node]} (2 of 2)" in lines
    assert fed.coordinator().collect(STUDY_ID).missing == []
