"""The coordinator's pre-flight: what each node will do with a study, before anything is sent.

Every node publishes a signed policy document in its mailbox (`NodePolicyDocument`: its
thresholds, the workflows it approved and their parameter envelopes, what it does with other
workflows, its output review, how many genomes it can analyse). The pre-flight reads it,
verifies it against the node's pinned key, and applies the node's own admission rule
(`release.admission.admit`) to the study and its workflow digest: the node refuses it (and
why), holds it for its admin, or runs it; and, per analysis, whether the gate will surely
withhold it (no cohort of the node can reach the minimum). `federation study submit` refuses
a study that any node would refuse, one line per node, and sends nothing; `--dry-run` prints
the prediction and sends nothing.

A node whose mailbox is missing or unreachable is an error (nothing is sent). A node that has
published no policy yet cannot be predicted: the study goes to it and the node decides. A
published policy that does not verify refuses the study for that node (fail closed).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from federation.errors import DisclosureError, PolicyViolation, TransportError
from federation.protocol.messages import (
    MailboxKeys,
    NodePolicyDocument,
    OutputReview,
    version_compatible,
)
from federation.protocol.signing import TrustStore
from federation.release.admission import Admission, admit, effective_policy, surely_withheld
from federation.spec import StudySpec
from federation.transport import NotFound, Transport

MAY_BE_RELEASED = "may be released (the gate decides on the analysed cohort)"


@dataclass(frozen=True)
class NodePrediction:
    """What one node will do with the study, as its published policy says."""

    node_id: str
    verdict: Admission | None  # None: no published policy, or its mailbox cannot be reached
    reasons: tuple[str, ...] = ()
    analyses: dict[str, str] = field(default_factory=dict)  # analysis id -> expectation
    output_review: OutputReview | None = None
    policy_issued_at: str | None = None
    unreachable: str | None = None  # the mailbox error, if any

    def summary(self) -> str:
        """One line: the node and what it will do (and why, if it refuses or holds)."""
        node = f"node '{self.node_id}'"
        if self.unreachable:
            return f"{node}: mailbox unreachable: {self.unreachable}"
        if self.verdict is None:
            return f"{node}: no published policy; cannot predict (the node decides)"
        if self.verdict is Admission.REFUSE:
            return f"{node}: refuses the study: {'; '.join(self.reasons)}"
        if self.verdict is Admission.HOLD:
            return f"{node}: holds it for its admin's approval: {'; '.join(self.reasons)}"
        review = self.output_review or OutputReview.NONE
        checked = (
            f"after output review by {review.required_approvals} reviewer(s)"
            if review is not OutputReview.NONE
            else "without a person"
        )
        return f"{node}: runs it {checked}"

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "prediction": self.verdict.value if self.verdict else None,
            "reasons": list(self.reasons),
            "analyses": dict(self.analyses),
            "output_review": self.output_review.value if self.output_review else None,
            "policy_issued_at": self.policy_issued_at,
            "unreachable": self.unreachable,
        }


@dataclass(frozen=True)
class Preflight:
    study_id: str
    workflow_digest: str
    predictions: tuple[NodePrediction, ...]

    @property
    def refused(self) -> list[NodePrediction]:
        return [p for p in self.predictions if p.verdict is Admission.REFUSE]

    @property
    def unreachable(self) -> list[NodePrediction]:
        return [p for p in self.predictions if p.unreachable]

    def report(self) -> str:
        """The prediction as people read it: the digest in full, a block per node."""
        lines = [
            f"study {self.study_id}: workflow {self.workflow_digest}",
        ]
        for prediction in self.predictions:
            lines.append(prediction.summary())
            for analysis, expectation in prediction.analyses.items():
                lines.append(f"    {analysis}: {expectation}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "workflow_digest": self.workflow_digest,
            "nodes": [prediction.to_json() for prediction in self.predictions],
        }


def predict(document: NodePolicyDocument, study: StudySpec, workflow_digest: str) -> NodePrediction:
    """What the node that published `document` does with `study` (pure: no I/O)."""
    node_id = document.node_id
    issued = document.issued_at.isoformat(timespec="seconds")
    if not version_compatible(document.federation_version):
        reason = (
            f"node '{node_id}' runs federation {document.federation_version}, which does not "
            "take tasks from this coordinator's version; upgrade one side"
        )
        return NodePrediction(node_id, Admission.REFUSE, (reason,), policy_issued_at=issued)
    decision = admit(document, study, workflow_digest)
    analyses: dict[str, str] = {}
    if decision.verdict is not Admission.REFUSE:
        try:
            effective = effective_policy(document.disclosure, study)
        except DisclosureError:  # admit refuses these; kept for the type checker's sake
            effective = None
        withheld = (
            surely_withheld(effective, study, document.accessible_genomes) if effective else {}
        )
        for analysis_id in study.analysis_ids:
            analyses[analysis_id] = (
                f"withheld ({withheld[analysis_id]})"
                if analysis_id in withheld
                else MAY_BE_RELEASED
            )
    return NodePrediction(
        node_id,
        decision.verdict,
        decision.reasons,
        analyses,
        document.output_review,
        issued,
    )


def read_policy(mailbox: Transport, node_id: str, trust: TrustStore) -> NodePolicyDocument | None:
    """The node's published policy (None if it has published none); PolicyViolation if forged."""
    try:
        raw = mailbox.get_bytes(MailboxKeys.POLICY)
    except NotFound:
        return None
    return NodePolicyDocument.verify(raw, trust, node_id)


def preflight_node(
    mailbox: Transport, node_id: str, trust: TrustStore, study: StudySpec, workflow_digest: str
) -> NodePrediction:
    """Check the node's mailbox, read its policy and predict; mailbox trouble is reported."""
    try:
        with closing(mailbox):
            mailbox.check()
            document = read_policy(mailbox, node_id, trust)
    except TransportError as error:
        return NodePrediction(node_id, None, unreachable=str(error))
    except PolicyViolation as error:
        reason = f"its published policy does not verify ({error})"
        return NodePrediction(node_id, Admission.REFUSE, (reason,))
    if document is None:
        return NodePrediction(node_id, None)
    return predict(document, study, workflow_digest)
