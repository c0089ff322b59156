"""The genome-build check: REF alleles of the node's genotypes against its reference FASTA.

Genotypes declared as one build but positioned on another pass every other check and give
wrong answers silently. With `reference_fasta` in the node config, the QC step reads the REF
allele of a deterministic sample of variants (by hash of the locus) from the FASTA before any
analysis and refuses the genotypes when more than `reference_check.max_mismatch_rate` of
them differ. On the right build almost all match (a few damaged or soft-masked sites at most);
on another build about three in four differ, as a random base would.

The FASTA is read directly (`federation.fasta`: plain text, with its samtools `.fai` index
when present), so the check needs no FASTA support in Hail and no download.
"""

from __future__ import annotations

import hail as hl

from federation.analyses.thinning import keep_fraction_of_loci
from federation.errors import SpecError
from federation.fasta import Fasta, build_refusal, mismatches
from federation.settings import NodeSettings


def sampled_variants(mt: hl.MatrixTable, n: int) -> list[tuple[str, int, str]]:
    """About `n` variants of `mt`, chosen by hash of the locus (the same ones on every run)."""
    rows = mt.rows()
    total = rows.count()
    if total > n:
        rows = rows.filter(keep_fraction_of_loci(rows.locus, n / total))
    found = rows.aggregate(
        hl.agg.collect((rows.locus.contig, rows.locus.position, rows.alleles[0]))
    )
    return [(str(contig), int(position), str(ref)) for contig, position, ref in found]


def check_reference(mt: hl.MatrixTable, node: NodeSettings) -> tuple[int, int]:
    """Refuse (SpecError) genotypes whose REF alleles do not fit `node.reference_fasta`;
    return (mismatches, checked), (0, 0) when no FASTA is configured."""
    if node.reference_fasta is None:
        return 0, 0
    fasta = Fasta(node.reference_fasta)
    settings = node.reference_check
    differ, checked = mismatches(fasta, sampled_variants(mt, settings.sample_variants))
    refusal = build_refusal(
        node.reference_genome, differ, checked, settings.max_mismatch_rate, node.reference_fasta
    )
    if refusal:
        raise SpecError(refusal)
    return differ, checked
