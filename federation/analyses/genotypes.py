"""Load a node's genotypes (VCF, PLINK, BGEN or a Hail MatrixTable) as a biallelic MatrixTable.

The result is keyed by sample ID `s` and by locus/alleles, carries `GT` (and, for imputed
inputs, `dosage` with the row field `imputation_quality`: see `dosages.py`), and has
multi-allelic sites split (each alternate allele becomes its own biallelic variant, as the
summary-statistics standard expects).
"""

from __future__ import annotations

from pathlib import Path

import hail as hl

from federation.analyses.dosages import has_dosages, import_bgen, vcf_dosages
from federation.errors import SpecError
from federation.pipeline.genotype_files import bgen_sample_file, check_format
from federation.settings import NodeSettings

AUTOSOMES = [str(i) for i in range(1, 23)]
OTHER_CONTIGS = ["X", "Y", "MT"]


def _contig_recoding(reference_genome: str) -> dict[str, str]:
    """GRCh38 names contigs `chr1`; files often say `1`. GRCh37 uses `1`; files may say `chr1`."""
    if reference_genome == "GRCh38":
        mapping = {name: f"chr{name}" for name in AUTOSOMES + OTHER_CONTIGS}
        mapping["M"] = "chrM"
        mapping["MT"] = "chrM"
        return mapping
    return {f"chr{name}": name for name in AUTOSOMES + OTHER_CONTIGS}


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise SpecError(f"node config 'genotypes.path': {what} '{path}' not found; check the path")


def _import(settings: NodeSettings) -> hl.MatrixTable:
    path, reference = settings.genotype_path, settings.reference_genome
    recoding = _contig_recoding(reference)
    genotype_format = check_format(settings.genotype_format, path)
    if genotype_format == "bgen":
        sample = bgen_sample_file(path, settings.genotype_sample)
        return import_bgen(path, sample, reference, recoding, settings.work_dir / "bgen-index")
    if genotype_format == "vcf":
        _require(path, "VCF")
        mt = hl.import_vcf(
            str(path),
            reference_genome=reference,
            contig_recoding=recoding,
            force_bgz=path.name.endswith(".gz"),
            array_elements_required=False,
        )
        if settings.dosage_field:
            mt = vcf_dosages(mt, settings.dosage_field, path)
        return mt
    if genotype_format == "plink":
        prefix = str(path).removesuffix(".bed")
        for suffix in (".bed", ".bim", ".fam"):
            _require(Path(prefix + suffix), f"PLINK {suffix} file")
        return hl.import_plink(
            bed=prefix + ".bed",
            bim=prefix + ".bim",
            fam=prefix + ".fam",
            reference_genome=reference,
            contig_recoding=recoding,
            quant_pheno=False,
        )
    _require(path, "Hail MatrixTable")
    return hl.read_matrix_table(str(path))


def load_genotypes(settings: NodeSettings) -> hl.MatrixTable:
    try:
        mt = _import(settings)
    except hl.utils.java.FatalError as error:
        first = str(error).strip().splitlines()[0][:200]
        raise SpecError(
            f"node config 'genotypes.path': cannot read '{settings.genotype_path}': {first}"
        ) from None
    if "GT" not in mt.entry:
        raise SpecError(
            f"genotypes '{settings.genotype_path}': no GT field; provide hard calls (GT)"
        )
    if mt.count_cols() == 0:
        raise SpecError(
            f"genotypes '{settings.genotype_path}': the file has no samples; export genotypes with samples"
        )
    mt = mt.select_entries("GT", *(["dosage"] if has_dosages(mt) else []))
    mt = mt.key_cols_by(s=hl.str(mt[next(iter(mt.col_key))]))
    mt = mt.select_cols()
    mt = mt.select_rows(*(["imputation_quality"] if "imputation_quality" in mt.row else []))
    multi = mt.aggregate_rows(hl.agg.count_where(hl.len(mt.alleles) > 2))
    if multi and has_dosages(mt):
        raise SpecError(
            f"genotypes '{settings.genotype_path}': {multi} multi-allelic sites with dosages; "
            "split them first (bcftools norm -m-any) so each ALT has its own dosage"
        )
    if multi:
        mt = hl.split_multi_hts(mt, permit_shuffle=True).select_rows()
    return mt
