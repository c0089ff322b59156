"""What the study report reads: a study's released aggregates and meta-analysis outputs.

Only files that already left the nodes are read (the gate's releases, as the coordinator
verified and kept them under `results/<study_id>/nodes/<node_id>/`) and the coordinator's own
outputs under `results/<study_id>/meta/`: nothing here can show more than was released.
Which meta file is which comes from the files themselves (allele-frequency tables by their
columns, `meta.inputs.is_frequency_table`; each GWAS's analysis and inputs from its sidecar),
so no file name is assumed beyond the layout of the results directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation import sumstats
from federation.errors import SpecError
from federation.meta.inputs import CHROMOSOME_CODES, is_frequency_table

REPORT_HTML = "report.html"  # results/<study_id>/report.html: the study report
META_DIR = "meta"  # results/<study_id>/meta: the coordinator's outputs
NODES_DIR = "nodes"  # results/<study_id>/nodes/<node_id>: each node's verified release
QC_METRICS = "qc_metrics.json"  # a node's released QC counts (rules/export.smk)
CRATE = "ro-crate-metadata.json"  # the study's RO-Crate, when one was written
TABLE_SUFFIX = ".tsv.gz"
# Sidecars are found (under either name) and read by `sumstats`, as everywhere else.
find_sidecar = sumstats.find_sidecar
read_metadata = sumstats.read_sidecar


@dataclass(frozen=True)
class Provenance:
    """What the coordinator knows of a study beyond its files (None: not recorded)."""

    nodes: tuple[str, ...] = ()  # the nodes the study was sent to
    quorum: int | None = None
    workflow_digest: str | None = None
    submitted_at: str | None = None
    node_states: dict[str, str] = field(default_factory=dict)
    # The coordinator writes the study's crate right after the report (the crate holds the
    # report's digest), so its report links the crate before the file exists.
    crate_follows: bool = False


@dataclass(frozen=True)
class NodeInput:
    """One node's input to a meta-analysis, as the meta sidecar records it."""

    node_id: str
    path: Path  # the node's released GWAS-SSF file (in this results directory)
    rows_read: int | None
    rows_used: int | None
    lambda_gc: float | None
    allele_swaps: int | None
    strand_flips: int | None
    dropped: dict[str, int]


@dataclass(frozen=True)
class GwasResult:
    analysis: str
    path: Path
    metadata: dict[str, Any]
    inputs: tuple[NodeInput, ...]


@dataclass(frozen=True)
class NodeRelease:
    node_id: str
    directory: Path
    qc_metrics: dict[str, Any]  # {} when the node released none
    tables: dict[str, Path]  # analysis -> released table


@dataclass(frozen=True)
class StudyFiles:
    """The files of one study's results directory the report is made from."""

    directory: Path
    study_id: str
    gwas: tuple[GwasResult, ...]
    frequencies: Path | None
    nodes: tuple[NodeRelease, ...]
    crate: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


def study_files(directory: Path) -> StudyFiles:
    """Find the meta outputs and node releases of `directory` (results/<study_id>)."""
    meta_dir = directory / META_DIR
    if not meta_dir.is_dir():
        raise SpecError(
            f"RESULTS_DIR '{directory}': no {META_DIR}/ folder; pass a study's results "
            "directory (results/<study_id>) after its meta-analysis"
        )
    tables = sorted(meta_dir.glob(f"*{TABLE_SUFFIX}"))
    frequencies = next((path for path in tables if is_frequency_table(path)), None)
    gwas = tuple(_gwas_result(directory, path) for path in tables if path is not frequencies)
    nodes_dir = directory / NODES_DIR
    nodes = tuple(
        _node_release(folder)
        for folder in sorted(nodes_dir.iterdir() if nodes_dir.is_dir() else [])
        if folder.is_dir() and not folder.name.startswith(".")
    )
    study_ids = {result.metadata.get("study_id") for result in gwas} - {None}
    study_id = str(study_ids.pop()) if len(study_ids) == 1 else directory.name
    crate = directory / CRATE
    return StudyFiles(
        directory, study_id, gwas, frequencies, nodes, crate if crate.is_file() else None
    )


def _gwas_result(directory: Path, path: Path) -> GwasResult:
    metadata = read_metadata(path)
    analysis = str(metadata.get("analysis") or path.name.removesuffix(TABLE_SUFFIX))
    inputs = tuple(
        _node_input(directory, entry)
        for entry in metadata.get("inputs") or []
        if isinstance(entry, dict) and entry.get("node_id")
    )
    return GwasResult(analysis, path, metadata, inputs)


def _node_input(directory: Path, entry: dict[str, Any]) -> NodeInput:
    node_id = str(entry["node_id"])
    recorded = Path(str(entry.get("path", "")))
    # The path as the coordinator read it; if the results were moved since, the same file
    # in this directory's copy of the node's release.
    path = recorded if recorded.is_file() else directory / NODES_DIR / node_id / recorded.name
    return NodeInput(
        node_id,
        path,
        _int_or_none(entry.get("rows_read")),
        _int_or_none(entry.get("rows_used")),
        _float_or_none(entry.get("lambda_gc")),
        _int_or_none(entry.get("allele_swaps")),
        _int_or_none(entry.get("strand_flips")),
        {str(k): int(v) for k, v in (entry.get("dropped") or {}).items()},
    )


def _node_release(folder: Path) -> NodeRelease:
    metrics_path = folder / QC_METRICS
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        loaded = json.loads(metrics_path.read_text())
        metrics = loaded if isinstance(loaded, dict) else {}
    tables = {
        path.name.removesuffix(TABLE_SUFFIX): path
        for path in sorted(folder.glob(f"*{TABLE_SUFFIX}"))
    }
    return NodeRelease(folder.name, folder, metrics, tables)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def chromosome_codes(chromosome: pd.Series) -> np.ndarray:
    """GWAS-SSF chromosome codes (1-25) of a text column; 0 for anything unknown."""
    text = chromosome.astype(str).str.upper().str.removeprefix("CHR")
    return text.map(CHROMOSOME_CODES).fillna(0).to_numpy(dtype=np.int64)


def neg_log10_p(table: pd.DataFrame) -> np.ndarray:
    """-log10 p of each row: the `neg_log_10_p_value` column where written (exact below
    1e-300), else from `p_value`."""
    if sumstats.NEG_LOG10_P in table:
        return pd.to_numeric(table[sumstats.NEG_LOG10_P], errors="coerce").to_numpy(dtype=float)
    p = pd.to_numeric(table["p_value"], errors="coerce").to_numpy(dtype=float)
    with np.errstate(divide="ignore"):
        return -np.log10(p)
