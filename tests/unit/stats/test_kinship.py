"""KING-robust kinship on the host: .bed codes unpacked as PLINK writes them, every pair's phi
equal to the formula evaluated pair by pair over the variants both samples carry (missing
calls included), counts that no chunking changes, and the pairs above a threshold as Hail's
`hl.king` filter gives them (each once, first ID smaller, strictly above, in Hail's order)."""

from __future__ import annotations

import numpy as np
import pytest

from federation.stats.kinship import (
    BED_HET,
    BED_HOM_FIRST,
    BED_HOM_SECOND,
    BED_MISSING,
    KingCounts,
    bed_codes,
    kinship_matrix,
    pairs_above,
)


def _codes(rng: np.random.Generator, n_samples: int, n_variants: int, missing: float) -> np.ndarray:
    """(variants x samples) .bed codes of unrelated samples with `missing` calls left out."""
    frequencies = rng.uniform(0.05, 0.95, n_variants)
    alt = rng.binomial(2, frequencies[:, None], size=(n_variants, n_samples))
    codes = np.choose(alt, [BED_HOM_FIRST, BED_HET, BED_HOM_SECOND]).astype(np.uint8)
    codes[rng.random(codes.shape) < missing] = BED_MISSING
    return codes


def _counts(codes: np.ndarray, chunk: int) -> KingCounts:
    counts = KingCounts.empty(codes.shape[1])
    for start in range(0, codes.shape[0], chunk):
        counts.add(codes[start : start + chunk])
    return counts


def _phi_pair_by_pair(codes: np.ndarray, i: int, j: int) -> float:
    """The formula for one pair, counted over the variants where both are called."""
    a, b = codes[:, i], codes[:, j]
    both = (a != BED_MISSING) & (b != BED_MISSING)
    het_het = float(np.sum(both & (a == BED_HET) & (b == BED_HET)))
    opposite = float(
        np.sum(
            both
            & (
                ((a == BED_HOM_FIRST) & (b == BED_HOM_SECOND))
                | ((a == BED_HOM_SECOND) & (b == BED_HOM_FIRST))
            )
        )
    )
    het_i, het_j = float(np.sum(both & (a == BED_HET))), float(np.sum(both & (b == BED_HET)))
    return 0.5 + (2 * (het_het - 2 * opposite) + -het_i - het_j) / (4 * min(het_i, het_j))


def test_bed_bytes_unpack_to_their_two_bit_codes_first_sample_in_the_low_bits():
    packed = np.array([[0b11_10_01_00, 0b00_00_10_11]], dtype=np.uint8)
    assert bed_codes(packed, 6).tolist() == [[0, 1, 2, 3, 3, 2]]  # the padding is dropped


def test_every_pairs_kinship_is_the_formula_over_the_variants_both_carry():
    rng = np.random.default_rng(7)
    codes = _codes(rng, n_samples=12, n_variants=400, missing=0.05)
    codes[:, 5] = codes[:, 3]  # a duplicate: phi 1/2 up to the calls the copy shares
    phi = kinship_matrix(_counts(codes, chunk=64))
    for i in range(12):
        for j in range(12):
            assert phi[i, j] == _phi_pair_by_pair(codes, i, j), (i, j)
    assert phi[3, 5] == phi[5, 3] == 0.5
    assert np.array_equal(phi, phi.T)


def test_counts_are_the_same_whatever_the_chunks():
    rng = np.random.default_rng(11)
    codes = _codes(rng, n_samples=40, n_variants=1_000, missing=0.02)
    whole, chunked = _counts(codes, chunk=1_000), _counts(codes, chunk=37)
    assert whole.variants == chunked.variants == 1_000
    for name in ("hom_first_hom_second", "het_het", "het_called"):
        assert np.array_equal(getattr(whole, name), getattr(chunked, name)), name


def test_a_sample_without_heterozygous_calls_divides_by_zero_as_hail_does():
    codes = np.array([[BED_HOM_FIRST, BED_HET], [BED_HOM_SECOND, BED_HOM_FIRST]], dtype=np.uint8)
    phi = kinship_matrix(_counts(codes, chunk=2))
    assert np.isnan(phi[0, 0])  # no het for either: 0 / 0
    assert np.isinf(phi[0, 1])  # the second has one het, the first none: x / 0


@pytest.mark.parametrize(
    ("threshold", "pairs"),
    [(0.5 - 1e-9, [("a", "c")]), (0.5, []), (0.6, [])],  # below, at, above the duplicate's 1/2
)
def test_pairs_are_those_strictly_above_the_threshold_once_each_smaller_id_first(
    threshold: float, pairs: list[tuple[str, str]]
):
    rng = np.random.default_rng(3)
    codes = _codes(rng, n_samples=3, n_variants=2_000, missing=0.0)
    codes[:, 0] = codes[:, 2]  # 'c' (column 0) duplicates 'a' (column 2)
    assert pairs_above(_counts(codes, chunk=500), ["c", "b", "a"], threshold) == pairs


def test_pairs_come_in_hails_entry_order_by_first_id_then_by_the_second_ones_column():
    rng = np.random.default_rng(5)
    codes = _codes(rng, n_samples=4, n_variants=2_000, missing=0.0)
    codes[:, 1] = codes[:, 2] = codes[:, 3] = codes[:, 0]  # four copies of one sample
    ids = ["b", "d", "a", "c"]  # columns: b, d, a, c
    pairs = pairs_above(_counts(codes, chunk=2_000), ids, 0.25)
    # rows by ID (a, b, c); within a row, the other IDs in column order (b before d before c)
    assert pairs == [("a", "b"), ("a", "d"), ("a", "c"), ("b", "d"), ("b", "c"), ("c", "d")]
