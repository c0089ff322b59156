"""What the command modules share: option types, progress on stderr, signals, exit codes."""

from __future__ import annotations

import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from federation.errors import ExitCode
from federation.protocol.messages import FINAL_STATUSES, REFUSED_STATUSES, TaskStatus

_STOPPED_BY: list[int] = []  # the signal that interrupted a long command (SIGINT if none)


def echo_err(line: str) -> None:
    """Progress and status lines go to stderr (with the time); stdout carries results."""
    typer.echo(f"{datetime.now(UTC).strftime('%H:%M:%S')} {line}", err=True)


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM (systemd's stop) and SIGHUP interrupt a long command like Ctrl-C does, so it
    stops its pipeline's process group and leaves the task to be resumed; `main` then exits
    with 128 + the signal."""

    def interrupt(number: int, frame: FrameType | None) -> None:
        _STOPPED_BY.append(number)
        raise KeyboardInterrupt

    previous = {
        number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_signal() -> int:
    return _STOPPED_BY[-1] if _STOPPED_BY else signal.SIGINT


def outcome_exit_code(
    statuses: Iterable[TaskStatus],
    *,
    withheld_analyses: bool = False,
    refused: frozenset[TaskStatus] = REFUSED_STATUSES,
) -> ExitCode:
    """The exit code of a run whose tasks ended in `statuses` (see `federation.cli`)."""
    found = set(statuses)
    if found & {TaskStatus.FAILED, TaskStatus.TIMED_OUT}:
        return ExitCode.FAILED
    if found & refused or withheld_analyses:
        return ExitCode.REFUSED
    if found - FINAL_STATUSES:
        return ExitCode.PENDING
    return ExitCode.OK


NodeConfigOption = Annotated[
    Path, typer.Option("--node-config", help="The node's own config (node.schema.json).")
]
StudyConfigOption = Annotated[
    Path, typer.Option("--study-config", help="The study config (study.schema.json).")
]
AuditLogOption = Annotated[
    Path, typer.Option("--audit-log", help="The node audit log (JSON lines).")
]
# CWL stages the node's data as File inputs; these replace the paths in the node config.
GenotypesOption = Annotated[
    Path | None,
    typer.Option("--genotypes", help="Genotype file (VCF, PLINK .bed) instead of the config's."),
]
PhenotypesOption = Annotated[
    Path | None,
    typer.Option("--phenotypes", help="Phenotype table instead of the one in the node config."),
]
# The analysed cohort's sample IDs (node-private): the release step's privacy ledger needs it.
SamplesOutOption = Annotated[
    Path | None,
    typer.Option("--samples", help="Write the analysed cohort's sample IDs here (node-private)."),
]
SamplesInOption = Annotated[
    Path, typer.Option("--samples", help="The analysed cohort's sample IDs from the Hail step.")
]


CoordinatorOption = Annotated[
    Path, typer.Option("--coordinator", help="The coordinator config (coordinator.schema.json).")
]
NodeAgentConfigOption = Annotated[
    Path, typer.Option("--config", help="The node config with its federation section.")
]
