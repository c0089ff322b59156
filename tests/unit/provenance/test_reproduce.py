"""`federation reproduce` of the coordinator's side, on the crate the real coordinator wrote."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from federation.cli import main
from federation.errors import PipelineError
from federation.provenance.reproduce import (
    Comparison,
    comparable_sidecar,
    reproduce_coordinator,
)
from federation.provenance.sidecars import sidecars_in
from federation.sandbox.side_by_side import NodeRunsFailed
from tests.unit.test_federation_flow import NODES, STUDY_ID


def test_reproducing_the_meta_analyses_gives_byte_identical_files(
    made_study: Path, tmp_path: Path
) -> None:
    result = reproduce_coordinator(made_study, tmp_path / "again", progress=lambda line: None)
    assert result.different == []
    assert sorted(result.identical) == [
        f"meta/{name}.tsv.gz: byte-identical"
        for name in ("allele_frequencies", "binary_trait_gwas", "quant_trait_gwas")
    ]
    assert any("never leaves the node" in line for line in result.not_rerun)


def test_a_changed_recorded_output_is_named_as_a_difference(
    study_copy: Path, tmp_path: Path
) -> None:
    table = study_copy / "meta" / "quant_trait_gwas.tsv.gz"
    table.write_bytes(table.read_bytes() + b"\x00")  # a byte more than the coordinator wrote
    result = reproduce_coordinator(study_copy, tmp_path / "again", progress=lambda line: None)
    assert [line.split(":")[0] for line in result.different] == ["meta/quant_trait_gwas.tsv.gz"]


def test_a_recorded_version_other_than_the_installed_one_is_said_before_running(
    study_copy: Path, tmp_path: Path
) -> None:
    for sidecar in sidecars_in(study_copy / "meta"):
        document = yaml.safe_load(sidecar.read_text())
        document["software_versions"]["numpy"] = "0.0.1"
        sidecar.write_text(yaml.safe_dump(document, sort_keys=False))
    said: list[str] = []
    result = reproduce_coordinator(study_copy, tmp_path / "again", progress=said.append)
    assert said[0].startswith("software version differs: numpy recorded 0.0.1, installed ")
    assert said[1].startswith("re-running")
    assert result.version_notes == [said[0]]


def test_reproduce_exits_1_and_names_each_difference(
    study_copy: Path, tmp_path: Path, capsys
) -> None:
    table = study_copy / "meta" / "binary_trait_gwas.tsv.gz"
    table.write_bytes(table.read_bytes() + b"\x00")
    assert main(["reproduce", str(study_copy), "--out", str(tmp_path / "again")]) == 1
    assert "DIFFERENT: meta/binary_trait_gwas.tsv.gz: differs" in capsys.readouterr().out


def test_reproduce_refuses_an_unknown_node_mode(made_study: Path, tmp_path: Path, capsys) -> None:
    assert main(["reproduce", str(made_study), "--out", str(tmp_path), "--nodes", "real"]) == 2
    assert "--nodes 'real': unknown" in capsys.readouterr().err


def test_nodes_of_a_study_without_synthetic_cohorts_are_not_re_run_and_it_says_why(
    made_study: Path, tmp_path: Path
) -> None:
    from federation.sandbox.reproduce import reproduce_synthetic

    result = reproduce_synthetic(made_study, tmp_path / "again", progress=lambda line: None)
    assert [line.split(":")[0] for line in result.different] == [
        "provenance/synthetic-cohorts.json"
    ]
    assert not (tmp_path / "again").exists()


def test_sidecars_of_two_runs_compare_without_their_run_record_and_run_crate_digests() -> None:
    first = {"n": 400, "provenance_sha256": "a" * 64, "run_crate_sha256": "b" * 64}
    again = {"n": 400, "provenance_sha256": "c" * 64, "run_crate_sha256": "d" * 64}
    assert comparable_sidecar(first) == comparable_sidecar(again) == {"n": 400}
    assert comparable_sidecar({**again, "n": 401}) != comparable_sidecar(first)


@dataclass(frozen=True)
class FakeCohort:
    node_id: str
    vcf: Path
    phenotypes: Path


def _rerun_nodes_with(
    study: Path, out: Path, monkeypatch: pytest.MonkeyPatch, rerun: Callable[[str], None]
) -> Comparison:
    """`reproduce_synthetic` with the cohorts' synthesis and the node pipeline faked: each
    node's "re-run" calls `rerun(node)`, then publishes a copy of what the node released."""
    import federation.pipeline.run as run_module
    import federation.sandbox.synth as synth_module
    from federation.sandbox.reproduce import COHORTS_RECORD, reproduce_synthetic

    (study / COHORTS_RECORD).write_text(
        json.dumps({"nodes": 3, "samples_per_node": 100, "variants": 100, "seed": 1})
    )
    cohorts = [FakeCohort(node, out / f"{node}.vcf.bgz", out / f"{node}.tsv") for node in NODES]

    def synthesize(directory: Path, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(nodes=cohorts)

    def run_pipeline(node_config: Path, study_config: Path, **_: Any) -> None:
        node = yaml.safe_load(node_config.read_text())["node_id"]
        rerun(node)
        published = out / "results" / STUDY_ID / "nodes" / node
        shutil.copytree(study / "nodes" / node, published)

    monkeypatch.setattr(synth_module, "synthesize", synthesize)
    monkeypatch.setattr(run_module, "run_pipeline", run_pipeline)
    return reproduce_synthetic(study, out, progress=lambda line: None)


def test_synthetic_nodes_are_re_run_side_by_side_and_compared(
    study_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    together = threading.Barrier(len(NODES), timeout=10.0)  # breaks if run one by one
    result = _rerun_nodes_with(
        study_copy, tmp_path / "again", monkeypatch, lambda n: together.wait()
    )
    assert result.different == []
    for node in NODES:
        assert f"nodes/{node}/quant_trait_gwas.tsv.gz: byte-identical" in result.identical


def test_a_synthetic_node_whose_re_run_fails_fails_the_reproduction_naming_it(
    study_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def rerun(node: str) -> None:
        ran.append(node)
        if node == "ee":
            raise PipelineError("step qc failed: no variants left")

    with pytest.raises(NodeRunsFailed, match="^node 'ee': step qc failed: no variants left$"):
        _rerun_nodes_with(study_copy, tmp_path / "again", monkeypatch, rerun)
    assert sorted(ran) == sorted(NODES)
