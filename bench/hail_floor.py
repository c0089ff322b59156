"""The Hail floor: what Hail itself needs for a node run's work, in one script and one JVM.

    uv run python -m bench.hail_floor --node-config NODE.yaml --study-config STUDY.yaml --out DIR

Import + sample/variant QC + allele frequencies + every GWAS of the study + export of the
private tables, with the project's own analysis functions (`federation.analyses`) in one Hail
session, and nothing else: no Snakemake, no QC'd MatrixTable written for later steps, no
disclosure gate, no release. `bench.node_pipeline` runs it on the same cohort as the node
pipeline; the pipeline's time over this one is our own overhead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from federation.analyses.allele_freq import allele_frequencies
from federation.analyses.export import export_private_table
from federation.analyses.genotypes import load_genotypes
from federation.analyses.gwas import analysis_samples, run_gwas
from federation.analyses.qc import run_qc
from federation.analyses.session import HailSettings, hail_session
from federation.pipeline.phenotypes import study_phenotypes
from federation.settings import load_node
from federation.spec import load_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hail_floor", description=__doc__)
    parser.add_argument("--node-config", type=Path, required=True)
    parser.add_argument("--study-config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the tables")
    args = parser.parse_args(argv)
    node, study = load_node(args.node_config), load_study(args.study_config)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = HailSettings(
        master=node.hail.master,
        driver_memory=node.hail.driver_memory,
        tmp_dir=str(args.out / "hail-tmp"),
        log_path=str(args.out / "hail.log"),
        reference_genome=node.reference_genome,
    )
    with hail_session(settings, stop_at_end=False):
        phenotypes = study_phenotypes(node.phenotypes, node.phenotype_coding, study)
        mt, _ = run_qc(load_genotypes(node), phenotypes, study.qc, node.kinship_max)
        if study.allele_frequencies:
            export_private_table(allele_frequencies(mt), args.out / "allele_frequencies.tsv.bgz")
        for analysis in study.gwas:
            fit, _ = run_gwas(analysis_samples(mt, analysis, None), analysis)
            export_private_table(fit, args.out / f"{analysis.id}.tsv.bgz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
