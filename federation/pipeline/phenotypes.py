"""Read and check a node's phenotype table before any JVM starts.

Problems found here (a missing column, a covariate with no variance, a binary trait that
is not 0/1) are bad input: each stops the run with one line naming the column, the value
and the fix, before anything is computed or written.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from federation.errors import SpecError

SAMPLE_ID = "sample_id"
BINARY_CODES = {0.0, 1.0}


def read_phenotypes(path: Path) -> pd.DataFrame:
    """The phenotype table, indexed by sample_id (strings), other columns as read."""
    if not path.is_file():
        raise SpecError(f"node config 'phenotypes': file '{path}' not found; check the path")
    try:
        frame = pd.read_csv(
            path, sep="\t", dtype={SAMPLE_ID: str}, na_values=["NA", ""], keep_default_na=False
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise SpecError(
            f"phenotypes '{path}': not a tab-separated table ({error}); fix the file"
        ) from None
    if SAMPLE_ID not in frame.columns:
        raise SpecError(
            f"phenotypes '{path}': no '{SAMPLE_ID}' column (columns: {', '.join(map(str, frame.columns[:8]))}); "
            f"name the sample column '{SAMPLE_ID}'"
        )
    if frame.empty:
        raise SpecError(f"phenotypes '{path}': the table has no rows; add the samples")
    duplicated = frame[SAMPLE_ID][frame[SAMPLE_ID].duplicated()]
    if not duplicated.empty:
        raise SpecError(
            f"phenotypes '{path}': sample_id '{duplicated.iloc[0]}' appears twice; keep one row per sample"
        )
    return frame.set_index(SAMPLE_ID)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], where: str, path: Path) -> None:
    for column in columns:
        if column not in frame.columns:
            raise SpecError(
                f"{where}: phenotype column '{column}' not found in '{path}' "
                f"(columns: {', '.join(map(str, frame.columns[:10]))}); fix the name in the study config"
            )
        if not pd.api.types.is_numeric_dtype(frame[column]):
            example = (
                frame[column].dropna().astype(str).iloc[0] if frame[column].notna().any() else "NA"
            )
            raise SpecError(
                f"{where}: phenotype column '{column}' is not numeric (value '{example}'); encode it as numbers"
            )


def check_binary(values: pd.Series, trait: str, where: str) -> None:
    observed = set(np.unique(values.dropna().to_numpy(dtype=float)))
    unexpected = sorted(observed - BINARY_CODES)
    if unexpected:
        raise SpecError(
            f"{where}: binary trait '{trait}' has value {unexpected[0]:g}; code controls as 0 and cases as 1"
        )
    if observed != BINARY_CODES:
        only = "controls" if observed == {0.0} else "cases"
        raise SpecError(
            f"{where}: binary trait '{trait}' has only {only}; a case-control GWAS needs both"
        )


def check_variance(frame: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Refuse covariates that are constant among the analysed samples (the model would be singular)."""
    for column in columns:
        values = frame[column].to_numpy(dtype=float)
        if values.size and np.nanstd(values) == 0:
            raise SpecError(
                f"{where}: covariate '{column}' has no variance among the {values.size} analysed samples "
                f"(all {values[0]:g}); remove it from the covariates"
            )
