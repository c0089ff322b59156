"""dbSNP identifiers for released rows: the optional GWAS-SSF `rsid` column.

When the node config names a dbSNP VCF (`dbsnp_vcf`, bgzipped with a tabix index), each released
variant gets the `rs` ID of the dbSNP record with the same chromosome, position, REF and ALT (one
of its ALT alleles), read through htslib (pysam) one chromosome at a time; a variant dbSNP does
not list gets none (NA). dbSNP contigs named `1` or `chr1` both match. The IDs are public
knowledge about a position, not about the cohort, so they add nothing to what the row discloses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from federation import sumstats
from federation.errors import SpecError

# What an ID must look like to be released (GWAS-SSF's rsid pattern; anything else is dropped).
RSID = re.compile(r"rs[0-9]{1,12}")


def rsids(rows: pd.DataFrame, dbsnp_vcf: Path) -> pd.Series:
    """Per row of `rows` (chromosome code, base_pair_location, ref, alt): its rsid or None."""
    import pysam

    if not Path(f"{dbsnp_vcf}.tbi").is_file() and not Path(f"{dbsnp_vcf}.csi").is_file():
        raise SpecError(
            f"node config 'dbsnp_vcf': '{dbsnp_vcf}' has no .tbi or .csi index; "
            f"run `tabix -p vcf {dbsnp_vcf}`"
        )
    codes = {str(code): name for name, code in sumstats.CHROMOSOME_CODES.items()}
    found: dict[tuple[str, int, str, str], str] = {}
    with pysam.VariantFile(str(dbsnp_vcf)) as vcf:
        contigs = {str(name) for name in vcf.header.contigs} | set(_indexed_contigs(vcf))
        for chromosome, group in rows.groupby("chromosome", sort=False):
            contig = _contig(str(chromosome), codes, contigs)
            if contig is None:
                continue
            positions = group["base_pair_location"].astype(int)
            for record in vcf.fetch(contig, int(positions.min()) - 1, int(positions.max())):
                if record.id is None or record.ref is None:
                    continue
                if not RSID.fullmatch(record.id.split(";")[0]):
                    continue
                for alt in record.alts or ():
                    key = (str(chromosome), record.pos, record.ref.upper(), alt.upper())
                    found.setdefault(key, record.id.split(";")[0])
    keys = zip(
        rows["chromosome"].astype(str),
        rows["base_pair_location"].astype(int),
        rows["ref"].astype(str).str.upper(),
        rows["alt"].astype(str).str.upper(),
        strict=True,
    )
    return pd.Series([found.get(key) for key in keys], index=rows.index, dtype=object)


def _indexed_contigs(vcf: object) -> list[str]:
    index = getattr(vcf, "index", None)
    return [str(name) for name in index] if index is not None else []


def _contig(code: str, names: dict[str, str], contigs: set[str]) -> str | None:
    """The dbSNP contig of a GWAS-SSF chromosome code: `1`, `chr1`, `X`, `chrX`, `MT`, `chrM`."""
    name = names.get(code, code)
    for candidate in (code, name, f"chr{name}", "chrM" if name in ("M", "MT") else None):
        if candidate is not None and candidate in contigs:
            return candidate
    return None
