"""federation.coordinator.ledger: studies come back as StudySpecs; states only move forward;
planned deliveries survive a restart; an older ledger is upgraded in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation.coordinator.ledger import MIGRATIONS, CoordinatorLedger, StudyStatus
from federation.errors import PolicyViolation, SpecError
from federation.outcomes import AnalysisOutcome, RefusalCategory, ReleaseOutcome
from federation.protocol.messages import TaskStatus
from federation.spec import study_from_dict
from federation.sqlite import connect, migrate, schema_version

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


def test_a_study_id_names_one_study_and_submitting_it_again_resumes_it(
    ledger: CoordinatorLedger,
):
    assert ledger.add_study(STUDY, 2, None) is True  # the same study: a re-run of submit
    other = study_from_dict({**STUDY.raw, "title": "something else"})
    with pytest.raises(SpecError, match="already submitted with other content"):
        ledger.add_study(other, 2, None)
    with pytest.raises(SpecError, match="not known to this coordinator"):
        ledger.study("nope")
    assert [event["event"] for event in ledger.events("s1")] == ["study_submitted"]


def test_a_planned_task_is_kept_and_a_second_plan_for_its_node_changes_nothing(
    ledger: CoordinatorLedger,
):
    first = ledger.plan_task("s1", "fi", "t1", 1, {"task_id": "t1", "sequence": 1})
    again = ledger.plan_task("s1", "fi", "t2", 2, {"task_id": "t2", "sequence": 2})
    assert again == first and again.task_id == "t1" and again.envelope["sequence"] == 1
    assert list(ledger.planned("s1")) == ["fi"]


def test_cancelling_a_study_cancels_its_open_tasks_only(ledger: CoordinatorLedger):
    ledger.add_task("t1", "s1", "fi", 1, {"task_id": "t1"})
    ledger.add_task("t2", "s1", "ee", 1, {"task_id": "t2"})
    ledger.set_task_status("t2", TaskStatus.VETOED, "vetoed by the node's admin")
    assert ledger.cancel_study("s1") == ["t1"]
    statuses = {task.node_id: task.status for task in ledger.tasks("s1")}
    assert statuses == {"fi": TaskStatus.CANCELLED, "ee": TaskStatus.VETOED}
    assert ledger.study("s1").status is StudyStatus.CANCELLED
    assert ledger.study_ids() == ["s1"]


def test_a_first_version_ledger_is_upgraded_and_keeps_its_tasks(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with connect(path) as connection:
        migrate(connection, MIGRATIONS[:1], "old ledger")
        connection.execute(
            "INSERT INTO studies VALUES ('s0', ?, '2026-01-01T00:00:00+00:00', 1, NULL, "
            "'submitted', NULL, NULL)",
            (json.dumps(STUDY.raw | {"study_id": "s0"}),),
        )
        connection.execute(
            "INSERT INTO tasks VALUES ('t0', 's0', 'fi', 1, '{}', 'accepted', NULL, "
            "'2026-01-01T00:00:00+00:00')"
        )
    ledger = CoordinatorLedger(path)
    (task,) = ledger.tasks("s0")
    assert task.status is TaskStatus.APPROVED and task.analyses == {} and task.review is None
    with connect(path) as connection:
        assert schema_version(connection) == len(MIGRATIONS)


WITHHELD_SMALL = AnalysisOutcome(ReleaseOutcome.WITHHELD, RefusalCategory.COHORT_TOO_SMALL)


def test_a_task_keeps_each_withheld_analysis_with_its_category(
    ledger: CoordinatorLedger, tmp_path: Path
):
    ledger.add_task("t1", "s1", "fi", 1, {"task_id": "t1"})
    analyses = {"af": AnalysisOutcome(ReleaseOutcome.RELEASED), "bmi": WITHHELD_SMALL}
    ledger.set_task_outcomes("t1", analyses)
    ledger.set_task_outcomes("t1", None, {"mode": "one", "approvals": 1})  # keeps the outcomes
    (task,) = CoordinatorLedger(tmp_path / "c.sqlite").tasks("s1")
    assert task.analyses == analyses and task.review == {"mode": "one", "approvals": 1}


def test_outcomes_stored_before_categories_still_read(ledger: CoordinatorLedger, tmp_path: Path):
    ledger.add_task("t1", "s1", "fi", 1, {"task_id": "t1"})
    with connect(tmp_path / "c.sqlite") as connection:  # a row as the first release wrote it
        connection.execute(
            "UPDATE tasks SET analyses_json = ? WHERE task_id = 't1'",
            (json.dumps({"af": "released", "bmi": "withheld"}),),
        )
    (task,) = ledger.tasks("s1")
    assert task.analyses == {
        "af": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "bmi": AnalysisOutcome(ReleaseOutcome.WITHHELD),
    }


def test_a_damaged_outcomes_row_is_a_one_line_error_naming_the_task(
    ledger: CoordinatorLedger, tmp_path: Path
):
    ledger.add_task("t1", "s1", "fi", 1, {"task_id": "t1"})
    with connect(tmp_path / "c.sqlite") as connection:
        connection.execute('UPDATE tasks SET analyses_json = \'{"af": "lost"}\'')
    with pytest.raises(SpecError, match="task 't1' analysis 'af': outcome 'lost'.*restore"):
        ledger.tasks("s1")


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
