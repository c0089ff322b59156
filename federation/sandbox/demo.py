"""`federation demo`: the project's main job, a whole federation on one machine.

It synthesises national cohorts, creates a coordinator and one node per cohort (keys,
configs, mailboxes), lets every node publish its signed policy, submits a study (allele
frequencies, a quantitative and a binary GWAS) after the coordinator's pre-flight against
those policies, runs every node's agent (the nodes side by side, `sandbox.side_by_side`: a
node whose run fails fails the demo, named), collects and verifies the results, meta-analyses
them and prints a summary. It runs unattended: each node approves the demo's workflow inside
a parameter envelope (the demo's traits and covariates), with `output_review: none`. With
`--review` the nodes check outputs by hand (`output_review: two`) and two scripted reviewers
read each release's summary and approve it with their own keys. With `--transport s3|ssh`
the mailboxes go through a SeaweedFS server or an OpenSSH server that the demo starts on
127.0.0.1 and stops afterwards. Layout:

    DIR/cohorts/<node_id>/...                    the synthetic cohorts (+ truth.json)
    DIR/study.yaml                               the study
    DIR/keys/, DIR/coordinator/                  keys (nodes, coordinator, reviewers, dashboard tokens); the coordinator's config and ledger
    DIR/nodes/<node_id>/node.yaml, work/         each node's own config and private scratch
    DIR/results/<study_id>/nodes/<node_id>/...   each node's release (verified copies)
    DIR/results/<study_id>/meta/...              meta-analysis and pooled allele frequencies
    DIR/results/<study_id>/report.html, plots/   the study report (its path is the last line printed)
    DIR/results/<study_id>/ro-crate-metadata.json the study's RO-Crate, verified as the last step
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from federation import sumstats
from federation.coordinator.coordinator import Coordinator
from federation.coordinator.status import format_status
from federation.errors import PipelineError, PolicyViolation, ProvenanceError, SpecError
from federation.files import atomic_write
from federation.meta.options import MetaOptions
from federation.meta.summary import top_variants
from federation.node.agent import NodeAgent, TaskOutcome
from federation.node.review import Verdict, format_summary, read_summary
from federation.protocol import crypt
from federation.protocol.bundle import pipeline_workflow_digest
from federation.protocol.messages import TaskStatus
from federation.protocol.signing import generate_keypair, load_private_key
from federation.provenance.crate import METADATA_NAME
from federation.provenance.verify import verify_crate
from federation.report.inputs import REPORT_HTML
from federation.sandbox.reproduce import record_synthetic_cohorts
from federation.sandbox.side_by_side import run_side_by_side, serialised
from federation.settings import load_coordinator

if TYPE_CHECKING:  # synth (and with it Hail) is imported only when cohorts are made
    from federation.sandbox.synth import NodeCohort

DEMO_STUDY_ID = "demo-cardiometabolic"
COORDINATOR_ID = "coordinator"
GENOME_WIDE_SIGNIFICANCE = 5e-8
TOP_HITS_SHOWN = 5
TRANSPORTS = ("local", "s3", "ssh")
REVIEWERS = ("reviewer-a", "reviewer-b")  # the two scripted output reviewers of `--review`
# The demo's dashboard tokens (`federation serve`, `demo --serve`): holder name -> role; each
# run writes fresh random tokens to DIR/keys/dashboard-<name>.token (mode 0600).
DASHBOARD_HOLDERS = {"admin": "admin", "reader": "read"}
DASHBOARD_TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
Progress = Callable[[str], None]


def demo_envelope() -> dict[str, Any]:
    """What the demo's nodes let the demo workflow do unattended: its analyses, traits and
    covariates, a few principal components, the default thresholds."""
    return {
        "analyses": ["allele_frequency", "gwas"],
        "traits": ["quant_trait", "binary_trait"],
        "covariates": ["age", "sex"],
        "max_principal_components": 10,
        "disclosure": {},
    }


def demo_study(nodes: list[str], engine: str = "snakemake") -> dict[str, Any]:
    """The study the demo submits: allele frequencies, a quantitative and a binary GWAS."""
    return {
        "study_id": DEMO_STUDY_ID,
        "title": "Demo: synthetic cardiometabolic traits across national cohorts",
        "reference_genome": "GRCh38",
        "engine": engine,
        "nodes": nodes,
        "quorum": len(nodes),
        "qc": {
            "sample_call_rate_min": 0.97,
            "variant_call_rate_min": 0.95,
            "hwe_p_min": 1e-6,
            "maf_min": 0.01,
        },
        "analyses": [
            {"id": "allele_frequencies", "type": "allele_frequency"},
            {
                "id": "quant_trait_gwas",
                "type": "gwas",
                "trait": "quant_trait",
                "trait_type": "quantitative",
                "covariates": ["age", "sex"],
                "principal_components": 2,
            },
            {
                "id": "binary_trait_gwas",
                "type": "gwas",
                "trait": "binary_trait",
                "trait_type": "binary",
                "test": "wald",
                "covariates": ["age", "sex"],
            },
        ],
    }


def _write_yaml(path: Path, document: dict[str, Any]) -> Path:
    return atomic_write(path, yaml.safe_dump(document, sort_keys=False))


def _write_secret(path: Path, document: dict[str, Any]) -> Path:
    return atomic_write(path, yaml.safe_dump(document), mode=0o600)


def coordinator_config_path(out_dir: Path) -> Path:
    return out_dir / "coordinator" / "coordinator.yaml"


def dashboard_token_path(out_dir: Path, holder: str) -> Path:
    return out_dir / "keys" / f"dashboard-{holder}.token"


def _dashboard_section(out_dir: Path) -> dict[str, Any]:
    """Fresh random tokens for the dashboard, one file each, and the config section naming them."""
    tokens = []
    for holder, role in DASHBOARD_HOLDERS.items():
        path = dashboard_token_path(out_dir, holder)
        atomic_write(path, secrets.token_urlsafe(DASHBOARD_TOKEN_BYTES) + "\n", mode=0o600)
        tokens.append({"name": holder, "role": role, "token_file": str(path)})
    return {"tokens": tokens}


@dataclass(frozen=True)
class Mailboxes:
    """Per node: how the coordinator reaches its mailbox, and how the node itself does."""

    coordinator_side: dict[str, dict[str, Any]]
    node_side: dict[str, dict[str, Any]]
    server: Any = None  # the SeaweedFSServer or OpenSSHServer behind them (None for local)


@contextmanager
def mailboxes(
    kind: str, out_dir: Path, node_ids: list[str], progress: Progress
) -> Iterator[Mailboxes]:
    local = {
        node: {"kind": "local", "path": str(out_dir / "mailboxes" / node)} for node in node_ids
    }
    for box in local.values():  # a node's mailbox exists before anyone uses it
        Path(box["path"]).mkdir(parents=True, exist_ok=True)
    if kind == "local":
        yield Mailboxes(local, local)
        return
    from federation.sandbox.servers import (
        OpenSSHServer,
        mailbox_bucket,
        node_identity_name,
        seaweedfs_mailboxes,
    )

    if kind == "s3":
        with seaweedfs_mailboxes(out_dir / "s3-server", node_ids) as server:
            progress(f"SeaweedFS S3 server on {server.endpoint_url} (loopback only, telemetry off)")

            def s3_side(identity: str, node: str) -> dict[str, Any]:
                credentials = server.credentials(identity)
                secret = _write_secret(
                    out_dir / "keys" / f"s3-{identity}.yaml",
                    {"access_key": credentials.access_key, "secret_key": credentials.secret_key},
                )
                return {
                    "kind": "s3",
                    "endpoint_url": server.endpoint_url,
                    "bucket": mailbox_bucket(node),
                    "credentials_file": str(secret),
                }

            yield Mailboxes(
                {node: s3_side("coordinator", node) for node in node_ids},
                {node: s3_side(node_identity_name(node), node) for node in node_ids},
                server,
            )
        progress("SeaweedFS stopped")
        return
    with OpenSSHServer(out_dir / "sshd") as sshd:
        progress(f"OpenSSH server on 127.0.0.1:{sshd.port} (pinned host key, loopback only)")
        coordinator_side = {
            node: {
                "kind": "ssh",
                "host": sshd.host,
                "port": sshd.port,
                "username": sshd.username,
                "client_key": str(sshd.client_key_path),
                "known_hosts": str(sshd.known_hosts_path),
                "remote_root": local[node]["path"],
            }
            for node in node_ids
        }
        yield Mailboxes(coordinator_side, local, sshd)
    progress("OpenSSH server stopped")


@dataclass(frozen=True)
class FederationConfigs:
    """Where `write_federation_configs` put the coordinator's and each node's config."""

    coordinator: Path
    nodes: dict[str, Path]


def write_federation_configs(
    out_dir: Path,
    cohorts: Sequence[NodeCohort],
    boxes: Mailboxes,
    approved_workflows: Sequence[str | dict[str, Any]],
    *,
    output_review: str = "none",
) -> FederationConfigs:
    """Fresh keys (DIR/keys), a node config per cohort and the coordinator's config.

    Each node reads its cohort's VCF and phenotypes, keeps its scratch in
    DIR/nodes/<node_id>/work, pins the coordinator's key and approves `approved_workflows`
    (digests, or digests with a parameter envelope). With `output_review` one or two, the
    nodes pin the `REVIEWERS`' keys.
    """
    keys = out_dir / "keys"
    node_ids = [cohort.node_id for cohort in cohorts]
    reviewers = REVIEWERS if output_review != "none" else ()
    for name in (COORDINATOR_ID, *node_ids, *reviewers):
        generate_keypair(keys, name, force=True)
    crypt.generate_keypair(keys, COORDINATOR_ID, force=True)  # results are sealed for it
    node_configs = {}
    for cohort in cohorts:
        node_dir = out_dir / "nodes" / cohort.node_id
        node_configs[cohort.node_id] = _write_yaml(
            node_dir / "node.yaml",
            {
                "node_id": cohort.node_id,
                "genotypes": {"format": "vcf", "path": str(cohort.vcf)},
                "phenotypes": str(cohort.phenotypes),
                "reference_genome": "GRCh38",
                "work_dir": str(node_dir / "work"),
                "results_dir": str(node_dir / "released"),
                "hail": {"master": "local[2]", "driver_memory": "4g"},
                "federation": {
                    "mailbox": boxes.node_side[cohort.node_id],
                    "signing_key": str(keys / f"{cohort.node_id}.key"),
                    "trusted_coordinators": {COORDINATOR_ID: str(keys / f"{COORDINATOR_ID}.pub")},
                    "coordinator_encryption_keys": {
                        COORDINATOR_ID: str(keys / f"{COORDINATOR_ID}{crypt.PUBLIC_SUFFIX}")
                    },
                    "approved_workflows": list(approved_workflows),
                    "output_review": output_review,
                    "reviewers": {name: str(keys / f"{name}.pub") for name in reviewers},
                },
            },
        )
    coordinator_config = _write_yaml(
        coordinator_config_path(out_dir),
        {
            "coordinator_id": COORDINATOR_ID,
            "signing_key": str(keys / f"{COORDINATOR_ID}.key"),
            "crypt4gh_key": str(keys / f"{COORDINATOR_ID}{crypt.SECRET_SUFFIX}"),
            "state_dir": str(out_dir / "coordinator" / "state"),
            "results_dir": str(out_dir / "results"),
            "nodes": {
                node: {
                    "public_key": str(keys / f"{node}.pub"),
                    "mailbox": boxes.coordinator_side[node],
                }
                for node in node_ids
            },
            "dashboard": _dashboard_section(out_dir),
        },
    )
    return FederationConfigs(coordinator_config, node_configs)


@dataclass(frozen=True)
class MetaSummary:
    analysis: str
    variants: int
    top_hits: list[tuple[str, float]]
    planted_found: list[str]
    planted_missed: list[str]


def _variant_key(chromosome: object, position: object, alleles: tuple[str, str]) -> tuple:
    """Chromosome, position and the unordered allele pair: how a planted `chr:pos:ref:alt`
    is found in meta output, whose variant_id is GWAS-SSF's `chr_pos_other_effect`."""
    return str(chromosome), int(str(position)), frozenset(allele.upper() for allele in alleles)


def summarise_meta(meta_file: Path, planted: list[str]) -> MetaSummary:
    table = sumstats.read_table(meta_file)
    column = sumstats.NEG_LOG10_P
    top = [(hit.variant_id, hit.neg_log10_p) for hit in top_variants(table, TOP_HITS_SHOWN)]
    hits = table[table[column] > -math.log10(GENOME_WIDE_SIGNIFICANCE)]
    significant = {
        _variant_key(chromosome, position, (effect, other))
        for chromosome, position, effect, other in zip(
            hits["chromosome"],
            hits["base_pair_location"],
            hits["effect_allele"],
            hits["other_allele"],
            strict=True,
        )
    }

    def is_significant(variant: str) -> bool:
        chromosome, position, ref, alt = re.split("[:_]", variant)  # chr:pos:ref:alt or GWAS-SSF
        return _variant_key(chromosome, position, (ref, alt)) in significant

    found = [variant for variant in planted if is_significant(variant)]
    missed = [variant for variant in planted if not is_significant(variant)]
    return MetaSummary(meta_file.name.removesuffix(".tsv.gz"), len(table), top, found, missed)


def review_releases(agent: NodeAgent, keys: Path, progress: Progress) -> None:
    """The two scripted reviewers of `--review`: each reads every release waiting for review
    and approves it with their own key; the second approval of one reviewer is refused."""
    waiting = agent.ledger.tasks((TaskStatus.IN_REVIEW,))
    for task in waiting:
        summary = read_summary(agent.node.work_dir, task.task_id)
        first_lines = format_summary(summary).splitlines()[:4]
        for line in first_lines:
            progress(f"[{agent.node.node_id}] review | {line}")
        for index, reviewer in enumerate(REVIEWERS):
            key = load_private_key(keys / f"{reviewer}.key")
            state = agent.review(task.task_id, key, Verdict.APPROVE)
            progress(
                f"[{agent.node.node_id}] {reviewer} approved task {task.task_id} "
                f"({len(state.approvals)} of {state.mode.required_approvals})"
            )
            if index == 0:
                try:  # four eyes: the same reviewer cannot count twice
                    agent.review(task.task_id, key, Verdict.APPROVE)
                except PolicyViolation as refused:
                    progress(f"[{agent.node.node_id}] a second approval by {reviewer}: {refused}")


def require_status(agent: NodeAgent, outcomes: list[TaskOutcome], expected: TaskStatus) -> None:
    """The demo's one task at this node reached `expected`; else PipelineError naming the
    node, the task, its status and the node-private reason (the demo's user is every node's
    admin), and where the node's log is."""
    for outcome in outcomes:
        if outcome.status is expected:
            continue
        task = agent.ledger.task(outcome.task_id)
        reason = (task.reason if task is not None else None) or outcome.reason or "no reason"
        raise PipelineError(
            f"node '{agent.node.node_id}': task {outcome.task_id} {outcome.status.value}, not "
            f"{expected.value}: {reason}; see {agent.node.work_dir} (node.log, audit log)"
        )
    if not outcomes:
        raise PipelineError(
            f"node '{agent.node.node_id}': its agent found no task to run; see "
            f"{agent.node.work_dir} (audit log)"
        )


def run_nodes(
    agents: dict[str, NodeAgent], expected: TaskStatus, progress: Progress
) -> dict[str, list[TaskOutcome]]:
    """One pass of every node's agent, the nodes side by side; each must reach `expected`.
    Says when each node's pass ends and how long it took."""
    runs = run_side_by_side({node: agent.run_once for node, agent in agents.items()}, progress)
    for node, run in runs.items():
        require_status(agents[node], run.result, expected)
    return {node: run.result for node, run in runs.items()}


def run_demo(
    out_dir: Path,
    nodes: int = 3,
    samples_per_node: int | list[int] = 1000,
    variants: int = 10_000,
    seed: int = 42,
    transport: str = "local",
    engine: str = "snakemake",
    review: bool = False,
    progress: Progress = print,
) -> str:
    """Run the whole federation; return the printed summary."""
    if transport not in TRANSPORTS:
        raise SpecError(f"--transport '{transport}': unknown; use one of {', '.join(TRANSPORTS)}")
    from federation.sandbox.synth import synthesize  # starts Hail: imported only when needed

    out_dir = out_dir.resolve()
    progress = serialised(progress)  # the nodes' runs report from their own threads
    progress(f"[1/5] synthesising {nodes} national cohorts in {out_dir / 'cohorts'}")
    cohorts = synthesize(
        out_dir / "cohorts",
        nodes=nodes,
        samples_per_node=samples_per_node,
        variants=variants,
        seed=seed,
        force=True,
        progress=progress,
    )
    node_ids = [cohort.node_id for cohort in cohorts.nodes]
    study_path = _write_yaml(out_dir / "study.yaml", demo_study(node_ids, engine))
    approval = {"digest": pipeline_workflow_digest(), "envelope": demo_envelope()}

    progress("[2/5] keys and configs for the coordinator and each node; nodes publish policies")
    with ExitStack() as stack:
        boxes = stack.enter_context(mailboxes(transport, out_dir, node_ids, progress))
        configs = write_federation_configs(
            out_dir, cohorts.nodes, boxes, [approval], output_review="two" if review else "none"
        )
        node_configs, coordinator_config = configs.nodes, configs.coordinator
        ledger = out_dir / "coordinator" / "state" / "coordinator.sqlite"
        for stale in ledger.parent.glob(f"{ledger.name}*"):  # a re-run starts a fresh study
            stale.unlink()
        agents = {node: NodeAgent(node_configs[node], progress=progress) for node in node_ids}
        for agent in agents.values():
            stack.callback(agent.close)
            agent.publish_policy(force=True)
        coordinator = Coordinator(load_coordinator(coordinator_config), progress=progress)

        progress(
            f"[3/5] submitting study '{DEMO_STUDY_ID}' over {transport} to {', '.join(node_ids)}"
        )
        submission = coordinator.submit(study_path)
        if submission.preflight is not None:
            for line in submission.preflight.report().splitlines():
                progress(f"[coordinator] pre-flight | {line}")
        progress("[4/5] the nodes, side by side, verify their tasks, run the pipeline and release")
        run_nodes(agents, TaskStatus.IN_REVIEW if review else TaskStatus.RELEASED, progress)
        if review:
            for node in node_ids:
                review_releases(agents[node], out_dir / "keys", progress)
            # publishes what the reviewers approved
            run_nodes(agents, TaskStatus.RELEASED, progress)
        progress("[5/5] collecting, verifying and meta-analysing; the study's RO-Crate")
        # How the cohorts were made, for `federation reproduce --nodes synthetic`.
        record_synthetic_cohorts(
            out_dir / "results" / DEMO_STUDY_ID,
            {
                "nodes": nodes,
                "samples_per_node": samples_per_node,
                "variants": variants,
                "seed": seed,
            },
        )
        collection = coordinator.collect(DEMO_STUDY_ID, MetaOptions(random_effects=False))
        status = format_status(coordinator.ledger, DEMO_STUDY_ID)

    crate_dir = out_dir / "results" / DEMO_STUDY_ID
    verification = verify_crate(crate_dir)
    for line in verification.notes:
        progress(line)
    if verification.problems:
        raise ProvenanceError(
            f"the study crate {crate_dir / METADATA_NAME} does not verify: "
            + "; ".join(verification.problems)
        )
    planted = [variant.variant_id for variant in cohorts.causal_variants]
    lines = [status, ""]
    for meta_file in collection.meta_files:
        if meta_file.name.startswith("allele_frequencies"):
            lines.append(f"pooled allele frequencies: {meta_file}")
            continue
        summary = summarise_meta(meta_file, planted)
        lines.append(f"meta-analysis {summary.analysis}: {summary.variants} variants ({meta_file})")
        for variant, nlp in summary.top_hits:
            lines.append(f"    {variant:<24} -log10 p = {nlp:7.2f}")
        total = len(summary.planted_found) + len(summary.planted_missed)
        lines.append(
            f"    planted causal variants at p < 5e-8: {len(summary.planted_found)} of {total}"
        )
    report = out_dir / "results" / DEMO_STUDY_ID / REPORT_HTML
    if report.is_file():  # written by the coordinator after the meta-analysis
        lines += ["", f"study report: {report}"]
    lines.append(
        f"study RO-Crate: {crate_dir / METADATA_NAME} (verified: {len(verification.checked)} "
        f"checks; `federation verify {crate_dir}`, `federation reproduce {crate_dir} --out DIR`)"
    )
    return "\n".join(lines)
