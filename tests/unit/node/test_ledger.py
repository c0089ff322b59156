"""federation.node.ledger: replays are refused by task id across restarts; a late task is not;
decisions, owed reports and workflow approvals survive restarts; an old ledger is upgraded."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.errors import PolicyViolation
from federation.node.ledger import MIGRATIONS, DecisionKind, NodeLedger
from federation.outcomes import AnalysisOutcome, RefusalCategory, ReleaseOutcome
from federation.protocol.messages import TaskStatus
from federation.sqlite import connect, migrate, schema_version


def test_a_received_task_is_remembered_after_a_restart_and_its_id_never_runs_twice(
    tmp_path: Path,
):
    NodeLedger(tmp_path / "n.sqlite").claim("t1", "coordinator", 1, "s1")
    ledger = NodeLedger(tmp_path / "n.sqlite")
    assert ledger.status("t1") is TaskStatus.APPROVED is TaskStatus.ACCEPTED
    assert ledger.coordinator("t1") == "coordinator"
    with pytest.raises(PolicyViolation, match="already seen \\(replay\\)"):
        ledger.receive("t1", "coordinator", 2, "s1")


@pytest.mark.parametrize("sequence", [1, 2, 3])
def test_a_task_signed_before_the_last_one_is_still_received(tmp_path: Path, sequence: int):
    """The sequence number orders the queue; a late task is not a replay."""
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.receive("t3", "coordinator", 3, "s3")
    ledger.receive("t-late", "coordinator", sequence, "s-late")
    assert ledger.status("t-late") is TaskStatus.DELIVERED
    assert [task.task_id for task in ledger.open_tasks()] == (
        ["t-late", "t3"] if sequence < 3 else sorted(["t-late", "t3"])
    )


def test_a_refusal_is_recorded_once_and_the_first_reason_stays(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.record_refusal("t1", "unverified", 0, "unknown", "unsigned")
    ledger.record_refusal("t1", "unverified", 0, "unknown", "second copy")
    task = ledger.task("t1")
    assert task is not None and task.status is TaskStatus.REJECTED and task.reason == "unsigned"
    assert ledger.unfinished() == [] and ledger.open_tasks() == []


def test_open_tasks_come_back_in_sequence_order(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    for task_id, sequence in (("late", 5), ("done", 6), ("held", 7), ("new", 8)):
        ledger.receive(task_id, "coordinator", sequence, f"s{sequence}")
    ledger.set_status("late", TaskStatus.RUNNING)
    ledger.set_status("done", TaskStatus.RELEASED)
    ledger.set_status("held", TaskStatus.HELD)
    assert ledger.unfinished() == ["late", "new"]
    assert [task.task_id for task in ledger.open_tasks()] == ["late", "held", "new"]


def test_a_transition_from_a_state_that_has_moved_on_does_not_happen(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.receive("t1", "coordinator", 1, "s1")
    held = frozenset({TaskStatus.HELD})
    assert not ledger.transition("t1", TaskStatus.APPROVED, allowed_from=held)
    ledger.set_status("t1", TaskStatus.HELD)
    assert ledger.transition("t1", TaskStatus.VETOED, allowed_from=held, public_reason="vetoed")
    assert not ledger.transition("t1", TaskStatus.APPROVED, allowed_from=held)
    assert ledger.status("t1") is TaskStatus.VETOED


def test_a_report_stays_due_until_the_status_it_carries_was_sent(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.receive("t1", "coordinator", 1, "s1")
    analyses = {
        "af": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "gwas": AnalysisOutcome(ReleaseOutcome.WITHHELD, RefusalCategory.COHORT_TOO_SMALL),
    }
    ledger.transition("t1", TaskStatus.RUNNING)
    ledger.transition("t1", TaskStatus.RELEASED, analyses=analyses)
    ledger.report_sent("t1", TaskStatus.RUNNING)  # an older report: the newer one is owed
    assert [task.task_id for task in ledger.reports_due()] == ["t1"]
    ledger.report_sent("t1", TaskStatus.RELEASED)
    assert ledger.reports_due() == []
    task = NodeLedger(tmp_path / "n.sqlite").task("t1")
    assert task is not None and task.analyses == analyses


def test_outcomes_a_node_stored_before_categories_still_read(tmp_path: Path):
    """A node's ledger lives for years: a row holding bare outcomes reads without categories,
    and the next status change writes the new form."""
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.receive("t1", "coordinator", 1, "s1")
    with connect(tmp_path / "n.sqlite") as connection:
        connection.execute(
            'UPDATE seen_tasks SET analyses_json = \'{"af": "released", '
            '"gwas": "withheld"}\' WHERE task_id = \'t1\''
        )
    old = {
        "af": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "gwas": AnalysisOutcome(ReleaseOutcome.WITHHELD),
    }
    task = ledger.task("t1")
    assert task is not None and task.analyses == old
    ledger.transition("t1", TaskStatus.RELEASED)  # kept as they were
    task = ledger.task("t1")
    assert task is not None and task.analyses == old


def test_a_reviewer_decides_once_per_release(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.receive("t1", "coordinator", 1, "s1")
    ledger.add_decision("t1", DecisionKind.REVIEW_APPROVED, "alice", "u1", release_digest="a")
    with pytest.raises(PolicyViolation, match="reviewer 'alice' has already decided"):
        ledger.add_decision("t1", DecisionKind.REVIEW_REJECTED, "alice", "u2", release_digest="a")
    ledger.add_decision("t1", DecisionKind.REVIEW_APPROVED, "bob", "u1", release_digest="a")
    ledger.add_decision("t1", DecisionKind.REVIEW_APPROVED, "alice", "u1", release_digest="b")
    assert [(d.actor, d.release_digest) for d in ledger.decisions("t1")] == [
        ("alice", "a"),
        ("bob", "a"),
        ("alice", "b"),
    ]


def test_workflow_approvals_and_copies_are_kept(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.approve_workflow("d" * 64, {"analyses": ["gwas"]}, "admin", "root", "t1")
    ledger.workflow_copied("a" * 64)
    ledger.workflow_copied("b" * 64)
    again = NodeLedger(tmp_path / "n.sqlite")
    (approval,) = again.workflow_approvals()
    assert approval.digest == "d" * 64 and approval.envelope == {"analyses": ["gwas"]}
    assert again.workflow_copies() == ["a" * 64, "b" * 64]


def test_a_first_version_ledger_is_upgraded_and_its_tasks_keep_their_state(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with connect(path) as connection:
        migrate(connection, MIGRATIONS[:1], "old ledger")
        connection.execute(
            "INSERT INTO seen_tasks VALUES ('t1', 'c', 4, 's1', '2026-01-01T00:00:00+00:00', "
            "'accepted', NULL)"
        )
        connection.execute("INSERT INTO last_sequence VALUES ('c', 4)")
    ledger = NodeLedger(path)
    task = ledger.task("t1")
    assert task is not None and task.status is TaskStatus.APPROVED
    assert task.updated_at == "2026-01-01T00:00:00+00:00"
    assert ledger.unfinished() == ["t1"]
    ledger.receive("t-earlier", "c", 2, "s2")  # the old 'last sequence' no longer refuses
    with connect(path) as connection:
        assert schema_version(connection) == len(MIGRATIONS)
