"""`federation serve`: the coordinator's dashboard and GA4GH WES endpoint (`federation.web`)."""

from __future__ import annotations

from typing import Annotated

import typer

from federation.cli.app import app
from federation.cli.common import CoordinatorOption, echo_err


@app.command()
def serve(
    coordinator: CoordinatorOption,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: dashboard.host, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: dashboard.port).")] = None,
    collect: Annotated[
        bool,
        typer.Option(
            help="Collect released results and meta-analyse in the background "
            "(--no-collect: only read the nodes' statuses)."
        ),
    ] = True,
) -> None:
    """Serve the dashboard of studies and nodes and the GA4GH WES 1.1 endpoint, with the tokens
    of the coordinator config's `dashboard` section."""
    from federation.web.server import serve as run_server

    run_server(coordinator, host, port, collect=collect, progress=echo_err)
