"""Deterministic thinning of variants by their locus, for the steps that need only a sample of
the genome (principal components, kinship, the reference check).

The same variants are kept on every run, engine and partitioning: the choice depends on the
locus alone, never on a random draw. Hail has no public hash function for loci, so the locus's
global position is hashed with Knuth's multiplicative method (The Art of Computer Programming,
vol. 3, 6.4): multiply by 2654435761 (~2^32 / golden ratio), keep the low 32 bits, and compare
the bucket with the fraction to keep.
"""

from __future__ import annotations

import hail as hl

KNUTH_MULTIPLIER = 2_654_435_761
TWO_TO_32 = 2**32
BUCKETS = 1_000_000  # the kept fraction's resolution: one in a million


def keep_fraction_of_loci(locus: hl.LocusExpression, fraction: float) -> hl.BooleanExpression:
    """True for about `fraction` of loci, the same loci every time. The global position is
    below ~3.2e9 on GRCh37/38, so its product with the multiplier stays inside int64."""
    per_million = max(1, int(fraction * BUCKETS))
    product = hl.int64(locus.global_position()) * KNUTH_MULTIPLIER
    return (product % TWO_TO_32) % BUCKETS < per_million
