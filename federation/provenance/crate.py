"""The study's RO-Crate, written by the coordinator in `results/<study_id>/`.

Layout (every file listed with its SHA-256 in a crate's metadata):

    ro-crate-metadata.json        the study crate (RO-Crate 1.2; Workflow Run Crate, Provenance
                                  Run Crate for the coordinator's own steps)
    ATTESTATION.json              the coordinator's signed statement: every file's SHA-256
                                  (crate metadata included), each node's pinned key id
    keys/<name>.pub               the coordinator's and the nodes' public keys
    workflow/                     the bundle the nodes ran (pipeline files and study.yaml)
    bundle-manifest.json          that bundle's manifest (its digest is the one the tasks signed)
    meta/...                      meta-analyses and pooled allele frequencies, with sidecars
    provenance/meta-runs.json     the coordinator's runs: inputs, outputs, options, start, end
    nodes/<node_id>/              one nested crate per node, built from what the node released
        ro-crate-metadata.json    and signed: the released files, and in signed/ the node's
        signed/COMPLETE.json      signed result marker (with its audit head), the result
        signed/MANIFEST.json      manifest whose digest the marker signs, and the audit head
        signed/audit-head.json

A node's crate follows the Five Safes RO-Crate's phases (check, validation, sign-off,
execution, disclosure, publishing) as actions with their status. It says only what the node
released: per analysis the outcome and refusal category, the gate's released summary (its
rules and thresholds; never a row-level reason), how the release was reviewed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from rocrate.model.contextentity import ContextEntity
from rocrate.rocrate import ROCrate

from federation.errors import SpecError
from federation.files import atomic_write, atomic_write_json, sha256_file
from federation.jsonio import canonical_json, parse_json_strictly
from federation.protocol.bundle import inspect_bundle, unpack_bundle
from federation.protocol.manifest import STUDY_CONFIG_NAME, Manifest, workflow_digest
from federation.protocol.signing import key_id, sign_document
from federation.provenance.sidecars import find_sidecar
from federation.versions import IDENTITY_KEY, code_identity, software_versions

CRATE_VERSION = "1.2"
METADATA_NAME = "ro-crate-metadata.json"
ATTESTATION_NAME = "ATTESTATION.json"
ATTESTATION_FORMAT = "federation.crate-attestation/1"
BUNDLE_MANIFEST_NAME = "bundle-manifest.json"
WORKFLOW_DIR = "workflow"
KEYS_DIR = "keys"
NODES_DIR = "nodes"
META_DIR = "meta"
META_RUNS = Path("provenance") / "meta-runs.json"
SIGNED_DIR = "signed"  # inside a node's folder: what the node signed, as the coordinator got it
MARKER_NAME = "COMPLETE.json"
RESULT_MANIFEST_NAME = "MANIFEST.json"
AUDIT_HEAD_NAME = "audit-head.json"
REPORT_NAMES = ("report.html",)
PLOTS_DIR = "plots"
# The profiles the crates conform to (their versioned permalinks, as the validator knows them).
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
WORKFLOW_RUN_CRATE = "https://w3id.org/ro/wfrun/workflow/0.5"
PROVENANCE_RUN_CRATE = "https://w3id.org/ro/wfrun/provenance/0.5"
WORKFLOW_RO_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
FIVE_SAFES_CRATE = "https://w3id.org/5s-crate/0.4"
# What a crate of a workflow run declares (the study's crate and a node's run crate).
RUN_CRATE_DECLARATIONS = (
    (PROCESS_RUN_CRATE, "Process Run Crate", "0.5"),
    (WORKFLOW_RUN_CRATE, "Workflow Run Crate", "0.5"),
    (PROVENANCE_RUN_CRATE, "Provenance Run Crate", "0.5"),
    (WORKFLOW_RO_CRATE, "Workflow RO-Crate", "1.0"),
)
WORKFLOW_TYPES = ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"]
SPEC = "https://w3id.org/ro/crate"
NESTED_CRATE = SPEC  # a Dataset that conformsTo this is itself an RO-Crate (1.2)
LICENSE = "https://spdx.org/licenses/Apache-2.0"
COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"
# The study's main workflow per engine: the file inside workflow/ and its language.
MAIN_WORKFLOW = {"snakemake": "Snakefile", "cwl": "workflows/node_pipeline.cwl"}
LANGUAGES: dict[str, dict[str, Any]] = {
    "snakemake": {
        "@id": "https://w3id.org/workflowhub/workflow-ro-crate#snakemake",
        "name": "Snakemake",
        "url": {"@id": "https://snakemake.readthedocs.io"},
    },
    "cwl": {
        "@id": "https://w3id.org/workflowhub/workflow-ro-crate#cwl",
        "name": "Common Workflow Language",
        "url": {"@id": "https://www.commonwl.org/"},
        "version": "v1.2",  # workflows/*.cwl `cwlVersion`
    },
}
# The package has no public page: its software entities (the package, its C++ kernels, the
# coordinator's tools) point at the software environment record the crate holds, and carry
# the code identity (version, git commit) that names the exact code.
OWN_SOFTWARE_URL = f"{WORKFLOW_DIR}/envs/federation.yaml"


META_KIND = "meta-analysis"
POOLED_KIND = "pooled-allele-frequencies"


def options_record(options: Any) -> dict[str, Any]:
    """A `meta.options.MetaOptions` as the crate records it (what `reproduce` re-runs with)."""
    low, high = options.palindromic_maf_band
    return {
        "random_effects": bool(options.random_effects),
        "genomic_control": bool(options.genomic_control),
        "scheme": options.scheme.value,
        "palindromic_maf_band": f"{low}-{high}",
    }


@dataclass(frozen=True)
class MetaRun:
    """One coordinator step: a meta-analysis or the pooled allele frequencies."""

    analysis_id: str
    kind: str  # "meta-analysis" or "pooled-allele-frequencies"
    inputs: tuple[str, ...]  # paths relative to the study folder
    output: str
    options: Mapping[str, Any]
    start: str
    end: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "analysis_id": self.analysis_id,
            "kind": self.kind,
            "inputs": list(self.inputs),
            "output": self.output,
            "options": dict(self.options),
            "start": self.start,
            "end": self.end,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> MetaRun:
        return cls(
            str(value["analysis_id"]),
            str(value["kind"]),
            tuple(str(item) for item in value["inputs"]),
            str(value["output"]),
            dict(value.get("options") or {}),
            str(value["start"]),
            str(value["end"]),
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---------------------------------------------------------------- what the coordinator keeps


def keep_signed_result(
    node_folder: Path, raw_marker: bytes, manifest: Manifest, audit_head: Mapping[str, Any]
) -> None:
    """Keep, beside a node's verified release, what the node signed: the marker as received,
    the result manifest it signs the digest of, and the audit head it carries."""
    signed = node_folder / SIGNED_DIR
    signed.mkdir(parents=True, exist_ok=True)
    atomic_write(signed / MARKER_NAME, raw_marker)
    atomic_write(signed / RESULT_MANIFEST_NAME, manifest.canonical_bytes)
    atomic_write_json(signed / AUDIT_HEAD_NAME, dict(audit_head))


def record_meta_runs(study_dir: Path, runs: Sequence[MetaRun]) -> Path:
    return atomic_write_json(study_dir / META_RUNS, [run.as_dict() for run in runs])


def read_meta_runs(study_dir: Path) -> list[MetaRun]:
    path = study_dir / META_RUNS
    if not path.is_file():
        return []
    return [MetaRun.from_dict(item) for item in json.loads(path.read_text())]


def keep_bundle(study_dir: Path, bundle: Path) -> Manifest:
    """The bundle the nodes ran, unpacked into workflow/, and its manifest."""
    manifest = inspect_bundle(bundle)
    target = study_dir / WORKFLOW_DIR
    if target.exists():
        shutil.rmtree(target)
    unpack_bundle(bundle, target, manifest.digest)
    atomic_write(study_dir / BUNDLE_MANIFEST_NAME, manifest.canonical_bytes)
    return manifest


def keep_keys(study_dir: Path, keys: Mapping[str, Ed25519PublicKey]) -> None:
    folder = study_dir / KEYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, key in keys.items():
        atomic_write(folder / f"{name}.pub", public_key_pem(key))


# ---------------------------------------------------------------- building blocks


def data_file(
    crate: ROCrate, root: Path, relative: str, properties: Mapping[str, Any] | None = None
) -> Any:
    """A data entity for `root/relative`, with its SHA-256 and size."""
    path = root / relative
    entity = crate.dereference(relative)
    if entity is not None:
        return entity
    return crate.add_file(
        source=path,
        dest_path=relative,
        properties={
            "name": Path(relative).name,
            "sha256": sha256_file(path),
            "contentSize": str(path.stat().st_size),
            **dict(properties or {}),
        },
    )


def context_entity(crate: ROCrate, identifier: str, properties: Mapping[str, Any]) -> Any:
    existing = crate.dereference(identifier)
    if existing is not None:
        return existing
    return crate.add(ContextEntity(crate, identifier, properties=dict(properties)))


def declare_profiles(crate: ROCrate, profiles: Sequence[tuple[str, str, str]]) -> None:
    entities = [
        context_entity(
            crate, uri, {"@type": ["CreativeWork", "Profile"], "name": name, "version": version}
        )
        for uri, name, version in profiles
    ]
    crate.root_dataset["conformsTo"] = entities


def workflow_steps(crate: ROCrate, tools: Mapping[str, Any]) -> dict[str, Any]:
    """One `HowToStep` per tool, in order, each with the tool as its `workExample`."""
    return {
        name: context_entity(
            crate,
            f"#step-{name}",
            {"@type": "HowToStep", "name": name, "position": str(index), "workExample": tool},
        )
        for index, (name, tool) in enumerate(tools.items())
    }


def _software_url(name: str, own_url: str = OWN_SOFTWARE_URL) -> dict[str, Any]:
    """Where a recorded distribution is published; the package's own parts: `own_url`."""
    if name == "python":
        return {"url": {"@id": "https://www.python.org/"}}
    if name.startswith("federation"):
        return {"url": {"@id": own_url}}
    return {"url": {"@id": f"https://pypi.org/project/{name}/"}}


def declare_versions(crate: ROCrate) -> None:
    """RO-Crate 1.2, and 1.1 as well: the Workflow Run profiles (0.5) build on 1.1, whose
    terms a 1.2 crate keeps, so a validator of either finds the version it checks."""
    crate.metadata["conformsTo"] = [{"@id": f"{SPEC}/{CRATE_VERSION}"}, {"@id": f"{SPEC}/1.1"}]


def _json(path: Path) -> Any:
    return parse_json_strictly(path.read_bytes())


def workflow_language(crate: ROCrate, engine: str) -> Any:
    """The workflow's language, with the version the workflow is written in (CWL) or was
    run with (Snakemake: the installed release)."""
    properties = {k: v for k, v in LANGUAGES[engine].items() if k != "@id"}
    properties.setdefault("version", software_versions().get(engine, "?"))
    return context_entity(
        crate, str(LANGUAGES[engine]["@id"]), {"@type": "ComputerLanguage", **properties}
    )


def federation_software(
    crate: ROCrate, versions: Mapping[str, str] | None = None, own_url: str = OWN_SOFTWARE_URL
) -> Any:
    """`#federation` with its code identity, requiring each recorded distribution (`versions`,
    the installed ones by default); the package's own parts point at `own_url`."""
    versions = dict(versions) if versions is not None else software_versions()
    return context_entity(
        crate,
        "#federation",
        {
            "@type": "SoftwareApplication",
            "name": "federation",
            "version": versions.get("federation", "?"),
            **_software_url("federation", own_url),
            "softwareRequirements": [
                context_entity(
                    crate,
                    f"#software-{name}",
                    {
                        "@type": "SoftwareApplication",
                        "name": name,
                        "version": version,
                        **_software_url(name, own_url),
                    },
                )
                for name, version in sorted(versions.items())
                if name != "federation"
            ],
            "identifier": json.dumps(code_identity(), sort_keys=True),
        },
    )


# ---------------------------------------------------------------- the node's crate


def _analysis_outcomes(manifest: Mapping[str, Any]) -> dict[str, Any]:
    analyses = manifest.get("metadata", {}).get("analyses")
    return dict(analyses) if isinstance(analyses, Mapping) else {}


def write_node_crate(study_dir: Path, node_id: str, node_key_id: str) -> Path:
    """The nested crate of one node, from what it released and signed."""
    folder = study_dir / NODES_DIR / node_id
    signed = folder / SIGNED_DIR
    marker = _json(signed / MARKER_NAME)
    payload = marker.get("payload", {})
    manifest = _json(signed / RESULT_MANIFEST_NAME)
    released_at = str(payload.get("released_at"))
    crate = ROCrate(version=CRATE_VERSION)
    crate.name = f"node '{node_id}': release for study '{payload.get('study_id')}'"
    crate.root_dataset["description"] = (
        "What the node released and signed, as the coordinator verified it: the released files, "
        "the signed result marker with the node's audit head, the result manifest it signs."
    )
    crate.root_dataset["datePublished"] = released_at
    crate.root_dataset["license"] = LICENSE
    declare_profiles(crate, [(FIVE_SAFES_CRATE, "Five Safes RO-Crate", "0.4")])
    node = context_entity(
        crate,
        f"#node-{node_id}",
        {"@type": "Organization", "name": f"node '{node_id}'", "identifier": node_key_id},
    )
    released = []
    for name in manifest.get("files", {}):
        sidecar_of = None
        if name.endswith(".tsv.gz"):
            sidecar = find_sidecar(folder / name)
            sidecar_of = sidecar.name if sidecar else None
        entity = data_file(crate, folder, name, {"encodingFormat": _format(name)})
        if sidecar_of:
            entity["subjectOf"] = data_file(crate, folder, sidecar_of)
        released.append(entity)
    marker_file = data_file(
        crate,
        folder,
        f"{SIGNED_DIR}/{MARKER_NAME}",
        {"description": "the node's signed result marker"},
    )
    manifest_file = data_file(
        crate,
        folder,
        f"{SIGNED_DIR}/{RESULT_MANIFEST_NAME}",
        {"description": "the result manifest; the marker signs its SHA-256"},
    )
    head = payload.get("audit_head", {})
    head_file = data_file(
        crate,
        folder,
        f"{SIGNED_DIR}/{AUDIT_HEAD_NAME}",
        {
            "description": "the head of the node's audit log when it released (signed in the marker)",
        },
    )
    head_entity = context_entity(
        crate,
        "#audit-head",
        {
            "@type": "PropertyValue",
            "name": "audit head",
            "propertyID": "audit_head",
            "value": f"{head.get('records')}:{head.get('last_hash')}",
        },
    )
    outcomes = _analysis_outcomes(manifest)
    review = manifest.get("metadata", {}).get("output_review") or {}
    sidecars = {}
    for name in manifest.get("files", {}):
        sidecar = find_sidecar(folder / name) if name.endswith(".tsv.gz") else None
        if sidecar is not None:
            sidecars[name] = json.loads(json.dumps(_yaml(sidecar)))
    identity = next(
        (meta.get(IDENTITY_KEY) for meta in sidecars.values() if meta.get(IDENTITY_KEY)), None
    )
    disclosure = {
        name: {
            "analysis": meta.get("analysis"),
            "disclosure": meta.get("disclosure"),
            "variants_released": meta.get("variants_released"),
            "n": meta.get("n"),
        }
        for name, meta in sidecars.items()
    }
    phases = [
        (
            "check",
            "CheckAction",
            "signature, addressing, freshness, replay and bundle digest checked",
        ),
        ("validation", "AssessAction", "the study admitted by the node's policy"),
        ("sign-off", "AssessAction", "approved to run (node policy or its admin)"),
    ]
    actions = []
    for phase, kind, description in phases:
        actions.append(
            context_entity(
                crate,
                f"#{phase}",
                {
                    "@type": kind,
                    "name": phase,
                    "description": description,
                    "agent": node,
                    "actionStatus": {"@id": COMPLETED},
                },
            )
        )
    execution = context_entity(
        crate,
        "#execution",
        {
            "@type": "CreateAction",
            "name": "execution",
            "description": "the node pipeline ran inside the node's secure processing environment",
            "agent": node,
            "result": released,
            "endTime": released_at,
            "actionStatus": {"@id": COMPLETED},
        },
    )
    if identity:
        execution["identifier"] = json.dumps(identity, sort_keys=True)
    actions.append(execution)
    any_released = any(
        isinstance(value, Mapping) and value.get("outcome") == "released"
        for value in outcomes.values()
    )
    actions.append(
        context_entity(
            crate,
            "#disclosure",
            {
                "@type": "AssessAction",
                "name": "disclosure",
                "description": json.dumps(
                    {"analyses": outcomes, "gate": disclosure, "output_review": review},
                    sort_keys=True,
                ),
                "agent": node,
                "object": released,
                "actionStatus": {"@id": COMPLETED if any_released else FAILED},
            },
        )
    )
    actions.append(
        context_entity(
            crate,
            "#publishing",
            {
                "@type": "UpdateAction",
                "name": "publishing",
                "description": "released, sealed for the coordinator, marker signed",
                "agent": node,
                "object": [manifest_file, head_file],
                "result": marker_file,
                "endTime": released_at,
                "actionStatus": {"@id": COMPLETED},
                "additionalProperty": head_entity,
            },
        )
    )
    crate.root_dataset["mentions"] = actions
    declare_versions(crate)
    crate.metadata.write(folder)
    return folder / METADATA_NAME


def _format(name: str) -> str:
    if name.endswith(".tsv.gz"):
        return "text/tab-separated-values"
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".yaml"):
        return "application/yaml"
    return "application/octet-stream"


def _yaml(path: Path) -> dict[str, Any]:
    from federation.yamlio import load_yaml

    loaded = load_yaml(path.read_bytes())
    return loaded if isinstance(loaded, dict) else {}


# ---------------------------------------------------------------- the study's crate


@dataclass(frozen=True)
class StudyCrateInputs:
    study_id: str
    title: str
    engine: str
    coordinator_id: str
    nodes: Sequence[str]  # the nodes whose result was kept
    submitted_at: str | None = None


def write_study_crate(
    study_dir: Path, inputs: StudyCrateInputs, signing_key: Ed25519PrivateKey
) -> Path:
    """Write every node's crate, the study crate and the coordinator's signed attestation."""
    if inputs.engine not in MAIN_WORKFLOW:
        raise SpecError(f"study '{inputs.study_id}' engine '{inputs.engine}': no crate layout")
    node_key_ids = {}
    for node_id in inputs.nodes:
        node_key_ids[node_id] = _json(study_dir / NODES_DIR / node_id / SIGNED_DIR / MARKER_NAME)[
            "key_id"
        ]
        write_node_crate(study_dir, node_id, node_key_ids[node_id])
    crate = ROCrate(version=CRATE_VERSION)
    root = crate.root_dataset
    crate.name = inputs.title or inputs.study_id
    root["description"] = (
        f"Federated study '{inputs.study_id}': the workflow the nodes ran, what each node "
        "released and signed (one nested crate per node), and the coordinator's meta-analyses."
    )
    root["datePublished"] = now_iso()
    root["license"] = LICENSE
    root["identifier"] = inputs.study_id
    declare_profiles(crate, RUN_CRATE_DECLARATIONS)
    engine = inputs.engine
    bundle_manifest = Manifest.from_bytes((study_dir / BUNDLE_MANIFEST_NAME).read_bytes())
    language = workflow_language(crate, engine)
    study_config = data_file(
        crate,
        study_dir,
        f"{WORKFLOW_DIR}/{STUDY_CONFIG_NAME}",
        {"description": "the study specification the coordinator submitted"},
    )
    manifest_file = data_file(
        crate,
        study_dir,
        BUNDLE_MANIFEST_NAME,
        {
            "description": f"the bundle's manifest; its digest {bundle_manifest.digest} is signed in every task"
        },
    )
    for name in bundle_manifest.files:  # the pipeline's files: parts of the root
        if name not in (STUDY_CONFIG_NAME, MAIN_WORKFLOW[engine]):
            data_file(crate, study_dir, f"{WORKFLOW_DIR}/{name}")
    software = federation_software(crate)
    # The coordinator's own steps (Provenance Run Crate): tools, steps and their runs.
    param = {
        name: context_entity(
            crate,
            f"#param-{name}",
            {
                "@type": "FormalParameter",
                "name": name,
                "additionalType": kind,
                "conformsTo": {
                    "@id": "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
                },
            },
        )
        for name, kind in (
            ("study_config", "File"),
            ("node_release", "Dataset"),
            ("summary_statistics", "File"),
            ("meta_output", "File"),
            ("random_effects", "Boolean"),
            ("genomic_control", "Boolean"),
            ("scheme", "Text"),
            ("palindromic_maf_band", "Text"),
        )
    }
    tools = {
        "meta-analysis": context_entity(
            crate,
            "#tool-meta-analysis",
            {
                "@type": "SoftwareApplication",
                "name": "federation meta (harmonisation and meta-analysis)",
                "softwareVersion": software["version"],
                "version": software["version"],
                **_software_url("federation"),
                "input": [
                    param[name]
                    for name in (
                        "summary_statistics",
                        "random_effects",
                        "genomic_control",
                        "scheme",
                        "palindromic_maf_band",
                    )
                ],
                "output": [param["meta_output"]],
            },
        ),
        "pooled-allele-frequencies": context_entity(
            crate,
            "#tool-pooled-allele-frequencies",
            {
                "@type": "SoftwareApplication",
                "name": "federation pooled allele frequencies",
                "softwareVersion": software["version"],
                "version": software["version"],
                **_software_url("federation"),
                "input": [param["summary_statistics"]],
                "output": [param["meta_output"]],
            },
        ),
    }
    steps = workflow_steps(crate, tools)
    workflow = data_file(
        crate,
        study_dir,
        f"{WORKFLOW_DIR}/{MAIN_WORKFLOW[engine]}",
        {
            "@type": WORKFLOW_TYPES,
            "name": f"node pipeline ({LANGUAGES[engine]['name']})",
            "programmingLanguage": language,
            "identifier": workflow_digest(bundle_manifest),
            "description": "the workflow digest (identifier) covers every pipeline file of the bundle",
            "hasPart": list(tools.values()),  # the tools it orchestrates (its files: the root's)
            "input": [param["study_config"]],
            "output": [param["node_release"], param["meta_output"]],
            "step": list(steps.values()),
        },
    )
    root["mainEntity"] = workflow
    agent = context_entity(
        crate,
        f"#submitter-{inputs.coordinator_id}",
        {
            "@type": "Organization",
            "name": f"coordinator '{inputs.coordinator_id}' (the submitting key)",
            "identifier": key_id(signing_key.public_key()),
        },
    )
    keys = [
        data_file(
            crate,
            study_dir,
            f"{KEYS_DIR}/{path.name}",
            {"encodingFormat": "application/x-pem-file"},
        )
        for path in sorted((study_dir / KEYS_DIR).glob("*.pub"))
    ]
    nodes = []
    for node_id in inputs.nodes:
        nodes.append(
            crate.add_dataset(
                source=study_dir / NODES_DIR / node_id,
                dest_path=f"{NODES_DIR}/{node_id}/",
                properties={
                    "name": f"node '{node_id}' release",
                    "conformsTo": {"@id": NESTED_CRATE},
                    "subjectOf": {"@id": f"{NODES_DIR}/{node_id}/{METADATA_NAME}"},
                    "identifier": node_key_ids[node_id],
                },
            )
        )
    runs = read_meta_runs(study_dir)
    control_actions = []
    meta_outputs = []
    for run in runs:
        option_values = [
            context_entity(
                crate,
                f"#option-{run.analysis_id}-{name}",
                {
                    "@type": "PropertyValue",
                    "name": name,
                    "value": json.dumps(value) if not isinstance(value, str) else value,
                    "exampleOfWork": param.get(name),
                },
            )
            for name, value in sorted(run.options.items())
        ]
        for value in option_values:
            if value.get("exampleOfWork") is None:
                del value["exampleOfWork"]
        run_inputs = [data_file(crate, study_dir, path) for path in run.inputs]
        output = data_file(crate, study_dir, run.output)
        outputs = [output]
        sidecar = find_sidecar(study_dir / run.output)
        if sidecar is not None:
            outputs.append(data_file(crate, study_dir, str(sidecar.relative_to(study_dir))))
        meta_outputs += outputs
        action = context_entity(
            crate,
            f"#run-{run.analysis_id}",
            {
                "@type": "CreateAction",
                "name": f"{run.kind} of '{run.analysis_id}'",
                "instrument": tools[run.kind],
                "agent": agent,
                "object": [*run_inputs, *option_values],
                "result": outputs,
                "startTime": run.start,
                "endTime": run.end,
                "actionStatus": {"@id": COMPLETED},
            },
        )
        control_actions.append(
            context_entity(
                crate,
                f"#control-{run.analysis_id}",
                {
                    "@type": "ControlAction",
                    "name": f"orchestrate {run.kind} of '{run.analysis_id}'",
                    "instrument": steps[run.kind],
                    "object": action,
                },
            )
        )
    for value in param.values():
        examples = {
            "study_config": [study_config],
            "node_release": nodes,
            "meta_output": meta_outputs,
            "summary_statistics": [crate.dereference(path) for run in runs for path in run.inputs],
        }.get(value["name"])
        if not examples:
            examples = [
                crate.dereference(f"#option-{run.analysis_id}-{value['name']}") for run in runs
            ]
        examples = [item for item in examples if item is not None]
        if examples:
            value["workExample"] = examples
    provenance_dir = study_dir / META_RUNS.parent
    for path in sorted(provenance_dir.glob("*.json")) if provenance_dir.is_dir() else []:
        data_file(
            crate,
            study_dir,
            str(path.relative_to(study_dir)),
            {"encodingFormat": "application/json"},
        )
    for name in REPORT_NAMES:
        if (study_dir / name).is_file():
            data_file(crate, study_dir, name, {"encodingFormat": "text/html"})
    if (study_dir / PLOTS_DIR).is_dir():
        for path in sorted((study_dir / PLOTS_DIR).rglob("*")):
            if path.is_file():
                data_file(crate, study_dir, str(path.relative_to(study_dir)))
    run_times = [run.start for run in runs] + [run.end for run in runs]
    study_run = context_entity(
        crate,
        "#study-run",
        {
            "@type": "CreateAction",
            "name": f"run of study '{inputs.study_id}'",
            "instrument": workflow,
            "agent": agent,
            "object": [study_config, manifest_file],
            "result": [*nodes, *meta_outputs],
            "startTime": inputs.submitted_at or (min(run_times) if run_times else now_iso()),
            "endTime": max(run_times) if run_times else now_iso(),
            "actionStatus": {"@id": COMPLETED},
        },
    )
    context_entity(
        crate,
        "#coordinator-run",
        {
            "@type": "OrganizeAction",
            "name": "the coordinator orchestrated the study",
            "instrument": software,
            "agent": agent,
            "object": control_actions,
            "result": study_run,
        },
    )
    crate.add_file(
        source=study_dir / ATTESTATION_NAME,
        dest_path=ATTESTATION_NAME,
        properties={
            "name": ATTESTATION_NAME,
            "description": "the coordinator's signed statement of every file's SHA-256 and each node's key",
            "encodingFormat": "application/json",
        },
    )
    root["hasPart"] = [*root.get("hasPart", []), *keys]
    declare_versions(crate)
    crate.metadata.write(study_dir)
    write_attestation(study_dir, inputs, node_key_ids, signing_key)
    return study_dir / METADATA_NAME


def crate_files(study_dir: Path) -> dict[str, str]:
    """Every file of the crate but the attestation, by path, with its SHA-256."""
    files = {}
    for path in sorted(study_dir.rglob("*")):
        relative = path.relative_to(study_dir).as_posix()
        if not path.is_file() or relative == ATTESTATION_NAME:
            continue
        if any(part.startswith(".") for part in Path(relative).parts):
            continue
        files[relative] = sha256_file(path)
    return files


def write_attestation(
    study_dir: Path,
    inputs: StudyCrateInputs,
    node_key_ids: Mapping[str, str],
    signing_key: Ed25519PrivateKey,
) -> Path:
    payload = {
        "format": ATTESTATION_FORMAT,
        "study_id": inputs.study_id,
        "coordinator": inputs.coordinator_id,
        "signed_at": now_iso(),
        "node_keys": dict(sorted(node_key_ids.items())),
        "files": crate_files(study_dir),
    }
    document = sign_document(payload, signing_key, inputs.coordinator_id)
    return atomic_write(study_dir / ATTESTATION_NAME, canonical_json(document) + b"\n")
