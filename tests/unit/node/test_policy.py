"""federation.node.policy: a verified envelope is still refused if it is not for this node now."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.errors import PolicyViolation
from federation.node.policy import MAX_CLOCK_SKEW, NodePolicy, version_compatible
from federation.protocol.messages import TaskEnvelope, signed_bytes
from federation.protocol.signing import TrustStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
POLICY = NodePolicy(
    node_id="fi",
    trusted_coordinators=TrustStore({"coordinator": KEY.public_key()}),
    approved_workflows=frozenset({"c" * 64}),
    max_task_age=timedelta(hours=24),
)
ENVELOPE = TaskEnvelope(
    study_id="s1",
    task_id="t1",
    node_id="fi",
    sequence=1,
    issued_at=NOW - timedelta(minutes=1),
    expires_at=NOW + timedelta(hours=1),
    bundle_sha256="a" * 64,
    manifest_digest="b" * 64,
    workflow_digest="c" * 64,
    federation_version="0.1.0",
    engine="snakemake",
    coordinator="coordinator",
)


def _raw(envelope: TaskEnvelope) -> bytes:
    return signed_bytes(envelope.to_payload(), KEY, "coordinator")


def test_a_fresh_task_for_this_node_passes():
    assert POLICY.verify_envelope(_raw(ENVELOPE), "t1", NOW) == ENVELOPE


@pytest.mark.parametrize(
    ("changes", "directory", "problem"),
    [
        ({}, "t-copied", "envelope names task 't1' (moved or copied)"),
        ({"node_id": "ee"}, "t1", "addressed to node 'ee', not 'fi'"),
        ({"issued_at": NOW + MAX_CLOCK_SKEW + timedelta(seconds=1)}, "t1", "issued in the future"),
        ({"expires_at": NOW}, "t1", "expired at 2026-12-01T12:00:00+00:00"),
        ({"issued_at": NOW - timedelta(hours=25)}, "t1", "older than the node's limit of 1 day"),
        ({"federation_version": "0.2.0"}, "t1", "built by federation 0.2.0"),
    ],
)
def test_a_task_not_for_this_node_now_is_refused(changes, directory, problem):
    with pytest.raises(PolicyViolation) as refused:
        POLICY.verify_envelope(_raw(replace(ENVELOPE, **changes)), directory, NOW)
    assert problem in str(refused.value) and str(refused.value).endswith(
        ("refused", "upgrade one side")
    )


def test_a_little_clock_skew_is_tolerated():
    ahead = replace(ENVELOPE, issued_at=NOW + MAX_CLOCK_SKEW - timedelta(seconds=1))
    assert POLICY.verify_envelope(_raw(ahead), "t1", NOW).issued_at == ahead.issued_at


@pytest.mark.parametrize(
    ("coordinator", "node", "compatible"),
    [
        ("0.1.0", "0.1.7", True),
        ("0.1.3", "0.2.0", False),
        ("1.2.0", "1.9.1", True),
        ("2.0.0", "1.9.1", False),
    ],
)
def test_versions_follow_semver_with_the_0_x_rule(coordinator, node, compatible):
    assert version_compatible(coordinator, node) is compatible


def test_only_approved_workflows_run():
    POLICY.check_workflow("t1", "c" * 64)
    with pytest.raises(PolicyViolation, match="not in the node's approved_workflows"):
        POLICY.check_workflow("t1", "d" * 64)
    empty = replace(POLICY, approved_workflows=frozenset())
    with pytest.raises(PolicyViolation, match="allow-list is empty: it denies every workflow"):
        empty.check_workflow("t1", "c" * 64)
