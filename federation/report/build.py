"""Writing a study's report: `results/<study_id>/report.html`, `plots/` and `report.json`.

`write_report` reads the study's meta-analysis outputs and the nodes' released aggregates
(`report.inputs`), finds the lead variants (`stats.loci`: distance clumping, λGC per MAF bin),
draws the figures (`report.plots`) and renders `templates/report.html.j2` with Jinja2. The
report is self-contained: figures are files under `plots/` referenced by relative paths, the
stylesheet is inline, nothing is fetched from a network (an SPE has none). `report.json` holds
the same facts for programs (the dashboard, tests). Every file is written atomically, and
figures of an earlier report that this one no longer has are removed, so the directory always
shows one report. The coordinator calls it after every meta-analysis; `federation report
RESULTS_DIR` calls it again.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from federation import sumstats
from federation.files import atomic_write
from federation.meta.frequencies import POOLED_NODE_ID
from federation.meta.inputs import is_frequency_table
from federation.report import plots
from federation.report.forest import Lead, node_rows, pooled_rows
from federation.report.inputs import (
    CRATE,
    REPORT_HTML,
    GwasResult,
    Provenance,
    StudyFiles,
    chromosome_codes,
    neg_log10_p,
    read_metadata,
    study_files,
)
from federation.stats import loci, meta_analysis
from federation.versions import software_versions

REPORT_JSON = "report.json"
PLOTS_DIR = "plots"
TEMPLATES = Path(__file__).with_name("templates")
FLAGGED_SHOWN = 25  # differentiated variants listed in the report (all are in the plot)
# Meta-output columns shown in the lead table when present (GWAS-SSF names and meta extras).
HETEROGENEITY_COLUMNS = ("direction", "het_p", "i2")


@dataclass(frozen=True)
class Report:
    html: Path
    data: Path
    plots: tuple[Path, ...]
    leads: dict[str, list[dict[str, Any]]]  # analysis -> lead-variant table rows


def write_report(directory: Path, provenance: Provenance | None = None) -> Report:
    """Write the report of the study in `directory` (results/<study_id>); see the module doc.

    Without `provenance`, the one recorded by the previous report (its `report.json`) is kept.
    """
    files = study_files(directory)
    provenance = provenance or _recorded_provenance(directory)
    plots_dir = directory / PLOTS_DIR
    written: list[Path] = []
    analyses = [_analysis_section(files, result, plots_dir, written) for result in files.gwas]
    frequencies = _frequency_section(files, plots_dir, written)
    context = {
        "study_id": files.study_id,
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "analyses": analyses,
        "frequencies": frequencies,
        "nodes": _node_panel(files, frequencies["n_variants"] if frequencies else None),
        "provenance": _provenance_section(files, provenance),
        "clumping_rule": _clumping_rule(),
        "no_ld_note": plots.NO_LD_NOTE,
    }
    html = atomic_write(directory / REPORT_HTML, render(context))
    data = atomic_write(
        directory / REPORT_JSON, json.dumps(_json_safe(context), indent=2, sort_keys=True) + "\n"
    )
    _remove_stale(plots_dir, written)
    leads = {section["analysis"]: section["leads"] for section in analyses}
    return Report(html, data, tuple(written), leads)


def render(context: dict[str, Any]) -> str:
    """The HTML of a report from its context (templates/report.html.j2, autoescaped)."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _number
    return environment.get_template("report.html.j2").render(**context)


def _clumping_rule() -> str:
    return (
        f"Genome-wide significant variants (p < {loci.GENOME_WIDE_SIGNIFICANCE:g}) are taken "
        "in order of increasing p; each leads a new locus unless it lies within "
        f"{loci.CLUMP_WINDOW_BP // 1000} kb of a lead already chosen on the same chromosome, "
        "when it joins that locus. Distance only: no LD reference leaves a node."
    )


# ------------------------------------------------------------------ GWAS sections


def _analysis_section(
    files: StudyFiles, result: GwasResult, plots_dir: Path, written: list[Path]
) -> dict[str, Any]:
    table = sumstats.read_table(result.path)
    chromosome = chromosome_codes(table["chromosome"])
    position = table["base_pair_location"].to_numpy(dtype=np.int64)
    nlp = neg_log10_p(table)
    beta = table["beta"].to_numpy(dtype=float)
    se = table["standard_error"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = beta / se
    frequency = _column(table, "effect_allele_frequency")
    lambda_gc = meta_analysis.genomic_control_lambda(z)
    maf_lambdas = loci.lambda_by_maf(z, frequency)
    clumps = loci.clump_by_distance(chromosome, position, nlp)
    name = result.analysis
    title = f"{files.study_id}: {name}"
    manhattan = plots.manhattan(
        chromosome, position, nlp, plots_dir / f"{name}.manhattan", title, clumps.leads
    )
    qq = plots.qq(
        nlp, loci.minor_allele_frequency(frequency), lambda_gc, maf_lambdas,
        plots_dir / f"{name}.qq", title,
    )  # fmt: skip
    written += [manhattan.png, manhattan.svg, qq.png, qq.svg]
    node_tables = {
        entry.node_id: sumstats.read_table(entry.path)
        for entry in result.inputs
        if entry.path.is_file()
    }
    leads = []
    p_text = sumstats.format_p_value(np.power(10.0, -nlp[clumps.leads]), nlp[clumps.leads])
    for rank, row in enumerate(clumps.leads.tolist()):
        lead = Lead(
            int(chromosome[row]),
            int(position[row]),
            str(table["effect_allele"].iat[row]),
            str(table["other_allele"].iat[row]),
            float(frequency[row]),
        )
        forest_nodes = node_rows(lead, node_tables)
        forest_rows = forest_nodes + pooled_rows(forest_nodes)
        stem = f"{name}.{lead.chromosome}_{lead.position}_{lead.other_allele}_{lead.effect_allele}"
        label = f"{table['variant_id'].iat[row]} ({name})"
        forest = plots.forest(forest_rows, plots_dir / f"{stem}.forest", label)
        on_chromosome = chromosome == lead.chromosome
        regional = plots.regional(
            position[on_chromosome], nlp[on_chromosome], lead.position,
            plots_dir / f"{stem}.regional", f"chromosome {lead.chromosome} around {label}",
        )  # fmt: skip
        written += [forest.png, forest.svg, regional.png, regional.svg]
        members = np.flatnonzero(clumps.locus == rank)
        leads.append(
            {
                "variant_id": str(table["variant_id"].iat[row]),
                "chromosome": lead.chromosome,
                "position": lead.position,
                "effect_allele": lead.effect_allele,
                "other_allele": lead.other_allele,
                "effect_allele_frequency": lead.frequency,
                "beta": float(beta[row]),
                "standard_error": float(se[row]),
                "p_value": p_text[rank],
                "neg_log10_p": float(nlp[row]),
                "n": _value(table, "n", row),
                **{column: _value(table, column, row) for column in HETEROGENEITY_COLUMNS},
                "locus_variants": int(members.size),
                "locus_start": int(position[members].min()),
                "locus_end": int(position[members].max()),
                "forest": _relative(forest, plots_dir),
                "regional": _relative(regional, plots_dir),
                "forest_rows": [asdict(forest_row) for forest_row in forest_rows],
            }
        )
    return {
        "analysis": name,
        "file": result.path.name,
        "trait": result.metadata.get("trait"),
        "model": result.metadata.get("model"),
        "n_variants": int(len(table)),
        "n_nodes": len(result.inputs),
        "lambda_gc": lambda_gc,
        "maf_lambdas": [
            {"label": entry.label, "n_variants": entry.n_variants, "lambda_gc": entry.lambda_gc}
            for entry in maf_lambdas
        ],
        "manhattan": _relative(manhattan, plots_dir),
        "qq": _relative(qq, plots_dir),
        "leads": leads,
    }


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)


def _value(table: pd.DataFrame, column: str, row: int) -> Any:
    if column not in table:
        return None
    value = table[column].iat[row]
    if pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _relative(files: plots.PlotFiles, plots_dir: Path) -> dict[str, str]:
    base = plots_dir.name
    return {"png": f"{base}/{files.png.name}", "svg": f"{base}/{files.svg.name}"}


# ------------------------------------------------------------------ allele frequencies


def _frequency_section(
    files: StudyFiles, plots_dir: Path, written: list[Path]
) -> dict[str, Any] | None:
    if files.frequencies is None:
        return None
    table = sumstats.read_table(files.frequencies)
    table["node_id"] = table["node_id"].astype(str)
    pooled = table[table["node_id"] == POOLED_NODE_ID].set_index("variant_id")
    nodes = table[table["node_id"] != POOLED_NODE_ID]
    per_node = {
        node: group.set_index("variant_id")["allele_frequency"]
        .reindex(pooled.index)
        .to_numpy(dtype=float)
        for node, group in nodes.groupby("node_id")
    }
    flagged = (
        pooled["population_specific"].astype(str).str.lower().eq("true").to_numpy()
        if "population_specific" in pooled
        else np.zeros(len(pooled), dtype=bool)
    )
    figure = plots.frequency_scatter(
        pooled["allele_frequency"].to_numpy(dtype=float),
        per_node,
        flagged,
        plots_dir / "allele_frequencies.scatter",
        f"{files.study_id}: per-node vs pooled allele frequency",
    )
    written += [figure.png, figure.svg]
    shown = pooled[flagged].copy()
    if "freq_p" in shown:
        shown["_p"] = pd.to_numeric(shown["freq_p"], errors="coerce")
        shown = shown.sort_values("_p")
    rows = [
        {
            "variant_id": str(variant),
            "pooled": float(record["allele_frequency"]),
            "nodes": {
                node: float(per_node[node][pooled.index.get_loc(variant)]) for node in per_node
            },
            "fst": record.get("fst"),
            "freq_p": str(record.get("freq_p")),
        }
        for variant, record in shown.head(FLAGGED_SHOWN).iterrows()
    ]
    return {
        "file": files.frequencies.name,
        "n_variants": int(len(pooled)),
        "n_flagged": int(flagged.sum()),
        "nodes": sorted(per_node),
        "plot": _relative(figure, plots_dir),
        "flagged": rows,
        "shown": FLAGGED_SHOWN,
    }


# ------------------------------------------------------------------ per-node panel


def _node_panel(files: StudyFiles, pooled_variants: int | None) -> list[dict[str, Any]]:
    """Per node: N and variants released per analysis (against the union of the meta-analysis
    or of the pooled frequencies), λGC, QC counts and what harmonisation did to its rows."""
    union = {result.analysis: _meta_variants(result) for result in files.gwas}
    panel = []
    for release in files.nodes:
        analyses = []
        for analysis, table_path in release.tables.items():
            metadata = read_metadata(table_path)
            entry = next(
                (
                    item
                    for result in files.gwas
                    if result.analysis == analysis
                    for item in result.inputs
                    if item.node_id == release.node_id
                ),
                None,
            )
            analyses.append(
                {
                    "analysis": analysis,
                    "n": metadata.get("n"),
                    "variants_released": metadata.get("variants_released")
                    or (entry.rows_read if entry else None),
                    "variants_union": union.get(analysis)
                    or (pooled_variants if is_frequency_table(table_path) else None),
                    "lambda_gc": entry.lambda_gc if entry else None,
                    "rows_used": entry.rows_used if entry else None,
                    "allele_swaps": entry.allele_swaps if entry else None,
                    "strand_flips": entry.strand_flips if entry else None,
                    "dropped": entry.dropped if entry else {},
                }
            )
        counts = release.qc_metrics.get("counts", {})
        panel.append(
            {
                "node_id": release.node_id,
                "analyses": analyses,
                "qc": counts if isinstance(counts, dict) else {},
                "qc_released": bool(release.qc_metrics),
            }
        )
    return panel


def _meta_variants(result: GwasResult) -> int | None:
    value = result.metadata.get("n_variants")
    return None if value is None else int(value)


# ------------------------------------------------------------------ provenance


def _recorded_provenance(directory: Path) -> Provenance:
    path = directory / REPORT_JSON
    if not path.is_file():
        return Provenance()
    try:
        recorded = json.loads(path.read_text()).get("provenance", {}).get("coordinator", {})
    except (json.JSONDecodeError, AttributeError):
        return Provenance()
    return Provenance(
        tuple(recorded.get("nodes") or ()),
        recorded.get("quorum"),
        recorded.get("workflow_digest"),
        recorded.get("submitted_at"),
        dict(recorded.get("node_states") or {}),
    )


def _provenance_section(files: StudyFiles, provenance: Provenance) -> dict[str, Any]:
    coordinator_versions: dict[str, Any] = {}
    for result in files.gwas:
        coordinator_versions = dict(result.metadata.get("software_versions") or {})
        if coordinator_versions:
            break
    node_versions = {}
    for release in files.nodes:
        recorded = [release.qc_metrics.get("software_versions")] + [
            read_metadata(path).get("software_versions") for path in release.tables.values()
        ]
        versions: dict[str, Any] = next((v for v in recorded if isinstance(v, dict) and v), {})
        node_versions[release.node_id] = {
            key: versions.get(key) for key in ("federation", "hail", "snakemake", "cwltool")
        }
    return {
        "coordinator": asdict(provenance),
        "nodes_released": [release.node_id for release in files.nodes],
        "meta_software_versions": coordinator_versions,
        "report_software_versions": {
            key: value
            for key, value in software_versions().items()
            if key in ("federation", "python", "numpy", "pandas")
        },
        "node_software_versions": node_versions,
        "crate": files.crate.name if files.crate else (CRATE if provenance.crate_follows else None),
    }


# ------------------------------------------------------------------ helpers


def _number(value: Any, digits: int = 4) -> str:
    """A number for the page: `digits` significant digits, `NA` for none or not finite."""
    if value is None:
        return "NA"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if not math.isfinite(float(value)):
        return "NA"
    return f"{float(value):.{digits}g}"


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null, numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _remove_stale(plots_dir: Path, written: list[Path]) -> None:
    """Figures of an earlier report that this one no longer has."""
    keep = {path.name for path in written}
    for path in plots_dir.glob("*") if plots_dir.is_dir() else []:
        if path.is_file() and path.name not in keep and path.suffix in (".png", ".svg"):
            path.unlink()
