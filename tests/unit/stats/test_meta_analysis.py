"""federation.stats.meta_analysis: each estimator against its textbook formula, written out independently."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from federation.stats import meta_analysis, tails


def _one_group(values: list[float]) -> np.ndarray:
    return np.zeros(len(values), dtype=np.int64)


def test_fixed_effects_is_inverse_variance_weighting() -> None:
    beta, se = np.array([0.2, 0.5, -0.1]), np.array([0.1, 0.2, 0.4])
    fixed = meta_analysis.fixed_effects(beta, se, _one_group(beta), 1)
    w = 1 / se**2
    assert fixed.beta[0] == pytest.approx((w * beta).sum() / w.sum(), rel=1e-12)
    assert fixed.se[0] == pytest.approx(1 / np.sqrt(w.sum()), rel=1e-12)
    assert fixed.n_studies[0] == 3
    p = 2 * stats.norm.sf(abs(fixed.beta[0] / fixed.se[0]))
    assert np.exp(fixed.log_p[0]) == pytest.approx(p, rel=1e-10)


def test_groups_do_not_mix() -> None:
    beta, se = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 2.0, 2.0])
    group = np.array([0, 1, 0, 1])
    fixed = meta_analysis.fixed_effects(beta, se, group, 2)
    assert fixed.beta[0] == pytest.approx((1 + 3 / 4) / 1.25)
    assert fixed.beta[1] == pytest.approx((2 + 4 / 4) / 1.25)


def test_heterogeneity_q_i2_and_p() -> None:
    beta, se = np.array([0.1, 0.9, 0.4, -0.3]), np.array([0.2, 0.25, 0.3, 0.2])
    group = _one_group(beta)
    fixed = meta_analysis.fixed_effects(beta, se, group, 1)
    het = meta_analysis.heterogeneity(beta, se, group, fixed)
    w = 1 / se**2
    q = (w * (beta - (w * beta).sum() / w.sum()) ** 2).sum()
    assert het.q[0] == pytest.approx(q, rel=1e-12)
    assert het.df[0] == 3
    assert np.exp(het.log_p[0]) == pytest.approx(stats.chi2.sf(q, 3), rel=1e-10)
    assert het.i2[0] == pytest.approx(max(0.0, (q - 3) / q), rel=1e-12)


def test_i2_is_zero_when_q_below_df_and_undefined_for_one_study() -> None:
    beta, se = np.array([0.1, 0.1001, 5.0]), np.array([1.0, 1.0, 1.0])
    group = np.array([0, 0, 1])
    fixed = meta_analysis.fixed_effects(beta, se, group, 2)
    het = meta_analysis.heterogeneity(beta, se, group, fixed)
    assert het.i2[0] == 0.0
    assert np.isnan(het.i2[1]) and np.isnan(het.log_p[1]) and het.df[1] == 0


def test_dersimonian_laird_against_the_formula() -> None:
    beta, se = np.array([0.1, 0.9, 0.4, -0.3]), np.array([0.2, 0.25, 0.3, 0.2])
    group = _one_group(beta)
    fixed = meta_analysis.fixed_effects(beta, se, group, 1)
    het = meta_analysis.heterogeneity(beta, se, group, fixed)
    random = meta_analysis.dersimonian_laird(beta, se, group, fixed, het)
    w = 1 / se**2
    tau2 = max(0.0, (het.q[0] - 3) / (w.sum() - (w**2).sum() / w.sum()))
    w_star = 1 / (se**2 + tau2)
    assert tau2 > 0
    assert random.tau2[0] == pytest.approx(tau2, rel=1e-12)
    assert random.beta[0] == pytest.approx((w_star * beta).sum() / w_star.sum(), rel=1e-12)
    assert random.se[0] == pytest.approx(1 / np.sqrt(w_star.sum()), rel=1e-12)


def test_random_effects_of_one_study_is_the_study() -> None:
    beta, se = np.array([0.123456789]), np.array([0.0312345678])
    group = _one_group(beta)
    fixed = meta_analysis.fixed_effects(beta, se, group, 1)
    random = meta_analysis.dersimonian_laird(
        beta, se, group, fixed, meta_analysis.heterogeneity(beta, se, group, fixed)
    )
    assert random.tau2[0] == 0.0
    assert random.beta[0] == pytest.approx(beta[0], rel=1e-15)
    assert random.se[0] == pytest.approx(se[0], rel=1e-15)
    assert random.se[0] == fixed.se[0]


def test_stouffer_weights_by_square_root_of_n() -> None:
    z, n = np.array([2.0, -1.0, 3.0]), np.array([100.0, 400.0, 900.0])
    weighted = meta_analysis.stouffer(z, n, _one_group(z), 1)
    expected = (np.sqrt(n) * z).sum() / np.sqrt(n.sum())
    assert weighted.z[0] == pytest.approx(expected, rel=1e-12)


def test_p_below_1e300_does_not_underflow() -> None:
    log_p = tails.log_normal_two_sided(np.array([40.0, -40.0]))
    assert np.all(np.isfinite(log_p))
    # One tail, Φ(-40) = 3.66e-350: -log10 = 349.4; two-sided p is twice that: 349.1.
    one_tail = log_p - np.log(2)
    assert tails.neg_log10(one_tail) == pytest.approx([349.437, 349.437], abs=1e-3)
    assert tails.neg_log10(log_p) == pytest.approx([349.136, 349.136], abs=1e-3)
    # ln(2·Φ(-40)) from the Mills-ratio expansion, independent of log_ndtr.
    z = 40.0
    mills = np.log(2) - z**2 / 2 - np.log(z * np.sqrt(2 * np.pi)) + np.log(1 - 1 / z**2 + 3 / z**4)
    assert log_p[0] == pytest.approx(mills, rel=1e-9)


@pytest.mark.parametrize("df", [1, 2, 5, 30])
def test_chi2_log_tail_matches_scipy_and_goes_past_underflow(df: int) -> None:
    q = np.array([0.5, 5.0, 50.0, 500.0, 1200.0])
    ours = tails.log_chi2_sf(q, np.full(q.shape, df))
    assert ours == pytest.approx(stats.chi2.logsf(q, df), rel=1e-9)
    far = tails.log_chi2_sf(np.array([5000.0]), np.array([df]))
    assert np.isfinite(far[0]) and far[0] < -2000
    if df == 1:  # χ²₁ tail = two-sided normal tail of sqrt(Q)
        assert far[0] == pytest.approx(tails.log_normal_two_sided(np.array([np.sqrt(5000.0)]))[0])


def test_genomic_control_lambda_and_factor() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0, np.sqrt(1.3), 200_000)
    lam = meta_analysis.genomic_control_lambda(z)
    assert lam == pytest.approx(1.3, rel=0.02)
    assert meta_analysis.genomic_control_se_factor(lam) == pytest.approx(np.sqrt(lam))
    assert meta_analysis.genomic_control_se_factor(0.9) == 1.0
    assert meta_analysis.genomic_control_se_factor(float("nan")) == 1.0


def test_weighted_frequency_uses_n_then_plain_mean() -> None:
    frequency = np.array([0.2, 0.8, 0.3, 0.5, np.nan])
    n = np.array([1000.0, 2000.0, np.nan, np.nan, 10.0])
    group = np.array([0, 0, 1, 1, 2])
    pooled = meta_analysis.weighted_frequency(frequency, n, group, 3)
    assert pooled[0] == pytest.approx(0.6)
    assert pooled[1] == pytest.approx(0.4)
    assert np.isnan(pooled[2])


def test_frequency_homogeneity_is_pearsons_chi2_on_the_2xk_table() -> None:
    ac, an = np.array([30.0, 60.0, 10.0]), np.array([200.0, 200.0, 100.0])
    result = meta_analysis.frequency_homogeneity(ac, an, _one_group(ac), 1)
    table = np.array([ac, an - ac])
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert result.frequency[0] == pytest.approx(100 / 500)
    assert result.chi2[0] == pytest.approx(chi2, rel=1e-10)
    assert result.df[0] == dof == 2
    assert np.exp(result.log_p[0]) == pytest.approx(p, rel=1e-8)
    p_i, p_bar = ac / an, ac.sum() / an.sum()
    wright = (an * (p_i - p_bar) ** 2).sum() / an.sum() / (p_bar * (1 - p_bar))
    assert result.fst[0] == pytest.approx(wright, rel=1e-10)


def test_monomorphic_pooled_variant_has_no_difference() -> None:
    result = meta_analysis.frequency_homogeneity(
        np.zeros(2), np.array([100.0, 80.0]), np.zeros(2, int), 1
    )
    assert result.chi2[0] == 0.0 and result.fst[0] == 0.0


def test_chi2_median_constant_is_scipys() -> None:
    from scipy import special

    assert float(special.chdtri(1, 0.5)) == meta_analysis.CHI2_1DF_MEDIAN
