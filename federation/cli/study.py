"""`federation study ...`: what a coordinator runs for a study."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from federation.cli.app import study_app
from federation.cli.common import CoordinatorOption, echo_err

if TYPE_CHECKING:
    from federation.coordinator.coordinator import Coordinator


def _coordinator(config: Path) -> Coordinator:
    from federation.coordinator.coordinator import Coordinator
    from federation.settings import load_coordinator

    return Coordinator(load_coordinator(config), progress=echo_err)


@study_app.command("submit")
def study_submit(
    study: Annotated[Path, typer.Argument(help="The study YAML (study.schema.json).")],
    coordinator: CoordinatorOption,
) -> None:
    """Validate a study and deliver one signed task per node."""
    submission = _coordinator(coordinator).submit(study)
    typer.echo(
        f"study {submission.study_id}: {len(submission.tasks)} tasks delivered "
        f"(workflow {submission.workflow_digest})"
    )


@study_app.command("status")
def study_status(
    study_id: Annotated[str, typer.Argument(help="The study's id.")], coordinator: CoordinatorOption
) -> None:
    """Print each node's task status."""
    from federation.coordinator.status import format_status

    typer.echo(format_status(_coordinator(coordinator).ledger, study_id))


@study_app.command("collect")
def study_collect(
    study_id: Annotated[str, typer.Argument(help="The study's id.")],
    coordinator: CoordinatorOption,
    random_effects: Annotated[
        bool, typer.Option("--random-effects", help="Report random effects as beta/se/p.")
    ] = False,
) -> None:
    """Verify released results and meta-analyse once the quorum is met."""
    from federation.coordinator.status import format_status
    from federation.meta.options import MetaOptions

    coordinator_ = _coordinator(coordinator)
    collection = coordinator_.collect(study_id, MetaOptions(random_effects=random_effects))
    typer.echo(format_status(coordinator_.ledger, study_id))
    for path in collection.meta_files:
        typer.echo(str(path))
