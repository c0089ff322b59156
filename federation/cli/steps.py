"""`federation step ...`: the node pipeline's steps, called by the Snakemake rules and the CWL
tools with node-private paths (not for everyday use).

A release step whose analysis the disclosure gate withholds exits 0: it has recorded its
decision (`federation.outcomes`) and the run goes on with the other analyses. It prints the
reason on stderr, into its node-private log. A check that cannot complete exits 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from federation.cli.app import step_app
from federation.cli.common import (
    AuditLogOption,
    GenotypesOption,
    NodeConfigOption,
    PhenotypesOption,
    SamplesInOption,
    SamplesOutOption,
    StudyConfigOption,
)

if TYPE_CHECKING:
    from federation.settings import NodeSettings
    from federation.spec import StudySpec


def _configs(
    node_config: Path,
    study_config: Path,
    genotypes: Path | None = None,
    phenotypes: Path | None = None,
) -> tuple[NodeSettings, StudySpec]:
    from federation.settings import load_node, with_input_paths
    from federation.spec import load_study

    node = with_input_paths(load_node(node_config), genotypes, phenotypes)
    return node, load_study(study_config)


def _hail_step(
    step: str,
    node_config: Path,
    study_config: Path | None = None,
    genotypes: Path | None = None,
    phenotypes: Path | None = None,
    analysis: str | None = None,
    **paths: Path | None,
) -> None:
    """Run a Hail step in the run's shared Hail driver if there is one, else in this process
    (`federation.analyses.driver`); either way the same step entry point does the work."""
    from federation.analyses.driver import StepRequest, run_step

    def text(path: Path | None) -> str | None:
        return str(path.absolute()) if path is not None else None

    run_step(
        StepRequest(
            step=step,
            node_config=str(node_config.absolute()),
            study_config=text(study_config),
            genotypes=text(genotypes),
            phenotypes=text(phenotypes),
            analysis=analysis,
            paths={name: text(path) for name, path in paths.items()},
        )
    )


@step_app.command("qc")
def step_qc(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    out_mt: Annotated[Path, typer.Option(help="QC'd MatrixTable (node-private).")],
    counts: Annotated[Path, typer.Option(help="QC counts JSON (node-private).")],
    genotypes: GenotypesOption = None,
    phenotypes: PhenotypesOption = None,
    samples: SamplesOutOption = None,
) -> None:
    """Import genotypes, match phenotypes, run sample and variant QC."""
    _hail_step(
        "qc",
        node_config,
        study_config,
        genotypes,
        phenotypes,
        out_mt=out_mt,
        counts=counts,
        samples=samples,
    )


@step_app.command("allele-freq")
def step_allele_freq(
    node_config: NodeConfigOption,
    qc_mt: Annotated[Path, typer.Option(help="QC'd MatrixTable from `step qc`.")],
    out: Annotated[Path, typer.Option(help="Private allele-count table (TSV).")],
) -> None:
    """Allele counts, numbers, frequencies and homozygote counts."""
    _hail_step("allele-freq", node_config, qc_mt=qc_mt, out=out)


@step_app.command("gwas")
def step_gwas(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    analysis: Annotated[str, typer.Option(help="Analysis id from the study config.")],
    qc_mt: Annotated[Path, typer.Option(help="QC'd MatrixTable from `step qc`.")],
    out: Annotated[Path, typer.Option(help="Private association table (TSV).")],
    design: Annotated[Path, typer.Option(help="Model summary JSON (N, cases, parameters).")],
    genotypes: GenotypesOption = None,
    phenotypes: PhenotypesOption = None,
    samples: SamplesOutOption = None,
) -> None:
    """Linear or logistic regression per variant, with covariates and optional PCs."""
    _hail_step(
        "gwas",
        node_config,
        study_config,
        genotypes,
        phenotypes,
        analysis=analysis,
        qc_mt=qc_mt,
        out=out,
        design=design,
        samples=samples,
    )


@contextmanager
def _withheld_is_a_decision() -> Iterator[None]:
    """A withheld release is the gate's decision, not a failure of the step."""
    from federation.release.gate import ReleaseWithheld

    try:
        yield
    except ReleaseWithheld as withheld:
        typer.echo(f"withheld: {withheld}", err=True)


@step_app.command("release-gwas")
def step_release_gwas(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    analysis: Annotated[str, typer.Option(help="Analysis id from the study config.")],
    private: Annotated[Path, typer.Option(help="Private association table from `step gwas`.")],
    design: Annotated[Path, typer.Option(help="Model summary JSON from `step gwas`.")],
    qc_counts: Annotated[Path, typer.Option(help="QC counts JSON from `step qc`.")],
    out: Annotated[Path, typer.Option(help="Released GWAS-SSF file (.tsv.gz).")],
    audit_log: AuditLogOption,
    samples: SamplesInOption,
) -> None:
    """Pass association results through the disclosure gate into GWAS-SSF."""
    from federation.release.tables import release_gwas

    node, study = _configs(node_config, study_config)
    with _withheld_is_a_decision():
        release_gwas(
            node,
            study,
            study.gwas_analysis(analysis),
            private,
            design,
            qc_counts,
            out,
            audit_log,
            samples_path=samples,
        )


@step_app.command("release-af")
def step_release_af(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    analysis: Annotated[str, typer.Option(help="Allele-frequency analysis id.")],
    private: Annotated[
        Path, typer.Option(help="Private allele-count table from `step allele-freq`.")
    ],
    qc_counts: Annotated[Path, typer.Option(help="QC counts JSON from `step qc`.")],
    out: Annotated[Path, typer.Option(help="Released allele-frequency table (.tsv.gz).")],
    audit_log: AuditLogOption,
    samples: SamplesInOption,
) -> None:
    """Pass allele frequencies through the disclosure gate."""
    from federation.release.tables import release_allele_frequencies

    node, study = _configs(node_config, study_config)
    with _withheld_is_a_decision():
        release_allele_frequencies(
            node, study, analysis, private, qc_counts, out, audit_log, samples_path=samples
        )


@step_app.command("release-qc")
def step_release_qc(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    qc_counts: Annotated[Path, typer.Option(help="QC counts JSON from `step qc`.")],
    out: Annotated[Path, typer.Option(help="Released QC metrics (JSON).")],
) -> None:
    """Release QC counts (sample counts rounded like N)."""
    from federation.release.tables import release_qc_metrics

    node, study = _configs(node_config, study_config)
    release_qc_metrics(node, study, qc_counts, out)
