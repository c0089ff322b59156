"""What the command modules share: option types and progress output on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def echo_err(line: str) -> None:
    """Progress and status lines go to stderr; stdout carries results a script may read."""
    typer.echo(line, err=True)


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
