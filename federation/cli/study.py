"""`federation study ...`: what a coordinator runs for a study.

`submit` runs the pre-flight against each node's published policy (exit 3 if a node would
refuse the study, 1 if a mailbox is missing or unreachable; nothing is sent then) and is safe
to re-run after an interruption. `collect` exits with the study's state: 0 done, 1 failed, 3
some node refused, vetoed or withheld (or the study was cancelled), 4 still waiting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from federation.cli.app import study_app
from federation.cli.common import CoordinatorOption, echo_err, outcome_exit_code
from federation.errors import ExitCode

if TYPE_CHECKING:
    from federation.coordinator.coordinator import Coordinator
    from federation.coordinator.status import StudyView

StudyIdArgument = Annotated[str, typer.Argument(help="The study's id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _coordinator(config: Path) -> Coordinator:
    from federation.coordinator.coordinator import Coordinator
    from federation.settings import load_coordinator

    return Coordinator(load_coordinator(config), progress=echo_err)


def study_exit_code(view: StudyView) -> ExitCode:
    """0 done, 1 failed, 3 refused somewhere (or cancelled), 4 still waiting for nodes."""
    if view.status == "cancelled":
        return ExitCode.REFUSED
    withheld = any(node.withheld_analyses for node in view.nodes)
    code = outcome_exit_code([node.status for node in view.nodes], withheld_analyses=withheld)
    if view.status == "failed" and code is ExitCode.OK:
        return ExitCode.FAILED  # every node released, but the meta-analysis refused or was empty
    return code


@study_app.command("submit")
def study_submit(
    study: Annotated[Path, typer.Argument(help="The study YAML (study.schema.json).")],
    coordinator: CoordinatorOption,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what each node will do; send nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check the study against each node's published policy, then deliver one signed task per
    node. Re-running it after an interruption completes the delivery; nothing is sent twice."""
    submission = _coordinator(coordinator).submit(study, dry_run=dry_run)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "study_id": submission.study_id,
                    "workflow_digest": submission.workflow_digest,
                    "sent": submission.sent,
                    "resumed": submission.resumed,
                    "tasks": submission.tasks,
                    "preflight": submission.preflight.to_json() if submission.preflight else None,
                },
                indent=2,
            )
        )
        return
    if submission.preflight is not None:
        typer.echo(submission.preflight.report())
    if not submission.sent:
        typer.echo(f"study {submission.study_id}: dry run, nothing sent")
        return
    again = " (re-run: only missing deliveries made)" if submission.resumed else ""
    typer.echo(
        f"study {submission.study_id}: {len(submission.tasks)} tasks delivered{again} "
        f"(workflow {submission.workflow_digest})"
    )


@study_app.command("status")
def study_status(
    study_id: StudyIdArgument,
    coordinator: CoordinatorOption,
    as_json: JsonOption = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Only the ledger; do not ask the nodes' mailboxes.")
    ] = False,
) -> None:
    """Each node's state (delivered, held, approved, running, in_review, released, rejected,
    vetoed, withheld, failed, timed_out, cancelled), since when, and what it released. The
    nodes' latest signed reports are read first (results are fetched by `collect`)."""
    from federation.coordinator.status import format_status, study_view

    coordinator_ = _coordinator(coordinator)
    if not offline:
        coordinator_.refresh(study_id)
    ledger = coordinator_.ledger
    if as_json:
        typer.echo(json.dumps(study_view(ledger, study_id).to_json(), indent=2))
        return
    typer.echo(format_status(ledger, study_id))


@study_app.command("list")
def study_list(coordinator: CoordinatorOption, as_json: JsonOption = False) -> None:
    """Every study this coordinator knows, with how many nodes are in which state."""
    from federation.coordinator.status import format_list, study_views

    views = study_views(_coordinator(coordinator).ledger)
    if as_json:
        typer.echo(json.dumps([view.to_json() for view in views], indent=2))
        return
    typer.echo(format_list(views))


@study_app.command("cancel")
def study_cancel(
    study_id: StudyIdArgument,
    coordinator: CoordinatorOption,
    by: Annotated[
        str | None, typer.Option("--by", help="Who cancels (recorded in the audit log).")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (recorded in the audit log and ledger).")
    ] = None,
) -> None:
    """Send a signed cancellation to every node whose task is not finished: pending and held
    tasks are dropped, running pipelines stopped, nothing in review is published."""
    cancelled = _coordinator(coordinator).cancel(study_id, by=by, reason=reason)
    typer.echo(f"study {study_id}: cancelled ({len(cancelled)} open tasks told to stop)")


@study_app.command("collect")
def study_collect(
    study_id: StudyIdArgument,
    coordinator: CoordinatorOption,
    random_effects: Annotated[
        bool, typer.Option("--random-effects", help="Report random effects as beta/se/p.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Verify released results and meta-analyse once the quorum is met.

    Exits 0 when every node released everything, 1 if the study failed or a node failed or
    timed out, 3 if a node refused, vetoed or withheld (or the study was cancelled), 4 while
    nodes are still at work.
    """
    from federation.coordinator.status import format_status, study_view
    from federation.meta.options import MetaOptions

    coordinator_ = _coordinator(coordinator)
    collection = coordinator_.collect(study_id, MetaOptions(random_effects=random_effects))
    view = study_view(coordinator_.ledger, study_id)
    if as_json:
        document = view.to_json()
        document["meta_files"] = [str(path) for path in collection.meta_files]
        typer.echo(json.dumps(document, indent=2))
    else:
        typer.echo(format_status(coordinator_.ledger, study_id))
        for path in collection.meta_files:
            typer.echo(str(path))
    raise typer.Exit(study_exit_code(view))
