"""GA4GH WES 1.1: submitting a study as a run, following it, its tasks and outputs, cancel."""

from __future__ import annotations

import json
from typing import Any

from federation.protocol.bundle import pipeline_workflow_digest
from federation.protocol.messages import MailboxKeys
from tests.unit.web.conftest import ADMIN_TOKEN, NODES, READ_TOKEN, WebFederation, bearer
from tests.unit.web.test_views import advance

RUNS = "/ga4gh/wes/v1/runs"


def run_request(study: dict[str, Any], **changes: str) -> dict[str, str]:
    form = {
        "workflow_type": "federation-study",
        "workflow_type_version": "1",
        "workflow_url": pipeline_workflow_digest(),
        "workflow_params": json.dumps(study),
        "tags": json.dumps({"project": "cardio"}),
    }
    form.update(changes)
    return form


def submit(web: WebFederation, study_id: str, token: str = ADMIN_TOKEN, **changes: str) -> Any:
    return web.client.post(
        RUNS, data=run_request(web.study(study_id), **changes), headers=bearer(token)
    )


def get(web: WebFederation, path: str) -> Any:
    response = web.client.get(path, headers=bearer(READ_TOKEN))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_run_is_a_study_sent_to_every_node(web: WebFederation) -> None:
    response = submit(web, "wes-study")
    assert response.status_code == 200, response.text
    assert response.json() == {"run_id": "wes-study"}
    tasks = web.coordinator.ledger.tasks("wes-study")
    assert sorted(task.node_id for task in tasks) == sorted(NODES)
    for task in tasks:
        envelope = web.root / "mailboxes" / task.node_id / MailboxKeys.envelope(task.task_id)
        assert envelope.is_file()
    assert get(web, f"{RUNS}/wes-study/status") == {"run_id": "wes-study", "state": "QUEUED"}
    [summary] = get(web, RUNS)["runs"]
    assert summary["tags"] == {"project": "cardio"} and summary["state"] == "QUEUED"


def test_a_run_naming_another_workflow_is_refused_and_nothing_is_sent(
    web: WebFederation,
) -> None:
    response = submit(web, "s1", workflow_url="https://example.org/other.cwl")
    assert response.status_code == 400
    body = response.json()
    assert body["status_code"] == 400 and "workflow_url" in body["msg"]
    assert pipeline_workflow_digest() in body["msg"]
    assert web.coordinator.ledger.study_ids() == []


def test_bad_run_requests_name_the_field(web: WebFederation) -> None:
    cases = {
        "workflow_type": {"workflow_type": "CWL"},
        "workflow_type_version": {"workflow_type_version": "v1.0"},
        "workflow_params": {"workflow_params": "[1, 2]"},
        "tags": {"tags": "not json"},
    }
    for field, change in cases.items():
        response = submit(web, "s1", **change)
        assert response.status_code == 400, field
        assert response.json()["msg"].startswith(field), response.json()
    unknown_node = web.study("s1")
    unknown_node["nodes"] = ["fi", "xx"]
    response = web.client.post(RUNS, data=run_request(unknown_node), headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 400 and "'xx' is not configured" in response.json()["msg"]
    assert web.coordinator.ledger.study_ids() == []


def test_a_read_only_token_cannot_submit(web: WebFederation) -> None:
    response = submit(web, "s1", token=READ_TOKEN)
    assert response.status_code == 403 and response.json()["status_code"] == 403
    assert web.coordinator.ledger.study_ids() == []


def test_each_node_is_a_task_with_its_state(web: WebFederation) -> None:
    submit(web, "s1")
    advance(web, "s1", "fi", "approved", "running")
    advance(web, "s1", "ee", "approved", "running", "released")
    tasks = get(web, f"{RUNS}/s1/tasks")["task_logs"]
    states = {task["node_id"]: task["state"] for task in tasks}
    assert states == {"fi": "RUNNING", "ee": "COMPLETE", "nl": "QUEUED"}
    ee = next(task for task in tasks if task["node_id"] == "ee")
    assert ee["start_time"].endswith("Z") and ee["end_time"].endswith("Z")
    assert get(web, f"{RUNS}/s1/tasks/{ee['id']}") == ee
    log = get(web, f"{RUNS}/s1")
    assert (
        log["state"] == "RUNNING" and log["request"]["workflow_url"] == pipeline_workflow_digest()
    )
    assert log["request"]["workflow_params"]["study_id"] == "s1"
    assert [task["id"] for task in log["task_logs"]] == [task["id"] for task in tasks]


def test_outputs_list_the_studys_files_as_urls(web: WebFederation) -> None:
    submit(web, "s1")
    meta = web.root / "results" / "s1" / "meta"
    meta.mkdir(parents=True)
    (meta / "quant_trait_gwas.tsv.gz").write_bytes(b"x")
    (web.root / "results" / "s1" / "report.html").write_text("report")
    outputs = get(web, f"{RUNS}/s1")["outputs"]
    assert outputs["meta"] == {
        "quant_trait_gwas.tsv.gz": "http://testserver/files/s1/meta/quant_trait_gwas.tsv.gz"
    }
    assert outputs["report"] == "http://testserver/files/s1/report.html"
    assert len(outputs["files"]) == 2


def test_cancel_run_is_the_signed_cancellation_with_the_holders_name(web: WebFederation) -> None:
    submit(web, "s1")
    response = web.client.post(f"{RUNS}/s1/cancel", headers=bearer(ADMIN_TOKEN))
    assert response.json() == {"run_id": "s1"}
    assert get(web, f"{RUNS}/s1/status")["state"] == "CANCELED"
    reasons = {task.reason for task in web.coordinator.ledger.tasks("s1")}
    assert reasons == {"cancelled by the coordinator (by alice: cancelled through GA4GH WES)"}


def test_runs_are_paged(web: WebFederation) -> None:
    for study_id in ("a", "b", "c"):
        web.submit(study_id)
    first = get(web, f"{RUNS}?page_size=2")
    assert [run["run_id"] for run in first["runs"]] == ["c", "b"]
    second = get(web, f"{RUNS}?page_size=2&page_token={first['next_page_token']}")
    assert [run["run_id"] for run in second["runs"]] == ["a"] and second["next_page_token"] == ""
    bad = web.client.get(f"{RUNS}?page_size=0", headers=bearer(READ_TOKEN))
    assert bad.status_code == 400 and "page_size" in bad.json()["msg"]


def test_an_unknown_run_is_404(web: WebFederation) -> None:
    response = web.client.get(f"{RUNS}/nope", headers=bearer(READ_TOKEN))
    assert response.status_code == 404 and response.json()["status_code"] == 404
