"""Results travel encrypted for the coordinator (Crypt4GH) with a signed plaintext digest and
length; the coordinator opens only what matches, and both sides keep hash-chained audit logs.

The Hail pipeline is replaced by a fake that releases a small allele-frequency table."""

from __future__ import annotations

import json
from pathlib import Path

import crypt4gh.header
import numpy as np
import pandas as pd
import pytest
import yaml
from crypt4gh import CIPHER_SEGMENT_SIZE

import federation.node.agent as agent_module
from federation import sumstats
from federation.audit import verify_log
from federation.coordinator.coordinator import Coordinator
from federation.errors import SpecError
from federation.node.agent import NodeAgent
from federation.pipeline.snakemake import PipelineRun
from federation.protocol import crypt
from federation.protocol.bundle import pipeline_workflow_digest
from federation.protocol.messages import RESULT_FORMAT, TaskStatus
from federation.protocol.signing import (
    canonical_json,
    generate_keypair,
    load_private_key,
    sign_document,
)
from federation.release.tables import RELEASED_AF_COLUMNS
from federation.settings import load_coordinator, load_node
from federation.transport import LocalTransport

STUDY = {
    "study_id": "enc",
    "nodes": ["fi"],
    "quorum": 1,
    "analyses": [{"id": "allele_frequencies", "type": "allele_frequency"}],
}


def _fake_pipeline(node_config: Path, study_config: Path, **_: object) -> PipelineRun:
    node = load_node(node_config)
    released = node.results_dir / "enc" / "nodes" / node.node_id
    rng = np.random.default_rng(3)
    rows = 30_000  # several 64 KiB segments once packed
    ref_alt = rng.choice(["A", "C", "G", "T"], size=(rows, 2))
    keep = ref_alt[:, 0] != ref_alt[:, 1]
    an = np.full(keep.sum(), 2000)
    ac = rng.integers(20, 1980, keep.sum())
    table = pd.DataFrame(
        {
            "chromosome": "1",
            "base_pair_location": np.arange(keep.sum()) * 10 + 100,
            "ref": ref_alt[keep, 0],
            "alt": ref_alt[keep, 1],
        }
    )
    table["variant_id"] = sumstats.variant_id(
        table["chromosome"], table["base_pair_location"], table["ref"], table["alt"]
    )
    table = table.assign(
        allele_count=ac,
        allele_number=an,
        allele_frequency=ac / an,
        n_samples=1000,
        homozygote_count=ac // 10,
        node_id=node.node_id,
    )[list(RELEASED_AF_COLUMNS)]
    path = sumstats.write_table(table, released / "allele_frequencies.tsv.gz", {"study_id": "enc"})
    return PipelineRun(
        node.node_id, "enc", released, (path, sumstats.sidecar_path(path)), released / "log"
    )


@pytest.fixture()
def world(tmp_path, monkeypatch):
    monkeypatch.setattr(agent_module, "run_pipeline", _fake_pipeline)
    keys = tmp_path / "keys"
    generate_keypair(keys, "coordinator")
    generate_keypair(keys, "fi")
    crypt.generate_keypair(keys, "coordinator")
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    mailbox = {"kind": "local", "path": str(tmp_path / "mailbox")}
    (tmp_path / "mailbox").mkdir()
    node_doc = {
        "node_id": "fi",
        "genotypes": {"format": "vcf", "path": "g.vcf.bgz"},
        "phenotypes": "p.tsv",
        "work_dir": str(tmp_path / "node" / "work"),
        "results_dir": str(tmp_path / "node" / "released"),
        "federation": {
            "mailbox": mailbox,
            "signing_key": str(keys / "fi.key"),
            "trusted_coordinators": {"coordinator": str(keys / "coordinator.pub")},
            "coordinator_encryption_keys": {"coordinator": str(keys / "coordinator.c4gh.pub")},
            "approved_workflows": [pipeline_workflow_digest()],
        },
    }
    coordinator_doc = {
        "coordinator_id": "coordinator",
        "signing_key": str(keys / "coordinator.key"),
        "crypt4gh_key": str(keys / "coordinator.c4gh.sec"),
        "state_dir": str(tmp_path / "coord"),
        "results_dir": str(tmp_path / "results"),
        "nodes": {"fi": {"public_key": str(keys / "fi.pub"), "mailbox": mailbox}},
    }
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(node_doc))
    (tmp_path / "coordinator.yaml").write_text(yaml.safe_dump(coordinator_doc))
    return tmp_path


def _run(world: Path) -> tuple[Coordinator, str]:
    coordinator = Coordinator(load_coordinator(world / "coordinator.yaml"))
    task_id = coordinator.submit(world / "study.yaml").tasks["fi"]
    [outcome] = NodeAgent(world / "node.yaml").run_once()
    assert outcome.status is TaskStatus.RELEASED, outcome
    return coordinator, task_id


def test_results_leave_encrypted_and_the_coordinator_opens_them(world):
    coordinator, task_id = _run(world)
    outbox = LocalTransport(world / "mailbox")
    names = sorted(key.rsplit("/", 1)[1] for key in outbox.list(f"outbox/{task_id}/"))
    assert "result.tar.c4gh" in names and "result.tar" not in names
    released = (
        world / "node" / "released" / "enc" / "nodes" / "fi" / "allele_frequencies.tsv.gz"
    ).read_bytes()
    assert released[100:164] not in outbox.get_bytes(f"outbox/{task_id}/result.tar.c4gh")
    complete = json.loads(outbox.get_bytes(f"outbox/{task_id}/COMPLETE"))["payload"]
    assert complete["result_encryption"] == crypt.ENCRYPTION
    assert set(complete["result"]) == {"plaintext_sha256", "plaintext_bytes", "ciphertext_sha256"}
    collection = coordinator.collect("enc")
    assert collection.released == ["fi"]
    got = world / "results" / "enc" / "nodes" / "fi" / "allele_frequencies.tsv.gz"
    assert got.read_bytes() == released
    for log in (world / "coord" / "audit.jsonl", world / "node" / "work" / "audit.jsonl"):
        assert verify_log(log).intact
    events = [
        json.loads(line)["event"]
        for line in (world / "coord" / "audit.jsonl").read_text().splitlines()
    ]
    assert "task_delivered" in events and "result_verified" in events


def test_a_result_cut_at_a_segment_boundary_is_refused(world):
    coordinator, task_id = _run(world)
    sealed = world / "mailbox" / "outbox" / task_id / "result.tar.c4gh"
    data = sealed.read_bytes()
    assert len(data) > 3 * CIPHER_SEGMENT_SIZE
    with open(sealed, "rb") as handle:
        list(crypt4gh.header.parse(handle))
        header = handle.tell()
    whole = (len(data) - header) // CIPHER_SEGMENT_SIZE
    sealed.write_bytes(data[: header + (whole - 1) * CIPHER_SEGMENT_SIZE])  # whole segments only
    coordinator.collect("enc")
    [task] = coordinator.ledger.tasks("enc")
    assert task.status is TaskStatus.FAILED and "ciphertext sha256" in (task.reason or "")
    assert not (world / "results" / "enc" / "nodes" / "fi").exists()
    events = [
        json.loads(line) for line in (world / "coord" / "audit.jsonl").read_text().splitlines()
    ]
    assert events[-1]["event"] == "result_refused"


def test_an_unencrypted_result_is_refused(world):
    coordinator, task_id = _run(world)
    outbox = LocalTransport(world / "mailbox")
    payload = json.loads(outbox.get_bytes(f"outbox/{task_id}/COMPLETE"))["payload"]
    assert payload["format"] == RESULT_FORMAT
    del payload["result_encryption"]
    key = load_private_key(world / "keys" / "fi.key")  # even signed by the node itself
    outbox.put_bytes(
        f"outbox/{task_id}/COMPLETE", canonical_json(sign_document(payload, key, "fi"))
    )
    coordinator.collect("enc")
    [task] = coordinator.ledger.tasks("enc")
    assert task.status is TaskStatus.FAILED and "not encrypted" in (task.reason or "")


def test_a_node_without_the_coordinators_encryption_key_does_not_start(world):
    document = yaml.safe_load((world / "node.yaml").read_text())
    del document["federation"]["coordinator_encryption_keys"]
    (world / "node.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError, match="coordinator_encryption_keys.*'coordinator'"):
        NodeAgent(world / "node.yaml")


def test_a_coordinator_without_its_secret_key_cannot_collect(world):
    _, _ = _run(world)
    document = yaml.safe_load((world / "coordinator.yaml").read_text())
    del document["crypt4gh_key"]
    (world / "coordinator.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError, match="crypt4gh_key"):
        Coordinator(load_coordinator(world / "coordinator.yaml")).collect("enc")
