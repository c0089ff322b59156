"""Run the dashboard and WES endpoint under uvicorn (`federation serve`, `demo --serve`).

The server binds the config's `dashboard.host` (127.0.0.1 unless changed) or `--host`, and
stops on SIGINT/SIGTERM within `SHUTDOWN_GRACE_SECONDS` (event streams are told to end).
A coordinator config without a `dashboard` section refuses to serve: there would be no
token, and a dashboard without tokens is not started (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from federation.coordinator.coordinator import Coordinator
from federation.errors import SpecError
from federation.settings import CoordinatorSettings, DashboardSettings, load_coordinator

SHUTDOWN_GRACE_SECONDS = 3


def dashboard_settings(settings: CoordinatorSettings, config: Path) -> DashboardSettings:
    if settings.dashboard is None:
        raise SpecError(
            f"coordinator config '{config}' 'dashboard': missing; add dashboard.tokens with a "
            "read and an admin token (docs/architecture.md, the dashboard) to serve"
        )
    return settings.dashboard


def serve(
    config: Path,
    host: str | None = None,
    port: int | None = None,
    *,
    collect: bool = True,
    progress: Callable[[str], None] = print,
) -> None:
    """Serve until interrupted."""
    import uvicorn

    from federation.web.app import create_app
    from federation.web.live import Dashboard

    settings = load_coordinator(config)
    options = dashboard_settings(settings, config)
    options = replace(options, host=host or options.host, port=port or options.port)
    dashboard = Dashboard(Coordinator(settings, progress=progress), options, collect=collect)
    progress(f"dashboard and GA4GH WES on http://{options.host}:{options.port}/ (Ctrl-C stops)")
    uvicorn.run(
        create_app(dashboard),
        host=options.host,
        port=options.port,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
