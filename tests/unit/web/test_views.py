"""The dashboard's pages and their JSON twins: studies, the node x stage matrix, the live
meta-analysis with what changed, the node directory from signed policies, files, changes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from federation import sumstats
from federation.coordinator.ledger import StudyStatus
from federation.protocol.messages import (
    MailboxKeys,
    NodePolicyDocument,
    OutputReview,
    TaskStatus,
    UnapprovedWorkflows,
    WorkflowApproval,
    signed_bytes,
)
from federation.protocol.signing import generate_keypair, load_private_key
from federation.web.views import STAGES
from tests.unit.web.conftest import READ_TOKEN, WebFederation, bearer

PLANTED_TOP = "1_1000_A_G"


def advance(web: WebFederation, study_id: str, node_id: str, *statuses: str) -> str:
    """Record node reports as the coordinator does when it reads them; returns the task id."""
    ledger = web.coordinator.ledger
    task = next(task for task in ledger.tasks(study_id) if task.node_id == node_id)
    for status in statuses:
        if status == "released":
            folder = web.root / "results" / study_id / "nodes" / node_id
            folder.mkdir(parents=True, exist_ok=True)
            ledger.record_result(task.task_id, "sha256:" + "0" * 64, folder)
        else:
            ledger.set_task_status(task.task_id, TaskStatus(status), f"{status} category")
    return task.task_id


def write_meta(path: Path, nodes: list[str], n: int, top_p: float, lambda_gc: float) -> None:
    """A small GWAS-SSF meta file with one strong variant, and its sidecar."""
    rng = np.random.default_rng(len(nodes))
    rows = 50
    p = rng.uniform(0.01, 1, rows)
    p[0] = top_p
    table = pd.DataFrame(
        {
            "chromosome": ["1"] * rows,
            "base_pair_location": np.arange(1, rows + 1) * 1000,
            "effect_allele": ["G"] * rows,
            "other_allele": ["A"] * rows,
            "beta": rng.normal(0, 0.1, rows),
            "standard_error": [0.05] * rows,
            "effect_allele_frequency": [0.3] * rows,
            "p_value": p,
            sumstats.NEG_LOG10_P: -np.log10(p),
            "n": [n] * rows,
            "variant_id": [f"1_{(i + 1) * 1000}_A_G" for i in range(rows)],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, sep="\t", index=False, compression="gzip")
    sidecar = {"lambda_gc": lambda_gc, "inputs": [{"node_id": node} for node in nodes]}
    sumstats.sidecar_path(path).write_text(yaml.safe_dump(sidecar))


def publish_policy(web: WebFederation, node_id: str, genomes: int, key_name: str) -> None:
    document = NodePolicyDocument(
        node_id=node_id,
        issued_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        federation_version="0.1.0",
        engines=("cwl", "snakemake"),
        reference_genome="GRCh38",
        disclosure={"min_cohort_gwas": 100, "min_mac_gwas": 20},
        accessible_genomes=genomes,
        output_review=OutputReview.TWO,
        unapproved_workflows=UnapprovedWorkflows.HOLD,
        approved_workflows=(WorkflowApproval("sha256:" + "ab" * 32),),
        accessible_variants=12_000,
        data_types=("genotype calls (vcf)", "phenotypes"),
    )
    key = load_private_key(web.root / "keys" / f"{key_name}.key")
    target = web.root / "mailboxes" / node_id / MailboxKeys.POLICY
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(signed_bytes(document.to_payload(), key, node_id))


def api(web: WebFederation, path: str) -> dict:
    response = web.client.get(f"/api{path}", headers=bearer(READ_TOKEN))
    assert response.status_code == 200, response.text
    return response.json()


def page(web: WebFederation, path: str) -> str:
    response = web.client.get(path, headers=bearer(READ_TOKEN))
    assert response.status_code == 200, response.text
    return response.text


def test_the_studies_page_and_its_twin_list_every_study_newest_first(web: WebFederation) -> None:
    web.submit("first")
    web.submit("second")
    document = api(web, "/studies")
    assert [study["study_id"] for study in document["studies"]] == ["second", "first"]
    assert document["studies"][0]["quorum"] == {"needed": 3, "released": 0, "nodes": 3}
    html = page(web, "/studies")
    for study in document["studies"]:
        assert f'data-study="{study["study_id"]}" data-status="{study["status"]}"' in html


def test_the_matrix_shows_each_node_at_its_stage_with_times(web: WebFederation) -> None:
    web.submit("s1")
    advance(web, "s1", "fi", "approved", "running", "in_review")
    advance(web, "s1", "ee", "approved", "running", "released")
    advance(web, "s1", "nl", "held", "vetoed")
    document = api(web, "/studies/s1")
    rows = {row["node_id"]: row for row in document["nodes"]}
    assert document["stages"] == list(STAGES)
    assert rows["fi"]["status"] == "in_review" and rows["fi"]["wes_state"] == "RUNNING"
    reached = {stage for stage, time in rows["fi"]["stages"].items() if time}
    assert reached == {"delivered", "approved", "running", "in_review"}
    assert rows["ee"]["stages"]["released"] and rows["ee"]["outcome"] is None
    assert rows["nl"]["outcome"]["status"] == "vetoed" and rows["nl"]["outcome"]["time"]
    assert rows["nl"]["stages"]["held"] and not rows["nl"]["stages"]["running"]
    assert document["quorum"] == {"needed": 3, "released": 1, "nodes": 3}
    html = page(web, "/studies/s1")
    for node, row in rows.items():
        assert f'data-node="{node}" data-status="{row["status"]}"' in html


def test_the_live_meta_analysis_says_what_changed_when_a_node_arrived(
    web: WebFederation,
) -> None:
    web.submit("s1", quorum=2)
    meta = web.root / "results" / "s1" / "meta" / "quant_trait_gwas.tsv.gz"
    write_meta(meta, ["fi", "ee"], n=2000, top_p=1e-9, lambda_gc=1.01)
    ledger = web.coordinator.ledger
    ledger.set_study_status("s1", StudyStatus.META_ANALYSED, ["nl"], ["ee", "fi"])
    web.dashboard.tick()
    first = api(web, "/studies/s1")["meta"]
    assert first["nodes"] == ["ee", "fi"] and first["changes"] is None
    [analysis] = first["analyses"]
    assert analysis["n"] == 2000 and analysis["lambda_gc"] == pytest.approx(1.01)
    assert analysis["top"][0]["variant_id"] == PLANTED_TOP

    write_meta(meta, ["fi", "ee", "nl"], n=3100, top_p=1e-12, lambda_gc=1.03)
    ledger.set_study_status("s1", StudyStatus.META_ANALYSED, [], ["ee", "fi", "nl"])
    web.dashboard.tick()
    later = api(web, "/studies/s1")["meta"]
    change = later["changes"]["analyses"]["quant_trait_gwas"]
    assert later["changes"]["nodes_added"] == ["nl"]
    assert change["n"] == [2000, 3100]
    assert change["lambda_gc"] == [pytest.approx(1.01), pytest.approx(1.03)]
    html = page(web, "/studies/s1")
    assert "Since nl arrived: N 2000 → 3100" in html and PLANTED_TOP in html


def test_a_second_tick_without_news_records_no_second_summary(web: WebFederation) -> None:
    web.submit("s1", quorum=2)
    meta = web.root / "results" / "s1" / "meta" / "quant_trait_gwas.tsv.gz"
    write_meta(meta, ["fi", "ee"], n=2000, top_p=1e-9, lambda_gc=1.0)
    web.coordinator.ledger.set_study_status("s1", StudyStatus.META_ANALYSED, [], ["ee", "fi"])
    web.dashboard.tick()
    web.dashboard.tick()
    assert len(web.dashboard.meta_history("s1")) == 1


def test_report_crate_and_files_are_linked_and_served_only_from_the_study(
    web: WebFederation,
) -> None:
    web.submit("s1")
    folder = web.root / "results" / "s1"
    assert api(web, "/studies/s1")["links"] == {"report": None, "crate": None}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text("<html>the report</html>")
    (folder / "ro-crate-metadata.json").write_text("{}")
    (web.root / "results" / "secret.txt").write_text("not a study file")
    document = api(web, "/studies/s1")
    assert document["links"] == {
        "report": "/files/s1/report.html",
        "crate": "/files/s1/ro-crate-metadata.json",
    }
    assert {item["path"] for item in document["files"]} == {
        "report.html",
        "ro-crate-metadata.json",
    }
    assert "the report" in page(web, "/files/s1/report.html")
    escape = web.client.get("/files/s1/%2E%2E/secret.txt", headers=bearer(READ_TOKEN))
    assert escape.status_code == 404
    assert 'id="report-link"' in page(web, "/studies/s1")


def test_the_node_directory_shows_what_each_node_signed_about_itself(
    web: WebFederation,
) -> None:
    publish_policy(web, "fi", genomes=1205, key_name="fi")
    generate_keypair(web.root / "keys", "impostor")
    publish_policy(web, "ee", genomes=999, key_name="impostor")  # not ee's key: ignored
    web.dashboard.tick()
    document = api(web, "/nodes")
    cards = {card["node_id"]: card for card in document["nodes"]}
    fi = cards["fi"]["policy"]
    assert fi["accessible_genomes"] == 1205 and fi["reference_genome"] == "GRCh38"
    assert fi["federation_version"] == "0.1.0" and fi["output_review"] == "two"
    assert fi["accessible_variants"] == 12_000
    assert fi["data_types"] == ["genotype calls (vcf)", "phenotypes"]
    assert fi["disclosure"] == {"min_cohort_gwas": 100, "min_mac_gwas": 20}
    assert cards["fi"]["last_contact"] == "2026-01-02T03:04:05+00:00"
    assert cards["ee"]["policy"] is None and "ee" in cards["ee"]["problem"]
    assert cards["nl"]["problem"] == "no policy published yet"
    assert document["totals"] == {"nodes": 3, "publishing": 1, "accessible_genomes": 1205}
    html = page(web, "/nodes")
    assert 'id="total-genomes">1205<' in html and "no policy published yet" in html
    assert "genotype calls (vcf), phenotypes" in html


def test_a_change_wakes_waiting_event_streams_and_no_change_does_not(
    web: WebFederation,
) -> None:
    web.dashboard.tick()
    seen = web.dashboard.version
    assert web.dashboard.tick() is False
    assert web.dashboard.wait_for_change(seen, timeout=0.05) == seen
    web.submit("s1")
    assert web.dashboard.tick() is True
    assert web.dashboard.wait_for_change(seen, timeout=0.05) == seen + 1


def test_an_unknown_study_is_404_on_page_and_twin(web: WebFederation) -> None:
    assert web.client.get("/api/studies/nope", headers=bearer(READ_TOKEN)).status_code == 404
    assert web.client.get("/studies/nope", headers=bearer(READ_TOKEN)).status_code == 404
