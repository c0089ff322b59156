"""The `federation` command line. The only place where exceptions become exit codes.

Exit codes: 0 ok, 1 failure, 2 bad input (a one-line message naming the field, the value
and the fix). Commands stay thin: they parse options and call into the package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from federation.errors import FederationError

if TYPE_CHECKING:
    from federation.coordinator import Coordinator
    from federation.settings import NodeSettings
    from federation.spec import StudySpec

app = typer.Typer(
    name="federation",
    help="Federated analysis orchestrator for cross-border genomics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
step_app = typer.Typer(
    help="Node pipeline steps (called by the Snakemake rules and CWL tools; not for everyday use).",
    no_args_is_help=True,
)
app.add_typer(step_app, name="step")
node_app = typer.Typer(help="Commands a national node's admin runs.", no_args_is_help=True)
app.add_typer(node_app, name="node")
study_app = typer.Typer(help="Commands a coordinator runs for a study.", no_args_is_help=True)
app.add_typer(study_app, name="study")
keys_app = typer.Typer(help="ed25519 keys for signing tasks and results.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(
    help="Hash-chained audit logs (node and coordinator).", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


def _echo_err(line: str) -> None:
    typer.echo(line, err=True)


@app.command()
def version() -> None:
    """Print the versions of the software that shapes results."""
    from federation.versions import software_versions

    for name, value in software_versions().items():
        typer.echo(f"{name}\t{value}")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Directory for the cohorts and truth.json."),
    nodes: int = typer.Option(..., "--nodes", help="Number of national nodes (fi, ee, nl, ...)."),
    samples_per_node: str = typer.Option(
        "1000", help="Smallest node's size (others vary), or one size per node: 800,1200,1000."
    ),
    variants: int = typer.Option(10_000, help="Variants, spread over chromosomes 1-22."),
    seed: int = typer.Option(42, help="The same seed gives the same cohorts, byte for byte."),
    missing_rate: float = typer.Option(
        0.0, help="Fraction of calls set missing (plus a few low-call-rate samples/variants)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a cohort already in --out."),
) -> None:
    """Write synthetic national cohorts with planted causal variants (VCF, PLINK, phenotypes)."""
    from federation.synth import parse_sample_sizes, synthesize

    result = synthesize(
        out,
        nodes=nodes,
        samples_per_node=parse_sample_sizes(samples_per_node),
        variants=variants,
        seed=seed,
        missing_rate=missing_rate,
        force=force,
    )
    typer.echo(result.truth)


@app.command()
def meta(
    files: list[Path] = typer.Argument(
        ..., help="GWAS-SSF .tsv.gz files (or allele-frequency tables)."
    ),
    out: Path = typer.Option(..., "--out", help="Output GWAS-SSF .tsv.gz (sidecar: OUT.yaml)."),
    random_effects: bool = typer.Option(
        False, "--random-effects", help="Report DerSimonian-Laird random effects as beta/se/p."
    ),
    genomic_control: bool = typer.Option(
        False, "--genomic-control", help="Inflate each input's SE by sqrt(lambda_GC) if > 1."
    ),
    scheme: str = typer.Option("ivw", "--scheme", help="ivw (inverse variance) or sample-size."),
    palindromic_maf_band: str = typer.Option(
        "0.4-0.6", "--palindromic-maf-band", help="Drop A/T, C/G SNPs with MAF in this band."
    ),
) -> None:
    """Meta-analyse GWAS-SSF files (alleles harmonised), or pool per-node allele frequencies."""
    # The meta-analysis makes no matrix products; idle OpenBLAS threads (numpy's and scipy's,
    # started again in every forked worker) spin for ~0.15 s of CPU a run. Set before numpy
    # is first imported; a caller's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from federation.meta_runner import meta_command

    summary = meta_command(
        files,
        out,
        random_effects=random_effects,
        genomic_control=genomic_control,
        scheme=scheme,
        palindromic_maf_band=palindromic_maf_band,
    )
    typer.echo(summary)


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


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for cohorts, configs and results.")],
    nodes: Annotated[int, typer.Option(help="Number of national nodes.")] = 3,
    samples_per_node: Annotated[int, typer.Option(help="Samples in the smallest node.")] = 1000,
    variants: Annotated[int, typer.Option(help="Variants over chromosomes 1-22.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 42,
    transport: Annotated[
        str, typer.Option(help="local, s3 (SeaweedFS) or ssh (OpenSSH), on loopback.")
    ] = "local",
    engine: Annotated[
        str, typer.Option(help="Pipeline engine of the study: snakemake or cwl (cwltool).")
    ] = "snakemake",
) -> None:
    """Run the main job: a coordinator and national nodes on synthetic data, end to end."""
    from federation.demo import run_demo

    summary = run_demo(out, nodes=nodes, samples_per_node=samples_per_node, variants=variants, seed=seed,
                       transport=transport, engine=engine, progress=_echo_err)  # fmt: skip
    typer.echo(summary)


@node_app.command("run-pipeline")
def run_pipeline(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    cores: Annotated[int, typer.Option(help="CPU cores Snakemake may use.")] = 2,
) -> None:
    """Run the node pipeline for one study on this node and publish what passes the gate.

    The study's `engine` picks the runner: Snakemake, or cwltool for `engine: cwl`.
    """
    from federation.pipeline.cwl import run_cwl_pipeline
    from federation.pipeline.snakemake import run_node_pipeline
    from federation.spec import load_study

    if load_study(study_config).engine == "cwl":
        run = run_cwl_pipeline(node_config, study_config, progress=_echo_err)
    else:
        run = run_node_pipeline(node_config, study_config, cores=cores, progress=_echo_err)
    for path in run.released_files:
        typer.echo(str(path))


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", help="Directory for NAME.key and NAME.pub.")],
    name: Annotated[
        str, typer.Option("--name", help="Signer name: coordinator, or the node id.")
    ] = "coordinator",
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing key files (old signatures orphaned).")
    ] = False,
) -> None:
    """Write a new ed25519 key pair; the private key file is mode 0600."""
    from federation.signing import generate_keypair

    pair = generate_keypair(out, name, force=force)
    typer.echo(f"key_id\t{pair.key_id}")
    typer.echo(f"private_key\t{pair.private_key_path}")
    typer.echo(f"public_key\t{pair.public_key_path}")


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
    from federation.analyses.steps import qc_step

    node, study = _configs(node_config, study_config, genotypes, phenotypes)
    qc_step(node, study, out_mt, counts, samples)


@step_app.command("allele-freq")
def step_allele_freq(
    node_config: NodeConfigOption,
    qc_mt: Annotated[Path, typer.Option(help="QC'd MatrixTable from `step qc`.")],
    out: Annotated[Path, typer.Option(help="Private allele-count table (TSV).")],
) -> None:
    """Allele counts, numbers, frequencies and homozygote counts."""
    from federation.analyses.steps import allele_frequency_step
    from federation.settings import load_node

    allele_frequency_step(load_node(node_config), qc_mt, out)


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
    from federation.analyses.steps import gwas_step

    node, study = _configs(node_config, study_config, genotypes, phenotypes)
    gwas_step(node, study, study.gwas_analysis(analysis), qc_mt, out, design, samples)


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
    from federation.release import release_gwas

    node, study = _configs(node_config, study_config)
    release_gwas(node, study, study.gwas_analysis(analysis), private, design, qc_counts, out,
                 audit_log, samples_path=samples)  # fmt: skip


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
    from federation.release import release_allele_frequencies

    node, study = _configs(node_config, study_config)
    release_allele_frequencies(node, study, analysis, private, qc_counts, out, audit_log,
                               samples_path=samples)  # fmt: skip


@step_app.command("release-qc")
def step_release_qc(
    node_config: NodeConfigOption,
    study_config: StudyConfigOption,
    qc_counts: Annotated[Path, typer.Option(help="QC counts JSON from `step qc`.")],
    out: Annotated[Path, typer.Option(help="Released QC metrics (JSON).")],
) -> None:
    """Release QC counts (sample counts rounded like N)."""
    from federation.release import release_qc_metrics

    node, study = _configs(node_config, study_config)
    release_qc_metrics(node, study, qc_counts, out)


CoordinatorOption = Annotated[
    Path, typer.Option("--coordinator", help="The coordinator config (coordinator.schema.json).")
]
NodeAgentConfigOption = Annotated[
    Path, typer.Option("--config", help="The node config with its federation section.")
]


def _coordinator(config: Path) -> Coordinator:
    from federation.coordinator import Coordinator
    from federation.settings import load_coordinator

    return Coordinator(load_coordinator(config), progress=_echo_err)


@study_app.command("submit")
def study_submit(
    study: Annotated[Path, typer.Argument(help="The study YAML (study.schema.json).")],
    coordinator: CoordinatorOption,
) -> None:
    """Validate a study and deliver one signed task per node."""
    submission = _coordinator(coordinator).submit(study)
    typer.echo(f"study {submission.study_id}: {len(submission.tasks)} tasks delivered "
               f"(workflow {submission.workflow_digest})")  # fmt: skip


@study_app.command("status")
def study_status(
    study_id: Annotated[str, typer.Argument(help="The study's id.")], coordinator: CoordinatorOption
) -> None:
    """Print each node's task status."""
    from federation.coordinator import format_status

    typer.echo(format_status(_coordinator(coordinator), study_id))


@study_app.command("collect")
def study_collect(
    study_id: Annotated[str, typer.Argument(help="The study's id.")],
    coordinator: CoordinatorOption,
    random_effects: Annotated[
        bool, typer.Option("--random-effects", help="Report random effects as beta/se/p.")
    ] = False,
) -> None:
    """Verify released results and meta-analyse once the quorum is met."""
    from federation.coordinator import format_status
    from federation.meta_runner import MetaOptions

    coordinator_ = _coordinator(coordinator)
    collection = coordinator_.collect(study_id, MetaOptions(random_effects=random_effects))
    typer.echo(format_status(coordinator_, study_id))
    for path in collection.meta_files:
        typer.echo(str(path))


@node_app.command("run-once")
def node_run_once(config: NodeAgentConfigOption) -> None:
    """Check the inbox once: verify, run and release every new task."""
    from federation.agent import NodeAgent

    for outcome in NodeAgent(config, progress=_echo_err).run_once():
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
    from federation.agent import NodeAgent

    NodeAgent(config, progress=_echo_err).watch(interval, cycles)


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
    from federation.selftest import format_results, run_selftest
    from federation.settings import load_node

    results = run_selftest(load_node(config) if config else None, only=set(case) if case else None)
    typer.echo(format_results(results))
    if not all(result.passed for result in results):
        raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(
    log: Annotated[
        Path, typer.Argument(help="An audit log (JSON lines) with its .head beside it.")
    ],
) -> None:
    """Check the hash chain: exit 1 naming the first edited, deleted or truncated record."""
    from federation.audit import verify_log
    from federation.errors import SpecError

    if not log.is_file():
        raise SpecError(f"audit log '{log}': not a file; give the path of the .jsonl log")
    result = verify_log(log)
    if not result.intact:
        typer.echo(f"error: {result.summary()}", err=True)
        raise typer.Exit(1)
    typer.echo(result.summary())


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
