"""Read, code and check a node's phenotype table before any JVM starts.

Missing values are NA, an empty cell or `.`, plus the codes the node config names for
quantitative traits (`phenotype_coding.quantitative_missing`, e.g. PLINK's -9); they become
NaN here, and the analyses leave such samples out (or mean-impute covariates when a study
asks). Boolean columns (`true`/`false`) become 1/0; the configured sex column becomes `sex`
(0 = female, 1 = male) through the configured coding. Problems found here (a missing
column, a covariate with no variance, a binary trait that is not 0/1, an unmapped sex value)
are bad input: each stops the run with one line naming the column, the value and the fix,
before anything is computed or written.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from federation.errors import SpecError
from federation.settings import PhenotypeCoding
from federation.spec import StudySpec, TraitType

SAMPLE_ID = "sample_id"
BINARY_CODES = {0.0, 1.0}
# Always missing, whatever the node config says: R's NA, an empty cell, and PLINK/VCF's '.'.
MISSING_TEXT = ["NA", "", "."]
BOOLEAN_CODES = {"true": 1.0, "false": 0.0}
SEX_COLUMN = "sex"  # what the QC's sex check reads: 0 = female, 1 = male
SEX_CODES = {"female": 0.0, "male": 1.0}


def read_phenotypes(path: Path) -> pd.DataFrame:
    """The phenotype table, indexed by sample_id (strings), other columns as read."""
    if not path.is_file():
        raise SpecError(f"node config 'phenotypes': file '{path}' not found; check the path")
    try:
        frame = pd.read_csv(
            path, sep="\t", dtype={SAMPLE_ID: str}, na_values=MISSING_TEXT, keep_default_na=False
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


def value_text(value: object) -> str:
    """A cell as the table wrote it, for codes and messages: 1.0 -> '1', True -> 'true'."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def boolean_column(values: pd.Series) -> pd.Series | None:
    """`true`/`false` (any case) as 1.0/0.0, missing kept; None if the column is not boolean."""
    present = values.dropna()
    if (
        present.empty
        or pd.api.types.is_numeric_dtype(values)
        and not (pd.api.types.is_bool_dtype(values))
    ):
        return None
    texts = present.map(value_text).str.lower()
    if not texts.isin(list(BOOLEAN_CODES)).all():
        return None
    return values.map(lambda v: np.nan if pd.isna(v) else BOOLEAN_CODES[value_text(v).lower()])


def quantitative_missing(values: pd.Series, codes: Iterable[float]) -> pd.Series:
    """A quantitative trait with the node's missing codes (e.g. -9) as NaN."""
    codes = list(codes)
    if not codes or not pd.api.types.is_numeric_dtype(values):
        return values
    return values.astype(float).mask(values.isin(codes))


def sex_column(values: pd.Series, coding: PhenotypeCoding, path: Path) -> pd.Series:
    """The configured sex column as 0 (female) / 1 (male) through the node's coding."""
    mapping = {str(key).lower(): SEX_CODES[sex] for key, sex in coding.sex_coding.items()}
    coded = []
    for value in values:
        if pd.isna(value):
            coded.append(np.nan)
            continue
        text = value_text(value)
        if text.lower() not in mapping:
            known = ", ".join(sorted(coding.sex_coding))
            raise SpecError(
                f"phenotypes '{path}': sex column '{coding.sex_column}' has value '{text}', not in "
                f"node config 'phenotype_coding.sex_coding' ({known}); map it to female or male there"
            )
        coded.append(mapping[text.lower()])
    return pd.Series(coded, index=values.index, dtype=float)


def code_phenotypes(
    frame: pd.DataFrame, coding: PhenotypeCoding, quantitative_traits: Iterable[str], path: Path
) -> pd.DataFrame:
    """The table as the analyses read it: booleans as 1/0, the node's quantitative missing
    codes as NaN in `quantitative_traits`, and `sex` (0/1) from the configured sex column."""
    coded = frame.copy()
    for column in coded.columns:
        as_boolean = boolean_column(coded[column])
        if as_boolean is not None:
            coded[column] = as_boolean
    for trait in quantitative_traits:
        if trait in coded.columns:
            coded[trait] = quantitative_missing(coded[trait], coding.quantitative_missing)
    if coding.sex_column in frame.columns:
        coded[SEX_COLUMN] = sex_column(frame[coding.sex_column], coding, path)
    return coded


def study_phenotypes(path: Path, coding: PhenotypeCoding, study: StudySpec) -> pd.DataFrame:
    """The node's phenotype table, read and coded for `study` (its quantitative traits)."""
    quantitative = [
        analysis.trait for analysis in study.gwas if analysis.trait_type is TraitType.QUANTITATIVE
    ]
    return code_phenotypes(read_phenotypes(path), coding, quantitative, path)


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
