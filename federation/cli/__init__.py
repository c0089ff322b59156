"""The `federation` command line. The only place where exceptions become exit codes.

Exit codes: 0 ok, 1 failure, 2 bad input (a one-line message naming the field, the value
and the fix). Commands stay thin: they parse options and call into the package; each
command imports what it needs when it runs, so `federation --help` starts in a blink.

Modules: `app` (the root command and its groups), `common` (shared options), `tools`
(version, synth, meta, demo, keys, audit), `study` (a coordinator's commands), `node` (a node
admin's commands) and `steps` (the pipeline's internal steps).
"""

from __future__ import annotations

import sys

import typer

from federation.cli import node, steps, study, tools  # noqa: F401  (they register their commands)
from federation.cli.app import app
from federation.errors import FederationError


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map FederationError to its exit code with a one-line message on stderr."""
    try:
        result = app(args=argv, standalone_mode=False)
        if isinstance(result, int):  # click returns the exit code of typer.Exit here
            return result
    except FederationError as error:
        typer.echo(f"error: {error}", err=True)
        return error.exit_code
    except typer.Exit as done:
        return int(done.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as error:  # click usage errors and the like
        import click

        if isinstance(error, click.exceptions.UsageError):
            error.show()
            return 2
        if isinstance(error, click.exceptions.ClickException):
            error.show()
            return 1
        raise
    return 0


def entry_point() -> None:
    sys.exit(main())
