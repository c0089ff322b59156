"""`federation serve` and `federation demo --serve`: what they bind and what they print.

uvicorn and the demo itself are replaced here (the integration tier runs the real server);
what is checked is the command line's part: loopback by default, the config's port, and the
URL and admin token the demo prints before it serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn

import federation.sandbox.demo as demo_module
import federation.web.server as server_module
from federation.cli import main
from tests.unit.web.conftest import DASHBOARD, coordinator_config


def test_serve_binds_loopback_and_the_configs_port_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    config = coordinator_config(tmp_path, {**DASHBOARD, "port": 8765})
    assert main(["serve", "--coordinator", str(config)]) == 0
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8765
    assert main(["serve", "--coordinator", str(config), "--port", "9001"]) == 0
    assert calls[1]["port"] == 9001 and calls[1]["host"] == "127.0.0.1"


def test_demo_serve_prints_the_url_and_admin_token_then_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"

    def fake_demo(out_dir: Path, **options: Any) -> str:
        for holder in demo_module.DASHBOARD_HOLDERS:
            path = demo_module.dashboard_token_path(out_dir.resolve(), holder)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{holder}-token-0123456789abcdefghijkl\n")
        return "demo summary"

    served: list[tuple[Path, int | None]] = []
    monkeypatch.setattr(demo_module, "run_demo", fake_demo)
    monkeypatch.setattr(
        server_module,
        "serve",
        lambda config, host=None, port=None, **kw: served.append((config, port)),
    )
    assert main(["demo", "--out", str(out), "--serve", "--port", "9100"]) == 0
    printed = capsys.readouterr().out
    assert "demo summary" in printed
    assert "http://127.0.0.1:9100/" in printed
    assert "admin token: admin-token-0123456789abcdefghijkl" in printed
    assert served == [(demo_module.coordinator_config_path(out.resolve()), 9100)]
