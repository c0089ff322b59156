"""Imputation quality of a variant from its dosages: the MaCH r² ("INFO") metric.

MaCH r² (Li et al. 2010, Genet Epidemiol 34:816, "MaCH: using sequence and genotype data to
estimate haplotypes and unobserved genotypes", the Rsq column of MaCH/minimac) is the
variance of the imputed ALT dosages over the variance they would have if every genotype were
known under Hardy-Weinberg equilibrium:

    p  = sum(d) / 2N,   r² = (sum(d²)/N - (sum(d)/N)²) / (2 p (1 - p))

A perfectly imputed variant has r² ≈ 1; one imputed no better than its frequency has r² = 0.
It is undefined (None here, NaN over arrays) for a monomorphic variant. This is the
'machr2' column of `plink2 --freq`, which the tests use as the independent anchor. The node
computes the same formula in Hail (`analyses/dosages.py`); this array version is the
reference the unit tests hold it to.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def mach_r2(dosages: ArrayLike) -> np.ndarray:
    """r² per row of a (variants, samples) dosage array (a 1-D array is one variant).

    Missing dosages (NaN) are left out of N and of both sums.
    """
    d = np.atleast_2d(np.asarray(dosages, dtype=float))
    called = ~np.isnan(d)
    n = called.sum(axis=1)
    total = np.where(called, d, 0.0).sum(axis=1)
    squares = np.where(called, d * d, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        p = total / (2 * n)
        expected = 2 * p * (1 - p)
        r2 = (squares / n - mean * mean) / expected
    return np.where((n > 0) & (expected > 0), r2, np.nan)
