"""`federation demo`: the project's main job, end to end on synthetic data.

It synthesises national cohorts, writes the study a researcher would submit, runs the node
pipeline on each node's own data, and summarises what was released: top hits per analysis
and whether the planted causal variants were found. Layout (DESIGN.md §3):

    DIR/cohorts/<node_id>/...                    the synthetic cohorts
    DIR/study.yaml                               the study
    DIR/nodes/<node_id>/node.yaml, work/         each node's own config and private scratch
    DIR/results/<study_id>/nodes/<node_id>/...   what each node released
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from federation import sumstats
from federation.pipeline.snakemake import PipelineRun, run_node_pipeline

DEMO_STUDY_ID = "demo-cardiometabolic"
GENOME_WIDE_SIGNIFICANCE = 5e-8
TOP_HITS_SHOWN = 5


def demo_study(nodes: list[str]) -> dict[str, Any]:
    """The study the demo submits: allele frequencies, a quantitative and a binary GWAS."""
    return {
        "study_id": DEMO_STUDY_ID,
        "title": "Demo: synthetic cardiometabolic traits across national cohorts",
        "reference_genome": "GRCh38",
        "engine": "snakemake",
        "nodes": nodes,
        "qc": {
            "sample_call_rate_min": 0.97,
            "variant_call_rate_min": 0.95,
            "hwe_p_min": 1e-6,
            "maf_min": 0.01,
        },
        "analyses": [
            {"id": "allele_frequencies", "type": "allele_frequency"},
            {
                "id": "quant_trait_gwas",
                "type": "gwas",
                "trait": "quant_trait",
                "trait_type": "quantitative",
                "covariates": ["age", "sex"],
                "principal_components": 2,
            },
            {
                "id": "binary_trait_gwas",
                "type": "gwas",
                "trait": "binary_trait",
                "trait_type": "binary",
                "test": "wald",
                "covariates": ["age", "sex"],
            },
        ],
    }


def node_config(
    node_id: str, cohort_dir: Path, node_dir: Path, results_dir: Path
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "genotypes": {"format": "vcf", "path": str(cohort_dir / "genotypes.vcf.bgz")},
        "phenotypes": str(cohort_dir / "phenotypes.tsv"),
        "reference_genome": "GRCh38",
        "work_dir": str(node_dir / "work"),
        "results_dir": str(results_dir),
        "hail": {"master": "local[2]", "driver_memory": "4g"},
    }


@dataclass(frozen=True)
class AnalysisSummary:
    node_id: str
    analysis: str
    variants: int
    top_hits: list[tuple[str, float]]
    planted_found: list[str]
    planted_missed: list[str]


def _summarise(
    run: PipelineRun, analysis_ids: list[str], planted: list[str]
) -> list[AnalysisSummary]:
    summaries = []
    for analysis_id in analysis_ids:
        table = sumstats.read_table(run.released_dir / f"{analysis_id}.tsv.gz")
        ranked = table.sort_values(sumstats.NEG_LOG10_P, ascending=False)
        top = [
            (row.variant_id, float(row.neg_log_10_p_value))
            for row in ranked.head(TOP_HITS_SHOWN).itertuples()
        ]
        threshold = -math.log10(GENOME_WIDE_SIGNIFICANCE)
        significant = set(table.loc[table[sumstats.NEG_LOG10_P] > threshold, "variant_id"])
        found = [variant for variant in planted if variant in significant]
        missed = [variant for variant in planted if variant not in significant]
        summaries.append(AnalysisSummary(run.node_id, analysis_id, len(table), top, found, missed))
    return summaries


def run_demo(
    out_dir: Path,
    nodes: int = 1,
    samples_per_node: int | list[int] = 1000,
    variants: int = 10_000,
    seed: int = 42,
    progress: Callable[[str], None] = print,
) -> list[AnalysisSummary]:
    from federation.synth import synthesize  # starts Hail: imported only when needed

    out_dir = out_dir.resolve()
    cohorts_dir = out_dir / "cohorts"
    progress(f"synthesising {nodes} national cohort(s) in {cohorts_dir}")
    result = synthesize(cohorts_dir, nodes=nodes, samples_per_node=samples_per_node, variants=variants,
                        seed=seed, force=True, progress=progress)  # fmt: skip
    node_ids = [cohort.node_id for cohort in result.nodes]
    study = demo_study(node_ids)
    study_path = out_dir / "study.yaml"
    study_path.write_text(yaml.safe_dump(study, sort_keys=False))
    planted = [variant.variant_id for variant in result.causal_variants]
    gwas_ids = [entry["id"] for entry in study["analyses"] if entry["type"] == "gwas"]

    summaries: list[AnalysisSummary] = []
    for cohort in result.nodes:
        node_dir = out_dir / "nodes" / cohort.node_id
        node_dir.mkdir(parents=True, exist_ok=True)
        config_path = node_dir / "node.yaml"
        config = node_config(cohort.node_id, cohort.directory, node_dir, out_dir / "results")
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        progress(f"[{cohort.node_id}] running the node pipeline on {cohort.n_samples} samples")
        run = run_node_pipeline(config_path, study_path, progress=progress)
        progress(
            f"[{cohort.node_id}] released {len(run.released_files)} files to {run.released_dir}"
        )
        summaries += _summarise(run, gwas_ids, planted)
    (out_dir / "demo_summary.json").write_text(
        json.dumps([summary.__dict__ for summary in summaries], indent=2) + "\n"
    )
    return summaries


def format_summary(summaries: list[AnalysisSummary], out_dir: Path) -> str:
    lines = []
    for summary in summaries:
        lines.append(
            f"{summary.node_id} / {summary.analysis}: {summary.variants} variants released"
        )
        for variant, nlp in summary.top_hits:
            lines.append(f"    {variant:<24} -log10 p = {nlp:7.2f}")
        total = len(summary.planted_found) + len(summary.planted_missed)
        lines.append(f"    planted variants at p < 5e-8: {len(summary.planted_found)} of {total}")
    lines.append(f"summary statistics: {out_dir.resolve() / 'results' / DEMO_STUDY_ID / 'nodes'}")
    return "\n".join(lines)
