"""Regions of the human reference builds that the analyses treat specially (pure, no Hail).

The pseudo-autosomal regions (PARs) of chrX pair with chrY in male meiosis, so there every
sample is diploid and a PAR variant is analysed like an autosomal one; outside them a male
carries one X. Coordinates are 1-based and inclusive, from the Genome Reference
Consortium's assembly notes (GRCh38: GCA_000001405.15, GRCh37: GCA_000001405.1), the same
intervals Hail's built-in reference genomes carry.
"""

from __future__ import annotations

PSEUDOAUTOSOMAL_REGIONS: dict[str, tuple[tuple[int, int], ...]] = {
    "GRCh38": ((10_001, 2_781_479), (155_701_383, 156_030_895)),
    "GRCh37": ((60_001, 2_699_520), (154_931_044, 155_260_560)),
}
# Excluded from every analysis unless a study lists other chromosomes: chrY and the
# mitochondrial genome have no diploid model in a GWAS (haploid, and for MT heteroplasmic).
DEFAULT_EXCLUDED_CHROMOSOMES = ("Y", "MT")


def bare_chromosome(contig: str) -> str:
    """'chrX' -> 'X', 'chrM' / 'M' -> 'MT', '7' -> '7' (the GWAS-SSF spelling)."""
    name = contig.removeprefix("chr")
    return "MT" if name == "M" else name


def in_x_par(reference_genome: str, contig: str, position: int) -> bool:
    """Whether a chrX position lies in a pseudo-autosomal region of the build."""
    if bare_chromosome(contig) != "X":
        return False
    return any(start <= position <= end for start, end in PSEUDOAUTOSOMAL_REGIONS[reference_genome])


def in_x_nonpar(reference_genome: str, contig: str, position: int) -> bool:
    """chrX outside the PARs, where males are hemizygous."""
    return bare_chromosome(contig) == "X" and not in_x_par(reference_genome, contig, position)
