"""The node-owned task policy: what a node checks before it unpacks or runs anything, and the
signed policy document it publishes.

Order matters and every check fails closed: the envelope's signature against pinned
coordinator keys and its form first (`TaskEnvelope.verify`: nothing unsigned is parsed
further), then that the task is for this node, fresh, not expired and from a compatible
federation version; replay checks live in the node ledger (`node.ledger`); the bundle's digest
and archive safety come after download (`node.agent`), then admission (`release.admission`):
refused, held for the admin, or run inside an approved workflow's parameter envelope.

`policy_document` is what the node publishes in its mailbox (`NodePolicyDocument`): its
effective disclosure thresholds, its approved workflows and envelopes (from node.yaml and from
`federation node approve --remember`), what it does with other workflows, its output review,
and how many genomes it can analyse (rounded up to a multiple of `GENOME_COUNT_STEP`), how many
variants its genotype file holds (rounded up to a multiple of `VARIANT_COUNT_STEP`) and which
data types it holds. The node decides with the same document, so the coordinator's pre-flight
predicts what the node does; the coordinator's dashboard shows it as the node directory.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from federation import __version__
from federation.errors import PolicyViolation, SpecError
from federation.jsonio import canonical_json
from federation.pipeline.phenotypes import read_phenotypes
from federation.pipeline.preflight import genotype_sample_ids
from federation.pipeline.run import ENGINES
from federation.protocol.messages import (
    NodePolicyDocument,
    OutputReview,
    ParameterEnvelope,
    TaskEnvelope,
    UnapprovedWorkflows,
    WorkflowApproval,
    version_compatible,
)
from federation.protocol.signing import TrustStore, load_public_key
from federation.release.rules import DisclosurePolicy
from federation.settings import NodeFederation, NodeSettings

__all__ = [
    "NodePolicy",
    "accessible_genomes",
    "accessible_variants",
    "policy_document",
    "version_compatible",
]

# Clocks of coordinator and node differ a little; more than this in the future is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)
# Published genome counts are rounded up to a multiple of this: an upper bound for the
# coordinator's pre-flight, and no exact count of the node's cohort leaves it.
GENOME_COUNT_STEP = 5
# Published variant counts are rounded up to a multiple of this: the size a researcher plans
# with, not an exact count that would tell one release of the node's data from the next.
VARIANT_COUNT_STEP = 1000
BCFTOOLS_SECONDS = 60  # reading a record count from an index takes well under a second


def _approvals(federation: NodeFederation) -> tuple[WorkflowApproval, ...]:
    plain = [WorkflowApproval(digest) for digest in sorted(federation.approved_workflows)]
    enveloped = []
    for index, (digest, envelope) in enumerate(federation.workflow_envelopes):
        where = f"node config 'federation.approved_workflows' entry {index}"
        try:
            enveloped.append(WorkflowApproval(digest, ParameterEnvelope.from_dict(envelope, where)))
        except PolicyViolation as error:
            raise SpecError(str(error)) from None
    return (*plain, *enveloped)


@dataclass(frozen=True)
class NodePolicy:
    node_id: str
    trusted_coordinators: TrustStore
    approved_workflows: frozenset[str]  # digests approved for any study
    max_task_age: timedelta
    approvals: tuple[WorkflowApproval, ...] = ()  # node.yaml's, with and without envelopes
    unapproved_workflows: UnapprovedWorkflows = UnapprovedWorkflows.HOLD
    output_review: OutputReview = OutputReview.NONE
    reviewers: TrustStore = field(default_factory=lambda: TrustStore({}, source="no reviewers"))

    @classmethod
    def from_settings(cls, node_id: str, federation: NodeFederation) -> NodePolicy:
        keys = {}
        for name, path in federation.trusted_coordinators.items():
            if not path.is_file():
                raise SpecError(
                    f"node config 'federation.trusted_coordinators.{name}': '{path}' not found"
                )
            keys[name] = load_public_key(path)
        reviewers = {}
        for name, path in federation.reviewers.items():
            if not path.is_file():
                raise SpecError(f"node config 'federation.reviewers.{name}': '{path}' not found")
            reviewers[name] = load_public_key(path)
        return cls(
            node_id=node_id,
            trusted_coordinators=TrustStore(keys, source=f"node '{node_id}' trusted coordinators"),
            approved_workflows=federation.approved_workflows,
            max_task_age=timedelta(hours=federation.max_task_age_hours),
            approvals=_approvals(federation),
            unapproved_workflows=UnapprovedWorkflows(federation.unapproved_workflows),
            output_review=OutputReview(federation.output_review),
            reviewers=TrustStore(reviewers, source=f"node '{node_id}' output reviewers"),
        )

    def verify_envelope(self, raw: bytes, task_dir_name: str, now: datetime) -> TaskEnvelope:
        """Signature and form first, then content. Raises PolicyViolation with a one-line reason."""
        envelope = TaskEnvelope.verify(raw, self.trusted_coordinators, task_dir_name)
        what = f"task '{task_dir_name}'"
        if envelope.task_id != task_dir_name:
            raise PolicyViolation(
                f"{what}: envelope names task '{envelope.task_id}' (moved or copied); refused"
            )
        if envelope.node_id != self.node_id:
            raise PolicyViolation(
                f"{what}: addressed to node '{envelope.node_id}', not '{self.node_id}'; refused"
            )
        issued_at = envelope.issued_at.isoformat(timespec="seconds")
        if envelope.issued_at > now + MAX_CLOCK_SKEW:
            raise PolicyViolation(f"{what}: issued in the future ({issued_at}); refused")
        if now >= envelope.expires_at:
            expires_at = envelope.expires_at.isoformat(timespec="seconds")
            raise PolicyViolation(f"{what}: expired at {expires_at}; refused")
        if now - envelope.issued_at > self.max_task_age:
            raise PolicyViolation(
                f"{what}: issued {issued_at}, older than the node's limit of "
                f"{self.max_task_age}; refused"
            )
        if not version_compatible(envelope.federation_version):
            raise PolicyViolation(
                f"{what}: built by federation {envelope.federation_version}, node runs "
                f"{__version__}; upgrade one side"
            )
        return envelope

    def document(
        self,
        node: NodeSettings,
        more_approvals: Sequence[WorkflowApproval],
        genomes: int | None,
        now: datetime,
        variants: int | None = None,
    ) -> NodePolicyDocument:
        return policy_document(self, node, more_approvals, genomes, now, variants)


def accessible_genomes(node: NodeSettings) -> int | None:
    """Samples with genotypes and phenotypes, rounded up to a multiple of GENOME_COUNT_STEP;
    None when it cannot be told without Hail (a MatrixTable) or the files cannot be read."""
    try:
        samples = genotype_sample_ids(node)
        if samples is None:
            return None
        phenotyped = set(read_phenotypes(node.phenotypes).index)
    except SpecError:
        return None
    return _round_up(len(phenotyped.intersection(samples)), GENOME_COUNT_STEP)


def _round_up(count: int, step: int) -> int:
    return step * math.ceil(count / step)


def accessible_variants(node: NodeSettings) -> int | None:
    """Variants of the genotype file, rounded up to a multiple of VARIANT_COUNT_STEP: the .bim's
    lines, or a VCF's record count from its index (`bcftools index --nrecords`); None when it
    cannot be told cheaply (no index, no bcftools, a MatrixTable)."""
    path = node.genotype_path
    if node.genotype_format == "plink":
        bim = Path(str(path).removesuffix(".bed") + ".bim")
        if not bim.is_file():
            return None
        with bim.open("rb") as handle:
            return _round_up(sum(1 for line in handle if line.strip()), VARIANT_COUNT_STEP)
    if node.genotype_format != "vcf" or not shutil.which("bcftools"):
        return None
    indexed = [Path(f"{path}{suffix}") for suffix in (".tbi", ".csi")]
    if not any(index.is_file() for index in indexed):
        return None
    try:
        done = subprocess.run(
            ["bcftools", "index", "--nrecords", str(path)],
            capture_output=True,
            text=True,
            timeout=BCFTOOLS_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return (
        _round_up(int(text), VARIANT_COUNT_STEP)
        if done.returncode == 0 and text.isdigit()
        else None
    )


def data_types(node: NodeSettings) -> tuple[str, ...]:
    """What the node holds, in the directory's words: genotype calls (with their format) and
    phenotypes."""
    return (f"genotype calls ({node.genotype_format})", "phenotypes")


def policy_document(
    policy: NodePolicy,
    node: NodeSettings,
    more_approvals: Sequence[WorkflowApproval],
    genomes: int | None,
    now: datetime,
    variants: int | None = None,
) -> NodePolicyDocument:
    """The node's policy as it publishes it (and decides by it): `more_approvals` are the
    admin's approvals from the command line, `genomes` the accessible-genome count, `variants`
    the genotype file's (both rounded by `accessible_genomes`, `accessible_variants`)."""
    thresholds = DisclosurePolicy().tightened(node.disclosure, f"node '{node.node_id}' config")
    return NodePolicyDocument(
        node_id=node.node_id,
        issued_at=now,
        federation_version=__version__,
        engines=tuple(sorted(ENGINES)),
        reference_genome=node.reference_genome,
        disclosure=thresholds.as_dict(),
        accessible_genomes=genomes,
        output_review=policy.output_review,
        unapproved_workflows=policy.unapproved_workflows,
        approved_workflows=_distinct([*policy.approvals, *more_approvals]),
        accessible_variants=variants,
        data_types=data_types(node),
    )


def _distinct(approvals: Sequence[WorkflowApproval]) -> tuple[WorkflowApproval, ...]:
    """Each approval once, in order (an admin may approve the same envelope twice)."""
    seen: dict[str, WorkflowApproval] = {}
    for approval in approvals:
        seen.setdefault(canonical_json(approval.to_dict()).decode(), approval)
    return tuple(seen.values())
