"""Imputed genotypes: BGEN and VCF dosages in, one `dosage` entry field and a quality per variant.

A node whose cohort is imputed gives either a BGEN 1.2 file (8-bit probabilities, as Hail
reads them, with its Oxford .sample) or a VCF whose FORMAT carries `DS` (ALT dosage) or `GP`
(genotype probabilities). Either way the MatrixTable that leaves here has

- `GT`: the hard call (BGEN: the most probable genotype; VCF: the file's GT), used by QC only
  (call rates, HWE, the sex check, PCA);
- `dosage`: the expected ALT allele count in [0, 2], what the regression and the allele
  frequencies use (`alt_dosage`);
- row field `imputation_quality`: the VCF's INFO `R2` (minimac) or `INFO` (IMPUTE) where the
  file has one, else MaCH r² of the dosages over all the file's samples (the formula in
  `federation.stats.imputation`), which is what an imputation server would have reported.

Hard-call inputs have no `dosage` field; `alt_dosage` then counts ALT alleles of `GT`, so the
analyses are written once for both.
"""

from __future__ import annotations

from pathlib import Path

import hail as hl

from federation.errors import SpecError

# INFO fields that carry an imputation server's quality estimate, in order of preference:
# minimac's R2 (Michigan/TOPMed servers) and IMPUTE's INFO (Sanger server, IMPUTE5).
QUALITY_INFO_FIELDS = ("R2", "INFO")


def import_bgen(
    path: Path, sample: Path, reference: str, recoding: dict[str, str], index_dir: Path
) -> hl.MatrixTable:
    """A BGEN 1.2 file with GT, GP and dosage. Hail needs an index; it is written to the
    node's work directory (the input directory may be read-only), not beside the BGEN."""
    index_dir.mkdir(parents=True, exist_ok=True)
    index_map = {str(path): str(index_dir / f"{path.name}.idx2")}
    hl.index_bgen(
        str(path), index_file_map=index_map, reference_genome=reference, contig_recoding=recoding
    )
    mt = hl.import_bgen(
        str(path),
        entry_fields=["GT", "GP", "dosage"],
        sample_file=str(sample),
        index_file_map=index_map,
    )
    return mt.annotate_rows(imputation_quality=mach_r2(mt.dosage))


def _first(field: hl.Expression) -> hl.Expression:
    """A Number=A field's value for the (single) ALT allele; a Number=1 field as it is."""
    return field[0] if isinstance(field.dtype, hl.tarray) else field


def vcf_dosages(mt: hl.MatrixTable, field: str, path: Path) -> hl.MatrixTable:
    """Add `dosage` from the VCF's DS or GP and the variant's `imputation_quality`."""
    if field not in mt.entry:
        raise SpecError(
            f"node config 'genotypes.dosage_field': {field} is not a FORMAT field of '{path}'; "
            "use the field the imputation server wrote (DS or GP), or remove dosage_field"
        )
    if field == "DS":
        dosage = hl.float64(_first(mt.DS))
    else:
        dosage = hl.or_missing(hl.len(mt.GP) == 3, mt.GP[1] + 2 * mt.GP[2])
    mt = mt.annotate_entries(dosage=dosage)
    reported = [name for name in QUALITY_INFO_FIELDS if name in mt.info]
    quality = hl.float64(_first(mt.info[reported[0]])) if reported else mach_r2(mt.dosage)
    return mt.annotate_rows(imputation_quality=quality)


def mach_r2(dosage: hl.Float64Expression) -> hl.Float64Expression:
    """MaCH r² of a variant's dosages (an aggregation over samples); missing if monomorphic.

    r² = (Σd²/N - (Σd/N)²) / (2p(1-p)), p = Σd/2N (Li et al. 2010; see stats/imputation.py).
    """
    n = hl.agg.count_where(hl.is_defined(dosage))
    total = hl.agg.sum(dosage)
    squares = hl.agg.sum(dosage * dosage)
    p = total / (2 * n)
    expected = 2 * p * (1 - p)
    return hl.or_missing((n > 0) & (expected > 0), (squares / n - (total / n) ** 2) / expected)


def has_dosages(mt: hl.MatrixTable) -> bool:
    return "dosage" in mt.entry


def alt_dosage(mt: hl.MatrixTable) -> hl.NumericExpression:
    """The ALT allele count of an entry: the imputed dosage, or the hard call's ALT count."""
    return mt.dosage if has_dosages(mt) else mt.GT.n_alt_alleles()
