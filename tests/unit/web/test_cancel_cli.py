"""`federation study cancel --by --reason`: who cancelled and why reach the ledger and audit log."""

from __future__ import annotations

import json

from federation.cli import main
from federation.coordinator.ledger import StudyStatus, cancellation_reason
from tests.unit.web.conftest import WebFederation


def test_the_command_line_records_who_cancelled_and_why(web: WebFederation) -> None:
    web.submit("s1")
    code = main(
        ["study", "cancel", "s1", "--coordinator", str(web.config)]
        + ["--by", "carol", "--reason", "consent withdrawn"]
    )
    assert code == 0
    ledger = web.coordinator.ledger
    assert ledger.study("s1").status is StudyStatus.CANCELLED
    said = "cancelled by the coordinator (by carol: consent withdrawn)"
    assert {task.reason for task in ledger.tasks("s1")} == {said}
    assert [e["detail"] for e in ledger.events("s1") if e["event"] == "study_cancelled"] == [said]
    log = web.coordinator.settings.audit_log.read_text().splitlines()
    cancelled = [json.loads(line) for line in log if '"task_cancelled"' in line]
    assert len(cancelled) == 3 and {event["by"] for event in cancelled} == {"carol"}


def test_a_cancellation_without_who_or_why_says_only_the_coordinator() -> None:
    assert cancellation_reason() == "cancelled by the coordinator"
    assert cancellation_reason(reason="duplicate") == "cancelled by the coordinator (duplicate)"
    assert cancellation_reason(by="dan") == "cancelled by the coordinator (by dan)"
