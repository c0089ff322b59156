"""Meta-analysis statistics: pure, vectorised numpy over rows grouped into variants.

Every function takes per-row arrays (one row = one study's estimate for one variant) and a
`group` array mapping each row to its variant `0..n_groups-1`, and returns per-variant arrays.
No I/O here. p-values are carried as natural logs so that p below 1e-300 stays exact
(`stats.tails`).

Sources:
- Fixed effects, inverse variance: Borenstein, Hedges, Higgins & Rothstein (2009), *Introduction
  to Meta-Analysis*, ch. 11; the same as METAL's STDERR scheme (Willer et al. 2010) and GWAMA.
- Cochran's Q and I²: Cochran (1954) Biometrics 10:101; Higgins & Thompson (2002) Stat Med
  21:1539, I² = max(0, (Q - df) / Q).
- Random effects: DerSimonian & Laird (1986) Control Clin Trials 7:177, method-of-moments tau².
- Sample-size scheme: Stouffer's weighted Z with weights sqrt(n) (Willer et al. 2010, METAL
  SAMPLESIZE scheme).
- Genomic control: Devlin & Roeder (1999) Biometrics 55:997, lambda = median(z²) / 0.4549.
- Allele-frequency homogeneity: Pearson's chi-square on the 2 x K table of allele counts;
  F_ST = AN-weighted variance of node frequencies / (p(1-p)) (Wright 1951; Nei's G_ST for two
  alleles), which equals chi² / sum(AN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from federation.stats.tails import log_chi2_sf, log_normal_two_sided

# Median of the chi-square distribution with 1 df: the expected median of z² under the null
# (scipy.special.chdtri(1, 0.5); a test holds it to that).
CHI2_1DF_MEDIAN = 0.4549364231195724
FloatArray = np.ndarray
IntArray = np.ndarray


@dataclass(frozen=True)
class FixedEffects:
    beta: FloatArray
    se: FloatArray
    z: FloatArray
    log_p: FloatArray
    sum_weights: FloatArray
    n_studies: IntArray


@dataclass(frozen=True)
class Heterogeneity:
    q: FloatArray
    df: IntArray
    log_p: FloatArray  # NaN where df == 0 (a single study: nothing to test)
    i2: FloatArray  # NaN where df == 0


@dataclass(frozen=True)
class RandomEffects:
    tau2: FloatArray
    beta: FloatArray
    se: FloatArray
    z: FloatArray
    log_p: FloatArray


@dataclass(frozen=True)
class StoufferZ:
    z: FloatArray
    log_p: FloatArray
    sum_n: FloatArray


@dataclass(frozen=True)
class FrequencyHomogeneity:
    allele_count: FloatArray
    allele_number: FloatArray
    frequency: FloatArray
    chi2: FloatArray
    df: IntArray
    log_p: FloatArray
    fst: FloatArray
    n_nodes: IntArray


def group_sum(values: FloatArray, group: IntArray, n_groups: int) -> FloatArray:
    """Sum of `values` per group (np.bincount with weights: one pass, no Python loop)."""
    return np.bincount(group, weights=values, minlength=n_groups)


def fixed_effects(beta: FloatArray, se: FloatArray, group: IntArray, n_groups: int) -> FixedEffects:
    """Inverse-variance fixed effects: w=1/se², beta=Σwβ/Σw, se=1/√Σw, z=beta/se."""
    weight = 1.0 / np.square(se)
    sum_w = group_sum(weight, group, n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = group_sum(weight * beta, group, n_groups) / sum_w
        pooled_se = 1.0 / np.sqrt(sum_w)
        z = pooled / pooled_se
    count = np.bincount(group, minlength=n_groups)
    return FixedEffects(pooled, pooled_se, z, log_normal_two_sided(z), sum_w, count)


def heterogeneity(
    beta: FloatArray, se: FloatArray, group: IntArray, fixed: FixedEffects
) -> Heterogeneity:
    """Cochran's Q = Σw(β - beta)² (two-pass, no cancellation), df = k-1, p from χ²(df),
    I² = max(0, (Q - df) / Q) (0 where Q = 0)."""
    n_groups = fixed.beta.shape[0]
    weight = 1.0 / np.square(se)
    q = group_sum(weight * np.square(beta - fixed.beta[group]), group, n_groups)
    df = fixed.n_studies - 1
    q = np.where(df > 0, q, 0.0)  # one study: Q is 0 exactly, not the rounding of β - β̂
    # A subnormal Q overflows (Q - df) / Q to -inf: I² is then 0, as it should be.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        i2 = np.where(q > 0, np.maximum(0.0, (q - df) / q), 0.0)
    i2 = np.where(df > 0, i2, np.nan)
    return Heterogeneity(q, df, log_chi2_sf(q, df), i2)


def dersimonian_laird(
    beta: FloatArray,
    se: FloatArray,
    group: IntArray,
    fixed: FixedEffects,
    het: Heterogeneity,
) -> RandomEffects:
    """DerSimonian-Laird: tau² = max(0, (Q - df) / (Σw - Σw²/Σw)); w* = 1/(se² + tau²).

    A single study has df = 0 and tau² = 0 exactly, so its random-effects estimate is its own
    estimate (GWAMA instead divides rounding noise by Σw - Σw²/Σw ≈ 0 there).
    """
    n_groups = fixed.beta.shape[0]
    weight = 1.0 / np.square(se)
    sum_w2 = group_sum(np.square(weight), group, n_groups)
    denominator = fixed.sum_weights - sum_w2 / fixed.sum_weights
    with np.errstate(divide="ignore", invalid="ignore"):
        tau2 = np.where(
            het.df > 0,
            np.maximum(0.0, (het.q - het.df) / np.where(het.df > 0, denominator, 1.0)),
            0,
        )
    re_weight = 1.0 / (np.square(se) + tau2[group])
    sum_rw = group_sum(re_weight, group, n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = group_sum(re_weight * beta, group, n_groups) / sum_rw
        pooled_se = 1.0 / np.sqrt(sum_rw)
        z = pooled / pooled_se
    return RandomEffects(tau2, pooled, pooled_se, z, log_normal_two_sided(z))


def stouffer(z: FloatArray, n: FloatArray, group: IntArray, n_groups: int) -> StoufferZ:
    """Sample-size weighted Z: Z = Σ√n·z / √Σn (weights √n, so Σweight² = Σn)."""
    sum_n = group_sum(n, group, n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        combined = group_sum(np.sqrt(n) * z, group, n_groups) / np.sqrt(sum_n)
    return StoufferZ(combined, log_normal_two_sided(combined), sum_n)


def genomic_control_lambda(z: FloatArray) -> float:
    """λGC = median(z²) / median(χ²₁); NaN for no finite z."""
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        return float("nan")
    return float(np.median(np.square(finite)) / CHI2_1DF_MEDIAN)


def genomic_control_se_factor(lambda_gc: float) -> float:
    """Multiply SEs by √λ when λ > 1 (never deflate: λ < 1 is sampling noise, not confounding)."""
    if np.isfinite(lambda_gc) and lambda_gc > 1.0:
        return float(np.sqrt(lambda_gc))
    return 1.0


def weighted_frequency(
    frequency: FloatArray, n: FloatArray, group: IntArray, n_groups: int
) -> FloatArray:
    """Pooled effect-allele frequency: Σn·f/Σn over rows with both; plain mean where no row
    has n; NaN where no row has a frequency."""
    has_f = np.isfinite(frequency)
    has_both = has_f & np.isfinite(n) & (n > 0)
    f0 = np.where(has_f, frequency, 0.0)
    n0 = np.where(has_both, n, 0.0)
    sum_n = group_sum(n0, group, n_groups)
    count_f = group_sum(has_f.astype(float), group, n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        by_n = group_sum(f0 * n0, group, n_groups) / sum_n
        plain = group_sum(f0, group, n_groups) / count_f
    return np.where(sum_n > 0, by_n, np.where(count_f > 0, plain, np.nan))


def frequency_homogeneity(
    allele_count: FloatArray, allele_number: FloatArray, group: IntArray, n_groups: int
) -> FrequencyHomogeneity:
    """Pooled frequency ΣAC/ΣAN and Pearson's χ² test that all nodes share it.

    χ² = Σ_i (AC_i - AN_i·p)² / (AN_i·p·(1-p)) over the 2 x K table (df = K - 1);
    F_ST = Σ_i AN_i (p_i - p)² / (ΣAN · p(1-p)) = χ² / ΣAN. Monomorphic pooled variants
    (p = 0 or 1) have χ² = 0 and F_ST = 0: no difference is possible.
    """
    sum_ac = group_sum(allele_count, group, n_groups)
    sum_an = group_sum(allele_number, group, n_groups)
    n_nodes = np.bincount(group, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = sum_ac / sum_an
        spread = pooled * (1.0 - pooled)
        deviation = np.square(allele_count - allele_number * pooled[group])
        terms = np.where(spread[group] > 0, deviation / (allele_number * spread[group]), 0.0)
        chi2 = group_sum(terms, group, n_groups)
        fst = np.where(sum_an > 0, chi2 / sum_an, np.nan)
    df = n_nodes - 1
    return FrequencyHomogeneity(
        sum_ac, sum_an, pooled, chi2, df, log_chi2_sf(chi2, df), fst, n_nodes
    )
