"""A coordinator with three local mailboxes and a real ledger, for the dashboard's unit tests.

Studies are submitted through the coordinator's own submit (signed envelopes into local
mailboxes); node progress is written into the ledger as the coordinator records a node's
report, so the web layer reads exactly what it reads in production. No Hail, no server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from federation.coordinator.coordinator import Coordinator
from federation.protocol.signing import generate_keypair
from federation.sandbox.demo import demo_study
from federation.settings import load_coordinator
from federation.web.app import create_app
from federation.web.live import Dashboard

NODES = ("fi", "ee", "nl")
READ_TOKEN = "read-token-0123456789abcdefghij"
ADMIN_TOKEN = "admin-token-0123456789abcdefghij"
WRONG_TOKEN = "wrong-token-0123456789abcdefghij"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class WebFederation:
    root: Path
    config: Path
    dashboard: Dashboard
    client: TestClient

    @property
    def coordinator(self) -> Coordinator:
        return self.dashboard.coordinator

    def submit(self, study_id: str, **changes: Any) -> Path:
        study = demo_study(list(NODES))
        study.update(study_id=study_id, **changes)
        path = self.root / f"{study_id}.yaml"
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        self.coordinator.submit(path)
        return path

    def study(self, study_id: str, **changes: Any) -> dict[str, Any]:
        study = demo_study(list(NODES))
        study.update(study_id=study_id, **changes)
        return study


def coordinator_config(root: Path, dashboard: dict[str, Any] | None) -> Path:
    keys = root / "keys"
    for name in ("coordinator", *NODES):
        generate_keypair(keys, name, force=True)
    document: dict[str, Any] = {
        "coordinator_id": "coordinator",
        "signing_key": str(keys / "coordinator.key"),
        "state_dir": str(root / "state"),
        "results_dir": str(root / "results"),
        "nodes": {},
    }
    for node in NODES:
        mailbox = root / "mailboxes" / node
        mailbox.mkdir(parents=True, exist_ok=True)
        document["nodes"][node] = {
            "public_key": str(keys / f"{node}.pub"),
            "mailbox": {"kind": "local", "path": str(mailbox)},
        }
    if dashboard is not None:
        document["dashboard"] = dashboard
    path = root / "coordinator.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


DASHBOARD = {
    "tokens": [
        {"name": "alice", "role": "admin", "token": ADMIN_TOKEN},
        {"name": "bob", "role": "read", "token": READ_TOKEN},
    ]
}


@pytest.fixture()
def web(tmp_path: Path) -> Iterator[WebFederation]:
    config = coordinator_config(tmp_path, DASHBOARD)
    settings = load_coordinator(config)
    assert settings.dashboard is not None
    dashboard = Dashboard(Coordinator(settings), settings.dashboard, collect=False)
    with TestClient(create_app(dashboard, background=False)) as client:
        yield WebFederation(tmp_path, config, dashboard, client)
