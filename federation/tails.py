"""Tail probabilities in log space, so that p-values far below 1e-300 keep their value.

scipy's `t.logsf` underflows to -inf once the tail drops below the float64 range; the
normal and chi-square tails have exact log-space forms in scipy.special.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

# Below this log-probability scipy's t.logsf is computed as log(sf) and loses all precision.
T_LOGSF_RELIABLE = -600.0


def _log_regularized_beta_small_x(x: np.ndarray, a: np.ndarray, b: float) -> np.ndarray:
    """log I_x(a, b) = a log x + b log(1-x) - log a - log B(a,b) + log 2F1(a+b, 1; a+1; x).

    The hypergeometric series (Abramowitz & Stegun 26.5.23 with 15.1.1) is exact for x < 1
    and converges fast where it is needed here: far in the t tail x = df/(df+t^2) is small.
    """
    return (
        a * np.log(x) + b * np.log1p(-x) - np.log(a) - special.betaln(a, b)
        + np.log(special.hyp2f1(a + b, 1.0, a + 1.0, x))
    )  # fmt: skip


def log_t_two_sided(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """log of the two-sided Student-t p-value P(|T_df| >= |t|) (natural log)."""
    t = np.abs(np.asarray(t, dtype=float))
    df = np.broadcast_to(np.asarray(df, dtype=float), t.shape)
    log_p = math.log(2.0) + stats.t.logsf(t, df)
    deep = ~(log_p > T_LOGSF_RELIABLE) & np.isfinite(t)
    if deep.any():
        # Two-sided p = I_{df/(df+t^2)}(df/2, 1/2): the regularised incomplete beta form.
        x = df[deep] / (df[deep] + t[deep] ** 2)
        log_p[deep] = _log_regularized_beta_small_x(x, df[deep] / 2.0, 0.5)
    return log_p


def log_normal_two_sided(z: np.ndarray) -> np.ndarray:
    return math.log(2.0) + special.log_ndtr(-np.abs(np.asarray(z, dtype=float)))


def log_chi2_sf(statistic: np.ndarray, df: float) -> np.ndarray:
    return stats.chi2.logsf(np.asarray(statistic, dtype=float), df)
