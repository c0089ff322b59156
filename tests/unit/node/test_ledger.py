"""federation.node.ledger: replays and older sequence numbers are refused across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.errors import PolicyViolation
from federation.node.ledger import NodeLedger
from federation.protocol.messages import TaskStatus


def test_a_claimed_task_is_remembered_after_a_restart(tmp_path: Path):
    NodeLedger(tmp_path / "n.sqlite").claim("t1", "coordinator", 1, "s1")
    ledger = NodeLedger(tmp_path / "n.sqlite")
    assert ledger.status("t1") is TaskStatus.ACCEPTED
    assert ledger.coordinator("t1") == "coordinator"
    with pytest.raises(PolicyViolation, match="already seen \\(replay\\)"):
        ledger.claim("t1", "coordinator", 2, "s1")


@pytest.mark.parametrize("sequence", [2, 3])
def test_a_sequence_number_not_above_the_last_accepted_is_refused(tmp_path: Path, sequence: int):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.claim("t3", "coordinator", 3, "s1")
    with pytest.raises(PolicyViolation, match=f"sequence {sequence} <= last accepted 3"):
        ledger.claim("t-older", "coordinator", sequence, "s2")
    ledger.claim("t-other-coordinator", "other", 1, "s3")  # counted per coordinator


def test_a_refusal_is_recorded_once_and_the_first_reason_stays(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.record_refusal("t1", "unverified", 0, "unknown", "unsigned")
    ledger.record_refusal("t1", "unverified", 0, "unknown", "second copy")
    assert ledger.status("t1") is TaskStatus.REJECTED
    assert ledger.unfinished() == []


def test_unfinished_tasks_come_back_in_sequence_order(tmp_path: Path):
    ledger = NodeLedger(tmp_path / "n.sqlite")
    ledger.claim("late", "coordinator", 5, "s5")
    ledger.set_status("late", TaskStatus.RUNNING)
    ledger.claim("done", "coordinator", 6, "s6")
    ledger.set_status("done", TaskStatus.RELEASED)
    ledger.claim("new", "coordinator", 7, "s7")
    assert ledger.unfinished() == ["late", "new"]
