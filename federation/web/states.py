"""How the coordinator's study and task states read as GA4GH WES 1.1 states.

A WES run is a study (its run id is the study id); each node's task is a WES task. The
nodes are the executors: what a node's policy, gate, admin or output reviewers decide is the
executor's outcome, while a task that never reached its node, or a deadline that passed, is
the system's. The mapping (docs/architecture.md has the same table):

    task: delivered, held                 -> QUEUED      (waiting at the node, for its turn or its admin)
          approved, running, in_review    -> RUNNING     (admitted; computing or being checked)
          released                        -> COMPLETE
          rejected, vetoed, withheld      -> EXECUTOR_ERROR (the node said no: policy, admin, gate)
          failed                          -> EXECUTOR_ERROR, or SYSTEM_ERROR if it was never delivered
          timed_out                       -> SYSTEM_ERROR (the study's deadline passed first)
          cancelled                       -> CANCELED

    run:  cancelled                       -> CANCELED
          meta_analysed, no task open     -> COMPLETE
          meta_analysed, tasks still open -> RUNNING (late nodes may still join the meta-analysis)
          failed (quorum out of reach)    -> SYSTEM_ERROR if every unreleased task is a
                                             SYSTEM_ERROR, else EXECUTOR_ERROR
          submitted, no task yet          -> INITIALIZING
          submitted, every task QUEUED    -> QUEUED
          submitted, otherwise            -> RUNNING (nodes at work, or results waiting to be collected)
"""

from __future__ import annotations

from enum import StrEnum

from federation.coordinator.coordinator import NOT_SENT
from federation.coordinator.ledger import StudyStatus
from federation.coordinator.status import NodeState, StudyView
from federation.protocol.messages import TaskStatus


class WesState(StrEnum):
    """The `State` enum of the WES 1.1 OpenAPI file."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    CANCELING = "CANCELING"
    PREEMPTED = "PREEMPTED"


TASK_STATES: dict[TaskStatus, WesState] = {
    TaskStatus.DELIVERED: WesState.QUEUED,
    TaskStatus.HELD: WesState.QUEUED,
    TaskStatus.APPROVED: WesState.RUNNING,
    TaskStatus.RUNNING: WesState.RUNNING,
    TaskStatus.IN_REVIEW: WesState.RUNNING,
    TaskStatus.RELEASED: WesState.COMPLETE,
    TaskStatus.REJECTED: WesState.EXECUTOR_ERROR,
    TaskStatus.VETOED: WesState.EXECUTOR_ERROR,
    TaskStatus.WITHHELD: WesState.EXECUTOR_ERROR,
    TaskStatus.FAILED: WesState.EXECUTOR_ERROR,
    TaskStatus.TIMED_OUT: WesState.SYSTEM_ERROR,
    TaskStatus.CANCELLED: WesState.CANCELED,
}


def task_state(node: NodeState) -> WesState:
    """A node's task as a WES task state (a task that never reached its node: SYSTEM_ERROR)."""
    if node.status is TaskStatus.FAILED and (node.category or "").startswith(NOT_SENT):
        return WesState.SYSTEM_ERROR
    return TASK_STATES[node.status]


def run_state(view: StudyView) -> WesState:
    """A study as a WES run state (see the module docstring)."""
    status = StudyStatus(view.status)
    states = [task_state(node) for node in view.nodes]
    if status is StudyStatus.CANCELLED:
        return WesState.CANCELED
    if status is StudyStatus.META_ANALYSED:
        return WesState.RUNNING if view.open else WesState.COMPLETE
    if status is StudyStatus.FAILED:
        unreleased = [state for state in states if state is not WesState.COMPLETE]
        if unreleased and all(state is WesState.SYSTEM_ERROR for state in unreleased):
            return WesState.SYSTEM_ERROR
        return WesState.EXECUTOR_ERROR
    if not states:
        return WesState.INITIALIZING
    if all(state is WesState.QUEUED for state in states):
        return WesState.QUEUED
    return WesState.RUNNING
