"""federation.protocol.messages: every message round-trips, and each malformed one is refused:
task envelopes, status reports (with per-analysis outcomes), result markers, cancellations
and the nodes' published policies."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.audit import AuditHead
from federation.errors import BundleError, PolicyViolation
from federation.outcomes import AnalysisOutcome, RefusalCategory, ReleaseOutcome
from federation.protocol.crypt import SealedFile
from federation.protocol.messages import (
    FINAL_STATUSES,
    RESULT_FORMAT,
    Cancellation,
    MailboxKeys,
    NodePolicyDocument,
    OutputReview,
    ParameterEnvelope,
    ResultMarker,
    StatusReport,
    TaskEnvelope,
    TaskStatus,
    UnapprovedWorkflows,
    WorkflowApproval,
    signed_bytes,
)
from federation.protocol.signing import TrustStore, sign_document
from federation.transport.base import validate_key

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
COORDINATOR = Ed25519PrivateKey.generate()
NODE = Ed25519PrivateKey.generate()
TRUST = TrustStore({"coordinator": COORDINATOR.public_key(), "fi": NODE.public_key()})
ENVELOPE = TaskEnvelope(
    study_id="s1",
    task_id="t1",
    node_id="fi",
    sequence=3,
    issued_at=NOW,
    expires_at=NOW + timedelta(hours=1),
    bundle_sha256="a" * 64,
    manifest_digest="b" * 64,
    workflow_digest="c" * 64,
    federation_version="0.1.0",
    engine="snakemake",
    coordinator="coordinator",
)
SEALED = SealedFile("d" * 64, 1234, "e" * 64)


def _envelope_bytes(**changes: object) -> bytes:
    payload = {**ENVELOPE.to_payload(), **changes}
    return signed_bytes(payload, COORDINATOR, "coordinator")


def test_a_task_envelope_survives_signing_and_verification():
    assert TaskEnvelope.verify(_envelope_bytes(), TRUST, "t1") == ENVELOPE


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "envelope is not valid JSON"),
        (json.dumps(ENVELOPE.to_payload()).encode(), "(unsigned); refused"),
        (_envelope_bytes(format="federation.task/2"), "do not match federation.task/1"),
        (_envelope_bytes(extra="field"), "do not match federation.task/1"),
        (_envelope_bytes(sequence=0), "sequence 0 is not a positive integer"),
        (_envelope_bytes(sequence="3"), "sequence '3' is not a positive integer"),
        (_envelope_bytes(sequence=True), "sequence True is not a positive integer"),
        (
            _envelope_bytes(issued_at="2026-12-01T12:00:00"),
            "'issued_at': '2026-12-01T12:00:00' has no time zone",
        ),
        (
            _envelope_bytes(expires_at="tomorrow"),
            "'expires_at': 'tomorrow' is not an ISO 8601 time",
        ),
    ],
)
def test_a_malformed_or_unsigned_envelope_is_refused_in_one_line(raw, problem):
    with pytest.raises(PolicyViolation) as refused:
        TaskEnvelope.verify(raw, TRUST, "t1")
    assert problem in str(refused.value) and "\n" not in str(refused.value)


def test_an_envelope_signed_by_an_unpinned_key_is_refused():
    stranger = Ed25519PrivateKey.generate()
    raw = signed_bytes(ENVELOPE.to_payload(), stranger, "coordinator")
    with pytest.raises(PolicyViolation, match="matches no key"):
        TaskEnvelope.verify(raw, TRUST, "t1")


def test_a_status_report_round_trips_and_names_its_task():
    report = StatusReport(
        "t1", "s1", "fi", TaskStatus.FAILED, "withheld", "2026-12-01T12:00:00+00:00"
    )
    raw = signed_bytes(report.to_payload(), NODE, "fi")
    assert StatusReport.verify(raw, TRUST, "fi", "t1") == report
    assert StatusReport.verify(raw, TRUST, "fi", "another-task") is None


def test_a_status_from_another_signer_or_with_an_unknown_state_is_refused():
    report = StatusReport("t1", "s1", "fi", TaskStatus.RUNNING, "", "now")
    forged = signed_bytes(report.to_payload(), COORDINATOR, "coordinator")
    with pytest.raises(PolicyViolation, match="expected signer 'fi'"):
        StatusReport.verify(forged, TRUST, "fi", "t1")
    odd = signed_bytes({**report.to_payload(), "status": "exploded"}, NODE, "fi")
    with pytest.raises(PolicyViolation, match="unknown status 'exploded'"):
        StatusReport.verify(odd, TRUST, "fi", "t1")


HEAD = AuditHead(12, "e" * 64)


def test_a_result_marker_round_trips():
    marker = ResultMarker("t1", "s1", "fi", SEALED, "f" * 64, NOW, HEAD)
    raw = signed_bytes(marker.to_payload(), NODE, "fi")
    assert marker.to_payload()["format"] == RESULT_FORMAT
    assert ResultMarker.verify(raw, TRUST, "s1", "fi", "t1") == marker


@pytest.mark.parametrize(
    ("changes", "error", "problem"),
    [
        ({"task_id": "t2"}, PolicyViolation, "names another task"),
        ({"study_id": "s2"}, PolicyViolation, "names another task"),
        ({"released_at": "2026-12-01T12:00:00"}, PolicyViolation, "released_at has no time zone"),
        ({"released_at": "soon"}, PolicyViolation, "no valid released_at"),
        ({"result_encryption": "none"}, PolicyViolation, "not encrypted with crypt4gh/1"),
        ({"audit_head": None}, PolicyViolation, "audit head has exactly"),
        ({"audit_head": {"records": 0, "last_hash": "e" * 64}}, PolicyViolation, "positive"),
        ({"audit_head": {"records": 3, "last_hash": "e" * 63}}, PolicyViolation, "64 lowercase"),
        (
            {"audit_head": {"records": 3, "last_hash": "e" * 64, "note": "x"}},
            PolicyViolation,
            "audit head has exactly",
        ),
        ({"result": {"plaintext_sha256": "d" * 64}}, BundleError, "lacks sha256/length"),
        (
            {"result": {**SEALED.as_dict(), "plaintext_bytes": "1234"}},
            BundleError,
            "not an integer",
        ),
    ],
)
def test_a_result_marker_for_something_else_is_refused(changes, error, problem):
    payload = {
        **ResultMarker("t1", "s1", "fi", SEALED, "f" * 64, NOW, HEAD).to_payload(),
        **changes,
    }
    raw = signed_bytes(payload, NODE, "fi")
    with pytest.raises(error, match=problem):
        ResultMarker.verify(raw, TRUST, "s1", "fi", "t1")


def test_mailbox_keys_are_valid_transport_keys_and_the_envelope_key_parses_back():
    for key in (
        MailboxKeys.envelope("t1"),
        MailboxKeys.bundle("t1"),
        MailboxKeys.cancellation("t1"),
        MailboxKeys.POLICY,
        MailboxKeys.status("t1"),
        MailboxKeys.sealed_result("t1"),
        MailboxKeys.completion("t1"),
    ):
        assert validate_key(key) == key
    assert MailboxKeys.task_of_envelope(MailboxKeys.envelope("t1")) == "t1"
    for other in (
        "inbox/t1/bundle.tar",
        "inbox/t1/CANCEL.json",
        "outbox/t1/envelope.json",
        "inbox/envelope.json",
    ):
        assert MailboxKeys.task_of_envelope(other) is None


def test_the_envelope_carries_the_signer_but_never_signs_it_twice():
    document = sign_document(ENVELOPE.to_payload(), COORDINATOR, "coordinator")
    assert "coordinator" not in document["payload"] and document["signer"] == "coordinator"
    other = replace(ENVELOPE, coordinator="someone-else")
    assert other.to_payload() == ENVELOPE.to_payload()


# ---------------------------------------------------------------- states and outcomes


def test_the_states_are_the_words_people_read_and_the_first_protocols_word_still_reads():
    assert [status.value for status in TaskStatus] == [
        "delivered",
        "held",
        "approved",
        "running",
        "in_review",
        "released",
        "rejected",
        "vetoed",
        "withheld",
        "failed",
        "timed_out",
        "cancelled",
    ]
    assert TaskStatus("accepted") is TaskStatus.APPROVED is TaskStatus.ACCEPTED
    assert TaskStatus.HELD not in FINAL_STATUSES and TaskStatus.VETOED in FINAL_STATUSES


def test_a_status_report_carries_what_the_gate_decided_per_analysis_with_its_category():
    analyses = {
        "af": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "gwas": AnalysisOutcome(ReleaseOutcome.WITHHELD, RefusalCategory.COHORT_TOO_SMALL),
        "bmi": AnalysisOutcome(ReleaseOutcome.FAILED, RefusalCategory.CHECK_FAILED),
    }
    report = StatusReport("t1", "s1", "fi", TaskStatus.RELEASED, "", "now", analyses)
    assert report.to_payload()["analyses"] == {
        "af": {"outcome": "released", "category": None},
        "bmi": {"outcome": "failed", "category": "check_failed"},
        "gwas": {"outcome": "withheld", "category": "cohort_too_small"},
    }
    raw = signed_bytes(report.to_payload(), NODE, "fi")
    assert StatusReport.verify(raw, TRUST, "fi", "t1") == report
    assert [item.describe() for item in report.analyses.values()] == [
        "released",
        "withheld (cohort_too_small)",
        "failed (check_failed)",
    ]
    older = {key: value for key, value in report.to_payload().items() if key != "analyses"}
    assert StatusReport.verify(signed_bytes(older, NODE, "fi"), TRUST, "fi", "t1") == replace(
        report, analyses={}
    )


def _report_with(analyses: object) -> bytes:
    payload = {
        **StatusReport("t1", "s1", "fi", TaskStatus.RELEASED, "", "now").to_payload(),
        "analyses": analyses,
    }
    return signed_bytes(payload, NODE, "fi")


@pytest.mark.parametrize(
    ("analyses", "named"),
    [
        (["af"], "'analyses'"),
        ("released", "'analyses'"),
        ({"af": "released"}, "analysis 'af': not an object"),
        ({"af": 3}, "analysis 'af': not an object"),
        ({"af": {"outcome": "leaked 17 samples", "category": None}}, "outcome 'leaked 17"),
        ({"af": {"outcome": "withheld", "category": "17 samples"}}, "category '17 samples'"),
        ({"af": {"outcome": "withheld", "category": None, "n": 17}}, "exactly 'outcome'"),
    ],
)
def test_a_status_report_with_malformed_outcomes_is_refused(analyses, named):
    with pytest.raises(PolicyViolation, match=named):
        StatusReport.verify(_report_with(analyses), TRUST, "fi", "t1")


def test_a_released_analysis_that_carries_a_category_is_refused():
    """A category says why something did not leave; on a release it is a contradiction."""
    analyses = {"af": {"outcome": "released", "category": "cohort_too_small"}}
    with pytest.raises(PolicyViolation, match="a released analysis carries category"):
        StatusReport.verify(_report_with(analyses), TRUST, "fi", "t1")


# ---------------------------------------------------------------- cancellation

CANCELLATION = Cancellation("s1", "t1", "fi", NOW, "coordinator")


def test_a_cancellation_round_trips_and_names_its_signer():
    raw = signed_bytes(CANCELLATION.to_payload(), COORDINATOR, "coordinator")
    assert Cancellation.verify(raw, TRUST, "fi", "t1") == CANCELLATION


@pytest.mark.parametrize(
    ("payload", "signer", "problem"),
    [
        ({**CANCELLATION.to_payload(), "task_id": "t2"}, "coordinator", "names task 't2'"),
        ({**CANCELLATION.to_payload(), "node_id": "ee"}, "coordinator", "of node 'ee'"),
        ({**CANCELLATION.to_payload(), "why": "x"}, "coordinator", "do not match"),
        (CANCELLATION.to_payload(), "stranger", "matches no key"),
    ],
)
def test_a_cancellation_for_another_task_or_from_a_stranger_is_refused(payload, signer, problem):
    key = Ed25519PrivateKey.generate() if signer == "stranger" else COORDINATOR
    raw = signed_bytes(payload, key, "coordinator")
    with pytest.raises(PolicyViolation, match=problem):
        Cancellation.verify(raw, TRUST, "fi", "t1")


# ---------------------------------------------------------------- the node's published policy

ENVELOPE_ALLOWED = ParameterEnvelope(
    analyses=frozenset({"gwas"}),
    traits=frozenset({"height"}),
    covariates=frozenset({"age", "sex"}),
    max_principal_components=4,
    disclosure={"min_cohort_gwas": 200},
)
POLICY = NodePolicyDocument(
    node_id="fi",
    issued_at=NOW,
    federation_version="0.1.0",
    engines=("cwl", "snakemake"),
    reference_genome="GRCh38",
    disclosure={"min_cohort_gwas": 150, "max_parameter_fraction": 0.33},
    accessible_genomes=80,
    output_review=OutputReview.TWO,
    unapproved_workflows=UnapprovedWorkflows.REFUSE,
    approved_workflows=(WorkflowApproval("c" * 64), WorkflowApproval("d" * 64, ENVELOPE_ALLOWED)),
    accessible_variants=12_000,
    data_types=("genotype calls (vcf)", "phenotypes"),
)


def test_a_published_policy_round_trips_and_finds_its_approvals():
    raw = signed_bytes(POLICY.to_payload(), NODE, "fi")
    document = NodePolicyDocument.verify(raw, TRUST, "fi")
    assert document == POLICY
    assert document.approvals_of("d" * 64) == (WorkflowApproval("d" * 64, ENVELOPE_ALLOWED),)
    assert document.approvals_of("e" * 64) == ()
    assert document.content() == replace(POLICY, issued_at=NOW + timedelta(days=1)).content()
    assert OutputReview.TWO.required_approvals == 2 and OutputReview.NONE.required_approvals == 0


@pytest.mark.parametrize(
    ("changes", "signer", "problem"),
    [
        ({"node_id": "ee"}, "fi", "names node 'ee'"),
        ({"accessible_genomes": -5}, "fi", "accessible_genomes -5"),
        ({"accessible_variants": "many"}, "fi", "accessible_variants 'many'"),
        ({"data_types": "vcf"}, "fi", "'data_types': expected a list"),
        ({"output_review": "three"}, "fi", "'three' is not a valid OutputReview"),
        ({"extra": 1}, "fi", "fields do not match"),
        ({"approved_workflows": [{"digest": "c" * 64}]}, "fi", "expected digest and envelope"),
        (
            {"approved_workflows": [{"digest": "c" * 64, "envelope": {"analyses": ["x"]}}]},
            "fi",
            "'x' is not one of",
        ),
        ({}, "coordinator", "expected signer 'fi'"),
    ],
)
def test_a_forged_foreign_or_malformed_policy_is_refused(changes, signer, problem):
    key = NODE if signer == "fi" else COORDINATOR
    raw = signed_bytes({**POLICY.to_payload(), **changes}, key, signer)
    with pytest.raises(PolicyViolation, match=problem):
        NodePolicyDocument.verify(raw, TRUST, "fi")


def test_an_envelope_allows_nothing_of_a_kind_it_does_not_list():
    envelope = ParameterEnvelope.from_dict({"analyses": ["allele_frequency"]}, "test")
    assert envelope.traits == frozenset() and envelope.covariates == frozenset()
    assert ParameterEnvelope.from_dict(ENVELOPE_ALLOWED.to_dict(), "test") == ENVELOPE_ALLOWED
    with pytest.raises(PolicyViolation, match="at least 'analyses'"):
        ParameterEnvelope.from_dict({"traits": ["height"]}, "test")
    with pytest.raises(PolicyViolation, match="unknown envelope field 'trait'"):
        ParameterEnvelope.from_dict({"analyses": ["gwas"], "trait": ["height"]}, "test")


def test_a_policy_of_a_node_that_does_not_publish_variants_yet_still_reads():
    payload = POLICY.to_payload()
    del payload["accessible_variants"], payload["data_types"]
    document = NodePolicyDocument.verify(signed_bytes(payload, NODE, "fi"), TRUST, "fi")
    assert document.accessible_variants is None and document.data_types == ()
    assert document.accessible_genomes == POLICY.accessible_genomes


def test_a_policy_with_unknown_fields_is_refused_even_with_the_new_ones():
    payload = {**POLICY.to_payload(), "extra": 1}
    del payload["data_types"]
    raw = signed_bytes(payload, NODE, "fi")
    with pytest.raises(PolicyViolation, match="fields do not match"):
        NodePolicyDocument.verify(raw, TRUST, "fi")
