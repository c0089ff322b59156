"""Checks a node's inputs against a study before any JVM starts (no Hail here).

Bad input should cost a second, not a Spark start-up, and should stop the run before any
file is written: a missing phenotype column, a covariate without variance, a VCF with no
samples, sample IDs that do not match, a study on another reference genome.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from federation.errors import SpecError
from federation.pipeline.genotype_files import bgen_sample_file, bgen_sample_ids, check_format
from federation.pipeline.phenotypes import (
    check_binary,
    check_variance,
    require_columns,
    study_phenotypes,
)
from federation.settings import NodeSettings
from federation.spec import StudySpec, TraitType

# A VCF header longer than this is not a VCF we can take (and reading on would be slow).
MAX_VCF_HEADER_LINES = 1_000_000


def vcf_sample_ids(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith((".gz", ".bgz")) else open
    try:
        with opener(path, "rt") as handle:
            for line_number, line in enumerate(handle):
                if line.startswith("#CHROM"):
                    return line.rstrip("\n").split("\t")[9:]
                if not line.startswith("##") or line_number > MAX_VCF_HEADER_LINES:
                    break
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise SpecError(
            f"genotypes '{path}': cannot read the VCF header ({error}); check the file"
        ) from None
    raise SpecError(f"genotypes '{path}': no #CHROM header line; is this a VCF?")


def plink_sample_ids(prefix: Path) -> list[str]:
    fam = Path(str(prefix).removesuffix(".bed") + ".fam")
    if not fam.is_file():
        raise SpecError(
            f"node config 'genotypes.path': PLINK .fam file '{fam}' not found; check the path"
        )
    # Hail keys PLINK samples by the individual ID (second column).
    return [line.split()[1] for line in fam.read_text().splitlines() if line.strip()]


def genotype_sample_ids(node: NodeSettings) -> list[str] | None:
    """Sample IDs of the genotype file, or None where only Hail can tell (MatrixTable)."""
    path = node.genotype_path
    if node.genotype_format == "plink":  # the .fam is named first: the IDs come from it
        samples = plink_sample_ids(path)
        check_format("plink", path)
        return samples
    genotype_format = check_format(node.genotype_format, path)
    if genotype_format == "vcf":
        return vcf_sample_ids(path)
    if genotype_format == "plink":
        return plink_sample_ids(path)
    if genotype_format == "bgen":
        return bgen_sample_ids(bgen_sample_file(path, node.genotype_sample))
    return None


def check_node_inputs(node: NodeSettings, study: StudySpec) -> None:
    if node.reference_genome != study.reference_genome:
        raise SpecError(
            f"study '{study.study_id}' 'reference_genome': {study.reference_genome} but node "
            f"'{node.node_id}' holds {node.reference_genome} data; run a {node.reference_genome} study"
        )
    phenotypes = study_phenotypes(node.phenotypes, node.phenotype_coding, study)
    for analysis in study.gwas:
        where = f"study '{study.study_id}' analysis '{analysis.id}'"
        require_columns(phenotypes, (analysis.trait, *analysis.covariates), where, node.phenotypes)
        complete = phenotypes[[analysis.trait, *analysis.covariates]].dropna()
        if complete.empty:
            continue  # no usable sample: the analysis is refused as such (no_usable_data)
        if analysis.trait_type is TraitType.BINARY:
            check_binary(complete[analysis.trait], analysis.trait, where)
        check_variance(complete, analysis.covariates, where)

    samples = genotype_sample_ids(node)
    if samples is None:
        return
    if not samples:
        raise SpecError(
            f"genotypes '{node.genotype_path}': the file has no samples; export genotypes with sample columns"
        )
    if not set(samples).intersection(phenotypes.index):
        raise SpecError(
            f"genotype/phenotype sample IDs do not match: none of {len(samples)} genotyped samples "
            f"(e.g. '{samples[0]}') is in '{node.phenotypes}' (e.g. '{phenotypes.index[0]}'); "
            "use the same sample_id in both"
        )
