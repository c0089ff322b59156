"""`federation node ...`: what a national node's admin runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from federation.cli.app import node_app
from federation.cli.common import (
    NodeAgentConfigOption,
    NodeConfigOption,
    StudyConfigOption,
    echo_err,
)


@node_app.command("run-pipeline")
def run_pipeline(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    cores: Annotated[int, typer.Option(help="CPU cores Snakemake may use.")] = 2,
) -> None:
    """Run the node pipeline for one study on this node and publish what passes the gate.

    The study's `engine` picks the runner: Snakemake, or cwltool for `engine: cwl`.
    """
    from federation.pipeline.run import run_pipeline as run_study_pipeline

    run = run_study_pipeline(node_config, study_config, cores=cores, progress=echo_err)
    for path in run.released_files:
        typer.echo(str(path))


@node_app.command("run-once")
def node_run_once(config: NodeAgentConfigOption) -> None:
    """Check the inbox once: verify, run and release every new task."""
    from federation.node.agent import NodeAgent

    for outcome in NodeAgent(config, progress=echo_err).run_once():
        typer.echo(f"{outcome.task_id}\t{outcome.status.value}\t{outcome.reason or ''}")


@node_app.command("watch")
def node_watch(
    config: NodeAgentConfigOption,
    interval: Annotated[float, typer.Option(help="Seconds between inbox checks.")] = 30.0,
    cycles: Annotated[
        int | None, typer.Option(help="Stop after this many checks (default: never).")
    ] = None,
) -> None:
    """Poll the inbox (outbound connections only) and handle tasks as they arrive."""
    from federation.node.agent import NodeAgent

    NodeAgent(config, progress=echo_err).watch(interval, cycles)


@node_app.command("selftest")
def node_selftest(
    config: Annotated[
        Path | None, typer.Option("--config", help="The node config whose policy is tested.")
    ] = None,
    case: Annotated[
        list[str] | None, typer.Option("--case", help="Run only this case (repeatable).")
    ] = None,
) -> None:
    """Feed the installed disclosure gate disclosive outputs and attack bundles; exit 1 on a FAIL."""
    from federation.node.selftest import format_results, run_selftest
    from federation.settings import load_node

    results = run_selftest(load_node(config) if config else None, only=set(case) if case else None)
    typer.echo(format_results(results))
    if not all(result.passed for result in results):
        raise typer.Exit(1)


# The privacy ledger's own commands (`federation node privacy-ledger ...`).
privacy_ledger_app = typer.Typer(help="The node's privacy ledger.", no_args_is_help=True)
node_app.add_typer(privacy_ledger_app, name="privacy-ledger")


@privacy_ledger_app.command("reinit")
def privacy_ledger_reinit(
    config: Annotated[Path, typer.Option("--config", help="The node config (node.yaml).")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why the release history is restarted (audited).")
    ],
) -> None:
    """Start a new privacy-ledger history after the old one was lost (the old file is kept
    aside, the event and its reason go to the node's audit log). Until then no release runs."""
    from federation.release.gate import audit_log_of, ledger_paths
    from federation.release.ledger import PrivacyLedger
    from federation.settings import load_node

    node = load_node(config)
    path, secret = ledger_paths(node)
    PrivacyLedger.reinitialise(path, secret, audit_log_of(node), reason, node.node_id)
    typer.echo(f"privacy ledger '{path}': new history started; recorded in the node audit log")
