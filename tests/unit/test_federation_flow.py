"""The coordinator <-> node flow over local mailboxes, with the Hail pipeline replaced by a fake.

The fake writes small but valid released files (GWAS-SSF and allele frequencies, the released
column sets) where the real pipeline publishes them, so everything else is real: keys,
signed envelopes and bundles, node policy, ledgers, audit log, result bundles, collection,
quorum and the meta-analysis. Attacks are built by hand and each must be refused by the
node with an audit entry, without the pipeline running, and reported to the coordinator.
"""

from __future__ import annotations

import json
import math
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import federation.coordinator.coordinator as coordinator_module
import federation.node.agent as agent_module
from federation import __version__, sumstats
from federation.audit import append_event, head_path
from federation.cli import main
from federation.coordinator.coordinator import Coordinator
from federation.coordinator.ledger import CoordinatorLedger, StudyStatus
from federation.coordinator.status import format_status
from federation.errors import TransportError
from federation.files import REPO_ROOT, sha256_file
from federation.node.agent import NodeAgent, TaskOutcome
from federation.node.ledger import NodeLedger
from federation.outcomes import AnalysisOutcome, RefusalCategory, ReleaseOutcome, record_outcome
from federation.pipeline.runs import PipelineRun, RunControl
from federation.protocol.bundle import pack_bundle, pipeline_files
from federation.protocol.crypt import SEALED_RESULT
from federation.protocol.manifest import workflow_digest
from federation.protocol.messages import RESULT_FORMAT, TASK_FORMAT, TaskStatus
from federation.protocol.signing import (
    canonical_json,
    generate_keypair,
    load_private_key,
    sign_document,
)
from federation.release.tables import RELEASED_AF_COLUMNS, RELEASED_GWAS_COLUMNS
from federation.sandbox.demo import (
    COORDINATOR_ID,
    FederationConfigs,
    demo_study,
    mailboxes,
    pipeline_workflow_digest,
    summarise_meta,
    write_federation_configs,
)
from federation.sandbox.synth import NodeCohort
from federation.settings import load_coordinator, load_node
from federation.spec import load_study
from federation.transport import LocalTransport
from tests.unit.protocol.test_bundle import hand_made_tar, regular, special

NODES = ("fi", "ee", "nl")
STUDY_ID = "flow-study"
N_VARIANTS = 120
N_PER_NODE = 800
PLANTED = (7, 61)  # row indices of the variants with a real effect in every node
PLANTED_BETA = 0.4
GENOME_WIDE = 5e-8
# Where an absolute member name would point: outside the test's directory, so a reason that
# names it is not mistaken for a leaked node path; it must never be created.
ABSOLUTE_TARGET = Path("/tmp") / f"federation-flow-escape-{uuid.uuid4().hex}"
NON_PALINDROMIC = (("A", "C"), ("A", "G"), ("C", "T"), ("G", "T"), ("C", "A"), ("T", "G"))


# ------------------------------------------------------------------ the fake pipeline


def _fake_gwas(node_id: str, rng: np.random.Generator, binary: bool) -> pd.DataFrame:
    chromosomes = np.repeat(np.arange(1, 23), math.ceil(N_VARIANTS / 22))[:N_VARIANTS]
    positions = 1_000_000 + 10_000 * np.arange(N_VARIANTS)
    alleles = [NON_PALINDROMIC[i % len(NON_PALINDROMIC)] for i in range(N_VARIANTS)]
    frequency = 0.1 + 0.8 * (np.arange(N_VARIANTS) % 17) / 17
    se = 1 / np.sqrt(2 * frequency * (1 - frequency) * N_PER_NODE) * (2.0 if binary else 1.0)
    beta = rng.normal(0.0, se)
    beta[list(PLANTED)] += PLANTED_BETA
    z = beta / se
    p = np.array([math.erfc(abs(value) / math.sqrt(2)) for value in z])
    nlp = -np.log10(p)
    refs = pd.Series([ref for ref, _ in alleles])
    alts = pd.Series([alt for _, alt in alleles])
    return pd.DataFrame(
        {
            "chromosome": chromosomes.astype(str),
            "base_pair_location": positions,
            "effect_allele": alts,
            "other_allele": refs,
            "beta": beta,
            "standard_error": se,
            "effect_allele_frequency": frequency,
            "p_value": sumstats.format_p_value(p, nlp),
            "n": N_PER_NODE,
            "variant_id": sumstats.variant_id(
                pd.Series(chromosomes.astype(str)), pd.Series(positions), refs, alts
            ),
            sumstats.NEG_LOG10_P: nlp,
        }
    )[list(RELEASED_GWAS_COLUMNS)]


def _fake_frequencies(node_id: str, gwas: pd.DataFrame) -> pd.DataFrame:
    allele_number = np.full(len(gwas), 2 * N_PER_NODE)
    allele_count = np.round(gwas["effect_allele_frequency"].to_numpy() * allele_number).astype(int)
    return pd.DataFrame(
        {
            "chromosome": gwas["chromosome"],
            "base_pair_location": gwas["base_pair_location"],
            "ref": gwas["other_allele"],
            "alt": gwas["effect_allele"],
            "variant_id": gwas["variant_id"],
            "allele_count": allele_count,
            "allele_number": allele_number,
            "allele_frequency": allele_count / allele_number,
            "n_samples": N_PER_NODE,
            "homozygote_count": allele_count // 4,
            "node_id": node_id,
        }
    )[list(RELEASED_AF_COLUMNS)]


@dataclass
class FakePipeline:
    """Stands in for `run_pipeline`; records its calls; `before_run` may interrupt it.

    It honours the run's control like the real runners (the release goes where the agent says:
    the review area under output review), `during_run` sees that control (to run real processes
    under it), and `withheld` plays a gate that withholds some analyses of some nodes.
    """

    calls: list[dict[str, Any]] = field(default_factory=list)
    before_run: Callable[[Path, Path], None] | None = None
    during_run: Callable[[RunControl], None] | None = None
    withheld: dict[str, set[str]] = field(default_factory=dict)  # node -> analysis ids
    builds: dict[str, str] = field(default_factory=dict)  # node -> declared build (GRCh38)
    empty: bool = False  # every GWAS released with a header and no row

    def __call__(
        self,
        node_config: Path,
        study_config: Path,
        *,
        pipeline_root: Path,
        resume: bool = False,
        progress: Callable[[str], None] | None = None,
        control: RunControl | None = None,
        **_: Any,
    ) -> PipelineRun:
        node = load_node(node_config)
        study = load_study(study_config)
        self.calls.append({"node": node.node_id, "study": study.study_id, "unlock": resume})
        assert (pipeline_root / "Snakefile").is_file() and pipeline_root == study_config.parent
        if self.before_run is not None:
            self.before_run(node_config, study_config)
        control = control or RunControl()
        if self.during_run is not None:
            self.during_run(control)
        released = control.destination or (
            node.results_dir / study.study_id / "nodes" / node.node_id
        )
        released.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(list(node.node_id.encode()))
        withheld = self.withheld.get(node.node_id, set())
        outcomes = {  # the gate's word on a small cohort, as the release steps record it
            analysis: (
                AnalysisOutcome(ReleaseOutcome.WITHHELD, RefusalCategory.COHORT_TOO_SMALL)
                if analysis in withheld
                else AnalysisOutcome(ReleaseOutcome.RELEASED)
            )
            for analysis in study.analysis_ids
        }
        for analysis, decided in outcomes.items():
            category = decided.category.value if decided.category else None
            record_outcome(node.work_dir, study.study_id, analysis, decided.outcome, category)
        files = []
        metadata = {
            "study_id": study.study_id,
            "node_id": node.node_id,
            "genome_assembly": self.builds.get(node.node_id, "GRCh38"),
        }
        for analysis in study.gwas:
            table = _fake_gwas(node.node_id, rng, analysis.trait_type.value == "binary")
            if analysis.id in withheld:
                continue
            if self.empty:
                table = table.iloc[:0]
            files.append(
                sumstats.write_table(
                    table,
                    released / f"{analysis.id}.tsv.gz",
                    {
                        **metadata,
                        "analysis": analysis.id,
                        "trait": analysis.trait,
                        "trait_type": analysis.trait_type.value,
                    },
                )
            )
        for frequencies in study.allele_frequencies:
            table = _fake_frequencies(node.node_id, _fake_gwas(node.node_id, rng, False))
            if frequencies.id in withheld:
                continue
            files.append(
                sumstats.write_table(
                    table, released / f"{frequencies.id}.tsv.gz", {**metadata, "analysis": "af"}
                )
            )
        all_files = tuple(sorted(path for path in released.rglob("*") if path.is_file()))
        return PipelineRun(
            node.node_id, study.study_id, released, all_files, released / "log", outcomes
        )

    def nodes_called(self) -> list[str]:
        return [call["node"] for call in self.calls]


# ------------------------------------------------------------------ a federation on disk


@dataclass
class Federation:
    root: Path
    configs: FederationConfigs
    study_path: Path
    digest: str

    def coordinator(self) -> Coordinator:
        """A fresh coordinator process, as after a restart: everything from config + SQLite."""
        return Coordinator(load_coordinator(self.configs.coordinator))

    def agent(self, node_id: str) -> NodeAgent:
        return NodeAgent(self.configs.nodes[node_id])

    def node_mailbox(self, node_id: str) -> LocalTransport:
        return LocalTransport(self.root / "mailboxes" / node_id)

    def work_dir(self, node_id: str) -> Path:
        return load_node(self.configs.nodes[node_id]).work_dir

    def audit(self, node_id: str) -> list[dict[str, Any]]:
        federation = load_node(self.configs.nodes[node_id]).federation
        assert federation is not None
        if not federation.audit_log.exists():
            return []
        return [json.loads(line) for line in federation.audit_log.read_text().splitlines()]

    def refusals(self, node_id: str, task_id: str) -> list[str]:
        return [
            entry["reason"]
            for entry in self.audit(node_id)
            if entry["event"] == "task_refused" and entry["task_id"] == task_id
        ]

    def write_study(self, study_id: str, **changes: Any) -> Path:
        study = {**demo_study(list(NODES)), "study_id": study_id, **changes}
        path = self.root / "studies" / f"{study_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        return path

    def set_node(self, node_id: str, **federation_changes: Any) -> None:
        config = self.configs.nodes[node_id]
        document = yaml.safe_load(config.read_text())
        document["federation"].update(federation_changes)
        config.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture()
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    fake = FakePipeline()
    monkeypatch.setattr(agent_module, "run_pipeline", fake)
    return fake


@pytest.fixture(scope="session")
def approved_digest(tmp_path_factory: pytest.TempPathFactory) -> str:
    study = tmp_path_factory.mktemp("digest") / "study.yaml"
    study.write_text(yaml.safe_dump(demo_study(list(NODES))))
    return pipeline_workflow_digest()


@pytest.fixture()
def federation(tmp_path: Path, fake_pipeline: FakePipeline, approved_digest: str) -> Federation:
    cohorts = [NodeCohort(node, N_PER_NODE, 0.01, tmp_path / "cohorts" / node) for node in NODES]
    with mailboxes("local", tmp_path, list(NODES), lambda line: None) as boxes:
        configs = write_federation_configs(tmp_path, cohorts, boxes, [approved_digest])
    fed = Federation(tmp_path, configs, tmp_path / "study.yaml", approved_digest)
    fed.study_path = fed.write_study(STUDY_ID)
    return fed


def _task_ids(coordinator: Coordinator, study_id: str) -> dict[str, str]:
    return {task.node_id: task.task_id for task in coordinator.ledger.tasks(study_id)}


def _status(coordinator: Coordinator, study_id: str, node_id: str) -> tuple[TaskStatus, str | None]:
    task = next(t for t in coordinator.ledger.tasks(study_id) if t.node_id == node_id)
    return task.status, task.reason


# ------------------------------------------------------------------ the happy path, quorum


def test_three_nodes_release_and_the_coordinator_meta_analyses(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    coordinator = federation.coordinator()
    submission = coordinator.submit(federation.study_path)
    assert sorted(submission.tasks) == sorted(NODES)
    assert submission.workflow_digest == federation.digest

    for node in NODES:
        outcomes = federation.agent(node).run_once()
        assert outcomes == [TaskOutcome(submission.tasks[node], TaskStatus.RELEASED)]
        # accepted and unpacked: the inbox slot is emptied
        assert federation.node_mailbox(node).list("inbox/") == []
    assert sorted(fake_pipeline.nodes_called()) == sorted(NODES)

    collection = federation.coordinator().collect(STUDY_ID)
    assert collection.released == sorted(NODES) and collection.missing == []
    meta_dir = federation.root / "results" / STUDY_ID / "meta"
    expected = {"allele_frequencies", "quant_trait_gwas", "binary_trait_gwas"}
    assert {path.name.removesuffix(".tsv.gz") for path in collection.meta_files} == expected
    for name in expected:
        assert (meta_dir / f"{name}.tsv.gz").is_file()
        assert (meta_dir / f"{name}.tsv.gz-meta.yaml").is_file()

    # the verified copies are byte for byte what each node released; beside them, what the
    # node signed and the node's crate (provenance.crate)
    for node in NODES:
        released = load_node(federation.configs.nodes[node]).results_dir / STUDY_ID / "nodes" / node
        copy = federation.root / "results" / STUDY_ID / "nodes" / node
        names = sorted(path.name for path in released.iterdir())
        kept = sorted(path.name for path in copy.iterdir())
        assert kept == sorted([*names, "ro-crate-metadata.json", "signed"])
        for name in names:
            assert (copy / name).read_bytes() == (released / name).read_bytes()

    quant = sumstats.read_table(meta_dir / "quant_trait_gwas.tsv.gz")
    assert len(quant) == N_VARIANTS and set(quant["n_studies"]) == {3}
    inputs = [
        sumstats.read_table(
            federation.root / "results" / STUDY_ID / "nodes" / n / "quant_trait_gwas.tsv.gz"
        )
        for n in NODES
    ]
    weights = np.column_stack([1 / frame["standard_error"] ** 2 for frame in inputs])
    betas = np.column_stack([frame["beta"] for frame in inputs])
    ivw = (weights * betas).sum(axis=1) / weights.sum(axis=1)
    by_position = quant.set_index(["chromosome", "base_pair_location"])
    loci = zip(inputs[0]["chromosome"], inputs[0]["base_pair_location"], strict=True)
    merged = by_position.loc[list(loci)]
    assert (merged["effect_allele"].to_numpy() == inputs[0]["effect_allele"].to_numpy()).all()
    np.testing.assert_allclose(merged["beta"].to_numpy(), ivw, rtol=1e-5)
    planted = merged.iloc[list(PLANTED)]
    assert (planted["p_value"].astype(float) < GENOME_WIDE).all()
    planted_ids = list(inputs[0]["variant_id"].iloc[list(PLANTED)])  # chr:pos:ref:alt
    summary = summarise_meta(meta_dir / "quant_trait_gwas.tsv.gz", planted_ids)
    assert summary.planted_found == planted_ids and summary.planted_missed == []
    assert (merged["p_value"].astype(float) >= GENOME_WIDE).sum() == N_VARIANTS - len(PLANTED)

    frequencies = sumstats.read_table(meta_dir / "allele_frequencies.tsv.gz")
    assert set(frequencies["node_id"]) == {*NODES, "pooled"}

    status = format_status(coordinator.ledger, STUDY_ID)
    assert f"study {STUDY_ID}: meta_analysed (quorum 3 of 3)" in status
    for node in NODES:
        assert any(line.split()[:2] == [node, "released"] for line in status.splitlines())
    assert "released: 3; missing: none" in status

    for node in NODES:
        events = [entry["event"] for entry in federation.audit(node)]
        assert events.count("task_approved") == 1 and events.count("result_published") == 1


def test_the_coordinator_keeps_each_nodes_signed_audit_head_and_it_catches_a_rewrite(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    coordinator = federation.coordinator()
    coordinator.submit(federation.study_path)
    federation.agent("fi").run_once()
    federation.coordinator().collect(STUDY_ID)
    anchors = coordinator.settings.state_dir / "audit-anchors" / "fi.jsonl"
    [kept] = [json.loads(line) for line in anchors.read_text().splitlines()]
    marker = json.loads(kept["signed_marker"])
    assert marker["payload"]["audit_head"] == kept["audit_head"]  # signed by the node
    log = load_node(federation.configs.nodes["fi"]).federation.audit_log
    assert main(["audit", "verify", str(log), "--anchor", str(anchors)]) == 0
    # Whoever can write the node's log and head rewrites it consistently from record 1 on.
    lines = log.read_text().splitlines()[:1]
    log.write_text(lines[0] + "\n")
    head_path(log).write_text(json.dumps({"records": 1, "last_hash": json.loads(lines[0])["hash"]}))
    for _ in range(kept["audit_head"]["records"] + 2):
        append_event(log, "task_seen", node_id="fi", task_id="nothing to see")
    assert main(["audit", "verify", str(log)]) == 0  # consistent without the anchor
    assert main(["audit", "verify", str(log), "--anchor", str(anchors)]) == 1


@pytest.mark.parametrize("case", ["mixed_builds", "empty_releases"])
def test_the_coordinator_never_says_meta_analysed_over_nothing(
    federation: Federation,
    fake_pipeline: FakePipeline,
    capsys: pytest.CaptureFixture,
    case: str,
) -> None:
    """A node declaring GRCh37 among GRCh38 ones, or releases with a header and no row: the
    GWAS meta-analyses are refused, the study is `failed` and `study collect` exits 1."""
    if case == "mixed_builds":
        fake_pipeline.builds["ee"] = "GRCh37"
    else:
        fake_pipeline.empty = True
    coordinator = federation.coordinator()
    coordinator.submit(federation.study_path)
    for node in NODES:
        federation.agent(node).run_once()
    lines: list[str] = []
    collection = Coordinator(
        load_coordinator(federation.configs.coordinator), progress=lines.append
    ).collect(STUDY_ID)
    assert collection.released == sorted(NODES)
    assert {path.name for path in collection.meta_files} <= {"allele_frequencies.tsv.gz"}
    ledger = CoordinatorLedger(load_coordinator(federation.configs.coordinator).ledger_path)
    assert ledger.study(STUDY_ID).status is StudyStatus.FAILED
    failed = [line for line in lines if "meta-analysis of 'quant_trait_gwas' failed" in line]
    expected = "GRCh37" if case == "mixed_builds" else "no usable variant"
    assert failed and expected in failed[0]
    code = main(
        ["study", "collect", STUDY_ID, "--coordinator", str(federation.configs.coordinator)]
    )
    assert code == 1
    assert "failed" in capsys.readouterr().out


def test_quorum_two_of_three_meta_analyses_and_names_the_silent_node(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_path = federation.write_study("quorum-study", quorum=2)
    coordinator = federation.coordinator()
    coordinator.submit(study_path)
    for node in ("fi", "ee"):  # 'nl' never answers
        federation.agent(node).run_once()

    collection = federation.coordinator().collect("quorum-study")
    assert collection.released == ["ee", "fi"] and collection.missing == ["nl"]
    assert collection.statuses["nl"] is TaskStatus.DELIVERED
    quant = sumstats.read_table(
        federation.root / "results" / "quorum-study" / "meta" / "quant_trait_gwas.tsv.gz"
    )
    assert set(quant["n_studies"]) == {2}
    assert all(len(direction) == 2 for direction in quant["direction"])
    status = format_status(coordinator.ledger, "quorum-study")
    assert "meta_analysed (quorum 2 of 3)" in status
    assert "released: 2; missing: nl" in status
    ledger = CoordinatorLedger(load_coordinator(federation.configs.coordinator).ledger_path)
    study = ledger.study("quorum-study")
    assert study.missing_nodes == ("nl",)
    assert study.meta_nodes == ("ee", "fi")

    # Past the deadline the silent node is timed out; the meta-analysis stands as it is.
    deadline = study.deadline
    assert deadline is not None
    monkeypatch.setattr(coordinator_module, "_now", lambda: deadline + timedelta(minutes=1))
    events_before = len(ledger.events("quorum-study"))
    federation.coordinator().collect("quorum-study")
    assert _status(coordinator, "quorum-study", "nl") == (
        TaskStatus.TIMED_OUT,
        "no result before the deadline",
    )
    new_events = [event["event"] for event in ledger.events("quorum-study")[events_before:]]
    assert new_events == ["task_timed_out"]  # no second meta-analysis over the same nodes
    assert "nl       timed_out" in format_status(coordinator.ledger, "quorum-study")


def test_a_late_node_is_added_to_the_meta_analysis_once(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    study_path = federation.write_study("late-study", quorum=2)
    federation.coordinator().submit(study_path)
    for node in ("fi", "ee"):
        federation.agent(node).run_once()
    federation.coordinator().collect("late-study")
    federation.agent("nl").run_once()
    collection = federation.coordinator().collect("late-study")
    assert collection.released == sorted(NODES) and collection.missing == []
    meta = federation.root / "results" / "late-study" / "meta" / "quant_trait_gwas.tsv.gz"
    assert set(sumstats.read_table(meta)["n_studies"]) == {3}
    ledger = federation.coordinator().ledger
    analysed = [e for e in ledger.events("late-study") if e["event"] == "study_meta_analysed"]
    assert len(analysed) == 2  # over fi+ee, then over all three; a third collect adds none
    federation.coordinator().collect("late-study")
    assert len([e for e in ledger.events("late-study") if e["event"] == "study_meta_analysed"]) == 2


def test_a_study_that_cannot_reach_its_quorum_fails(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    study_path = federation.write_study("doomed-study", quorum=3)
    # 'fi' refuses every task (it has published no policy, so the pre-flight cannot tell)
    federation.set_node("fi", approved_workflows=[], unapproved_workflows="refuse")
    federation.coordinator().submit(study_path)
    federation.agent("fi").run_once()
    collection = federation.coordinator().collect("doomed-study")
    assert collection.meta_files == [] and collection.statuses["fi"] is TaskStatus.REJECTED
    assert federation.coordinator().ledger.study("doomed-study").status == StudyStatus.FAILED
    assert "doomed-study: failed" in format_status(federation.coordinator().ledger, "doomed-study")


# ------------------------------------------------------------------ refused tasks


@dataclass(frozen=True)
class Forged:
    study_id: str
    task_id: str
    node_id: str


def _valid_bundle(federation: Federation, study_id: str, out: Path) -> tuple[Path, Any]:
    study_path = federation.write_study(study_id)
    manifest = pack_bundle(pipeline_files(REPO_ROOT, study_path), out, {"study_id": study_id})
    return out, manifest


def forge_task(
    federation: Federation,
    name: str,
    *,
    node_id: str = "fi",
    bundle: Path | None = None,
    payload_changes: dict[str, Any] | None = None,
    sign: Callable[[dict[str, Any]], Any] | None = None,
    after_delivery: Callable[[LocalTransport, str], None] | None = None,
    addressed_to: str | None = None,
) -> Forged:
    """Deliver a hand-made task to `node_id`'s inbox, known to the coordinator as study `name`.

    The payload is what the coordinator would sign, with `payload_changes` applied; `sign`
    turns it into the envelope (default: the real coordinator key).
    """
    study_id = f"attack-{name}"
    scratch = federation.root / "forged" / name
    scratch.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle, manifest = _valid_bundle(federation, study_id, scratch / "bundle.tar")
        manifest_digest, flow_digest = manifest.digest, workflow_digest(manifest)
    else:
        manifest_digest, flow_digest = "0" * 64, federation.digest
    coordinator = federation.coordinator()
    task_id = uuid.uuid4().hex
    issued = datetime.now(UTC)
    payload = {
        "format": TASK_FORMAT,
        "study_id": study_id,
        "task_id": task_id,
        "node_id": addressed_to or node_id,
        "sequence": coordinator.ledger.next_sequence(node_id),
        "issued_at": issued.isoformat(timespec="seconds"),
        "expires_at": (issued + timedelta(hours=1)).isoformat(timespec="seconds"),
        "bundle_sha256": sha256_file(bundle),
        "manifest_digest": manifest_digest,
        "workflow_digest": flow_digest,
        "federation_version": __version__,
        "engine": "snakemake",
    }
    payload.update(payload_changes or {})
    key = load_private_key(federation.root / "keys" / f"{COORDINATOR_ID}.key")
    envelope = sign(payload) if sign else sign_document(payload, key, COORDINATOR_ID)
    mailbox = federation.node_mailbox(node_id)
    mailbox.put_file(f"inbox/{task_id}/bundle.tar", bundle)
    mailbox.put_bytes(f"inbox/{task_id}/envelope.json", canonical_json(envelope))
    if after_delivery:
        after_delivery(mailbox, task_id)
    spec = load_study(federation.write_study(study_id))
    coordinator.ledger.add_study(spec, 1, payload["expires_at"])
    coordinator.ledger.add_task(task_id, study_id, node_id, int(payload["sequence"]), payload)
    return Forged(study_id, task_id, node_id)


def _signed_with_stranger_key(federation: Federation) -> Callable[[dict[str, Any]], Any]:
    stranger = generate_keypair(federation.root / "stranger", COORDINATOR_ID)
    return lambda payload: sign_document(payload, stranger.private_key, COORDINATOR_ID)


def _edited_after_signing(federation: Federation) -> Callable[[dict[str, Any]], Any]:
    key = load_private_key(federation.root / "keys" / f"{COORDINATOR_ID}.key")

    def sign(payload: dict[str, Any]) -> Any:
        envelope = sign_document(payload, key, COORDINATOR_ID)
        envelope["payload"]["expires_at"] = "2999-01-01T00:00:00+00:00"
        return envelope

    return sign


def _bundle_changed_after_signing(mailbox: LocalTransport, task_id: str) -> None:
    path = mailbox.root / "inbox" / task_id / "bundle.tar"
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert "Snakefile" in names
    data = bytearray(path.read_bytes())
    at = data.find(b"rule all")
    assert at > 0
    data[at : at + 8] = b"rule ALL"  # same size, same tar layout, different content
    path.write_bytes(bytes(data))


def _archive(federation: Federation, name: str, member: Any) -> Path:
    path = federation.root / "forged" / f"{name}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    hand_made_tar(path, {"Snakefile": b"rule all:\n"}, extra=[member])
    return path


def _assert_refused(
    federation: Federation,
    forged: Forged,
    outcomes: list[TaskOutcome],
    fragment: str,
    fake_pipeline: FakePipeline,
) -> str:
    """The node refused the task with a one-line reason, audited, ran nothing, told the coordinator."""
    assert [outcome.status for outcome in outcomes] == [TaskStatus.REJECTED]
    reason = outcomes[0].reason
    assert reason is not None and fragment in reason, reason
    assert "\n" not in reason
    assert federation.refusals(forged.node_id, forged.task_id) == [reason]
    assert fake_pipeline.calls == []
    task_dir = federation.work_dir(forged.node_id) / "tasks" / forged.task_id
    assert not (task_dir / "bundle").exists()
    assert not (federation.work_dir(forged.node_id) / STUDY_ID).exists()
    assert federation.node_mailbox(forged.node_id).list(f"inbox/{forged.task_id}/") == []
    assert str(federation.root) not in reason  # no node paths leave the node
    federation.coordinator().collect(forged.study_id)
    status = _status(federation.coordinator(), forged.study_id, forged.node_id)
    assert status == (TaskStatus.REJECTED, reason)
    assert federation.coordinator().ledger.results(forged.study_id) == {}
    return reason


REFUSALS: dict[str, tuple[Callable[[Federation], dict[str, Any]], str]] = {
    "unsigned": (lambda fed: {"sign": lambda payload: payload}, "no 'signature' (unsigned)"),
    "wrong_key": (
        lambda fed: {"sign": _signed_with_stranger_key(fed)},
        "matches no key in the node 'fi' trusted coordinators",
    ),
    "payload_edited_after_signing": (
        lambda fed: {"sign": _edited_after_signing(fed)},
        "signature does not match the content",
    ),
    "bundle_changed_after_signing": (
        lambda fed: {"after_delivery": _bundle_changed_after_signing},
        "does not match the signed",
    ),
    "dot_dot_member": (
        lambda fed: {"bundle": _archive(fed, "dotdot", regular("../x", b"escaped"))},
        "member '../x' has a '..' component",
    ),
    "absolute_member": (
        lambda fed: {"bundle": _archive(fed, "absolute", regular(str(ABSOLUTE_TARGET), b"abs"))},
        "is an absolute path",
    ),
    "symlink_member": (
        lambda fed: {"bundle": _archive(fed, "symlink", special("link", tarfile.SYMTYPE, "/etc"))},
        "is a symlink -> '/etc'; only regular files are allowed",
    ),
    "expired": (
        lambda fed: {
            "payload_changes": {
                "issued_at": (datetime.now(UTC) - timedelta(hours=3)).isoformat(timespec="seconds"),
                "expires_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(
                    timespec="seconds"
                ),
            }
        },
        "expired at",
    ),
    "addressed_to_another_node": (
        lambda fed: {"addressed_to": "ee"},
        "addressed to node 'ee', not 'fi'",
    ),
    "future_issue_time": (
        lambda fed: {
            "payload_changes": {
                "issued_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds"),
                "expires_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat(
                    timespec="seconds"
                ),
            }
        },
        "issued in the future",
    ),
}


@pytest.mark.parametrize("attack", sorted(REFUSALS))
def test_node_refuses_forged_tasks(
    federation: Federation, fake_pipeline: FakePipeline, attack: str
) -> None:
    build, fragment = REFUSALS[attack]
    forged = forge_task(federation, attack.replace("_", "-"), **build(federation))
    outcomes = federation.agent("fi").run_once()
    _assert_refused(federation, forged, outcomes, fragment, fake_pipeline)
    # nothing escaped the task directory
    assert not [path for path in federation.root.rglob("x")] and not ABSOLUTE_TARGET.exists()
    assert not [path for path in federation.root.rglob("*") if path.is_symlink()]
    # the refusal is remembered: the next run neither re-examines nor re-audits it
    assert federation.agent("fi").run_once() == []
    assert len(federation.refusals("fi", forged.task_id)) == 1


def test_unapproved_workflow_is_refused_by_a_node_that_refuses_them(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    """A correctly signed bundle whose pipeline differs from every approved one, at a node
    that refuses unapproved workflows instead of holding them for its admin."""
    federation.set_node("fi", unapproved_workflows="refuse")
    study_path = federation.write_study("attack-unapproved")
    files = pipeline_files(REPO_ROOT, study_path)
    changed = federation.root / "forged" / "Snakefile"
    changed.parent.mkdir(parents=True, exist_ok=True)
    changed.write_text(files["Snakefile"].read_text() + "\n# a change nobody reviewed\n")
    files["Snakefile"] = changed
    out = federation.root / "forged" / "unapproved.tar"
    manifest = pack_bundle(files, out, {"study_id": "attack-unapproved"})
    assert workflow_digest(manifest) != federation.digest
    forged = forge_task(
        federation,
        "unapproved",
        bundle=out,
        payload_changes={
            "manifest_digest": manifest.digest,
            "workflow_digest": workflow_digest(manifest),
        },
    )
    outcomes = federation.agent("fi").run_once()
    _assert_refused(
        federation,
        forged,
        outcomes,
        f"workflow {workflow_digest(manifest)} is not approved by node 'fi', which refuses",
        fake_pipeline,
    )


def test_an_empty_allow_list_runs_nothing_unattended(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    federation.set_node("fi", approved_workflows=[])
    forged = forge_task(federation, "empty-allow-list")
    [outcome] = federation.agent("fi").run_once()
    assert outcome.status is TaskStatus.HELD and fake_pipeline.calls == []
    assert outcome.reason and f"workflow {federation.digest} is not approved" in outcome.reason
    federation.set_node("fi", unapproved_workflows="refuse")
    refused = forge_task(federation, "empty-allow-list-refused")
    outcomes = federation.agent("fi").run_once()
    held = [o for o in outcomes if o.task_id == forged.task_id]
    assert [o.status for o in held] == [TaskStatus.HELD]  # a decision already taken stands
    _assert_refused(
        federation,
        refused,
        [o for o in outcomes if o.task_id == refused.task_id],
        "which refuses unapproved workflows",
        fake_pipeline,
    )


def test_a_task_signed_before_one_already_run_is_still_run(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    """A late task is not a replay: the node ran sequence 10 before 9 arrived; 9 runs too."""
    first = forge_task(federation, "newer", payload_changes={"sequence": 10})
    assert federation.agent("fi").run_once() == [TaskOutcome(first.task_id, TaskStatus.RELEASED)]
    older = forge_task(federation, "older", payload_changes={"sequence": 9})
    assert federation.agent("fi").run_once() == [TaskOutcome(older.task_id, TaskStatus.RELEASED)]
    assert [call["study"] for call in fake_pipeline.calls] == ["attack-newer", "attack-older"]
    assert federation.refusals("fi", older.task_id) == []


def test_replayed_task_is_refused_and_counted_once(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    coordinator = federation.coordinator()
    submission = coordinator.submit(federation.study_path)
    task_id = submission.tasks["fi"]
    inbox = federation.node_mailbox("fi")
    saved = {
        name: inbox.get_bytes(f"inbox/{task_id}/{name}") for name in ("envelope.json", "bundle.tar")
    }
    assert federation.agent("fi").run_once() == [TaskOutcome(task_id, TaskStatus.RELEASED)]
    coordinator.collect(STUDY_ID)
    completes = inbox.get_bytes(f"outbox/{task_id}/COMPLETE")

    for name, data in saved.items():  # the same signed task, delivered again
        inbox.put_bytes(f"inbox/{task_id}/{name}", data)
    outcomes = federation.agent("fi").run_once()
    assert [o.status for o in outcomes] == [TaskStatus.REJECTED]
    assert "already seen (replay" in str(outcomes[0].reason)
    assert federation.refusals("fi", task_id) == [outcomes[0].reason]
    assert fake_pipeline.nodes_called() == ["fi"]  # ran once, for the original
    assert inbox.list(f"inbox/{task_id}/") == []
    assert inbox.get_bytes(f"outbox/{task_id}/COMPLETE") == completes  # nothing re-published
    federation.coordinator().collect(STUDY_ID)
    assert _status(coordinator, STUDY_ID, "fi")[0] is TaskStatus.RELEASED
    assert list(coordinator.ledger.results(STUDY_ID)) == ["fi"]


def test_a_refused_task_does_not_block_the_next_one(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    bad = forge_task(federation, "bad", sign=lambda payload: payload)
    good = forge_task(federation, "good")
    outcomes = {o.task_id: o.status for o in federation.agent("fi").run_once()}
    assert outcomes == {bad.task_id: TaskStatus.REJECTED, good.task_id: TaskStatus.RELEASED}
    assert fake_pipeline.nodes_called() == ["fi"]


# ------------------------------------------------------------------ refused results


def _released_task(federation: Federation) -> tuple[Coordinator, str]:
    coordinator = federation.coordinator()
    task_id = coordinator.submit(federation.study_path).tasks["fi"]
    assert federation.agent("fi").run_once()[0].status is TaskStatus.RELEASED
    return coordinator, task_id


def _resign_complete(federation: Federation, task_id: str, key: Any, signer: str) -> None:
    outbox = federation.node_mailbox("fi")
    payload = json.loads(outbox.get_bytes(f"outbox/{task_id}/COMPLETE"))["payload"]
    assert payload["format"] == RESULT_FORMAT
    outbox.put_bytes(
        f"outbox/{task_id}/COMPLETE", canonical_json(sign_document(payload, key, signer))
    )


@pytest.mark.parametrize(
    ("forgery", "fragment"),
    [
        ("unknown_node_key", "matches no key in the coordinator's pinned node keys"),
        ("another_node", "signer 'ee' != expected signer 'fi'"),
        ("tampered_result", f"{SEALED_RESULT}: ciphertext sha256"),
    ],
)
def test_coordinator_refuses_forged_results(
    federation: Federation, fake_pipeline: FakePipeline, forgery: str, fragment: str
) -> None:
    coordinator, task_id = _released_task(federation)
    if forgery == "unknown_node_key":
        stranger = generate_keypair(federation.root / "stranger", "fi")
        _resign_complete(federation, task_id, stranger.private_key, "fi")
    elif forgery == "another_node":
        _resign_complete(
            federation, task_id, load_private_key(federation.root / "keys" / "ee.key"), "ee"
        )
    else:
        result = federation.node_mailbox("fi").root / "outbox" / task_id / SEALED_RESULT
        data = bytearray(result.read_bytes())
        data[len(data) // 3] ^= 0x01  # one bit, somewhere in the released files
        result.write_bytes(bytes(data))
    collection = federation.coordinator().collect(STUDY_ID)
    status, reason = _status(coordinator, STUDY_ID, "fi")
    assert status is TaskStatus.FAILED and reason is not None and fragment in reason, reason
    assert "fi" not in collection.released and "fi" in collection.missing
    assert not (federation.root / "results" / STUDY_ID / "nodes" / "fi").exists()
    assert coordinator.ledger.results(STUDY_ID) == {}


# ------------------------------------------------------------------ faults and restarts


def test_node_killed_mid_run_resumes_and_releases_once(
    federation: Federation, fake_pipeline: FakePipeline
) -> None:
    coordinator = federation.coordinator()
    task_id = coordinator.submit(federation.study_path).tasks["fi"]
    node_ledger = NodeLedger(federation.work_dir("fi") / "node-ledger.sqlite")

    def killed_once(node_config: Path, study_config: Path) -> None:
        assert node_ledger.status(task_id) is TaskStatus.RUNNING
        fake_pipeline.before_run = None
        raise KeyboardInterrupt  # the node's process dies mid-pipeline

    fake_pipeline.before_run = killed_once
    with pytest.raises(KeyboardInterrupt):
        federation.agent("fi").run_once()
    assert node_ledger.status(task_id) is TaskStatus.RUNNING
    assert not federation.node_mailbox("fi").exists(f"outbox/{task_id}/COMPLETE")
    coordinator.collect(STUDY_ID)  # the coordinator sees a running task, nothing to count
    assert _status(coordinator, STUDY_ID, "fi")[0] is TaskStatus.RUNNING

    assert federation.agent("fi").run_once() == [TaskOutcome(task_id, TaskStatus.RELEASED)]
    assert [call["unlock"] for call in fake_pipeline.calls] == [False, True]
    assert federation.agent("fi").run_once() == []  # nothing left to do, nothing re-run
    events = [entry["event"] for entry in federation.audit("fi")]
    assert events.count("result_published") == 1 and events.count("task_resumed") == 1
    coordinator.collect(STUDY_ID)
    assert list(coordinator.ledger.results(STUDY_ID)) == ["fi"]


def test_node_killed_after_publishing_does_not_publish_twice(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = federation.coordinator().submit(federation.study_path).tasks["fi"]
    original = NodeLedger.transition

    def dies_before_recording_release(
        self: NodeLedger, task: str, status: TaskStatus, **changes: Any
    ) -> bool:
        if status is TaskStatus.RELEASED:
            raise SystemExit(137)
        return original(self, task, status, **changes)

    monkeypatch.setattr(NodeLedger, "transition", dies_before_recording_release)
    with pytest.raises(SystemExit):
        federation.agent("fi").run_once()
    monkeypatch.setattr(NodeLedger, "transition", original)
    complete = federation.node_mailbox("fi").get_bytes(f"outbox/{task_id}/COMPLETE")

    assert federation.agent("fi").run_once() == [TaskOutcome(task_id, TaskStatus.RELEASED)]
    assert fake_pipeline.nodes_called() == ["fi"]  # the published result is not recomputed
    assert federation.node_mailbox("fi").get_bytes(f"outbox/{task_id}/COMPLETE") == complete
    assert [e["event"] for e in federation.audit("fi")].count("result_published") == 1


def test_node_killed_before_unpacking_resumes_from_its_ledger(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = federation.coordinator().submit(federation.study_path).tasks["fi"]
    original = agent_module.unpack_bundle

    def dies_while_unpacking(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(agent_module, "unpack_bundle", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(agent_module, "unpack_bundle", dies_while_unpacking)
    with pytest.raises(KeyboardInterrupt):
        federation.agent("fi").run_once()
    assert federation.agent("fi").run_once() == [TaskOutcome(task_id, TaskStatus.RELEASED)]
    assert fake_pipeline.nodes_called() == ["fi"]
    assert federation.node_mailbox("fi").list("inbox/") == []
    assert federation.refusals("fi", task_id) == []


def test_mailbox_outage_while_publishing_defers_and_never_shows_half_a_result(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator = federation.coordinator()
    task_id = coordinator.submit(federation.study_path).tasks["fi"]
    original = LocalTransport.put_bytes

    def outage_at_the_marker(self: LocalTransport, key: str, data: bytes) -> None:
        if key.endswith("/COMPLETE"):
            raise TransportError(f"{self.location}: connection reset (outage)")
        original(self, key, data)

    monkeypatch.setattr(LocalTransport, "put_bytes", outage_at_the_marker)
    assert federation.agent("fi").run_once() == []  # deferred, not failed
    outbox = federation.node_mailbox("fi")
    assert outbox.exists(f"outbox/{task_id}/{SEALED_RESULT}")
    assert not outbox.exists(f"outbox/{task_id}/COMPLETE")
    assert [e["event"] for e in federation.audit("fi")][-1] == "task_deferred"
    coordinator.collect(STUDY_ID)  # a result without its marker is not a result
    assert coordinator.ledger.results(STUDY_ID) == {}
    assert _status(coordinator, STUDY_ID, "fi")[0] is TaskStatus.RUNNING

    monkeypatch.setattr(LocalTransport, "put_bytes", original)
    assert federation.agent("fi").run_once() == [TaskOutcome(task_id, TaskStatus.RELEASED)]
    coordinator.collect(STUDY_ID)
    assert list(coordinator.ledger.results(STUDY_ID)) == ["fi"]


def test_coordinator_restarted_during_collection_counts_each_result_once(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation.coordinator().submit(federation.study_path)
    for node in NODES:
        federation.agent(node).run_once()
    original = CoordinatorLedger.record_result
    recorded: list[str] = []

    def killed_at_the_second_result(
        self: CoordinatorLedger, task_id: str, digest: str, path: Path
    ) -> bool:
        if len(recorded) == 1:
            raise KeyboardInterrupt  # the coordinator dies with one result stored
        recorded.append(task_id)
        return original(self, task_id, digest, path)

    monkeypatch.setattr(CoordinatorLedger, "record_result", killed_at_the_second_result)
    with pytest.raises(KeyboardInterrupt):
        federation.coordinator().collect(STUDY_ID)
    monkeypatch.setattr(CoordinatorLedger, "record_result", original)
    assert len(federation.coordinator().ledger.results(STUDY_ID)) == 1

    restarted = federation.coordinator()
    collection = restarted.collect(STUDY_ID)
    assert collection.released == sorted(NODES)
    events = restarted.ledger.events(STUDY_ID)
    received = [event["node_id"] for event in events if event["event"] == "result_received"]
    assert sorted(received) == sorted(NODES)  # each result counted exactly once
    assert [event["event"] for event in events].count("study_meta_analysed") == 1
    meta = federation.root / "results" / STUDY_ID / "meta" / "quant_trait_gwas.tsv.gz"
    meta_bytes = meta.read_bytes()

    again = federation.coordinator()
    assert again.collect(STUDY_ID).meta_files == collection.meta_files
    assert again.ledger.events(STUDY_ID) == events  # a second collect changes nothing
    assert meta.read_bytes() == meta_bytes
    for node, task_id in _task_ids(again, STUDY_ID).items():
        assert not again.ledger.record_result(task_id, "0" * 64, federation.root / node)
    assert again.ledger.results(STUDY_ID) == restarted.ledger.results(STUDY_ID)


def test_undeliverable_node_is_recorded_and_the_others_proceed(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_path = federation.write_study("partial-delivery", quorum=2)
    original = LocalTransport.put_file

    def nl_unreachable(self: LocalTransport, key: str, source: Path) -> None:
        if self.root.name == "nl":
            raise TransportError(
                f"{self.location}: host key CHANGED; refusing to connect", retryable=False
            )
        original(self, key, source)

    monkeypatch.setattr(LocalTransport, "put_file", nl_unreachable)
    coordinator = federation.coordinator()
    submission = coordinator.submit(study_path)
    monkeypatch.setattr(LocalTransport, "put_file", original)
    assert sorted(submission.tasks) == ["ee", "fi"]
    status, reason = _status(coordinator, "partial-delivery", "nl")
    assert (
        status is TaskStatus.FAILED and "not delivered" in str(reason) and "host key" in str(reason)
    )
    assert federation.node_mailbox("nl").list("inbox/") == []
    for node in ("fi", "ee"):
        federation.agent(node).run_once()
    assert federation.agent("nl").run_once() == []
    collection = coordinator.collect("partial-delivery")
    assert collection.released == ["ee", "fi"] and collection.missing == ["nl"]
    assert collection.meta_files


def test_watch_rides_out_an_unreachable_mailbox(
    federation: Federation, fake_pipeline: FakePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = federation.coordinator().submit(federation.study_path).tasks["fi"]
    original = LocalTransport.list
    failures: list[str] = []

    def down_once(self: LocalTransport, prefix: str = "") -> list[str]:
        if not failures:
            failures.append(prefix)
            raise TransportError(f"{self.location}: connection refused")
        return original(self, prefix)

    monkeypatch.setattr(LocalTransport, "list", down_once)
    federation.agent("fi").watch(interval_seconds=0, max_cycles=2)
    assert failures == ["inbox/"] and fake_pipeline.nodes_called() == ["fi"]
    assert federation.node_mailbox("fi").exists(f"outbox/{task_id}/COMPLETE")

    def denied(self: LocalTransport, prefix: str = "") -> list[str]:
        raise TransportError(f"{self.location}: list denied", retryable=False)

    monkeypatch.setattr(LocalTransport, "list", denied)
    with pytest.raises(TransportError, match="denied"):  # a configuration error stops the loop
        federation.agent("fi").watch(interval_seconds=0, max_cycles=3)
