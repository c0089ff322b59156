"""The relatedness step's minimum number of variants: below it KING-robust is skipped, with
its reason; at and above it the estimate runs. The noise constant behind the minimum is
re-measured here on a simulated unrelated cohort with Hail's documented KING formula."""

from __future__ import annotations

import numpy as np
import pytest

from federation.analyses.relatedness import (
    KING_NOISE_SD,
    KINSHIP_NOISE_MARGIN,
    KINSHIP_SAMPLE_SPLITS,
    KINSHIP_VARIANTS,
    MAX_EXPECTED_NOISE_PAIRS,
    MAX_KINSHIP_BLOCK_SIZE,
    MIN_KINSHIP_BLOCK_SIZE,
    kinship_block_size,
    kinship_variant_budget,
    min_kinship_variants,
    too_few_variants,
)
from federation.settings import SECOND_DEGREE_KINSHIP

N_SAMPLES = 1_000


def test_the_minimum_for_a_thousand_samples_at_second_degree_sits_between_noise_and_the_demo():
    needed = min_kinship_variants(N_SAMPLES, SECOND_DEGREE_KINSHIP)
    # ~1,600-1,800 common variants called a noise pair related; the synthetic nodes' ~4,600 did not.
    assert 1_800 < needed < 4_500


def test_the_minimum_grows_with_the_cohort_and_with_a_lower_threshold():
    small, large = (min_kinship_variants(n, SECOND_DEGREE_KINSHIP) for n in (1_000, 100_000))
    assert small < large
    third_degree = min_kinship_variants(N_SAMPLES, SECOND_DEGREE_KINSHIP / 2)
    assert third_degree == pytest.approx(4 * small, rel=1e-3)  # M ~ 1 / kinship_max^2


def test_a_cohort_without_pairs_needs_no_variants():
    assert min_kinship_variants(1, SECOND_DEGREE_KINSHIP) == 0


def test_below_the_minimum_the_step_is_skipped_with_its_reason():
    needed = min_kinship_variants(N_SAMPLES, SECOND_DEGREE_KINSHIP)
    reason = too_few_variants(needed - 1, N_SAMPLES, SECOND_DEGREE_KINSHIP)
    assert reason is not None and reason.startswith("skipped: ")
    assert f"{needed - 1:,} common autosomal variants" in reason and f"{needed:,}" in reason
    assert "0.0884" in reason


@pytest.mark.parametrize("extra", [0, 1, 10_000])
def test_at_and_above_the_minimum_the_step_runs(extra: int):
    needed = min_kinship_variants(N_SAMPLES, SECOND_DEGREE_KINSHIP)
    assert too_few_variants(needed + extra, N_SAMPLES, SECOND_DEGREE_KINSHIP) is None


def _king_robust(genotypes: np.ndarray) -> np.ndarray:
    """Hail's `hl.king` (between-family KING-robust, Manichaikul et al. 2010) of (n, M) calls."""
    het = (genotypes == 1).astype(float)
    hom_ref, hom_alt = (genotypes == 0).astype(float), (genotypes == 2).astype(float)
    n_het = het.sum(axis=1)
    both_het = het @ het.T
    opposite = hom_ref @ hom_alt.T + hom_alt @ hom_ref.T
    smaller = np.minimum(n_het[:, None], n_het[None, :])
    return 0.5 - (4 * opposite + n_het[:, None] + n_het[None, :] - 2 * both_het) / (4 * smaller)


def test_the_noise_constant_bounds_king_robust_on_unrelated_samples_and_the_minimum_holds():
    rng = np.random.default_rng(16)
    n = 400
    needed = min_kinship_variants(n, SECOND_DEGREE_KINSHIP)
    frequencies = rng.uniform(0.05, 0.95, needed)
    kinship = _king_robust(rng.binomial(2, frequencies, size=(n, needed)))
    pairs = kinship[np.triu_indices(n, 1)]
    assert pairs.std() * np.sqrt(needed) <= KING_NOISE_SD
    assert (pairs > SECOND_DEGREE_KINSHIP).sum() <= max(1, 20 * MAX_EXPECTED_NOISE_PAIRS)
    fewer = needed // 4  # half the SD's worth of variants: noise crosses the threshold
    kinship = _king_robust(rng.binomial(2, frequencies[:fewer], size=(n, fewer)))
    assert (kinship[np.triu_indices(n, 1)] > SECOND_DEGREE_KINSHIP).sum() > 0


def test_the_kinship_budget_is_the_fixed_variant_count_while_a_cohort_needs_less():
    for n_samples in (1_000, 5_000, 10_000):
        needed = min_kinship_variants(n_samples, SECOND_DEGREE_KINSHIP)
        assert needed * KINSHIP_NOISE_MARGIN <= KINSHIP_VARIANTS
        assert kinship_variant_budget(needed) == KINSHIP_VARIANTS


def test_the_kinship_budget_keeps_its_margin_above_a_large_cohorts_minimum():
    needed = min_kinship_variants(1_000_000, SECOND_DEGREE_KINSHIP / 2)  # third degree
    assert needed * KINSHIP_NOISE_MARGIN > KINSHIP_VARIANTS
    assert kinship_variant_budget(needed) == needed * KINSHIP_NOISE_MARGIN
    assert kinship_variant_budget(needed) > needed


def test_a_small_cohorts_kinship_blocks_stay_at_the_smallest_block_size():
    below = MIN_KINSHIP_BLOCK_SIZE * KINSHIP_SAMPLE_SPLITS - 1
    assert kinship_block_size(10) == MIN_KINSHIP_BLOCK_SIZE
    assert kinship_block_size(below) == MIN_KINSHIP_BLOCK_SIZE


def test_a_mid_sized_cohort_is_cut_into_the_split_count_of_blocks_per_side():
    for n_samples in (1_200, 5_000, 16_000):
        block = kinship_block_size(n_samples)
        assert MIN_KINSHIP_BLOCK_SIZE < block < MAX_KINSHIP_BLOCK_SIZE
        assert -(-n_samples // block) == KINSHIP_SAMPLE_SPLITS  # ceil: blocks per side


def test_a_large_cohort_keeps_hails_default_block_size():
    at = MAX_KINSHIP_BLOCK_SIZE * KINSHIP_SAMPLE_SPLITS
    assert kinship_block_size(at) == MAX_KINSHIP_BLOCK_SIZE
    assert kinship_block_size(at + 1) == MAX_KINSHIP_BLOCK_SIZE
    assert kinship_block_size(1_000_000) == MAX_KINSHIP_BLOCK_SIZE
