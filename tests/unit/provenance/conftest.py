"""A study crate made once per session by the real coordinator and node agents over local
mailboxes, with the Hail pipeline replaced by the unit tier's fake (tests/unit/test_federation_flow.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import federation.node.agent as agent_module
from federation.coordinator.coordinator import Coordinator
from federation.node.agent import NodeAgent
from federation.protocol.bundle import pipeline_workflow_digest
from federation.sandbox.demo import demo_study, mailboxes, write_federation_configs
from federation.sandbox.synth import NodeCohort
from federation.settings import load_coordinator
from tests.unit.test_federation_flow import N_PER_NODE, NODES, STUDY_ID, FakePipeline


@pytest.fixture(scope="session")
def made_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results folder of a study three nodes released and the coordinator meta-analysed."""
    root = tmp_path_factory.mktemp("crate-flow")
    cohorts = [NodeCohort(node, N_PER_NODE, 0.01, root / "cohorts" / node) for node in NODES]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(agent_module, "run_pipeline", FakePipeline())
        with mailboxes("local", root, list(NODES), lambda line: None) as boxes:
            configs = write_federation_configs(root, cohorts, boxes, [pipeline_workflow_digest()])
        study = root / "study.yaml"
        study.write_text(yaml.safe_dump({**demo_study(list(NODES)), "study_id": STUDY_ID}))
        coordinator = Coordinator(load_coordinator(configs.coordinator))
        coordinator.submit(study)
        for node in NODES:
            agent = NodeAgent(configs.nodes[node])
            agent.run_once()
            agent.close()
        Coordinator(load_coordinator(configs.coordinator)).collect(STUDY_ID)
    return root / "results" / STUDY_ID


@pytest.fixture()
def study_copy(made_study: Path, tmp_path: Path) -> Path:
    """A copy of the made study's results, to change."""
    return Path(shutil.copytree(made_study, tmp_path / made_study.name))
