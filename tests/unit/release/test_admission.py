"""federation.release.admission: refused, held or run, from the node's published policy alone;
which analyses the gate will surely withhold (below, at and above the cohort minimums)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from federation.errors import DisclosureError
from federation.protocol.messages import (
    NodePolicyDocument,
    OutputReview,
    ParameterEnvelope,
    UnapprovedWorkflows,
    WorkflowApproval,
)
from federation.release.admission import (
    Admission,
    admit,
    effective_policy,
    envelope_gaps,
    envelope_of,
    surely_withheld,
)
from federation.release.rules import DisclosurePolicy
from federation.spec import StudySpec, study_from_dict

APPROVED = "a" * 64
OTHER = "b" * 64
ENVELOPE = ParameterEnvelope(
    analyses=frozenset({"allele_frequency", "gwas"}),
    traits=frozenset({"height", "t2d"}),
    covariates=frozenset({"age", "sex"}),
    max_principal_components=4,
    disclosure={"min_cohort_gwas": 150},
)


def _policy(**changes: Any) -> NodePolicyDocument:
    document = NodePolicyDocument(
        node_id="fi",
        issued_at=datetime(2026, 1, 1, tzinfo=UTC),
        federation_version="0.1.0",
        engines=("cwl", "snakemake"),
        reference_genome="GRCh38",
        disclosure=DisclosurePolicy().as_dict(),
        accessible_genomes=1000,
        output_review=OutputReview.NONE,
        unapproved_workflows=UnapprovedWorkflows.HOLD,
        approved_workflows=(WorkflowApproval(APPROVED, ENVELOPE),),
    )
    return replace(document, **changes)


def _study(**changes: Any) -> StudySpec:
    gwas = {
        "id": "height",
        "type": "gwas",
        "trait": "height",
        "trait_type": "quantitative",
        "covariates": ["age", "sex"],
        "principal_components": 4,
    }
    document = {
        "study_id": "s1",
        "analyses": [{"id": "af", "type": "allele_frequency"}, {**gwas, **changes.pop("gwas", {})}],
        "disclosure": {"min_cohort_gwas": 150},
        **changes,
    }
    return study_from_dict(document)


def test_a_study_inside_an_approved_envelope_runs_without_a_person():
    decision = admit(_policy(), _study(), APPROVED)
    assert decision.verdict is Admission.RUN and decision.reasons == ()
    assert decision.approval == WorkflowApproval(APPROVED, ENVELOPE)


def test_a_workflow_approved_without_an_envelope_runs_any_study():
    policy = _policy(approved_workflows=(WorkflowApproval(APPROVED),))
    study = _study(gwas={"trait": "anything", "covariates": ["batch"]})
    assert admit(policy, study, APPROVED).verdict is Admission.RUN


@pytest.mark.parametrize(
    ("study_changes", "gap"),
    [
        ({"gwas": {"trait": "bmi"}}, "trait 'bmi' is not allowed"),
        ({"gwas": {"covariates": ["age", "smoking"]}}, "covariate 'smoking' is not allowed"),
        (
            {"gwas": {"principal_components": 5}},
            "analysis 'height' asks 5 principal components > 4",
        ),
        ({"disclosure": {}}, "min_cohort_gwas 100 is looser than the minimum 150"),
        (
            {"disclosure": {"min_cohort_gwas": 149}},
            "min_cohort_gwas 149 is looser than the minimum 150",
        ),
    ],
)
def test_a_study_outside_the_envelope_is_held_and_the_gap_named(study_changes, gap):
    decision = admit(_policy(), _study(**study_changes), APPROVED)
    assert decision.verdict is Admission.HOLD
    assert decision.reasons == (f"outside the approved envelope: {gap}",)


def test_at_and_above_the_envelope_minimum_the_study_is_inside():
    for minimum in (150, 151, 400):
        assert admit(
            _policy(), _study(disclosure={"min_cohort_gwas": minimum}), APPROVED
        ).verdict is (Admission.RUN)


def test_an_analysis_kind_outside_the_envelope_is_held():
    envelope = replace(ENVELOPE, analyses=frozenset({"gwas"}))
    policy = _policy(approved_workflows=(WorkflowApproval(APPROVED, envelope),))
    decision = admit(policy, _study(), APPROVED)
    assert decision.reasons == (
        "outside the approved envelope: analysis 'af' is of kind allele_frequency, not allowed",
    )


def test_the_closest_of_several_envelopes_explains_a_hold():
    narrow = replace(ENVELOPE, traits=frozenset(), covariates=frozenset())
    wide = replace(ENVELOPE, traits=frozenset({"height"}), covariates=frozenset({"age"}))
    policy = _policy(
        approved_workflows=(WorkflowApproval(APPROVED, narrow), WorkflowApproval(APPROVED, wide))
    )
    decision = admit(policy, _study(), APPROVED)
    assert decision.verdict is Admission.HOLD
    assert decision.reasons == ("outside the approved envelope: covariate 'sex' is not allowed",)


def test_an_unapproved_workflow_is_held_or_refused_as_the_node_says():
    held = admit(_policy(), _study(), OTHER)
    assert held.verdict is Admission.HOLD
    assert held.reasons == (f"workflow {OTHER} is not approved by node 'fi'; held for its admin",)
    refused = admit(_policy(unapproved_workflows=UnapprovedWorkflows.REFUSE), _study(), OTHER)
    assert refused.verdict is Admission.REFUSE and OTHER in refused.reasons[0]
    assert "refuses unapproved workflows" in refused.reasons[0]


@pytest.mark.parametrize(
    ("policy_changes", "study_changes", "reason"),
    [
        ({}, {"disclosure": {"min_cohort_gwas": 99}}, "'min_cohort_gwas': 99 would loosen"),
        (
            {},
            {"disclosure": {"max_parameter_fraction": 0.5}},
            "would loosen the node policy (0.33)",
        ),
        (
            {"disclosure": {**DisclosurePolicy().as_dict(), "min_cohort_gwas": 300}},
            {"disclosure": {"min_cohort_gwas": 200}},
            "200 would loosen the node policy (300)",
        ),
        ({"engines": ("snakemake",)}, {"engine": "cwl"}, "runs snakemake, not engine 'cwl'"),
        ({"reference_genome": "GRCh37"}, {}, "holds GRCh37 genomes, the study asks GRCh38"),
    ],
)
def test_what_no_person_may_approve_is_refused(policy_changes, study_changes, reason):
    decision = admit(_policy(**policy_changes), _study(**study_changes), APPROVED)
    assert decision.verdict is Admission.REFUSE
    assert any(reason in line for line in decision.reasons), decision.reasons


def test_the_effective_policy_is_the_nodes_tightened_by_the_study():
    node = {**DisclosurePolicy().as_dict(), "min_cohort_gwas": 120, "from_a_newer_node": 3}
    effective = effective_policy(node, _study(disclosure={"min_mac_gwas": 40}))
    assert (effective.min_cohort_gwas, effective.min_mac_gwas) == (120, 40)
    with pytest.raises(DisclosureError, match="would loosen"):
        effective_policy(node, _study(disclosure={"min_cohort_gwas": 110}))


@pytest.mark.parametrize(
    ("genomes", "withheld"),
    [
        (49, {"af", "height"}),  # below min_cohort_af (50): nothing can leave
        (50, {"height"}),  # at it: allele frequencies may; the GWAS needs 100
        (99, {"height"}),
        (100, set()),  # at min_cohort_gwas: the gate decides on the analysed cohort
        (None, set()),  # not known: no prediction
    ],
)
def test_an_analysis_no_cohort_of_the_node_can_carry_is_surely_withheld(genomes, withheld):
    predicted = surely_withheld(DisclosurePolicy(), _study(disclosure={}), genomes)
    assert set(predicted) == withheld
    if "height" in predicted:
        assert predicted["height"] == f"at most {genomes} genomes < min_cohort_gwas 100"


def test_a_study_lies_inside_its_own_envelope_and_nothing_wider():
    study = _study(disclosure={"min_cohort_gwas": 200})
    effective = effective_policy(DisclosurePolicy().as_dict(), study)
    envelope = envelope_of(study, effective)
    assert envelope.traits == {"height"} and envelope.covariates == {"age", "sex"}
    assert envelope.analyses == {"allele_frequency", "gwas"}
    assert envelope.disclosure == {"min_cohort_gwas": 200}
    assert envelope_gaps(envelope, study, effective) == []
    looser = _study(disclosure={"min_cohort_gwas": 150})
    assert envelope_gaps(envelope, looser, effective_policy(DisclosurePolicy().as_dict(), looser))
