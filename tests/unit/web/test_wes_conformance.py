"""The WES endpoint against the official GA4GH WES 1.1 OpenAPI file (tests/standards/).

schemathesis generates requests for every WES operation from the official file and checks
every response against it (status codes, content types, schemas, no server errors), with an
admin token and with a study already submitted, so both the found and the not-found paths
are answered. The app's own OpenAPI must offer the same WES paths, methods and parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from federation.coordinator.coordinator import Coordinator
from federation.settings import load_coordinator
from federation.web.app import create_app
from federation.web.live import Dashboard
from federation.web.wes import WES_PREFIX
from tests.unit.web.conftest import (
    ADMIN_TOKEN,
    DASHBOARD,
    WebFederation,
    bearer,
    coordinator_config,
)
from tests.unit.web.standards import wes_openapi

EXAMPLES_PER_OPERATION = 25  # enough to reach each documented error; the unit tier stays fast
CHECKS = (
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
)


@pytest.fixture()
def wes_schema(tmp_path: Path) -> Iterator[Any]:
    config = coordinator_config(tmp_path, DASHBOARD)
    coordinator_settings = load_coordinator(config)
    assert coordinator_settings.dashboard is not None
    dashboard = Dashboard(Coordinator(coordinator_settings), coordinator_settings.dashboard)
    app = create_app(dashboard, background=False)
    with TestClient(app) as client:
        WebFederation(tmp_path, config, dashboard, client).submit("known-run")
        yield schemathesis.from_dict(wes_openapi(), app=app, base_url=WES_PREFIX)


schema = schemathesis.from_pytest_fixture("wes_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_wes_operation_answers_as_the_official_file_says(case: Any) -> None:
    case.call_and_validate(headers=bearer(ADMIN_TOKEN), checks=CHECKS)


def test_a_known_run_and_its_tasks_conform(web: WebFederation) -> None:
    loaded = schemathesis.from_dict(wes_openapi(), app=web.client.app, base_url=WES_PREFIX)
    web.submit("known-run")
    tasks = web.coordinator.ledger.tasks("known-run")
    calls = [
        ("/runs", "GET", {}),
        ("/service-info", "GET", {}),
        ("/runs/{run_id}", "GET", {"run_id": "known-run"}),
        ("/runs/{run_id}/status", "GET", {"run_id": "known-run"}),
        ("/runs/{run_id}/tasks", "GET", {"run_id": "known-run"}),
        (
            "/runs/{run_id}/tasks/{task_id}",
            "GET",
            {"run_id": "known-run", "task_id": tasks[0].task_id},
        ),
        ("/runs/{run_id}/cancel", "POST", {"run_id": "known-run"}),
    ]
    for path, method, parameters in calls:
        case = loaded[path][method].make_case(path_parameters=parameters)
        response = case.call(headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 200, (path, response.text)
        case.validate_response(response, checks=CHECKS)


def wes_operations(document: dict[str, Any], prefix: str = "") -> dict[tuple[str, str], set[str]]:
    """(path, METHOD) -> the names of its parameters (path, query and form fields)."""
    found = {}
    for path, item in document["paths"].items():
        if not path.startswith(prefix):
            continue
        for method, operation in item.items():
            names = {parameter["name"] for parameter in operation.get("parameters", [])}
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                schema = media.get("schema", {})
                ref = schema.get("$ref")
                if ref:
                    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
                names |= set(schema.get("properties", {}))
            found[(path.removeprefix(prefix), method.upper())] = names
    return found


def test_the_apps_own_openapi_offers_the_official_wes_operations(web: WebFederation) -> None:
    official = wes_operations(wes_openapi())
    ours = wes_operations(web.client.app.openapi(), WES_PREFIX)  # type: ignore[attr-defined]
    assert set(ours) == set(official)
    for operation, names in official.items():
        assert ours[operation] == names, operation
    post = web.client.app.openapi()["paths"][f"{WES_PREFIX}/runs"]["post"]  # type: ignore[attr-defined]
    assert set(post["requestBody"]["content"]) == {"multipart/form-data"}
