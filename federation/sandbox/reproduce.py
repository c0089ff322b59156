"""`federation reproduce CRATE --out DIR --nodes synthetic`: re-run a synthetic study end to end.

For a study run on synthetic cohorts (the demo records how it made them in the crate's
`provenance/synthetic-cohorts.json`), it regenerates the cohorts from their recorded seed and
parameters, runs every node's pipeline with the workflow recorded in the crate (its
`workflow/`, the bundle the nodes ran; the nodes side by side, `sandbox.side_by_side`: a node
whose run fails fails the reproduction, named), compares each node's released files with the ones the
node signed, then re-runs the coordinator's steps over the re-run releases and compares those
too (`provenance.reproduce`). Tables must be byte-identical; sidecars are compared apart from
what names a place, a day or a run (paths, dates, the run's provenance digest).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import yaml

from federation.files import atomic_write, atomic_write_json
from federation.jsonio import parse_json_strictly
from federation.protocol.manifest import STUDY_CONFIG_NAME
from federation.provenance.crate import (
    NODES_DIR,
    RESULT_MANIFEST_NAME,
    SIGNED_DIR,
    WORKFLOW_DIR,
)
from federation.provenance.reproduce import (
    Comparison,
    Progress,
    compare_file,
    recorded_versions,
    reproduce_coordinator,
    version_differences,
)
from federation.provenance.sidecars import is_sidecar
from federation.provenance.verify import study_folder
from federation.sandbox.side_by_side import run_side_by_side, serialised

COHORTS_RECORD = Path("provenance") / "synthetic-cohorts.json"
NODE_HAIL = {"master": "local[2]", "driver_memory": "4g"}  # as the demo's nodes run


def record_synthetic_cohorts(study_dir: Path, parameters: dict[str, Any]) -> Path:
    """What `reproduce --nodes synthetic` needs to make the same cohorts again."""
    return atomic_write_json(study_dir / COHORTS_RECORD, parameters)


def _node_config(out_dir: Path, node_id: str, cohort: Any) -> Path:
    node_dir = out_dir / "nodes" / node_id
    document = {
        "node_id": node_id,
        "genotypes": {"format": "vcf", "path": str(cohort.vcf)},
        "phenotypes": str(cohort.phenotypes),
        "reference_genome": "GRCh38",
        "work_dir": str(node_dir / "work"),
        "results_dir": str(out_dir / "results"),
        "hail": NODE_HAIL,
    }
    return atomic_write(node_dir / "node.yaml", yaml.safe_dump(document, sort_keys=False))


def reproduce_synthetic(
    crate_or_dir: Path, out_dir: Path, *, progress: Progress = print
) -> Comparison:
    from federation.pipeline.run import run_pipeline
    from federation.pipeline.runs import RunControl
    from federation.sandbox.synth import synthesize

    study_dir = study_folder(crate_or_dir)
    out_dir = out_dir.resolve()
    progress = serialised(progress)  # the nodes' runs report from their own threads
    record_path = study_dir / COHORTS_RECORD
    result = Comparison()
    if not record_path.is_file():
        result.different.append(
            f"{COHORTS_RECORD}: missing; this study did not run on synthetic cohorts, so its "
            "nodes cannot be re-run (verify them instead)"
        )
        return result
    result.version_notes = version_differences(recorded_versions(study_dir))
    for line in result.version_notes:  # said before anything runs
        progress(line)
    parameters = parse_json_strictly(record_path.read_bytes())
    progress(
        f"regenerating the synthetic cohorts (seed {parameters['seed']}) in {out_dir / 'cohorts'}"
    )
    cohorts = synthesize(
        out_dir / "cohorts",
        nodes=int(parameters["nodes"]),
        samples_per_node=parameters["samples_per_node"],
        variants=int(parameters["variants"]),
        seed=int(parameters["seed"]),
        force=True,
        progress=progress,
    )
    workflow = study_dir / WORKFLOW_DIR
    study_config = workflow / STUDY_CONFIG_NAME
    study_id = yaml.safe_load(study_config.read_text())["study_id"]
    reproduced = out_dir / "results" / study_id
    reruns = {}
    signed_manifests: dict[str, Path] = {}
    for cohort in cohorts.nodes:
        node_id = cohort.node_id
        signed = study_dir / NODES_DIR / node_id / SIGNED_DIR / RESULT_MANIFEST_NAME
        if not signed.is_file():
            result.not_rerun.append(
                f"node '{node_id}': released nothing in the study; not compared"
            )
            continue
        progress(f"re-running node '{node_id}' with the recorded workflow")
        reruns[node_id] = partial(
            run_pipeline,
            _node_config(out_dir, node_id, cohort),
            study_config,
            pipeline_root=workflow,
            progress=progress,
            control=RunControl(label=f"reproduce-{study_id}-{node_id}"),
        )
        signed_manifests[node_id] = signed
    for node_id in run_side_by_side(reruns, progress):
        manifest = parse_json_strictly(signed_manifests[node_id].read_bytes())
        for name in sorted(manifest.get("files", {})):
            recorded = study_dir / NODES_DIR / node_id / name
            again = reproduced / NODES_DIR / node_id / name
            if is_sidecar(recorded):
                continue  # compared with its table
            compare_file(recorded, again, f"{NODES_DIR}/{node_id}/{name}", result)
    coordinator = reproduce_coordinator(
        study_dir, out_dir / "meta-rerun", inputs_dir=reproduced, progress=lambda line: None
    )
    result.identical += coordinator.identical
    result.different += coordinator.different
    return result
