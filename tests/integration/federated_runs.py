"""The federated run the integration tier shares: the synthetic federation's three nodes run the
real Snakemake/Hail pipeline side by side through their agents, and the real coordinator
collects, meta-analyses and writes the study report and the study's RO-Crate.

`tests/integration/conftest.py` runs it once per session (`federated_run`): test_federation.py
checks the federation and its statistics on it, test_provenance.py the crate the coordinator
wrote, test_node_vs_plink2.py node 'fi's release against plink2. Its files are read-only for
the tests (copy before changing). `run_federation` also serves test_federation.py's run over
S3.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from federation.coordinator.coordinator import Collection, Coordinator
from federation.coordinator.status import format_status
from federation.node.agent import NodeAgent, TaskOutcome
from federation.protocol.bundle import pipeline_workflow_digest
from federation.sandbox.demo import (
    FederationConfigs,
    Mailboxes,
    demo_study,
    mailboxes,
    write_federation_configs,
)
from federation.sandbox.side_by_side import run_side_by_side
from federation.sandbox.synth import SynthResult
from federation.settings import load_coordinator, load_node

STUDY_ID = "federated-vs-pooled"


def quiet(line: str) -> None:
    return None


def comparison_study(node_ids: list[str]) -> dict[str, Any]:
    """The demo's study without principal components: the pooled model can then be the same."""
    study = demo_study(node_ids)
    study["study_id"] = STUDY_ID
    for analysis in study["analyses"]:
        analysis.pop("principal_components", None)
    return study


@dataclass(frozen=True)
class FederatedRun:
    root: Path
    configs: FederationConfigs
    outcomes: dict[str, list[TaskOutcome]]
    collection: Collection
    status: str
    node_seconds: float
    mailbox_keys: dict[str, list[str]]  # what each node's mailbox holds after collection

    @property
    def study_dir(self) -> Path:
        """The coordinator's folder of the study: meta files, report and RO-Crate."""
        return self.root / "results" / STUDY_ID

    @property
    def meta_dir(self) -> Path:
        return self.study_dir / "meta"

    def released_dir(self, node_id: str) -> Path:
        return load_node(self.configs.nodes[node_id]).results_dir / STUDY_ID / "nodes" / node_id


def run_federation(
    root: Path,
    cohorts: SynthResult,
    transport: str,
    prepare: Callable[[Mailboxes], None] | None = None,
) -> FederatedRun:
    """Submit, run every node's agent once (the nodes side by side), collect.

    `prepare` sees the mailboxes (and their server) before anything is submitted.
    """
    node_ids = [cohort.node_id for cohort in cohorts.nodes]
    study_path = root / "study.yaml"
    root.mkdir(parents=True, exist_ok=True)
    study_path.write_text(yaml.safe_dump(comparison_study(node_ids), sort_keys=False))
    digest = pipeline_workflow_digest()
    with mailboxes(transport, root, node_ids, quiet) as boxes:
        if prepare is not None:
            prepare(boxes)
        configs = write_federation_configs(root, cohorts.nodes, boxes, [digest])
        coordinator = Coordinator(load_coordinator(configs.coordinator))
        coordinator.submit(study_path)
        started = time.monotonic()
        agents = {node: NodeAgent(configs.nodes[node]) for node in node_ids}
        try:  # the agents are closed whether or not every node's run succeeds
            runs = run_side_by_side({node: agent.run_once for node, agent in agents.items()})
        finally:
            for agent in agents.values():
                agent.close()
        outcomes = {node: run.result for node, run in runs.items()}
        node_seconds = time.monotonic() - started
        collection = coordinator.collect(STUDY_ID)
        status = format_status(coordinator.ledger, STUDY_ID)
        keys = {}
        for node in node_ids:
            with closing(coordinator.mailbox(node)) as mailbox:
                keys[node] = mailbox.list("")
    return FederatedRun(root, configs, outcomes, collection, status, node_seconds, keys)
