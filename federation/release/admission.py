"""What a node's policy says about a study before anything runs, and what its gate will surely do.

A study is refused (a wrong engine or genome build, or thresholds looser than the node's: no
person may approve those), held for the node's admin (its workflow is not approved, or the
study falls outside every parameter envelope the admin approved it with; a node may refuse
those instead), or run without a person. Separately, an analysis whose cohort cannot reach the
gate's minimum is surely withheld.

The node decides with `admit` when a task arrives (`node.agent`), from the very document it
publishes; the coordinator's pre-flight calls the same function on the published, signed copy
(`coordinator.preflight`), so a pre-flight says what the node then does. Nothing here reads
data: the only cohort size used is the node's published upper bound of accessible genomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from federation.errors import DisclosureError
from federation.protocol.messages import (
    NodePolicyDocument,
    ParameterEnvelope,
    UnapprovedWorkflows,
    WorkflowApproval,
)
from federation.release.rules import DisclosurePolicy
from federation.spec import StudySpec

THRESHOLD_NAMES = frozenset(field.name for field in fields(DisclosurePolicy))


class Admission(StrEnum):
    RUN = "run"
    HOLD = "hold"
    REFUSE = "refuse"


@dataclass(frozen=True)
class AdmissionDecision:
    verdict: Admission
    reasons: tuple[str, ...] = ()  # one line each: why it is refused or held
    approval: WorkflowApproval | None = None  # the approval a RUN falls under


def effective_policy(node_thresholds: Mapping[str, float], study: StudySpec) -> DisclosurePolicy:
    """The node's thresholds tightened by the study's; DisclosureError if the study loosens one.

    Thresholds this software does not know (published by a newer node) are left out: the node
    itself applies them.
    """
    known: dict[str, Any] = {
        name: value for name, value in node_thresholds.items() if name in THRESHOLD_NAMES
    }
    node = replace(DisclosurePolicy(), **known)
    return node.tightened(study.disclosure, f"study '{study.study_id}'")


def _analysis_kinds(study: StudySpec) -> dict[str, str]:
    kinds = {analysis.id: "allele_frequency" for analysis in study.allele_frequencies}
    kinds.update({analysis.id: "gwas" for analysis in study.gwas})
    return kinds


def _below_minimum(effective: DisclosurePolicy, name: str, minimum: float) -> bool:
    """Whether the study's effective `name` is looser than the envelope's `minimum`: tightening
    by the minimum would change it. (A minimum looser than the effective value is refused by
    `tightened`, and then the study is inside.)"""
    try:
        return effective.tightened({name: minimum}, "envelope") != effective
    except DisclosureError:
        return False


def envelope_gaps(
    envelope: ParameterEnvelope, study: StudySpec, effective: DisclosurePolicy
) -> list[str]:
    """Where `study` lies outside `envelope`, one phrase per gap; empty when it is inside."""
    gaps = []
    for analysis_id, kind in _analysis_kinds(study).items():
        if kind not in envelope.analyses:
            gaps.append(f"analysis '{analysis_id}' is of kind {kind}, not allowed")
    for analysis in study.gwas:
        if analysis.trait not in envelope.traits:
            gaps.append(f"trait '{analysis.trait}' is not allowed")
        gaps += [
            f"covariate '{covariate}' is not allowed"
            for covariate in analysis.covariates
            if covariate not in envelope.covariates
        ]
        if analysis.principal_components > envelope.max_principal_components:
            gaps.append(
                f"analysis '{analysis.id}' asks {analysis.principal_components} principal "
                f"components > {envelope.max_principal_components}"
            )
    for name, minimum in sorted(envelope.disclosure.items()):
        if name not in THRESHOLD_NAMES:
            gaps.append(f"threshold '{name}' is unknown to this software")
        elif _below_minimum(effective, name, minimum):
            gaps.append(f"{name} {getattr(effective, name)} is looser than the minimum {minimum}")
    return list(dict.fromkeys(gaps))  # a trait asked by two analyses is one gap


def admit(
    document: NodePolicyDocument, study: StudySpec, workflow_digest: str
) -> AdmissionDecision:
    """What the node that published `document` does with `study` built as `workflow_digest`."""
    node = f"node '{document.node_id}'"
    refusals = []
    if study.engine not in document.engines:
        runs = ", ".join(document.engines)
        refusals.append(f"{node} runs {runs}, not engine '{study.engine}'; use one of those")
    if study.reference_genome != document.reference_genome:
        refusals.append(
            f"{node} holds {document.reference_genome} genomes, the study asks "
            f"{study.reference_genome}; run a {document.reference_genome} study"
        )
    try:
        effective = effective_policy(document.disclosure, study)
    except DisclosureError as error:
        refusals.append(str(error))
        effective = DisclosurePolicy()
    if refusals:
        return AdmissionDecision(Admission.REFUSE, tuple(refusals))
    approvals = document.approvals_of(workflow_digest)
    if not approvals:
        unapproved = f"workflow {workflow_digest} is not approved by {node}"
        if document.unapproved_workflows is UnapprovedWorkflows.REFUSE:
            reason = (
                f"{unapproved}, which refuses unapproved workflows; its admin approves it first"
            )
            return AdmissionDecision(Admission.REFUSE, (reason,))
        return AdmissionDecision(Admission.HOLD, (f"{unapproved}; held for its admin",))
    closest: list[str] | None = None
    for approval in approvals:
        if approval.envelope is None:
            return AdmissionDecision(Admission.RUN, approval=approval)
        gaps = envelope_gaps(approval.envelope, study, effective)
        if not gaps:
            return AdmissionDecision(Admission.RUN, approval=approval)
        if closest is None or len(gaps) < len(closest):
            closest = gaps
    reasons = tuple(f"outside the approved envelope: {gap}" for gap in closest or [])
    return AdmissionDecision(Admission.HOLD, reasons)


def surely_withheld(
    effective: DisclosurePolicy, study: StudySpec, accessible_genomes: int | None
) -> dict[str, str]:
    """analysis id -> why the gate will withhold it whatever the data: a cohort that cannot reach
    the minimum (`accessible_genomes` is an upper bound of any cohort the node can analyse)."""
    if accessible_genomes is None:
        return {}
    withheld = {}
    limits = [(analysis.id, "min_cohort_af") for analysis in study.allele_frequencies]
    limits += [(analysis.id, "min_cohort_gwas") for analysis in study.gwas]
    for analysis_id, rule in limits:
        limit = getattr(effective, rule)
        if accessible_genomes < limit:
            withheld[analysis_id] = f"at most {accessible_genomes} genomes < {rule} {limit}"
    return withheld


def envelope_of(study: StudySpec, effective: DisclosurePolicy) -> ParameterEnvelope:
    """The smallest envelope `study` lies in: its kinds, traits, covariates and components, and
    its effective thresholds as minimums (what an admin approves when approving 'this, again')."""
    return ParameterEnvelope(
        analyses=frozenset(_analysis_kinds(study).values()),
        traits=frozenset(analysis.trait for analysis in study.gwas),
        covariates=frozenset(c for analysis in study.gwas for c in analysis.covariates),
        max_principal_components=study.max_principal_components,
        disclosure={
            name: value
            for name, value in effective.as_dict().items()
            if value != getattr(DisclosurePolicy(), name)
        },
    )
