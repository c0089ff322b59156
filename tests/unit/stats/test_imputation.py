"""MaCH r² against hand-worked cases of its formula."""

from __future__ import annotations

import numpy as np

from federation.stats.imputation import mach_r2


def test_hard_calls_in_hardy_weinberg_proportions_have_r2_one() -> None:
    # p = 0.5 and genotypes 0, 1, 1, 2: var = 0.5 = 2 p (1 - p)
    assert mach_r2([0.0, 1.0, 1.0, 2.0])[0] == 1.0


def test_dosages_all_at_the_mean_carry_no_information() -> None:
    assert mach_r2([0.6, 0.6, 0.6, 0.6])[0] == 0.0


def test_a_worked_example() -> None:
    d = np.array([0.2, 0.9, 1.1, 1.8])  # mean 1, p 0.5, var (0.64+0.01+0.01+0.64)/4 = 0.325
    assert np.isclose(mach_r2(d)[0], 0.325 / 0.5)


def test_dosages_shrunk_towards_the_mean_by_a_have_r2_a_squared() -> None:
    rng = np.random.default_rng(1)
    genotypes = rng.binomial(2, 0.3, size=20_000).astype(float)
    mean = genotypes.mean()
    shrunk = mean + 0.7 * (genotypes - mean)
    exact = mach_r2(genotypes)[0]
    assert np.isclose(mach_r2(shrunk)[0], 0.49 * exact)


def test_missing_dosages_are_left_out_and_monomorphic_variants_have_none() -> None:
    rows = mach_r2([[0.0, 1.0, np.nan, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert rows[0] == 1.0
    assert np.isnan(rows[1])
