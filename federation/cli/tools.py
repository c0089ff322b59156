"""Commands anyone may run: version, synth, meta, report, demo, keys and audit-log checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from federation.cli.app import app, audit_app, keys_app
from federation.cli.common import echo_err


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
    from federation.sandbox.synth import parse_sample_sizes, synthesize

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
    out: Path = typer.Option(
        ..., "--out", help="Output BGZF GWAS-SSF .tsv.gz (+ OUT.tbi, sidecar OUT-meta.yaml)."
    ),
    random_effects: bool = typer.Option(
        False,
        "--random-effects",
        help="Random effects (DerSimonian-Laird) in beta/se/p, fixed in beta_fixed etc.",
    ),
    genomic_control: bool = typer.Option(
        False, "--genomic-control", help="Inflate each input's SE by sqrt(lambda_GC) if > 1."
    ),
    scheme: str = typer.Option("ivw", "--scheme", help="ivw (inverse variance) or sample-size."),
    palindromic_maf_band: str = typer.Option(
        "0.4-0.6",
        "--palindromic-maf-band",
        help="Drop A/T, C/G SNPs with MAF in this band (inputs not reference-aligned).",
    ),
    assume_build: str | None = typer.Option(
        None, "--assume-build", help="Genome build of inputs without a sidecar, e.g. GRCh38."
    ),
    trait_type: str | None = typer.Option(
        None, "--trait-type", help="Trait type of inputs without a sidecar: quantitative|binary."
    ),
) -> None:
    """Meta-analyse GWAS-SSF files (alleles harmonised), or pool per-node allele frequencies."""
    # The meta-analysis makes no matrix products; idle OpenBLAS threads (numpy's and scipy's,
    # started again in every forked worker) spin for ~0.15 s of CPU a run. Set before numpy
    # is first imported; a caller's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from federation.meta.runner import meta_command

    summary = meta_command(
        files,
        out,
        random_effects=random_effects,
        genomic_control=genomic_control,
        scheme=scheme,
        palindromic_maf_band=palindromic_maf_band,
        assume_build=assume_build,
        trait_type=trait_type,
    )
    typer.echo(summary)


@app.command()
def report(
    results_dir: Annotated[
        Path, typer.Argument(help="A study's results directory: results/<study_id>.")
    ],
    coordinator: Annotated[
        Path | None,
        typer.Option(
            "--coordinator",
            help="The coordinator config: quorum, workflow digest and node states from its "
            "ledger (else those the previous report recorded).",
        ),
    ] = None,
) -> None:
    """(Re)write a study's report.html, report.json and plots/ from its released aggregates
    and meta-analysis outputs."""
    from federation.report.build import write_report

    provenance = None
    if coordinator is not None:
        from federation.coordinator.coordinator import Coordinator
        from federation.settings import load_coordinator

        provenance = Coordinator(load_coordinator(coordinator)).report_provenance(results_dir.name)
    written = write_report(results_dir, provenance)
    typer.echo(written.html)


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
    review: Annotated[
        bool,
        typer.Option(
            "--review",
            help="Nodes check outputs by hand (output_review: two): two scripted reviewers "
            "approve each release before it leaves.",
        ),
    ] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Afterwards keep the dashboard and GA4GH WES up (127.0.0.1) until Ctrl-C.",
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="The dashboard's port with --serve.")] = 8650,
) -> None:
    """Run the main job: a coordinator and national nodes on synthetic data, end to end."""
    from federation.sandbox.demo import run_demo

    summary = run_demo(
        out,
        nodes=nodes,
        samples_per_node=samples_per_node,
        variants=variants,
        seed=seed,
        transport=transport,
        engine=engine,
        review=review,
        progress=echo_err,
    )
    typer.echo(summary)
    if serve:
        from federation.sandbox.demo import coordinator_config_path, dashboard_token_path
        from federation.web.server import serve as run_server

        admin_token = dashboard_token_path(out.resolve(), "admin").read_text().strip()
        typer.echo(
            f"\ndashboard: http://127.0.0.1:{port}/  admin token: {admin_token}\n"
            f"(read-only token in {dashboard_token_path(out.resolve(), 'reader')}; "
            f"GA4GH WES at http://127.0.0.1:{port}/ga4gh/wes/v1; Ctrl-C stops)"
        )
        run_server(coordinator_config_path(out.resolve()), port=port, progress=echo_err)


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", help="Directory for NAME.key and NAME.pub.")],
    name: Annotated[
        str, typer.Option("--name", help="Signer name: coordinator, or the node id.")
    ] = "coordinator",
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing key files (old signatures orphaned).")
    ] = False,
    crypt4gh: Annotated[
        bool,
        typer.Option(
            "--crypt4gh/--no-crypt4gh",
            help="Also the Crypt4GH pair results are sealed with (the coordinator's "
            "crypt4gh_key, a node's coordinator_encryption_keys).",
        ),
    ] = True,
) -> None:
    """Write a new ed25519 signing key pair and a Crypt4GH pair; private keys are mode 0600."""
    from federation.errors import SpecError
    from federation.protocol import crypt
    from federation.protocol.signing import generate_keypair

    if crypt4gh and not force:  # refuse before writing anything, not halfway
        existing = [
            path
            for path in (out / f"{name}{crypt.SECRET_SUFFIX}", out / f"{name}{crypt.PUBLIC_SUFFIX}")
            if path.exists()
        ]
        if existing:
            raise SpecError(
                f"keys generate: '{existing[0]}' exists; pass --force to replace the keys "
                "or --no-crypt4gh to make the signing pair only"
            )
    pair = generate_keypair(out, name, force=force)
    typer.echo(f"key_id\t{pair.key_id}")
    typer.echo(f"private_key\t{pair.private_key_path}")
    typer.echo(f"public_key\t{pair.public_key_path}")
    if crypt4gh:
        secret, public = crypt.generate_keypair(out, name, force=force)
        typer.echo(f"crypt4gh_secret_key\t{secret}")
        typer.echo(f"crypt4gh_public_key\t{public}")


@audit_app.command("verify")
def audit_verify(
    log: Annotated[
        Path, typer.Argument(help="An audit log (JSON lines) with its .head beside it.")
    ],
    anchor: Annotated[
        list[Path] | None,
        typer.Option(
            "--anchor",
            help="Outside anchors of this log: the coordinator's state_dir/audit-anchors/"
            "<node_id>.jsonl (heads the node signed into its results), or one head file.",
        ),
    ] = None,
) -> None:
    """Check the hash chain: exit 1 naming the first edited, deleted or truncated record, a
    missing head, or (with --anchor) a chain rewritten since the node signed its head."""
    from federation.audit import read_anchors, verify_log
    from federation.errors import SpecError

    if not log.is_file():
        raise SpecError(f"audit log '{log}': not a file; give the path of the .jsonl log")
    anchors = []
    for path in anchor or []:
        if not path.is_file():
            raise SpecError(f"--anchor '{path}': not a file; give the coordinator's anchors file")
        try:
            anchors += read_anchors(path)
        except ValueError as error:
            raise SpecError(f"--anchor '{path}': {error}; give an anchors file") from None
    result = verify_log(log, anchors)
    if not result.intact:
        typer.echo(f"error: {result.summary()}", err=True)
        raise typer.Exit(1)
    typer.echo(result.summary())
