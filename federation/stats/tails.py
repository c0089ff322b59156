"""Tail probabilities in log space, so that p-values far below 1e-300 keep their value.

Every p-value of the project (node releases and meta-analyses) comes from here as ln p;
`neg_log10` turns it into -log10 p, `p_from_log` into p (0.0 below the float64 range, which is
why outputs also carry -log10 p). scipy.special is imported on first use: its import takes
~0.15 s, which the meta-analysis spends in the background while it reads its inputs (not
scipy.stats, whose import costs ~1 s: only the Student t tail needs it).

Sources:
- Normal: ln 2Φ(-|z|) with log_ndtr, exact far into the tail.
- Chi-square: ln Q(df/2, x/2) from chdtrc; where Q < 1e-250 the asymptotic series of the upper
  incomplete gamma function (Abramowitz & Stegun 6.5.32).
- Student t: scipy's t.logsf, and beyond its reach the regularised incomplete beta
  I_{df/(df+t²)}(df/2, 1/2) through its hypergeometric series (A&S 26.5.23 with 15.1.1).
"""

from __future__ import annotations

import math
from functools import cache
from types import ModuleType

import numpy as np

LN10 = math.log(10.0)
# Below this survival probability chdtrc loses relative precision; switch to the asymptotic
# series of the upper incomplete gamma function there.
CHI2_SERIES_BELOW = 1e-250
# Below this log-probability scipy's t.logsf is computed as log(sf) and loses all precision.
T_LOGSF_RELIABLE = -600.0


@cache
def special() -> ModuleType:
    """scipy.special, imported on first use (see the module docstring)."""
    from scipy import special as module

    return module


def neg_log10(log_p: np.ndarray) -> np.ndarray:
    """-log10 p from ln p (keeps its precision where p itself underflows)."""
    return -np.asarray(log_p) / LN10


def p_from_log(log_p: np.ndarray) -> np.ndarray:
    """p from ln p; 0.0 below the float64 range (write those with `neg_log10`)."""
    return np.exp(log_p)


def log_normal_two_sided(z: np.ndarray) -> np.ndarray:
    """ln of the two-sided normal p-value, 2·Φ(-|z|), exact far past 1e-300 (log_ndtr)."""
    return math.log(2.0) + special().log_ndtr(-np.abs(np.asarray(z, dtype=float)))


def log_chi2_sf(statistic: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    """ln of the chi-square upper tail Q(df/2, x/2); NaN where df <= 0.

    Where the tail is tiny, ln Q(a, y) = (a-1) ln y - y - lnΓ(a) + ln(1 + (a-1)/y
    + (a-1)(a-2)/y² + (a-1)(a-2)(a-3)/y³) (Abramowitz & Stegun 6.5.32), exact to float
    precision for y >> a, which holds wherever Q < 1e-250 for the df used here.
    """
    x = np.asarray(statistic, dtype=float)
    df = np.broadcast_to(np.asarray(df, dtype=float), x.shape)
    valid = df > 0
    safe_df = np.where(valid, df, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        direct = np.log(special().chdtrc(safe_df, x))
        a, y = safe_df / 2.0, x / 2.0
        series = 1.0 + (a - 1) / y + (a - 1) * (a - 2) / y**2 + (a - 1) * (a - 2) * (a - 3) / y**3
        tail = (a - 1) * np.log(y) - y - special().gammaln(a) + np.log(series)
    use_tail = ~(direct > np.log(CHI2_SERIES_BELOW)) & (y > 0)
    return np.where(valid, np.where(use_tail, tail, direct), np.nan)


def _log_regularized_beta_small_x(x: np.ndarray, a: np.ndarray, b: float) -> np.ndarray:
    """log I_x(a, b) = a log x + b log(1-x) - log a - log B(a,b) + log 2F1(a+b, 1; a+1; x).

    The hypergeometric series (Abramowitz & Stegun 26.5.23 with 15.1.1) is exact for x < 1
    and converges fast where it is needed here: far in the t tail x = df/(df+t^2) is small.
    """
    return (
        a * np.log(x)
        + b * np.log1p(-x)
        - np.log(a)
        - special().betaln(a, b)
        + np.log(special().hyp2f1(a + b, 1.0, a + 1.0, x))
    )


def log_t_two_sided(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """ln of the two-sided Student-t p-value P(|T_df| >= |t|)."""
    from scipy import stats  # only the node's linear GWAS release needs it (~1 s to import)

    t = np.abs(np.asarray(t, dtype=float))
    df = np.broadcast_to(np.asarray(df, dtype=float), t.shape)
    log_p = math.log(2.0) + stats.t.logsf(t, df)
    deep = ~(log_p > T_LOGSF_RELIABLE) & np.isfinite(t)
    if deep.any():
        # Two-sided p = I_{df/(df+t^2)}(df/2, 1/2): the regularised incomplete beta form.
        x = df[deep] / (df[deep] + t[deep] ** 2)
        log_p[deep] = _log_regularized_beta_small_x(x, df[deep] / 2.0, 0.5)
    return log_p
