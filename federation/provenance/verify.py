"""`federation verify`: check a study's RO-Crate, one line per problem, each naming its item.

What holds when `verify_crate` finds nothing:

- the coordinator's attestation is signed by the coordinator (its key in the crate, or the key
  the reviewer pins with `--coordinator-key`), and every file it lists has that SHA-256; no
  file was added or removed since;
- every data entity with a `sha256` in the study crate and in each node's crate has it;
- every node the attestation names is in the crate, and no other;
- each node's result marker is signed by the key the coordinator pinned for that node, names
  this study and node, and signs the digest of the result manifest kept beside it, whose
  files are the node's released files, byte for byte;
- each node's audit head (signed/audit-head.json and the node crate's record of it) is the
  one the node signed in its marker;
- each meta-analysis sidecar lists exactly the inputs its run records in the crate, with their
  digests, and records its output's digest;
- the crate validates against the Workflow Run and Provenance Run Crate profiles and the
  RO-Crate 1.2 profile (their required level), when rocrate-validator is installed (`.venv-rocv`, from scripts/bootstrap.sh).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.errors import PolicyViolation
from federation.files import REPO_ROOT, sha256_file
from federation.jsonio import parse_json_strictly
from federation.protocol.signing import TrustStore, load_public_key, verify_document
from federation.provenance.crate import (
    ATTESTATION_FORMAT,
    ATTESTATION_NAME,
    AUDIT_HEAD_NAME,
    KEYS_DIR,
    MARKER_NAME,
    METADATA_NAME,
    NODES_DIR,
    RESULT_MANIFEST_NAME,
    SIGNED_DIR,
    crate_files,
)
from federation.provenance.sidecars import read_sidecar_of

VALIDATOR = REPO_ROOT / ".venv-rocv" / "bin" / "rocrate-validator"
SEED_CACHE = REPO_ROOT / "tools" / "roc-validator" / "seed_cache.py"
# The profiles a study crate is validated against (the validator checks the ones they build on,
# which include RO-Crate 1.1); ro-crate-1.2 is the stricter base the crates declare (its MUSTs
# include a `url` and a `version` on every SoftwareApplication and ComputerLanguage).
VALIDATION_PROFILES = ("workflow-run-crate", "provenance-run-crate", "ro-crate-1.2")
VALIDATION_TIMEOUT_SECONDS = 300  # one profile takes seconds; a hung validator is a problem


@dataclass
class Verification:
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, line: str) -> None:
        if line not in self.problems:
            self.problems.append(line)


def study_folder(crate_or_dir: Path) -> Path:
    return crate_or_dir.parent if crate_or_dir.name == METADATA_NAME else crate_or_dir


def _load(path: Path) -> Any:
    return parse_json_strictly(path.read_bytes())


def _graph(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {entity["@id"]: entity for entity in metadata.get("@graph", []) if "@id" in entity}


def _ids(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if value else []
    return [item["@id"] for item in items if isinstance(item, Mapping) and "@id" in item]


def _digested(graph: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, str]]:
    for identifier, entity in graph.items():
        if isinstance(entity.get("sha256"), str):
            yield identifier, entity["sha256"]


def _check_digests(
    base: Path, where: str, metadata: Mapping[str, Any], result: Verification
) -> None:
    for identifier, recorded in _digested(_graph(metadata)):
        path = base / identifier
        shown = f"{where}{identifier}"
        if not path.is_file():
            result.problem(f"missing file: {shown} (the crate records sha256 {recorded[:12]}...)")
            continue
        actual = sha256_file(path)
        if actual != recorded:
            result.problem(
                f"changed file: {shown} (sha256 {actual[:12]}..., the crate records {recorded[:12]}...)"
            )


def _attestation(study_dir: Path, coordinator_key: Path | None, result: Verification) -> dict:
    path = study_dir / ATTESTATION_NAME
    if not path.is_file():
        result.problem(f"{ATTESTATION_NAME}: missing; the crate is not signed by its coordinator")
        return {}
    try:
        document = _load(path)
        signer = str(document.get("signer"))
        key_path = coordinator_key or study_dir / KEYS_DIR / f"{signer}.pub"
        trust = TrustStore({signer: load_public_key(key_path)}, source=f"key {key_path}")
        payload, _ = verify_document(document, trust, expected_signer=signer)
    except (ValueError, PolicyViolation, OSError) as error:
        result.problem(f"{ATTESTATION_NAME}: coordinator signature does not hold: {error}")
        return {}
    except Exception as error:  # a malformed key file: SpecError and the like
        result.problem(f"{ATTESTATION_NAME}: {error}")
        return {}
    if payload.get("format") != ATTESTATION_FORMAT:
        result.problem(
            f"{ATTESTATION_NAME}: format {payload.get('format')!r} is not {ATTESTATION_FORMAT}"
        )
        return {}
    result.checked.append(f"coordinator signature ({signer}, {ATTESTATION_NAME})")
    attested = payload.get("files") or {}
    present = crate_files(study_dir)
    for name, digest in sorted(attested.items()):
        if name not in present:
            if not name.startswith(f"{NODES_DIR}/"):
                result.problem(f"missing file: {name} (attested by the coordinator)")
        elif present[name] != digest:
            result.problem(
                f"changed file: {name} (sha256 {present[name][:12]}..., the coordinator attested {digest[:12]}...)"
            )
    for name in sorted(set(present) - set(attested)):
        result.problem(f"unattested file: {name} (not in the coordinator's signed attestation)")
    return payload


def _check_node(
    study_dir: Path, study_id: str, node_id: str, pinned_key_id: str | None, result: Verification
) -> None:
    folder = study_dir / NODES_DIR / node_id
    where = f"node '{node_id}'"
    signed = folder / SIGNED_DIR
    try:
        raw = (signed / MARKER_NAME).read_bytes()
        document = parse_json_strictly(raw)
    except (OSError, ValueError) as error:
        result.problem(
            f"{where}: signed result marker {NODES_DIR}/{node_id}/{SIGNED_DIR}/{MARKER_NAME} unreadable ({error})"
        )
        return
    signing_key = document.get("key_id") if isinstance(document, dict) else None
    if pinned_key_id is not None and signing_key != pinned_key_id:
        result.problem(
            f"{where}: result signed by key {signing_key}, not by the node key the coordinator "
            f"pinned ({pinned_key_id}); re-signed by another key"
        )
    key_path = study_dir / KEYS_DIR / f"{node_id}.pub"
    try:
        trust = TrustStore({node_id: load_public_key(key_path)}, source=f"key {key_path}")
        payload, _ = verify_document(document, trust, expected_signer=node_id)
    except PolicyViolation as error:
        result.problem(f"{where}: result marker signature does not hold: {error}")
        return
    except Exception as error:  # unreadable or malformed key
        result.problem(f"{where}: {error}")
        return
    if payload.get("study_id") != study_id or payload.get("node_id") != node_id:
        result.problem(
            f"{where}: result marker names study {payload.get('study_id')!r} node {payload.get('node_id')!r}"
        )
    manifest_path = signed / RESULT_MANIFEST_NAME
    if not manifest_path.is_file():
        result.problem(f"{where}: result manifest {SIGNED_DIR}/{RESULT_MANIFEST_NAME} missing")
        return
    manifest_bytes = manifest_path.read_bytes()
    if hashlib.sha256(manifest_bytes).hexdigest() != payload.get("manifest_digest"):
        result.problem(f"{where}: result manifest is not the one the node signed (digest differs)")
    manifest = parse_json_strictly(manifest_bytes)
    for name, entry in sorted((manifest.get("files") or {}).items()):
        path = folder / name
        if not path.is_file():
            result.problem(f"{where}: released file {name} missing")
        elif sha256_file(path) != entry.get("sha256"):
            result.problem(f"{where}: released file {name} changed (not what the node signed)")
    signed_head = payload.get("audit_head")
    _check_audit_head(folder, where, signed_head, result)
    result.checked.append(f"{where}: signature, result manifest, released files, audit head")


def _check_audit_head(folder: Path, where: str, signed_head: Any, result: Verification) -> None:
    head_path = folder / SIGNED_DIR / AUDIT_HEAD_NAME
    try:
        kept = _load(head_path)
    except (OSError, ValueError):
        kept = None
    if kept != signed_head:
        result.problem(
            f"{where}: audit head in {SIGNED_DIR}/{AUDIT_HEAD_NAME} ({_head(kept)}) is not the one "
            f"the node signed ({_head(signed_head)})"
        )
    try:
        graph = _graph(_load(folder / METADATA_NAME))
    except (OSError, ValueError):
        return
    recorded = graph.get("#audit-head", {}).get("value")
    expected = _head(signed_head, ":")
    if recorded != expected:
        result.problem(
            f"{where}: audit head in its crate ({recorded}) is not the one the node signed ({expected})"
        )


def _head(head: Any, separator: str = " records, last hash ") -> str:
    if not isinstance(head, Mapping):
        return "none"
    return f"{head.get('records')}{separator}{head.get('last_hash')}"


def _check_meta(
    study_dir: Path, graph: Mapping[str, Mapping[str, Any]], result: Verification
) -> None:
    runs = [
        entity
        for identifier, entity in graph.items()
        if identifier.startswith("#run-") and entity.get("@type") == "CreateAction"
    ]
    for run in runs:
        outputs = [item for item in _ids(run.get("result")) if item.endswith(".tsv.gz")]
        inputs = {
            identifier: graph.get(identifier, {}).get("sha256")
            for identifier in _ids(run.get("object"))
            if not identifier.startswith("#")
        }
        for output in outputs:
            sidecar = read_sidecar_of(study_dir / output)
            if not sidecar:
                result.problem(f"{output}: no sidecar")
                continue
            listed = sorted(str(item.get("sha256")) for item in sidecar.get("inputs") or [])
            recorded = sorted(str(digest) for digest in inputs.values())
            if listed != recorded:
                result.problem(
                    f"{output}: its sidecar lists {len(listed)} inputs that are not the "
                    f"{len(recorded)} inputs its run records in the crate"
                )
            output_digest = graph.get(output, {}).get("sha256")
            if sidecar.get("data_file_sha256") not in (None, output_digest):
                result.problem(
                    f"{output}: its sidecar's data_file_sha256 is not the crate's digest"
                )
    if runs:
        result.checked.append(f"meta-analysis inputs of {len(runs)} runs")


def validator_command() -> Path | None:
    if VALIDATOR.is_file():
        return VALIDATOR
    found = shutil.which("rocrate-validator")
    return Path(found) if found else None


def validate_crate(crate_dir: Path, profiles: tuple[str, ...] = VALIDATION_PROFILES) -> list[str]:
    """rocrate-validator's findings against `profiles` (empty when the crate conforms).

    It runs offline, from a cache seeded with the vendored RO-Crate context (no network)."""
    command = validator_command()
    if command is None or not SEED_CACHE.is_file():
        raise FileNotFoundError(
            "rocrate-validator is not installed (scripts/bootstrap.sh makes .venv-rocv)"
        )
    problems = []
    with tempfile.TemporaryDirectory(prefix="rocv-") as scratch:
        cache = str(Path(scratch) / "http-cache")
        python = command.parent / "python"
        subprocess.run(
            [str(python), str(SEED_CACHE), cache],
            check=True,
            capture_output=True,
            timeout=VALIDATION_TIMEOUT_SECONDS,
        )
        for profile in profiles:
            report = Path(scratch) / f"{profile}.json"
            completed = subprocess.run(
                [
                    str(command),
                    "validate",
                    "--cache-path",
                    cache,
                    "--offline",
                    "-p",
                    profile,
                    "-f",
                    "json",
                    "-o",
                    str(report),
                    str(crate_dir),
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=VALIDATION_TIMEOUT_SECONDS,
                check=False,
            )
            problems += _validator_findings(profile, completed, report)
    return problems


def _validator_findings(
    profile: str, completed: subprocess.CompletedProcess[str], report_path: Path
) -> list[str]:
    try:
        text = report_path.read_text()
        report = json.loads(text[text.index("{") :])
    except (OSError, ValueError):
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        return [f"crate not validated against {profile}: {lines[-1] if lines else 'no report'}"]
    if report.get("passed") is True:
        return []
    found = []
    for issue in report.get("issues", []):
        line = (
            f"crate does not validate against {profile}: {issue.get('violatingEntity')}: "
            f"{issue.get('message')}"
        )
        if line not in found:
            found.append(line)
    return found or [f"crate does not validate against {profile}"]


def verify_crate(
    crate_or_dir: Path, *, coordinator_key: Path | None = None, validate: bool = True
) -> Verification:
    study_dir = study_folder(crate_or_dir)
    result = Verification()
    metadata_path = study_dir / METADATA_NAME
    if not metadata_path.is_file():
        result.problem(f"{metadata_path}: no RO-Crate here; give a study's results folder")
        return result
    metadata = _load(metadata_path)
    graph = _graph(metadata)
    attestation = _attestation(study_dir, coordinator_key, result)
    _check_digests(study_dir, "", metadata, result)
    study_id = str(graph.get("./", {}).get("identifier") or attestation.get("study_id"))
    crate_nodes = {
        identifier.removeprefix(f"{NODES_DIR}/").rstrip("/")
        for identifier in graph
        if identifier.startswith(f"{NODES_DIR}/") and identifier.endswith("/")
    }
    pinned = dict(attestation.get("node_keys") or {})
    for node_id in sorted(set(pinned) - crate_nodes):
        result.problem(
            f"node '{node_id}': removed from the crate (the coordinator's attestation lists it)"
        )
    for node_id in sorted(crate_nodes - set(pinned)) if attestation else []:
        result.problem(f"node '{node_id}': in the crate but not in the coordinator's attestation")
    for node_id in sorted(crate_nodes | set(pinned)):
        folder = study_dir / NODES_DIR / node_id
        if not folder.is_dir():
            result.problem(f"node '{node_id}': its folder {NODES_DIR}/{node_id}/ is missing")
            continue
        node_metadata = folder / METADATA_NAME
        if node_metadata.is_file():
            _check_digests(folder, f"{NODES_DIR}/{node_id}/", _load(node_metadata), result)
        else:
            result.problem(
                f"node '{node_id}': its crate {NODES_DIR}/{node_id}/{METADATA_NAME} is missing"
            )
        _check_node(study_dir, study_id, node_id, pinned.get(node_id), result)
    _check_meta(study_dir, graph, result)
    if validate:
        try:
            for line in validate_crate(study_dir):
                result.problem(line)
            result.checked.append(f"RO-Crate profiles: {', '.join(VALIDATION_PROFILES)}")
        except FileNotFoundError as error:
            result.notes.append(f"not validated: {error}")
    return result
