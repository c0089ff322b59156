"""What the coordinator's study crate holds, read back from the JSON-LD it wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from federation import __version__
from federation.files import sha256_file
from federation.provenance.crate import (
    FIVE_SAFES_CRATE,
    PROVENANCE_RUN_CRATE,
    WORKFLOW_RUN_CRATE,
)
from federation.provenance.sidecars import read_sidecar_of


def _graph(path: Path) -> dict[str, dict[str, Any]]:
    return {entity["@id"]: entity for entity in json.loads(path.read_text())["@graph"]}


def _ids(value: Any) -> list[str]:
    return [item["@id"] for item in (value if isinstance(value, list) else [value])]


def test_the_study_crate_is_ro_crate_1_2_with_the_workflow_run_profiles(made_study: Path) -> None:
    document = json.loads((made_study / "ro-crate-metadata.json").read_text())
    assert document["@context"] == "https://w3id.org/ro/crate/1.2/context"
    graph = _graph(made_study / "ro-crate-metadata.json")
    assert {WORKFLOW_RUN_CRATE, PROVENANCE_RUN_CRATE} <= set(_ids(graph["./"]["conformsTo"]))


def test_the_main_entity_is_the_snakemake_workflow_with_its_digest_and_the_study_spec(
    made_study: Path,
) -> None:
    graph = _graph(made_study / "ro-crate-metadata.json")
    workflow = graph[graph["./"]["mainEntity"]["@id"]]
    assert workflow["@id"] == "workflow/Snakefile"
    assert "ComputationalWorkflow" in workflow["@type"]
    assert "snakemake" in workflow["programmingLanguage"]["@id"]
    assert workflow["sha256"] == sha256_file(made_study / "workflow" / "Snakefile")
    run = graph["#study-run"]
    assert set(_ids(run["object"])) == {"workflow/study.yaml", "bundle-manifest.json"}
    assert graph[run["agent"]["@id"]]["@type"] == "Organization"


def test_each_coordinator_step_is_a_create_action_with_digested_inputs_outputs_and_options(
    made_study: Path,
) -> None:
    graph = _graph(made_study / "ro-crate-metadata.json")
    run = graph["#run-quant_trait_gwas"]
    assert run["@type"] == "CreateAction" and run["startTime"] <= run["endTime"]
    inputs = [item for item in _ids(run["object"]) if not item.startswith("#")]
    assert sorted(inputs) == [
        f"nodes/{node}/quant_trait_gwas.tsv.gz" for node in ("ee", "fi", "nl")
    ]
    for identifier in inputs + _ids(run["result"]):
        assert graph[identifier]["sha256"] == sha256_file(made_study / identifier)
    options = {
        graph[item]["name"]: graph[item]["value"]
        for item in _ids(run["object"])
        if item.startswith("#")
    }
    assert options["random_effects"] == "false" and options["scheme"] == "ivw"


def test_each_node_has_a_nested_crate_with_the_five_safes_phases_and_its_signed_files(
    made_study: Path,
) -> None:
    graph = _graph(made_study / "ro-crate-metadata.json")
    assert graph["nodes/fi/"]["subjectOf"]["@id"] == "nodes/fi/ro-crate-metadata.json"
    node = _graph(made_study / "nodes" / "fi" / "ro-crate-metadata.json")
    assert FIVE_SAFES_CRATE in _ids(node["./"]["conformsTo"])
    phases = [node[item]["name"] for item in _ids(node["./"]["mentions"])]
    assert phases == ["check", "validation", "sign-off", "execution", "disclosure", "publishing"]
    assert all(
        node[f"#{phase}"]["actionStatus"]["@id"].endswith("CompletedActionStatus")
        for phase in phases
    )
    for name in ("signed/COMPLETE.json", "signed/MANIFEST.json", "signed/audit-head.json"):
        assert node[name]["sha256"] == sha256_file(made_study / "nodes" / "fi" / name)
    head = json.loads((made_study / "nodes" / "fi" / "signed" / "audit-head.json").read_text())
    assert node["#audit-head"]["value"] == f"{head['records']}:{head['last_hash']}"


def test_the_node_crate_says_outcomes_and_thresholds_never_a_reason(made_study: Path) -> None:
    node = _graph(made_study / "nodes" / "ee" / "ro-crate-metadata.json")
    disclosure = json.loads(node["#disclosure"]["description"])
    assert disclosure["analyses"]["quant_trait_gwas"]["outcome"] == "released"
    assert disclosure["output_review"] == {"mode": "none"}
    assert "reason" not in (made_study / "nodes" / "ee" / "ro-crate-metadata.json").read_text()


def test_meta_sidecars_name_the_code_that_ran(made_study: Path) -> None:
    sidecar = read_sidecar_of(made_study / "meta" / "quant_trait_gwas.tsv.gz")
    assert sidecar["code_identity"]["federation_version"] == __version__
