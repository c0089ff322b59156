"""A reproducibility reviewer's commands: verify and reproduce a study's RO-Crate."""

from __future__ import annotations

from pathlib import Path

import typer

from federation.cli.app import app
from federation.errors import ExitCode, SpecError

NODE_MODES = ("none", "synthetic")


@app.command()
def verify(
    crate: Path = typer.Argument(
        ..., help="A study's results folder (results/<study_id>) or its ro-crate-metadata.json."
    ),
    coordinator_key: Path | None = typer.Option(
        None,
        "--coordinator-key",
        help="The coordinator's public key to trust (default: the one in the crate's keys/).",
    ),
    no_validate: bool = typer.Option(
        False, "--no-validate", help="Skip the RO-Crate profile validation (rocrate-validator)."
    ),
) -> None:
    """Check every digest, signature and audit head in a study's crate; one line per problem."""
    from federation.provenance.verify import verify_crate

    if not crate.exists():
        raise SpecError(f"CRATE '{crate}': not found; give a study's results folder")
    result = verify_crate(crate, coordinator_key=coordinator_key, validate=not no_validate)
    for line in result.notes:
        typer.echo(line, err=True)
    for line in result.problems:
        typer.echo(line)
    if result.problems:
        typer.echo(f"{len(result.problems)} problems in {crate}", err=True)
        raise typer.Exit(ExitCode.FAILED)
    typer.echo(f"all holds: {crate} ({len(result.checked)} checks)")


@app.command()
def reproduce(
    crate: Path = typer.Argument(
        ..., help="A study's results folder (results/<study_id>) or its ro-crate-metadata.json."
    ),
    out: Path = typer.Option(..., "--out", help="Directory for the re-run outputs."),
    nodes: str = typer.Option(
        "none",
        "--nodes",
        help="'synthetic': also regenerate a demo's synthetic cohorts and re-run every node.",
    ),
) -> None:
    """Re-run the coordinator's side of a study from its crate and compare, byte for byte."""
    if nodes not in NODE_MODES:
        raise SpecError(f"--nodes '{nodes}': unknown; use one of {', '.join(NODE_MODES)}")
    if not crate.exists():
        raise SpecError(f"CRATE '{crate}': not found; give a study's results folder")
    if nodes == "synthetic":
        from federation.sandbox.reproduce import reproduce_synthetic

        result = reproduce_synthetic(crate, out, progress=typer.echo)
    else:
        from federation.provenance.reproduce import reproduce_coordinator

        result = reproduce_coordinator(crate, out, progress=typer.echo)
    for line in result.identical:
        typer.echo(f"identical: {line}")
    for line in result.not_rerun:
        typer.echo(f"not re-run: {line}")
    for line in result.different:
        typer.echo(f"DIFFERENT: {line}")
    if not result.ok:
        raise typer.Exit(ExitCode.FAILED)
