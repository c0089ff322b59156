"""federation.coordinator.ledger: studies come back as StudySpecs; states only move forward."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.coordinator.ledger import CoordinatorLedger, StudyStatus
from federation.errors import PolicyViolation, SpecError
from federation.protocol.messages import TaskStatus
from federation.spec import study_from_dict

STUDY = study_from_dict(
    {
        "study_id": "s1",
        "reference_genome": "GRCh38",
        "nodes": ["fi", "ee"],
        "analyses": [
            {"id": "af", "type": "allele_frequency"},
            {"id": "bmi", "type": "gwas", "trait": "bmi", "trait_type": "quantitative"},
        ],
    }
)


@pytest.fixture()
def ledger(tmp_path: Path) -> CoordinatorLedger:
    ledger = CoordinatorLedger(tmp_path / "c.sqlite")
    ledger.add_study(STUDY, 2, "2026-12-31T00:00:00+00:00")
    return ledger


def test_a_stored_study_comes_back_as_the_same_spec(ledger: CoordinatorLedger, tmp_path: Path):
    record = CoordinatorLedger(tmp_path / "c.sqlite").study("s1")
    assert record.spec == STUDY and record.spec.analysis_ids == ("af", "bmi")
    assert record.quorum == 2 and record.status is StudyStatus.SUBMITTED
    assert record.deadline is not None and record.deadline.year == 2026
    assert record.meta_nodes == () and record.missing_nodes == ()


def test_a_study_id_is_submitted_once(ledger: CoordinatorLedger):
    with pytest.raises(SpecError, match="already submitted"):
        ledger.add_study(STUDY, 2, None)
    with pytest.raises(SpecError, match="not known to this coordinator"):
        ledger.study("nope")


def test_sequence_numbers_only_go_up_across_restarts(ledger: CoordinatorLedger, tmp_path: Path):
    assert [ledger.next_sequence("fi") for _ in range(2)] == [1, 2]
    assert CoordinatorLedger(tmp_path / "c.sqlite").next_sequence("fi") == 3
    assert ledger.next_sequence("ee") == 1


def test_a_final_status_is_never_overwritten(ledger: CoordinatorLedger):
    ledger.add_task("t1", "s1", "fi", 1, {"task_id": "t1"})
    assert ledger.set_task_status("t1", TaskStatus.RUNNING)
    assert ledger.set_task_status("t1", TaskStatus.FAILED, "the node pipeline failed")
    assert not ledger.set_task_status("t1", TaskStatus.RUNNING)
    (task,) = ledger.tasks("s1")
    assert task.status is TaskStatus.FAILED and task.reason == "the node pipeline failed"
    with pytest.raises(PolicyViolation, match="unknown to this coordinator"):
        ledger.set_task_status("t-unknown", TaskStatus.RUNNING)


def test_a_result_is_counted_once(ledger: CoordinatorLedger, tmp_path: Path):
    ledger.add_task("t1", "s1", "fi", 1, {"task_id": "t1"})
    assert ledger.record_result("t1", "d" * 64, tmp_path / "fi")
    assert not ledger.record_result("t1", "d" * 64, tmp_path / "fi")
    assert ledger.results("s1") == {"fi": tmp_path / "fi"}
    events = [event["event"] for event in ledger.events("s1")]
    assert events.count("result_received") == 1


def test_the_study_status_records_the_nodes_it_used(ledger: CoordinatorLedger):
    ledger.set_study_status("s1", StudyStatus.META_ANALYSED, ["ee"], ["fi"])
    record = ledger.study("s1")
    assert record.status is StudyStatus.META_ANALYSED
    assert record.missing_nodes == ("ee",) and record.meta_nodes == ("fi",)
