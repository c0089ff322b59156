"""federation.node.policy: a verified envelope is still refused if it is not for this node now;
the published policy says what the node decides by."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.errors import PolicyViolation
from federation.node.policy import (
    GENOME_COUNT_STEP,
    MAX_CLOCK_SKEW,
    NodePolicy,
    accessible_genomes,
    accessible_variants,
    version_compatible,
)
from federation.protocol.messages import (
    OutputReview,
    TaskEnvelope,
    UnapprovedWorkflows,
    WorkflowApproval,
    signed_bytes,
)
from federation.protocol.signing import TrustStore, generate_keypair
from federation.release.rules import DisclosurePolicy
from federation.settings import NodeSettings, node_from_dict

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


def _node(tmp_path: Path, **federation: Any) -> NodeSettings:
    generate_keypair(tmp_path / "keys", "coordinator")
    generate_keypair(tmp_path / "keys", "fi")
    document = {
        "node_id": "fi",
        "genotypes": {"format": "vcf", "path": "genotypes.vcf"},
        "phenotypes": "phenotypes.tsv",
        "disclosure": {"min_cohort_gwas": 200},
        "federation": {
            "mailbox": {"kind": "local", "path": "mailbox"},
            "signing_key": "keys/fi.key",
            "trusted_coordinators": {"coordinator": "keys/coordinator.pub"},
            **federation,
        },
    }
    return node_from_dict(document, tmp_path)


def _cohort(tmp_path: Path, genotyped: int, phenotyped: range) -> None:
    samples = [f"s{index}" for index in range(genotyped)]
    header = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"]
    (tmp_path / "genotypes.vcf").write_text(
        "##fileformat=VCFv4.2\n" + "\t".join(header + samples) + "\n"
    )
    rows = "".join(f"s{index}\t{index % 2}\n" for index in phenotyped)
    (tmp_path / "phenotypes.tsv").write_text("sample_id\tsex\n" + rows)


def test_the_published_policy_has_the_effective_thresholds_and_every_approval(tmp_path: Path):
    envelope = {"analyses": ["gwas"], "traits": ["height"], "covariates": ["age"]}
    node = _node(
        tmp_path,
        approved_workflows=["c" * 64, {"digest": "d" * 64, "envelope": envelope}],
        unapproved_workflows="refuse",
    )
    assert node.federation is not None
    policy = NodePolicy.from_settings("fi", node.federation)
    extra = WorkflowApproval("e" * 64)
    document = policy.document(node, [extra, WorkflowApproval("c" * 64)], 80, NOW)
    assert document.disclosure["min_cohort_gwas"] == 200  # the node's, not the default 100
    assert document.disclosure["min_cohort_af"] == DisclosurePolicy().min_cohort_af
    assert [approval.digest for approval in document.approved_workflows] == [
        "c" * 64,
        "d" * 64,
        "e" * 64,  # the admin's; the repeated 'c' once
    ]
    enveloped = document.approvals_of("d" * 64)[0].envelope
    assert enveloped is not None and enveloped.traits == {"height"}
    assert enveloped.max_principal_components == 20  # the schema's default: the study's limit
    assert document.unapproved_workflows is UnapprovedWorkflows.REFUSE
    assert document.output_review is OutputReview.NONE
    assert document.accessible_genomes == 80 and document.engines == ("cwl", "snakemake")


@pytest.mark.parametrize(
    ("phenotyped", "both", "published"),
    [
        (range(10, 86), 76, 80),  # 76 samples have genotypes and phenotypes
        (range(15, 90), 75, 75),
        (range(89, 95), 1, 5),
        (range(90, 99), 0, 0),  # phenotypes of samples that were never genotyped
    ],
)
def test_accessible_genomes_are_an_upper_bound_in_steps_of_five(
    tmp_path: Path, phenotyped: range, both: int, published: int
):
    _cohort(tmp_path, genotyped=90, phenotyped=phenotyped)
    assert both <= published < both + GENOME_COUNT_STEP
    assert accessible_genomes(_node(tmp_path)) == published


def test_accessible_genomes_are_unknown_when_the_data_cannot_be_read(tmp_path: Path):
    assert accessible_genomes(_node(tmp_path)) is None  # no genotype file


def _indexed_vcf(tmp_path: Path, records: int) -> None:
    """An indexed VCF (bgzip + tabix, Debian's tabix package) with `records` variants."""
    import subprocess

    header = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", "s0"]
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=1>", "\t".join(header)]
    lines += [f"1\t{100 + index}\t.\tA\tG\t.\t.\t.\tGT\t0/1" for index in range(records)]
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    subprocess.run(["bgzip", "-f", str(vcf)], check=True)
    subprocess.run(["tabix", "-p", "vcf", str(vcf) + ".gz"], check=True)


@pytest.mark.parametrize(("records", "published"), [(1, 1000), (1000, 1000), (1001, 2000)])
def test_accessible_variants_are_an_upper_bound_in_steps_of_a_thousand(
    tmp_path: Path, records: int, published: int
):
    _indexed_vcf(tmp_path, records)
    node = replace(_node(tmp_path), genotype_path=tmp_path / "genotypes.vcf.gz")
    assert accessible_variants(node) == published


def test_accessible_variants_of_plink_files_count_the_bim(tmp_path: Path):
    (tmp_path / "data.bim").write_text("".join(f"1\tv{i}\t0\t{i}\tA\tG\n" for i in range(2500)))
    node = replace(_node(tmp_path), genotype_format="plink", genotype_path=tmp_path / "data.bed")
    assert accessible_variants(node) == 3000


def test_accessible_variants_are_unknown_without_an_index(tmp_path: Path):
    _cohort(tmp_path, genotyped=5, phenotyped=range(5))
    assert accessible_variants(_node(tmp_path)) is None


def test_the_published_policy_names_its_data_types_and_variants(tmp_path: Path):
    node = _node(tmp_path, approved_workflows=["c" * 64])
    assert node.federation is not None
    policy = NodePolicy.from_settings("fi", node.federation)
    document = policy.document(node, [], 80, NOW, variants=4000)
    assert document.accessible_variants == 4000
    assert document.data_types == ("genotype calls (vcf)", "phenotypes")
