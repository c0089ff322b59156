"""Every task state and every study state has its WES state (web.states)."""

from __future__ import annotations

import pytest

from federation.coordinator.coordinator import NOT_SENT
from federation.coordinator.ledger import StudyStatus
from federation.coordinator.status import NodeState, StudyView
from federation.protocol.messages import TaskStatus
from federation.web.states import TASK_STATES, WesState, run_state, task_state

EXPECTED_TASK_STATES = {
    "delivered": "QUEUED",
    "held": "QUEUED",
    "approved": "RUNNING",
    "running": "RUNNING",
    "in_review": "RUNNING",
    "released": "COMPLETE",
    "rejected": "EXECUTOR_ERROR",
    "vetoed": "EXECUTOR_ERROR",
    "withheld": "EXECUTOR_ERROR",
    "failed": "EXECUTOR_ERROR",
    "timed_out": "SYSTEM_ERROR",
    "cancelled": "CANCELED",
}


def node(status: TaskStatus, category: str | None = None, node_id: str = "fi") -> NodeState:
    return NodeState(node_id, f"task-{node_id}", status, "2026-01-01T00:00:00+00:00", category)


def study(status: StudyStatus, *nodes: NodeState) -> StudyView:
    return StudyView(
        study_id="s",
        title="t",
        status=status.value,
        submitted_at="2026-01-01T00:00:00+00:00",
        deadline=None,
        quorum=2,
        nodes=tuple(nodes),
        released=tuple(n.node_id for n in nodes if n.status is TaskStatus.RELEASED),
        missing=(),
        meta_nodes=(),
    )


def test_every_task_status_has_a_wes_state() -> None:
    assert set(TASK_STATES) == set(TaskStatus)
    assert all(isinstance(state, WesState) for state in TASK_STATES.values())


@pytest.mark.parametrize("status", list(TaskStatus), ids=lambda status: status.value)
def test_each_task_status_maps_as_documented(status: TaskStatus) -> None:
    assert task_state(node(status)).value == EXPECTED_TASK_STATES[status.value]


def test_a_task_that_never_reached_its_node_is_a_system_error() -> None:
    assert task_state(node(TaskStatus.FAILED, f"{NOT_SENT}: refused")) is WesState.SYSTEM_ERROR
    assert task_state(node(TaskStatus.FAILED, "pipeline exited 1")) is WesState.EXECUTOR_ERROR


@pytest.mark.parametrize(
    ("status", "tasks", "expected"),
    [
        (StudyStatus.SUBMITTED, [], WesState.INITIALIZING),
        (StudyStatus.SUBMITTED, [TaskStatus.DELIVERED, TaskStatus.HELD], WesState.QUEUED),
        (StudyStatus.SUBMITTED, [TaskStatus.DELIVERED, TaskStatus.RUNNING], WesState.RUNNING),
        (StudyStatus.SUBMITTED, [TaskStatus.RELEASED, TaskStatus.RELEASED], WesState.RUNNING),
        (StudyStatus.SUBMITTED, [TaskStatus.IN_REVIEW, TaskStatus.APPROVED], WesState.RUNNING),
        (StudyStatus.META_ANALYSED, [TaskStatus.RELEASED, TaskStatus.RELEASED], WesState.COMPLETE),
        (StudyStatus.META_ANALYSED, [TaskStatus.RELEASED, TaskStatus.VETOED], WesState.COMPLETE),
        (StudyStatus.META_ANALYSED, [TaskStatus.RELEASED, TaskStatus.RUNNING], WesState.RUNNING),
        (StudyStatus.FAILED, [TaskStatus.WITHHELD, TaskStatus.REJECTED], WesState.EXECUTOR_ERROR),
        (StudyStatus.FAILED, [TaskStatus.RELEASED, TaskStatus.VETOED], WesState.EXECUTOR_ERROR),
        (StudyStatus.FAILED, [TaskStatus.RELEASED, TaskStatus.TIMED_OUT], WesState.SYSTEM_ERROR),
        (StudyStatus.FAILED, [TaskStatus.TIMED_OUT, TaskStatus.VETOED], WesState.EXECUTOR_ERROR),
        (StudyStatus.CANCELLED, [TaskStatus.CANCELLED, TaskStatus.RELEASED], WesState.CANCELED),
    ],
)
def test_each_study_state_maps_to_a_run_state(
    status: StudyStatus, tasks: list[TaskStatus], expected: WesState
) -> None:
    nodes = [node(task, node_id=f"n{index}") for index, task in enumerate(tasks)]
    assert run_state(study(status, *nodes)) is expected


def test_every_study_status_is_covered() -> None:
    seen = {
        run_state(study(status, node(TaskStatus.RELEASED), node(TaskStatus.FAILED, node_id="x")))
        for status in StudyStatus
    }
    assert len(seen) == len(StudyStatus)
