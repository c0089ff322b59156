"""Tokens and roles: no token, a wrong token, a read-only token and an admin token."""

from __future__ import annotations

import json

import pytest

from federation.coordinator.ledger import StudyStatus
from federation.protocol.messages import MailboxKeys, TaskStatus
from tests.unit.web.conftest import ADMIN_TOKEN, READ_TOKEN, WRONG_TOKEN, WebFederation, bearer

GUARDED = (
    "/api/studies",
    "/api/studies/s1",
    "/api/nodes",
    "/api/events",
    "/files/s1/anything.txt",
    "/ga4gh/wes/v1/service-info",
    "/ga4gh/wes/v1/runs",
    "/ga4gh/wes/v1/runs/s1",
    "/ga4gh/wes/v1/runs/s1/status",
    "/ga4gh/wes/v1/runs/s1/tasks",
)


def cancellation_files(web: WebFederation, study_id: str) -> list[str]:
    found = []
    for task in web.coordinator.ledger.tasks(study_id):
        mailbox = web.root / "mailboxes" / task.node_id
        if (mailbox / MailboxKeys.cancellation(task.task_id)).exists():
            found.append(task.node_id)
    return sorted(found)


@pytest.mark.parametrize("path", GUARDED)
def test_a_wrong_token_gets_401_everywhere(web: WebFederation, path: str) -> None:
    web.submit("s1")
    response = web.client.get(path, headers=bearer(WRONG_TOKEN))
    assert response.status_code == 401
    assert "not recognised" in response.text


@pytest.mark.parametrize("path", [path for path in GUARDED if not path.startswith("/files/")])
def test_no_token_gets_401_from_the_api(web: WebFederation, path: str) -> None:
    web.submit("s1")
    assert web.client.get(path).status_code == 401


def test_wes_errors_are_wes_error_responses(web: WebFederation) -> None:
    response = web.client.get("/ga4gh/wes/v1/runs", headers=bearer(WRONG_TOKEN))
    assert response.json() == {"msg": response.json()["msg"], "status_code": 401}


@pytest.mark.parametrize("path", ["/studies", "/nodes", "/files/s1/report.html"])
def test_a_page_without_a_token_sends_the_browser_to_the_login(
    web: WebFederation, path: str
) -> None:
    response = web.client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}"


def test_logging_in_with_a_wrong_token_is_401_and_sets_no_cookie(web: WebFederation) -> None:
    response = web.client.post("/login", data={"token": WRONG_TOKEN}, follow_redirects=False)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert web.client.get("/studies", follow_redirects=False).status_code == 303


def test_logging_in_sets_an_http_only_cookie_that_opens_the_pages(web: WebFederation) -> None:
    web.submit("s1")
    response = web.client.post(
        "/login", data={"token": READ_TOKEN, "next": "/studies/s1"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/studies/s1"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = web.client.get("/studies/s1")
    assert page.status_code == 200 and 'id="study-id">s1<' in page.text
    assert 'id="cancel"' not in page.text  # a read-only holder is not offered the button


def test_the_login_never_redirects_off_site(web: WebFederation) -> None:
    response = web.client.post(
        "/login", data={"token": READ_TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert response.headers["location"] == "/studies"


def test_a_read_only_token_cannot_cancel_by_api_page_or_wes(web: WebFederation) -> None:
    web.submit("s1")
    attempts = [
        web.client.post("/api/studies/s1/cancel", headers=bearer(READ_TOKEN)),
        web.client.post("/studies/s1/cancel", headers=bearer(READ_TOKEN)),
        web.client.post("/ga4gh/wes/v1/runs/s1/cancel", headers=bearer(READ_TOKEN)),
    ]
    assert [response.status_code for response in attempts] == [403, 403, 403]
    assert "read-only" in attempts[0].json()["detail"]
    assert web.coordinator.ledger.study("s1").status is StudyStatus.SUBMITTED
    assert cancellation_files(web, "s1") == []


def test_an_admin_cancels_with_the_coordinators_signed_cancellation(web: WebFederation) -> None:
    web.submit("s1")
    response = web.client.post(
        "/api/studies/s1/cancel", params={"reason": "wrong trait"}, headers=bearer(ADMIN_TOKEN)
    )
    assert response.status_code == 200 and response.json()["by"] == "alice"
    assert len(response.json()["cancelled_tasks"]) == 3
    assert cancellation_files(web, "s1") == ["ee", "fi", "nl"]
    ledger = web.coordinator.ledger
    assert ledger.study("s1").status is StudyStatus.CANCELLED
    reasons = {task.reason for task in ledger.tasks("s1")}
    assert reasons == {"cancelled by the coordinator (by alice: wrong trait)"}
    assert {task.status for task in ledger.tasks("s1")} == {TaskStatus.CANCELLED}
    log = web.coordinator.settings.audit_log
    audit = [json.loads(line) for line in log.read_text().splitlines()]
    study_events = [event for event in audit if event["event"] == "study_cancelled"]
    assert study_events and study_events[-1]["by"] == "alice"
    assert study_events[-1]["reason"] == "wrong trait"


def test_the_cancel_button_is_there_for_an_admin_and_works(web: WebFederation) -> None:
    web.submit("s1")
    web.client.post("/login", data={"token": ADMIN_TOKEN})
    page = web.client.get("/studies/s1")
    assert 'id="cancel"' in page.text
    response = web.client.post("/studies/s1/cancel", data={"reason": "by hand"})
    assert response.status_code == 200  # redirected back to the study
    assert 'id="study-status">cancelled<' in response.text
    assert 'id="cancel"' not in response.text
