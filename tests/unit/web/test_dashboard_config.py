"""The coordinator config's `dashboard` section: one-line errors naming field, value and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from federation.cli import main
from federation.errors import SpecError
from federation.settings import MIN_TOKEN_LENGTH, load_coordinator
from tests.unit.web.conftest import ADMIN_TOKEN, READ_TOKEN, coordinator_config


def load_with(tmp_path: Path, dashboard: dict[str, Any] | None) -> Any:
    return load_coordinator(coordinator_config(tmp_path, dashboard))


def refusal(tmp_path: Path, dashboard: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as error:
        load_with(tmp_path, dashboard)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_defaults_bind_loopback(tmp_path: Path) -> None:
    settings = load_with(tmp_path, {"tokens": [{"name": "a", "role": "read", "token": READ_TOKEN}]})
    assert settings.dashboard.host == "127.0.0.1"
    assert settings.dashboard.port == 8650
    assert READ_TOKEN not in repr(settings.dashboard)  # a token never reaches a log line


def test_a_token_may_live_in_its_own_file(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN + "\n")
    settings = load_with(
        tmp_path, {"tokens": [{"name": "a", "role": "admin", "token_file": "admin.token"}]}
    )
    assert settings.dashboard.tokens[0].token == ADMIN_TOKEN


def test_a_short_token_is_refused_with_its_length_not_its_value(tmp_path: Path) -> None:
    message = refusal(tmp_path, {"tokens": [{"name": "a", "role": "read", "token": "abc123"}]})
    assert "'dashboard.tokens[0]'" in message and "6 characters" in message
    assert f"fewer than {MIN_TOKEN_LENGTH}" in message and "secrets.token_urlsafe" in message
    assert "abc123" not in message


def test_a_token_given_twice_is_refused(tmp_path: Path) -> None:
    message = refusal(
        tmp_path,
        {
            "tokens": [
                {"name": "a", "role": "read", "token": READ_TOKEN},
                {"name": "b", "role": "admin", "token": READ_TOKEN},
            ]
        },
    )
    assert "'dashboard.tokens[1]'" in message and "same token as 'a'" in message


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    entry = {"name": "a", "role": "read", "token": READ_TOKEN, "token_file": "x"}
    assert "both 'token' and 'token_file'" in refusal(tmp_path, {"tokens": [entry]})


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    entry = {"name": "a", "role": "read", "token_file": "nowhere.token"}
    message = refusal(tmp_path, {"tokens": [entry]})
    assert "'token_file'" in message and "nowhere.token" in message and "not found" in message


def test_an_unknown_role_is_refused_by_the_schema(tmp_path: Path) -> None:
    message = refusal(tmp_path, {"tokens": [{"name": "a", "role": "root", "token": READ_TOKEN}]})
    assert "dashboard" in message and "role" in message and "root" in message


def test_serve_without_a_dashboard_section_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = coordinator_config(tmp_path, None)
    assert main(["serve", "--coordinator", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert "'dashboard': missing" in error and "dashboard.tokens" in error
    assert len(error.splitlines()) == 1
