"""KING-robust kinship from a cohort's genotype codes, the same doubles as Hail's `hl.king`.

Where it sits: `analyses.relatedness` hands it the kept kinship variants of a cohort small
enough for one host (a PLINK .bed written by Hail) and gets back the pairs above the node's
threshold. Hail computes the same three sample x sample products as Spark block-matrix tasks
in Java linear algebra (~3 GFLOP/s on a node here, 3 x 3-8 minutes at 5,000 samples); NumPy's
BLAS does them in seconds.

Formula (Manichaikul et al. 2010, Bioinformatics 26:2867, the between-family estimator, as
Hail's `hl.king` documents and computes it), for samples i and j over the variants both carry:

    phi_ij = 1/2 + (2 (N_Aa,Aa - 2 N_AA,aa) - N_Aa(i) - N_Aa(j)) / (4 min(N_Aa(i), N_Aa(j)))

N_Aa,Aa: variants where both are heterozygous; N_AA,aa: where one is homozygous for one allele
and the other for the other; N_Aa(i): where i is heterozygous and j is called (and the same for
j). The estimate does not depend on which allele is which.

Guarantee: every phi equals Hail's to the last bit. The counts are products of 0/1 indicator
matrices: integers below 2^24, which float32 holds exactly, so no summation order (any BLAS,
any chunking) changes them; the last line is evaluated in float64 in Hail's order. A pair with
no heterozygous call (min N_Aa = 0) divides by zero as Hail does (inf or nan; nan is never
above a threshold).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# PLINK 1 .bed two-bit codes (variant-major): homozygous first allele, missing, heterozygous,
# homozygous second allele (https://www.cog-genomics.org/plink/1.9/formats#bed).
BED_HOM_FIRST, BED_MISSING, BED_HET, BED_HOM_SECOND = 0b00, 0b01, 0b10, 0b11
# Counts are exact in float32 below 2^24 = 16,777,216 variants (Hail's own products are float64).
MAX_EXACT_VARIANTS = 2**24
# Sample rows of the kinship matrix turned into phi at a time (memory: a few n-wide rows).
PHI_ROW_BLOCK = 1024


@dataclass
class KingCounts:
    """The three sample x sample products KING-robust needs, summed over variant chunks."""

    hom_first_hom_second: np.ndarray  # [i, j]: i homozygous first allele, j second
    het_het: np.ndarray  # [i, j]: both heterozygous
    het_called: np.ndarray  # [i, j]: i heterozygous, j called
    variants: int = 0

    @classmethod
    def empty(cls, n_samples: int) -> KingCounts:
        def zeros() -> np.ndarray:
            return np.zeros((n_samples, n_samples), dtype=np.float32)

        return cls(hom_first_hom_second=zeros(), het_het=zeros(), het_called=zeros())

    def add(self, codes: np.ndarray) -> None:
        """Add a chunk of variants: `codes` (variants x samples) of BED_* two-bit codes."""
        self.variants += codes.shape[0]
        if self.variants >= MAX_EXACT_VARIANTS:
            raise ValueError(f"{self.variants} variants: float32 counts are exact below 2^24")
        hom_first = (codes == BED_HOM_FIRST).astype(np.float32)
        hom_second = (codes == BED_HOM_SECOND).astype(np.float32)
        het = (codes == BED_HET).astype(np.float32)
        called = (codes != BED_MISSING).astype(np.float32)
        self.hom_first_hom_second += hom_first.T @ hom_second
        self.het_het += het.T @ het
        self.het_called += het.T @ called


def bed_codes(packed: np.ndarray, n_samples: int) -> np.ndarray:
    """Unpack .bed rows (variants x ceil(n/4) bytes, first sample in the low bits) to codes."""
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    codes = (packed[:, :, None] >> shifts) & 0b11
    return codes.reshape(packed.shape[0], -1)[:, :n_samples]


def kinship_rows(counts: KingCounts, rows: slice) -> np.ndarray:
    """phi for the samples in `rows` against every sample (float64, Hail's order of operations)."""
    both_hom = counts.hom_first_hom_second
    opposite_homs = (both_hom[rows] + both_hom[:, rows].T).astype(np.float64)
    het_hom_balance = counts.het_het[rows].astype(np.float64) - 2 * opposite_homs
    hets_row = counts.het_called[rows].astype(np.float64)  # i het, j called
    hets_col = counts.het_called[:, rows].T.astype(np.float64)  # j het, i called
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 + (2 * het_hom_balance + -hets_row - hets_col) / (
            4 * np.minimum(hets_row, hets_col)
        )


def _row_blocks(n_samples: int) -> Iterator[slice]:
    for start in range(0, n_samples, PHI_ROW_BLOCK):
        yield slice(start, min(start + PHI_ROW_BLOCK, n_samples))


def kinship_matrix(counts: KingCounts) -> np.ndarray:
    """Every pair's phi (n x n), the diagonal included."""
    n = counts.het_het.shape[0]
    return np.vstack([kinship_rows(counts, rows) for rows in _row_blocks(n)])


def pairs_above(
    counts: KingCounts, sample_ids: Sequence[str], kinship_max: float
) -> list[tuple[str, str]]:
    """Pairs (i, j), i < j as strings, whose phi exceeds `kinship_max`, in the order of Hail's
    `hl.king(...).filter_entries((s_1 < s) & (phi > kinship_max)).entries()`: by i, then by j's
    column (hl.king sorts its rows by sample ID and keeps the columns' order)."""
    found: list[tuple[str, int]] = []
    for rows in _row_blocks(len(sample_ids)):
        phi = kinship_rows(counts, rows)
        for row, col in zip(*np.nonzero(phi > kinship_max), strict=True):
            if sample_ids[rows.start + row] < sample_ids[col]:  # each pair once, never i with i
                found.append((sample_ids[rows.start + row], int(col)))
    return [(i, sample_ids[col]) for i, col in sorted(found)]
