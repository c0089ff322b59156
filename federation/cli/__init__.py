"""The `federation` command line. The only place where exceptions become exit codes.

Exit codes (`federation.errors.ExitCode`; the README has the same table):

    0    done: everything asked for happened, or there was nothing to do
    1    failure: an error, or work failed (a task's pipeline, a study that can no longer
         reach its quorum, a node that timed out); a missing or unreachable mailbox
    2    bad input: a config, study or argument is wrong (one line names the field, the value
         and the fix)
    3    refused: work was refused, vetoed, withheld or cancelled by policy or by a person
         (a task rejected or vetoed, an analysis withheld by the gate or the output review,
         a study refused at pre-flight, a cancelled study)
    4    pending: nothing wrong, not finished (tasks held for the admin or in output review;
         a study still waiting for nodes)
    75   busy: another agent holds the node's lock; this run did nothing (try again later)
    130  interrupted by SIGINT (143 by SIGTERM); the next run resumes the task

When several apply to one run the first of 1, 3, 4 wins. Commands stay thin: they parse
options and call into the package; each command imports what it needs when it runs, so
`federation --help` starts in a blink.

Modules: `app` (the root command and its groups), `common` (shared options), `tools`
(version, synth, meta, demo, keys, audit), `study` (a coordinator's commands), `node` (a node
admin's commands), `serve` (the dashboard and GA4GH WES) and `steps` (the pipeline's
internal steps).
"""

from __future__ import annotations

import sys

import typer

from federation.cli import node, provenance, serve, steps, study, tools  # noqa: F401  (they register)
from federation.cli.app import app
from federation.cli.common import stop_signal
from federation.errors import ExitCode, FederationError


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
        number = stop_signal()
        typer.echo(f"interrupted (signal {number}); the next run resumes", err=True)
        return 128 + number
    except Exception as error:  # click usage errors and the like
        import click

        if isinstance(error, click.exceptions.UsageError):
            error.show()
            return ExitCode.BAD_INPUT
        if isinstance(error, click.exceptions.ClickException):
            error.show()
            return 1
        raise
    return 0


def entry_point() -> None:
    sys.exit(main())
