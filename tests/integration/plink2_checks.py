"""Assertions shared by the tests that compare a node's released GWAS with plink2 --glm."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import node_pipeline as anchor

RELATIVE = 1e-4  # beta and SE, relative
# plink2 prints -log10 p with 6 significant digits
NEG_LOG10_P_ABSOLUTE = 1e-3


def worst(values: np.ndarray, frame: pd.DataFrame) -> str:
    at = int(np.nanargmax(values))
    return f"max {values[at]:.3g} at {frame.variant_id.iloc[at]}"


def assert_se_and_p(compared: pd.DataFrame) -> str:
    """SE within RELATIVE and -log10 p within NEG_LOG10_P_ABSOLUTE of plink2's; a summary."""
    se = anchor.relative_difference(compared.standard_error, compared.plink2_se)
    nlp = np.abs(compared.neg_log_10_p_value.to_numpy() - compared.plink2_nlp.to_numpy())
    assert np.all(se <= RELATIVE), f"SE differs from plink2: {worst(se, compared)}"
    assert np.all(nlp <= NEG_LOG10_P_ABSOLUTE), (
        f"-log10 p differs from plink2: {worst(nlp, compared)}"
    )
    return f"SE {se.max():.2g} (relative), -log10 p {nlp.max():.2g} (absolute)"
