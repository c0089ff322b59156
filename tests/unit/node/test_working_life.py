"""A node's working life, coordinator and nodes over local mailboxes, the Hail pipeline faked.

Everything but the pipeline is real (keys, signed tasks and policies, ledgers, audit logs,
admission, the review area, cancellation, collection), as in tests/unit/test_federation_flow.py
whose world of three nodes this module shares. Covered: queues that arrive in any order, the
admin's hold / approve / veto and parameter envelopes, output review by one or two people,
cancellation, per-analysis outcomes, the coordinator's pre-flight and dry run, a re-run of an
interrupted submit, and the exit codes cron and systemd see.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import federation.coordinator.coordinator as coordinator_module
import federation.node.agent as agent_module
from federation import sumstats
from federation.audit import verify_log
from federation.cli import main
from federation.coordinator.coordinator import MailboxesUnreachable, PreflightRefused
from federation.coordinator.ledger import CoordinatorLedger, StudyStatus
from federation.coordinator.status import study_view
from federation.errors import ExitCode, PolicyViolation, SpecError
from federation.files import REPO_ROOT
from federation.node.lock import AgentLock
from federation.node.review import Verdict, files_dir, read_summary
from federation.node.tasks import describe, task_views, workflow_diff
from federation.outcomes import AnalysisOutcome, RefusalCategory, ReleaseOutcome
from federation.pipeline.guard import alive
from federation.pipeline.runs import RunControl, run_guarded
from federation.protocol.bundle import pack_bundle, pipeline_files
from federation.protocol.manifest import workflow_digest
from federation.protocol.messages import MailboxKeys, NodePolicyDocument, TaskStatus
from federation.protocol.signing import generate_keypair, load_private_key
from federation.sandbox.demo import demo_envelope, review_releases
from federation.settings import load_node
from tests.unit.test_federation_flow import (  # the shared world: three nodes, a fake pipeline
    N_VARIANTS,
    NODES,
    STUDY_ID,
    FakePipeline,
    Federation,
    forge_task,
)

VETO_REASON = "national-interest clause 7b: not for this cohort"
REVIEW_REASON = "top hit in the HLA region looks like an artefact"


def _states(federation: Federation, study_id: str) -> dict[str, TaskStatus]:
    federation.coordinator().collect(study_id)
    view = study_view(federation.coordinator().ledger, study_id)
    return {node.node_id: node.status for node in view.nodes}


def _events(federation: Federation, node: str) -> list[str]:
    return [entry["event"] for entry in federation.audit(node)]


def _mailbox_bytes(federation: Federation) -> bytes:
    return b"".join(
        path.read_bytes() for path in (federation.root / "mailboxes").rglob("*") if path.is_file()
    )


def _task_of(federation: Federation, study_id: str, node: str) -> str:
    tasks = {task.node_id: task.task_id for task in federation.coordinator().ledger.tasks(study_id)}
    return tasks[node]


def _publish_policies(federation: Federation) -> None:
    for node in NODES:
        federation.agent(node).publish_policy(force=True)


def _reviewers(federation: Federation, node: str, mode: str) -> dict[str, Path]:
    keys = federation.root / "reviewer-keys"
    for name in ("alice", "bob", "mallory"):
        if not (keys / f"{name}.key").exists():
            generate_keypair(keys, name)
    federation.set_node(
        node,
        output_review=mode,
        reviewers={name: str(keys / f"{name}.pub") for name in ("alice", "bob")},
    )
    return {name: keys / f"{name}.key" for name in ("alice", "bob", "mallory")}


def _submit_code(federation: Federation, study: Path, *options: str) -> int:
    coordinator = str(federation.configs.coordinator)
    return main(["study", "submit", str(study), "--coordinator", coordinator, *options])


def _run_once_code(federation: Federation, node: str) -> int:
    return main(["node", "run-once", "--config", str(federation.configs.nodes[node])])


# ------------------------------------------------------------------ a queue that loses nothing


@pytest.mark.parametrize(
    ("studies", "seed"), [(studies, seed) for studies in (2, 3) for seed in range(2)]
)
def test_queued_studies_arriving_in_any_order_at_nodes_polling_in_any_order_all_complete(
    federation: Federation, fake_pipeline: FakePipeline, studies: int, seed: int
) -> None:
    rng = random.Random(seed)
    coordinator = federation.coordinator()
    study_ids = [f"queue-{seed}-{index}" for index in range(studies)]
    for study_id in study_ids:
        coordinator.submit(federation.write_study(study_id))
    stash = federation.root / "stash"
    late: dict[str, list[str]] = {}
    for node in NODES:  # a slow mailbox: some envelopes show up only later, in any order
        inbox = federation.root / "mailboxes" / node / "inbox"
        tasks = sorted(path.name for path in inbox.iterdir())
        late[node] = rng.sample(tasks, rng.randint(1, len(tasks) - 1))
        for task in late[node]:
            (stash / node / task).mkdir(parents=True)
            (inbox / task / "envelope.json").rename(stash / node / task / "envelope.json")
    while any(late.values()):
        for node in rng.sample(NODES, len(NODES)):
            federation.agent(node).run_once()
            if late[node] and rng.random() < 0.6:
                task = late[node].pop()
                inbox = federation.root / "mailboxes" / node / "inbox"
                (stash / node / task / "envelope.json").rename(inbox / task / "envelope.json")
    for node in rng.sample(NODES, len(NODES)):
        federation.agent(node).run_once()

    for study_id in study_ids:
        collection = federation.coordinator().collect(study_id)
        assert collection.released == sorted(NODES), (study_id, collection.statuses)
    ran = Counter((call["node"], call["study"]) for call in fake_pipeline.calls)
    assert ran == Counter({(node, study): 1 for node in NODES for study in study_ids})
    for node in NODES:
        assert "task_refused" not in _events(federation, node)
        assert federation.node_mailbox(node).list("inbox/") == []


def test_tasks_present_together_are_handled_in_signed_order_not_name_order(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(f"{index:032x}" for index in range(99, 0, -1))  # later tasks sort first

    class Names:
        @staticmethod
        def uuid4() -> Any:
            return type("Id", (), {"hex": next(names)})()

    monkeypatch.setattr(coordinator_module, "uuid", Names)
    study_ids = ["first", "second", "third"]
    for study_id in study_ids:
        federation.coordinator().submit(federation.write_study(study_id))
    inbox = sorted(federation.node_mailbox("fi").list("inbox/"))
    assert inbox[0].startswith(f"inbox/{_task_of(federation, 'third', 'fi')}")
    federation.agent("fi").run_once()
    assert [call["study"] for call in fake_pipeline.calls] == study_ids


def test_a_held_task_that_expires_times_out_and_says_so(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation.set_node("fi", approved_workflows=[])
    federation.coordinator().submit(federation.study_path)
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.HELD]
    expires = federation.coordinator().ledger.study(STUDY_ID).deadline
    assert expires is not None
    monkeypatch.setattr(agent_module, "_now", lambda: expires + timedelta(seconds=1))
    [outcome] = federation.agent("fi").run_once()
    assert outcome.status is TaskStatus.TIMED_OUT and fake_pipeline.calls == []
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.TIMED_OUT


# ------------------------------------------------------------------ the national veto


def test_held_then_approved_runs_and_the_coordinator_sees_every_state(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.set_node("fi", approved_workflows=[])
    federation.coordinator().submit(federation.study_path)
    task = _task_of(federation, STUDY_ID, "fi")
    assert _run_once_code(federation, "fi") == ExitCode.PENDING
    assert f"{task}\theld\t" in capsys.readouterr().out
    assert fake_pipeline.calls == []
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.HELD
    (held,) = [
        node
        for node in study_view(federation.coordinator().ledger, STUDY_ID).nodes
        if node.node_id == "fi"
    ]
    assert held.category == "held for the node admin's approval" and held.since

    assert main(["node", "tasks", "--config", str(federation.configs.nodes["fi"])]) == 0
    listing = capsys.readouterr().out
    assert f"{task}  held" in listing
    assert federation.digest in listing  # in full: the admin approves exactly this
    assert "GWAS of quant_trait (quantitative, linear); covariates age, sex" in listing
    assert "submitter:    coordinator 'coordinator', key id " in listing

    agent = federation.agent("fi")
    agent.approve(task, by="admin-anna")
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.APPROVED
    assert _run_once_code(federation, "fi") == ExitCode.OK
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.RELEASED
    assert fake_pipeline.nodes_called() == ["fi"]
    approved = [e for e in federation.audit("fi") if e["event"] == "task_approved"]
    assert approved[-1]["by"] == "admin-anna" and approved[-1]["account"]
    assert [d.kind.value for d in agent.ledger.decisions(task)] == ["approved"]


def test_held_then_rejected_is_vetoed_and_the_reason_never_leaves_the_node(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.set_node("fi", approved_workflows=[])
    federation.coordinator().submit(federation.study_path)
    federation.agent("fi").run_once()
    task = _task_of(federation, STUDY_ID, "fi")
    config = str(federation.configs.nodes["fi"])
    assert main(["node", "reject", task, "--config", config, "--reason", VETO_REASON]) == 0
    assert "vetoed by the node's admin" in capsys.readouterr().out

    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.VETOED
    (fi,) = [
        n for n in study_view(federation.coordinator().ledger, STUDY_ID).nodes if n.node_id == "fi"
    ]
    assert fi.category == "vetoed by the node's admin"
    assert VETO_REASON.encode() not in _mailbox_bytes(federation)
    coordinator_state = federation.root / "coordinator"
    assert all(
        VETO_REASON.encode() not in path.read_bytes()
        for path in coordinator_state.rglob("*")
        if path.is_file()
    )
    vetoed = [e for e in federation.audit("fi") if e["event"] == "task_vetoed"]
    assert vetoed and vetoed[0]["reason"] == VETO_REASON
    assert not (federation.work_dir("fi") / "tasks" / task / "bundle").exists()
    with pytest.raises(PolicyViolation, match="vetoed, not held"):
        federation.agent("fi").approve(task)
    assert _run_once_code(federation, "fi") == ExitCode.OK  # nothing left to do at the node
    assert fake_pipeline.calls == []
    assert (
        main(["study", "collect", STUDY_ID, "--coordinator", str(federation.configs.coordinator)])
        == ExitCode.REFUSED
    )


def test_a_veto_whose_report_cannot_be_sent_now_is_sent_on_the_next_run(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation.set_node("fi", approved_workflows=[])
    federation.coordinator().submit(federation.study_path)
    federation.agent("fi").run_once()
    task = _task_of(federation, STUDY_ID, "fi")
    original = type(federation.node_mailbox("fi")).put_bytes

    def down(self: Any, key: str, data: bytes) -> None:
        from federation.errors import TransportError

        raise TransportError("connection reset")

    monkeypatch.setattr(type(federation.node_mailbox("fi")), "put_bytes", down)
    federation.agent("fi").veto(task, VETO_REASON)
    monkeypatch.setattr(type(federation.node_mailbox("fi")), "put_bytes", original)
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.HELD  # the coordinator's last word
    federation.agent("fi").run_once()
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.VETOED
    assert "report_failed" in _events(federation, "fi")


def _enveloped(federation: Federation, node: str, envelope: dict[str, Any]) -> None:
    federation.set_node(
        node, approved_workflows=[{"digest": federation.digest, "envelope": envelope}]
    )


def test_a_study_inside_the_approved_envelope_runs_unattended_and_one_outside_is_held(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    _enveloped(federation, "fi", demo_envelope())
    inside = federation.write_study("inside")
    federation.coordinator().submit(inside)
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.RELEASED]

    study = yaml.safe_load(inside.read_text())
    study["study_id"] = "outside"
    study["analyses"][1]["covariates"] = ["age", "sex", "batch"]
    outside = federation.root / "studies" / "outside.yaml"
    outside.write_text(yaml.safe_dump(study))
    federation.coordinator().submit(outside)
    [held] = federation.agent("fi").run_once()
    assert held.status is TaskStatus.HELD
    assert held.reason == "outside the approved envelope: covariate 'batch' is not allowed"
    assert [call["study"] for call in fake_pipeline.calls] == ["inside"]


def test_approving_with_remember_lets_later_studies_inside_run_unattended(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.set_node("fi", approved_workflows=[])
    federation.coordinator().submit(federation.write_study("first"))
    federation.agent("fi").run_once()
    agent = federation.agent("fi")
    agent.approve(_task_of(federation, "first", "fi"), remember=True)
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.RELEASED]
    published = federation.agent("fi").publish_policy()
    (approval,) = published.approvals_of(federation.digest)
    assert approval.envelope is not None
    assert approval.envelope.traits == {"quant_trait", "binary_trait"}

    federation.coordinator().submit(federation.write_study("second"))  # the same kind of study
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.RELEASED]
    study = yaml.safe_load(federation.write_study("third").read_text())
    study["analyses"][1]["trait"] = "ldl"
    (federation.root / "studies" / "third.yaml").write_text(yaml.safe_dump(study))
    federation.coordinator().submit(federation.root / "studies" / "third.yaml")
    [held] = federation.agent("fi").run_once()
    assert held.status is TaskStatus.HELD and "trait 'ldl' is not allowed" in str(held.reason)
    assert [call["study"] for call in fake_pipeline.calls] == ["first", "second"]


def test_an_admins_envelope_file_is_checked_before_anything_is_recorded(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.set_node("fi", approved_workflows=[])
    federation.coordinator().submit(federation.study_path)
    federation.agent("fi").run_once()
    task = _task_of(federation, STUDY_ID, "fi")
    with pytest.raises(SpecError, match="unknown threshold 'min_cohort_size'"):
        federation.agent("fi").approve(
            task,
            remember=True,
            envelope={"analyses": ["gwas"], "disclosure": {"min_cohort_size": 5}},
        )
    assert federation.agent("fi").ledger.status(task) is TaskStatus.HELD


def test_node_tasks_shows_what_changed_since_the_last_approved_workflow(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.coordinator().submit(federation.study_path)  # the approved pipeline runs once
    federation.agent("fi").run_once()
    study_path = federation.write_study("attack-changed")
    files = pipeline_files(REPO_ROOT, study_path)
    changed = federation.root / "changed" / "Snakefile"
    changed.parent.mkdir(parents=True)
    changed.write_text(files["Snakefile"].read_text() + "\nrule exfiltrate:\n    shell: 'true'\n")
    files["Snakefile"] = changed
    out = federation.root / "changed" / "bundle.tar"
    manifest = pack_bundle(files, out, {"study_id": "attack-changed"})
    digest = workflow_digest(manifest)
    forged = forge_task(
        federation,
        "changed",
        bundle=out,
        payload_changes={"manifest_digest": manifest.digest, "workflow_digest": digest},
    )
    [held] = federation.agent("fi").run_once()
    assert held.status is TaskStatus.HELD
    agent = federation.agent("fi")
    diff = workflow_diff(agent, forged.task_id)
    assert diff.base == federation.digest and list(diff.changed) == ["Snakefile"]
    assert diff.added == () and diff.removed == ()
    assert "+rule exfiltrate:\n" in diff.changed["Snakefile"]
    (view,) = [v for v in task_views(agent) if v.task_id == forged.task_id]
    text = describe(view, diff)
    assert f"workflow:     {digest}" in text
    assert f"pipeline vs approved workflow {federation.digest}:" in text
    assert "    +rule exfiltrate:" in text


# ------------------------------------------------------------------ output review


@pytest.mark.parametrize("mode", ["one", "two"])
def test_nothing_is_published_before_the_required_distinct_reviewers_approve(
    federation: Federation, fake_pipeline: FakePipeline, mode: str
) -> None:
    keys = _reviewers(federation, "fi", mode)
    federation.coordinator().submit(federation.study_path)
    task = _task_of(federation, STUDY_ID, "fi")
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.IN_REVIEW]
    outbox = federation.node_mailbox("fi")
    assert not outbox.exists(MailboxKeys.completion(task))
    assert not (load_node(federation.configs.nodes["fi"]).results_dir / STUDY_ID).exists()
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.IN_REVIEW

    summary = read_summary(federation.work_dir("fi"), task)
    rows = {entry["name"]: entry.get("rows") for entry in summary["files"]}
    assert rows["quant_trait_gwas.tsv.gz"] == N_VARIANTS
    assert set(summary["gwas"]) == {"quant_trait_gwas", "binary_trait_gwas"}
    assert len(summary["gwas"]["quant_trait_gwas"]["top_hits"]) == 10
    assert summary["gwas"]["quant_trait_gwas"]["lambda_gc"] > 0
    assert "quant_trait_gwas.tsv.gz-meta.yaml" in summary["sidecars"]

    agent = federation.agent("fi")
    with pytest.raises(PolicyViolation, match="matches no key in the node 'fi' output reviewers"):
        agent.review(task, load_private_key(keys["mallory"]), Verdict.APPROVE)
    state = agent.review(task, load_private_key(keys["alice"]), Verdict.APPROVE)
    assert state.approvals == ("alice",)
    with pytest.raises(PolicyViolation, match="reviewer 'alice' has already decided"):
        agent.review(task, load_private_key(keys["alice"]), Verdict.APPROVE)
    if mode == "two":
        [waiting] = federation.agent("fi").run_once()
        assert waiting.status is TaskStatus.IN_REVIEW and waiting.reason == "1 of 2 approvals"
        assert not outbox.exists(MailboxKeys.completion(task))
        agent.review(task, load_private_key(keys["bob"]), Verdict.APPROVE, "fine")
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.RELEASED]
    assert outbox.exists(MailboxKeys.completion(task))
    assert fake_pipeline.nodes_called() == ["fi"]

    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.RELEASED
    (fi,) = [
        n for n in study_view(federation.coordinator().ledger, STUDY_ID).nodes if n.node_id == "fi"
    ]
    required = 1 if mode == "one" else 2
    assert fi.review is not None and fi.review["mode"] == mode
    assert fi.review["approvals"] == required and len(fi.review["decisions_sha256"]) == 64
    assert "alice" not in json.dumps(fi.review)  # how many, never who
    audit_log = load_node(federation.configs.nodes["fi"]).federation.audit_log  # type: ignore[union-attr]
    assert verify_log(audit_log).intact
    decisions = [e for e in federation.audit("fi") if e["event"] == "output_review_decision"]
    assert [e["reviewer"] for e in decisions] == ["alice", "bob"][:required]
    assert all(e["release_digest"] == summary["release_digest"] for e in decisions)
    published = [e for e in federation.audit("fi") if e["event"] == "result_published"]
    assert published[0]["output_review"]["approvals"] == required


def test_a_rejection_at_review_publishes_nothing_and_the_coordinator_sees_withheld(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = _reviewers(federation, "fi", "two")
    federation.coordinator().submit(federation.study_path)
    federation.agent("fi").run_once()
    task = _task_of(federation, STUDY_ID, "fi")
    federation.agent("fi").review(task, load_private_key(keys["alice"]), Verdict.APPROVE)
    config = str(federation.configs.nodes["fi"])
    code = main(
        [
            "node",
            "review",
            "reject",
            task,
            "--config",
            config,
            "--key",
            str(keys["bob"]),
            "--reason",
            REVIEW_REASON,
        ]
    )
    assert code == 0 and "nothing is published" in capsys.readouterr().out
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.WITHHELD]
    assert not federation.node_mailbox("fi").exists(MailboxKeys.completion(task))
    assert not files_dir(federation.work_dir("fi"), task).exists()
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.WITHHELD
    (fi,) = [
        n for n in study_view(federation.coordinator().ledger, STUDY_ID).nodes if n.node_id == "fi"
    ]
    assert fi.category == "withheld at the node's output review"
    assert set(fi.analyses.values()) == {  # nothing left the node, so nothing reads released
        AnalysisOutcome(ReleaseOutcome.WITHHELD, RefusalCategory.WITHHELD_AT_REVIEW)
    }
    assert REVIEW_REASON.encode() not in _mailbox_bytes(federation)


def test_files_changed_under_review_are_neither_reviewed_nor_published(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    keys = _reviewers(federation, "fi", "one")
    federation.coordinator().submit(federation.study_path)
    federation.agent("fi").run_once()
    task = _task_of(federation, STUDY_ID, "fi")
    federation.agent("fi").review(task, load_private_key(keys["alice"]), Verdict.APPROVE)
    table = files_dir(federation.work_dir("fi"), task) / "quant_trait_gwas.tsv.gz"
    table.write_bytes(table.read_bytes() + b"\0")  # swapped after the approval
    [outcome] = federation.agent("fi").run_once()
    assert outcome.status is TaskStatus.IN_REVIEW and outcome.reason == "0 of 1 approvals"
    assert not federation.node_mailbox("fi").exists(MailboxKeys.completion(task))
    with pytest.raises(PolicyViolation, match="files under review changed"):
        federation.agent("fi").review(task, load_private_key(keys["alice"]), Verdict.APPROVE)


def test_the_demos_scripted_reviewers_release_what_they_approved(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    keys = federation.root / "keys"
    for name in ("reviewer-a", "reviewer-b"):
        generate_keypair(keys, name)
    federation.set_node(
        "fi",
        output_review="two",
        reviewers={name: str(keys / f"{name}.pub") for name in ("reviewer-a", "reviewer-b")},
    )
    federation.coordinator().submit(federation.study_path)
    agent = federation.agent("fi")
    agent.run_once()
    lines: list[str] = []
    review_releases(agent, keys, lines.append)
    assert any(
        "a second approval by reviewer-a" in line and "already decided" in line for line in lines
    )
    assert [o.status for o in agent.run_once()] == [TaskStatus.RELEASED]


# ------------------------------------------------------------------ cancel


def test_cancel_drops_pending_and_held_tasks_and_stops_a_running_pipeline(
    federation: Federation, fake_pipeline: FakePipeline, tmp_path: Path
) -> None:
    federation.set_node("ee", approved_workflows=[])  # 'ee' holds it
    federation.set_node("nl", cancel_poll_seconds=0.1)  # 'nl' runs it and notices fast
    federation.coordinator().submit(federation.study_path)
    federation.agent("ee").run_once()
    pids_file = tmp_path / "pipeline.pid"

    def long_pipeline(control: RunControl) -> None:
        script = f"import os, time; open({str(pids_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
        run_guarded(
            [sys.executable, "-c", script], cwd=tmp_path, on_line=lambda line: None, control=control
        )

    fake_pipeline.during_run = long_pipeline
    outcomes: list[Any] = []
    runner = threading.Thread(target=lambda: outcomes.extend(federation.agent("nl").run_once()))
    runner.start()
    deadline = time.monotonic() + 60
    while not pids_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_file.is_file(), "the pipeline did not start"
    started = time.monotonic()
    cancelled = federation.coordinator().cancel(STUDY_ID)
    runner.join(timeout=60)
    assert not runner.is_alive() and time.monotonic() - started < 30
    assert [o.status for o in outcomes] == [TaskStatus.CANCELLED]
    assert not alive(int(pids_file.read_text()))  # the pipeline's process was stopped
    assert sorted(cancelled) == sorted(
        task.task_id for task in federation.coordinator().ledger.tasks(STUDY_ID)
    )

    fake_pipeline.during_run = None
    for node in ("fi", "ee"):
        assert [o.status for o in federation.agent(node).run_once()] == [TaskStatus.CANCELLED]
        assert federation.node_mailbox(node).list("inbox/") == []
    assert fake_pipeline.nodes_called() == ["nl"]
    for node in NODES:
        assert (
            federation.agent(node).ledger.status(_task_of(federation, STUDY_ID, node))
            is TaskStatus.CANCELLED
        )
    assert federation.coordinator().ledger.study(STUDY_ID).status is StudyStatus.CANCELLED
    assert set(_states(federation, STUDY_ID).values()) == {TaskStatus.CANCELLED}
    assert (
        main(["study", "collect", STUDY_ID, "--coordinator", str(federation.configs.coordinator)])
        == ExitCode.REFUSED
    )


def test_a_release_in_review_is_never_published_once_cancelled(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    keys = _reviewers(federation, "fi", "one")
    federation.coordinator().submit(federation.study_path)
    federation.agent("fi").run_once()
    task = _task_of(federation, STUDY_ID, "fi")
    federation.agent("fi").review(task, load_private_key(keys["alice"]), Verdict.APPROVE)
    federation.coordinator().cancel(STUDY_ID)
    assert [o.status for o in federation.agent("fi").run_once()] == [TaskStatus.CANCELLED]
    assert not federation.node_mailbox("fi").exists(MailboxKeys.completion(task))
    assert not files_dir(federation.work_dir("fi"), task).exists()


# ------------------------------------------------------------------ per-analysis outcomes


def test_one_withheld_analysis_never_stops_the_others(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_pipeline.withheld = {"fi": {"binary_trait_gwas"}}
    federation.coordinator().submit(federation.study_path)
    assert _run_once_code(federation, "fi") == ExitCode.REFUSED  # something was withheld
    assert "binary_trait_gwas withheld (cohort_too_small)" in capsys.readouterr().out
    for node in ("ee", "nl"):
        federation.agent(node).run_once()
    coordinator = federation.coordinator()
    collection = coordinator.collect(STUDY_ID)
    assert collection.released == sorted(NODES)
    (fi,) = [n for n in study_view(coordinator.ledger, STUDY_ID).nodes if n.node_id == "fi"]
    assert fi.status is TaskStatus.RELEASED
    assert fi.analyses == {
        "allele_frequencies": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "quant_trait_gwas": AnalysisOutcome(ReleaseOutcome.RELEASED),
        "binary_trait_gwas": AnalysisOutcome(
            ReleaseOutcome.WITHHELD, RefusalCategory.COHORT_TOO_SMALL
        ),
    }
    meta = federation.root / "results" / STUDY_ID / "meta"
    assert set(sumstats.read_table(meta / "binary_trait_gwas.tsv.gz")["n_studies"]) == {2}
    assert set(sumstats.read_table(meta / "quant_trait_gwas.tsv.gz")["n_studies"]) == {3}
    status = ["study", "status", STUDY_ID, "--coordinator", str(federation.configs.coordinator)]
    capsys.readouterr()
    assert main(status) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fi ")]
    assert "binary_trait_gwas withheld (cohort_too_small)" in line
    assert "quant_trait_gwas released," in line and "(" not in line.split("binary")[0]
    code = main(
        [
            "study",
            "status",
            STUDY_ID,
            "--coordinator",
            str(federation.configs.coordinator),
            "--json",
        ]
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["status"] == "meta_analysed"
    node = next(n for n in document["nodes"] if n["node_id"] == "fi")
    assert node["analyses"]["binary_trait_gwas"] == {
        "outcome": "withheld",
        "category": "cohort_too_small",
    }
    assert node["analyses"]["quant_trait_gwas"] == {"outcome": "released", "category": None}
    assert node["since"]
    assert any(
        event["event"] == "result_received" and event["time"] for event in document["events"]
    )
    collect = ["study", "collect", STUDY_ID, "--coordinator", str(federation.configs.coordinator)]
    assert main(collect) == ExitCode.REFUSED


def test_a_node_whose_gate_withholds_every_analysis_reports_withheld_and_publishes_nothing(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    fake_pipeline.withheld = {"fi": {"allele_frequencies", "quant_trait_gwas", "binary_trait_gwas"}}
    federation.coordinator().submit(federation.study_path)
    [outcome] = federation.agent("fi").run_once()
    assert outcome.status is TaskStatus.WITHHELD
    task = _task_of(federation, STUDY_ID, "fi")
    assert not federation.node_mailbox("fi").exists(MailboxKeys.completion(task))
    assert _states(federation, STUDY_ID)["fi"] is TaskStatus.WITHHELD


# ------------------------------------------------------------------ pre-flight and dry run


def test_a_study_that_loosens_a_threshold_is_refused_at_submit_naming_each_node(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish_policies(federation)
    study = federation.write_study("loose", disclosure={"min_cohort_gwas": 50})
    coordinator = str(federation.configs.coordinator)
    assert main(["study", "submit", str(study), "--coordinator", coordinator]) == ExitCode.REFUSED
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: study 'loose' refused at pre-flight; nothing sent:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [f"node '{n}'" for n in NODES]
    assert all(
        "'min_cohort_gwas': 50 would loosen the node policy (100)" in line for line in lines[1:]
    )
    for node in NODES:
        assert federation.node_mailbox(node).list("inbox/") == []
    with pytest.raises(SpecError, match="not known"):
        federation.coordinator().ledger.study("loose")


def test_an_unapproved_workflow_is_refused_at_submit_by_a_node_that_refuses_them(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.set_node("fi", approved_workflows=["0" * 64], unapproved_workflows="refuse")
    _publish_policies(federation)
    with pytest.raises(PreflightRefused) as refused:
        federation.coordinator().submit(federation.study_path)
    lines = str(refused.value).splitlines()[1:]
    assert len(lines) == 1 and lines[0].startswith("  node 'fi': refuses the study: workflow ")
    assert federation.digest in lines[0]  # in full
    assert federation.node_mailbox("ee").list("inbox/") == []


def test_the_dry_run_says_what_the_nodes_then_do(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    _enveloped(federation, "fi", demo_envelope())  # runs it unattended
    federation.set_node("ee", approved_workflows=[])  # holds it
    _reviewers(federation, "nl", "two")  # runs it, then its reviewers check
    _publish_policies(federation)
    assert _submit_code(federation, federation.study_path, "--dry-run", "--json") == 0
    predicted = {n["node_id"]: n for n in json.loads(capsys.readouterr().out)["preflight"]["nodes"]}
    assert {node: p["prediction"] for node, p in predicted.items()} == {
        "fi": "run",
        "ee": "hold",
        "nl": "run",
    }
    assert predicted["nl"]["output_review"] == "two"
    for node in NODES:
        assert federation.node_mailbox(node).list("inbox/") == []
    assert _submit_code(federation, federation.study_path, "--dry-run") == 0
    report = capsys.readouterr().out
    assert f"workflow {federation.digest}" in report and "dry run, nothing sent" in report
    assert "node 'nl': runs it after output review by 2 reviewer(s)" in report

    federation.coordinator().submit(federation.study_path)
    done = {node: federation.agent(node).run_once()[0].status for node in NODES}
    assert done == {"fi": TaskStatus.RELEASED, "ee": TaskStatus.HELD, "nl": TaskStatus.IN_REVIEW}


def test_the_pre_flight_predicts_analyses_no_cohort_of_the_node_can_carry(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    """'nl' holds 76 genomes: its allele frequencies may leave, its GWAS cannot (N < 100)."""
    samples = [f"nl_{index:04d}" for index in range(76)]
    cohort = federation.root / "cohorts" / "nl"
    cohort.mkdir(parents=True, exist_ok=True)
    header = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"]
    (cohort / "genotypes.vcf.bgz").unlink(missing_ok=True)
    import gzip

    with gzip.open(cohort / "genotypes.vcf.bgz", "wt") as handle:
        handle.write("##fileformat=VCFv4.2\n" + "\t".join(header + samples) + "\n")
    (cohort / "phenotypes.tsv").write_text(
        "sample_id\tage\tsex\n" + "".join(f"{s}\t50\t{i % 2}\n" for i, s in enumerate(samples))
    )
    _publish_policies(federation)
    submission = federation.coordinator().submit(federation.study_path, dry_run=True)
    assert submission.preflight is not None and not submission.sent
    (nl,) = [p for p in submission.preflight.predictions if p.node_id == "nl"]
    assert nl.analyses["quant_trait_gwas"] == "withheld (at most 80 genomes < min_cohort_gwas 100)"
    assert nl.analyses["allele_frequencies"].startswith("may be released")


def test_a_missing_mailbox_fails_the_submit_and_sends_nothing(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    shutil.rmtree(federation.root / "mailboxes" / "nl")
    with pytest.raises(MailboxesUnreachable) as unreachable:
        federation.coordinator().submit(federation.study_path)
    assert "node 'nl': mailbox unreachable" in str(unreachable.value)
    assert "mailbox directory does not exist" in str(unreachable.value)
    assert unreachable.value.exit_code == ExitCode.FAILED
    assert federation.node_mailbox("fi").list("inbox/") == []


def test_a_forged_published_policy_refuses_the_study_for_that_node(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    _publish_policies(federation)
    key = federation.root / "mailboxes" / "ee" / MailboxKeys.POLICY
    document = json.loads(key.read_text())
    document["payload"]["output_review"] = "none"
    document["payload"]["approved_workflows"] = [{"digest": "f" * 64, "envelope": None}]
    key.write_text(json.dumps(document))
    with pytest.raises(
        PreflightRefused, match="node 'ee': refuses the study: its published policy does not verify"
    ):
        federation.coordinator().submit(federation.study_path)


def test_a_node_without_a_published_policy_is_not_predicted_but_gets_the_study(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    submission = federation.coordinator().submit(federation.study_path)
    assert submission.preflight is not None
    assert {p.summary() for p in submission.preflight.predictions} == {
        f"node '{node}': no published policy; cannot predict (the node decides)" for node in NODES
    }
    assert sorted(submission.tasks) == sorted(NODES)
    federation.agent("fi").run_once()  # the agent publishes its policy on every run
    raw = federation.node_mailbox("fi").get_bytes(MailboxKeys.POLICY)
    assert NodePolicyDocument.verify(raw, federation.coordinator().node_keys, "fi").node_id == "fi"


# ------------------------------------------------------------------ an interrupted submit


@pytest.mark.parametrize("killed_at", ["planning", "bundle", "envelope", "record"])
def test_a_submit_killed_midway_is_re_run_and_sends_nothing_twice(
    federation: Federation,
    fake_pipeline: FakePipeline,
    monkeypatch: pytest.MonkeyPatch,
    killed_at: str,
) -> None:
    mailbox_type = type(federation.node_mailbox("fi"))
    puts: Counter[str] = Counter()
    original_file, original_bytes = mailbox_type.put_file, mailbox_type.put_bytes
    original_plan, original_add = CoordinatorLedger.plan_task, CoordinatorLedger.add_task
    killed: list[str] = []

    def kill_once(where: str, node: str) -> None:
        if where == killed_at and node == "ee" and not killed:
            killed.append(node)
            raise KeyboardInterrupt  # the coordinator's process dies here

    def put_file(self: Any, key: str, source: Path) -> None:
        original_file(self, key, source)
        puts[f"{self.root.name}/{key}"] += 1
        kill_once("bundle", self.root.name)

    def put_bytes(self: Any, key: str, data: bytes) -> None:
        original_bytes(self, key, data)
        puts[f"{self.root.name}/{key}"] += 1
        if key.endswith("envelope.json"):
            kill_once("envelope", self.root.name)

    def plan_task(self: Any, study_id: str, node_id: str, *args: Any) -> Any:
        planned = original_plan(self, study_id, node_id, *args)
        kill_once("planning", node_id)
        return planned

    def add_task(
        self: Any, task_id: str, study_id: str, node_id: str, *args: Any, **kwargs: Any
    ) -> None:
        kill_once("record", node_id)
        original_add(self, task_id, study_id, node_id, *args, **kwargs)

    monkeypatch.setattr(mailbox_type, "put_file", put_file)
    monkeypatch.setattr(mailbox_type, "put_bytes", put_bytes)
    monkeypatch.setattr(CoordinatorLedger, "plan_task", plan_task)
    monkeypatch.setattr(CoordinatorLedger, "add_task", add_task)
    with pytest.raises(KeyboardInterrupt):
        federation.coordinator().submit(federation.study_path)
    again = federation.coordinator().submit(federation.study_path)
    assert again.resumed and sorted(again.tasks) == sorted(NODES)
    task_puts = {key: count for key, count in puts.items() if "/inbox/" in key}
    assert len(task_puts) == 2 * len(NODES) and set(task_puts.values()) == {1}, puts
    for node in NODES:
        assert len({key.split("/")[1] for key in federation.node_mailbox(node).list("inbox/")}) == 1
    assert len(federation.coordinator().ledger.tasks(STUDY_ID)) == len(NODES)
    third = federation.coordinator().submit(federation.study_path)  # nothing left to send
    assert third.tasks == again.tasks and sum(puts.values()) == sum(task_puts.values())
    for node in NODES:
        assert [o.status for o in federation.agent(node).run_once()] == [TaskStatus.RELEASED]
    assert federation.coordinator().collect(STUDY_ID).released == sorted(NODES)


def test_the_same_study_id_with_other_content_is_refused(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.coordinator().submit(federation.study_path)
    changed = federation.write_study(STUDY_ID, title="another study under the same id")
    with pytest.raises(SpecError, match="already submitted with other content"):
        federation.coordinator().submit(changed)


# ------------------------------------------------------------------ what cron and systemd see


def test_a_second_agent_exits_at_once_with_75_and_a_clear_line(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.coordinator().submit(federation.study_path)
    with AgentLock(federation.work_dir("fi"), "fi"):
        assert _run_once_code(federation, "fi") == ExitCode.BUSY
        assert (
            main(
                ["node", "watch", "--config", str(federation.configs.nodes["fi"]), "--cycles", "1"]
            )
            == ExitCode.BUSY
        )
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")][
        :1
    ]
    assert line.startswith("error: node 'fi': another agent holds ") and "this run exits" in line
    assert fake_pipeline.calls == []
    assert _run_once_code(federation, "fi") == ExitCode.OK


def test_a_missing_mailbox_is_an_error_for_the_agent(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(federation.root / "mailboxes" / "fi")
    assert _run_once_code(federation, "fi") == ExitCode.FAILED
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mailbox directory does not exist" in errors[0]


def test_a_refused_task_makes_run_once_exit_3(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    forge_task(federation, "unsigned", sign=lambda payload: payload)
    assert _run_once_code(federation, "fi") == ExitCode.REFUSED


def test_collect_says_whether_the_study_is_done_waiting_or_failed(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.coordinator().submit(federation.study_path)
    collect = ["study", "collect", STUDY_ID, "--coordinator", str(federation.configs.coordinator)]
    assert main(collect) == ExitCode.PENDING
    federation.agent("fi").run_once()
    federation.agent("ee").run_once()
    assert main(collect) == ExitCode.PENDING  # 'nl' has not answered yet

    def fails(node_config: Path, study_config: Path) -> None:
        raise RuntimeError("disk full")

    fake_pipeline.before_run = fails
    federation.agent("nl").run_once()
    assert main(collect) == ExitCode.FAILED
    fake_pipeline.before_run = None
    other = federation.write_study("all-good")
    federation.coordinator().submit(other)
    for node in NODES:
        federation.agent(node).run_once()
    assert (
        main(["study", "collect", "all-good", "--coordinator", str(federation.configs.coordinator)])
        == ExitCode.OK
    )


def test_study_list_shows_every_study_with_its_node_states(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.set_node("ee", approved_workflows=[])
    federation.coordinator().submit(federation.study_path)
    for node in NODES:
        federation.agent(node).run_once()
    federation.coordinator().collect(STUDY_ID)
    coordinator = str(federation.configs.coordinator)
    assert main(["study", "list", "--coordinator", coordinator]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(STUDY_ID)]
    assert "1 held, 2 released" in line
    assert main(["study", "list", "--coordinator", coordinator, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["counts"] == {"held": 1, "released": 2}


def test_a_malformed_deadline_is_one_line_naming_the_field(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    study = federation.write_study("late", deadline="next friday")
    coordinator = str(federation.configs.coordinator)
    assert main(["study", "submit", str(study), "--coordinator", coordinator]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: study config '{study}' 'deadline': 'next friday' is not an ISO 8601 time; "
        "write e.g. 2026-12-31T23:59:00Z"
    ]


def test_keys_generate_also_makes_the_crypt4gh_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path), "--name", "fi"]) == 0
    out = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    for name in ("private_key", "public_key", "crypt4gh_secret_key", "crypt4gh_public_key"):
        assert Path(out[name]).is_file(), name
    assert Path(out["crypt4gh_secret_key"]).stat().st_mode & 0o777 == 0o600
    assert main(["keys", "generate", "--out", str(tmp_path), "--name", "fi"]) == ExitCode.BAD_INPUT
    assert "pass --force" in capsys.readouterr().err
    assert (
        main(
            ["keys", "generate", "--out", str(tmp_path / "signing"), "--name", "x", "--no-crypt4gh"]
        )
        == 0
    )
    assert sorted(path.name for path in (tmp_path / "signing").iterdir()) == ["x.key", "x.pub"]


def test_study_status_says_what_a_node_reported_before_anything_is_collected(
    federation: Federation, fake_pipeline: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.set_node("fi", approved_workflows=[], unapproved_workflows="refuse")
    federation.coordinator().submit(federation.study_path)
    federation.agent("fi").run_once()
    coordinator = str(federation.configs.coordinator)
    assert main(["study", "status", STUDY_ID, "--coordinator", coordinator, "--offline"]) == 0
    assert any(
        line.split()[:2] == ["fi", "delivered"] for line in capsys.readouterr().out.splitlines()
    )
    assert main(["study", "status", STUDY_ID, "--coordinator", coordinator]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fi "))
    assert line.split()[1] == "rejected" and "is not approved by node 'fi'" in line
