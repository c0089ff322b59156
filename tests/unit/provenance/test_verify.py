"""`federation verify` on a crate the real coordinator wrote, and on copies changed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation.cli import main
from federation.jsonio import canonical_json, parse_json_strictly
from federation.protocol.signing import generate_keypair, sign_document
from federation.provenance.crate import ATTESTATION_NAME
from federation.provenance.sidecars import find_sidecar
from federation.provenance.verify import validator_command, verify_crate


def _problems(study: Path) -> list[str]:
    return verify_crate(study, validate=False).problems


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_coordinators_crate_verifies_with_every_check_named(made_study: Path) -> None:
    result = verify_crate(made_study, validate=False)
    assert result.problems == []
    assert any("coordinator signature" in line for line in result.checked)
    assert sum(line.startswith("node '") for line in result.checked) == 3


def test_a_changed_released_file_is_named(study_copy: Path) -> None:
    _flip_a_byte(study_copy / "nodes" / "fi" / "quant_trait_gwas.tsv.gz")
    problems = _problems(study_copy)
    assert any("nodes/fi/quant_trait_gwas.tsv.gz" in line for line in problems)
    assert any(
        line.startswith("node 'fi': released file quant_trait_gwas.tsv.gz changed")
        for line in problems
    )


def test_a_changed_meta_file_is_named(study_copy: Path) -> None:
    _flip_a_byte(study_copy / "meta" / "binary_trait_gwas.tsv.gz")
    problems = _problems(study_copy)
    assert any(line.startswith("changed file: meta/binary_trait_gwas.tsv.gz") for line in problems)


def test_a_removed_node_is_named(study_copy: Path) -> None:
    metadata_path = study_copy / "ro-crate-metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["@graph"] = [e for e in metadata["@graph"] if e["@id"] != "nodes/ee/"]
    metadata_path.write_text(json.dumps(metadata))
    for path in sorted((study_copy / "nodes" / "ee").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (study_copy / "nodes" / "ee").rmdir()
    problems = _problems(study_copy)
    assert "node 'ee': removed from the crate (the coordinator's attestation lists it)" in problems


def test_a_node_result_re_signed_by_another_key_is_named(study_copy: Path, tmp_path: Path) -> None:
    marker_path = study_copy / "nodes" / "fi" / "signed" / "COMPLETE.json"
    payload = parse_json_strictly(marker_path.read_bytes())["payload"]
    stranger = generate_keypair(tmp_path / "stranger", "fi")
    marker_path.write_bytes(canonical_json(sign_document(payload, stranger.private_key, "fi")))
    (study_copy / "keys" / "fi.pub").write_bytes(stranger.public_key_path.read_bytes())
    problems = _problems(study_copy)
    assert any(
        line.startswith(f"node 'fi': result signed by key {stranger.key_id}, not by the node key")
        for line in problems
    )


def test_an_edited_audit_head_is_named(study_copy: Path) -> None:
    head_path = study_copy / "nodes" / "nl" / "signed" / "audit-head.json"
    head = json.loads(head_path.read_text())
    head["records"] -= 1
    head_path.write_text(json.dumps(head))
    problems = _problems(study_copy)
    assert any(
        line.startswith("node 'nl': audit head in signed/audit-head.json") for line in problems
    )


def test_a_meta_sidecar_that_lists_other_inputs_is_named(study_copy: Path) -> None:
    import yaml

    sidecar = find_sidecar(study_copy / "meta" / "quant_trait_gwas.tsv.gz")
    assert sidecar is not None
    document = yaml.safe_load(sidecar.read_text())
    document["inputs"] = document["inputs"][:2]
    sidecar.write_text(yaml.safe_dump(document, sort_keys=False))
    problems = _problems(study_copy)
    assert any(
        line.startswith(
            "meta/quant_trait_gwas.tsv.gz: its sidecar lists 2 inputs that are not the 3"
        )
        for line in problems
    )


def test_an_attestation_changed_after_signing_fails_the_coordinator_signature(
    study_copy: Path,
) -> None:
    path = study_copy / ATTESTATION_NAME
    document = parse_json_strictly(path.read_bytes())
    document["payload"]["files"]["meta/quant_trait_gwas.tsv.gz"] = "0" * 64
    path.write_bytes(canonical_json(document))
    problems = _problems(study_copy)
    assert any(
        line.startswith("ATTESTATION.json: coordinator signature does not hold")
        for line in problems
    )


def test_an_added_file_is_named_as_unattested(study_copy: Path) -> None:
    (study_copy / "meta" / "extra.tsv.gz").write_bytes(b"not from the coordinator")
    assert "unattested file: meta/extra.tsv.gz (not in the coordinator's signed attestation)" in (
        _problems(study_copy)
    )


def test_verify_exits_1_with_one_line_per_problem_and_0_when_all_holds(
    made_study: Path, study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(made_study), "--no-validate"]) == 0
    assert "all holds" in capsys.readouterr().out
    _flip_a_byte(study_copy / "nodes" / "nl" / "allele_frequencies.tsv.gz")
    assert main(["verify", str(study_copy / "ro-crate-metadata.json"), "--no-validate"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out and all("nl" in line for line in out)


@pytest.mark.skipif(validator_command() is None, reason="rocrate-validator: scripts/bootstrap.sh")
def test_the_crate_validates_against_the_workflow_run_provenance_run_and_ro_crate_1_2_profiles(
    made_study: Path,
) -> None:
    result = verify_crate(made_study, validate=True)
    assert result.problems == []
    assert (
        "RO-Crate profiles: workflow-run-crate, provenance-run-crate, ro-crate-1.2"
        in result.checked
    )


@pytest.mark.skipif(validator_command() is None, reason="rocrate-validator: scripts/bootstrap.sh")
def test_a_crate_without_its_main_workflow_does_not_validate(study_copy: Path) -> None:
    metadata_path = study_copy / "ro-crate-metadata.json"
    metadata = json.loads(metadata_path.read_text())
    for entity in metadata["@graph"]:
        if entity["@id"] == "./":
            del entity["mainEntity"]
    metadata_path.write_text(json.dumps(metadata))
    problems = verify_crate(study_copy, validate=True).problems
    assert any(
        line.startswith("crate does not validate against workflow-run-crate") for line in problems
    )


@pytest.mark.skipif(validator_command() is None, reason="rocrate-validator: scripts/bootstrap.sh")
def test_a_software_entity_without_a_url_fails_the_ro_crate_1_2_profile(study_copy: Path) -> None:
    metadata_path = study_copy / "ro-crate-metadata.json"
    metadata = json.loads(metadata_path.read_text())
    kernels = next(e for e in metadata["@graph"] if e["@id"] == "#software-federation._tsv")
    assert kernels["url"] == {"@id": "workflow/envs/federation.yaml"}
    assert (study_copy / "workflow" / "envs" / "federation.yaml").is_file()
    del kernels["url"]
    metadata_path.write_text(json.dumps(metadata))
    problems = verify_crate(study_copy, validate=True).problems
    assert any(
        line.startswith("crate does not validate against ro-crate-1.2: ./#software-federation._tsv")
        for line in problems
    ), problems
