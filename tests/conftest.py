"""Shared fixtures; integration fixtures (Hail cohorts, servers) are in tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def repo_root() -> Path:
    return REPO_ROOT
