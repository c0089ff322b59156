"""Checks of a written report shared by the unit and integration tiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from federation import sumstats


def row_at(table: pd.DataFrame, lead: dict[str, Any]) -> pd.Series:
    """The row of a GWAS-SSF table at a lead's chromosome and position."""
    here = (table.chromosome == str(lead["chromosome"])) & (
        table.base_pair_location == lead["position"]
    )
    return table[here].iloc[0]


def assert_forest_matches(lead: dict[str, Any], node_files: dict[str, Path], meta: Path) -> None:
    """The lead's forest rows are each node's released β, SE and N on the meta's effect allele,
    and its fixed-effects row is the meta-analysis's own estimate."""
    rows = {row["label"]: row for row in lead["forest_rows"]}
    for node, path in node_files.items():
        mine = row_at(sumstats.read_table(path), lead)
        alleles = {lead["effect_allele"], lead["other_allele"]}
        assert {mine.effect_allele, mine.other_allele} == alleles, (node, mine)
        sign = 1 if mine.effect_allele == lead["effect_allele"] else -1
        assert rows[node]["beta"] == pytest.approx(sign * mine.beta, rel=1e-12)
        assert rows[node]["se"] == pytest.approx(mine.standard_error, rel=1e-12)
        assert rows[node]["n"] == mine.n
    written = row_at(sumstats.read_table(meta), lead)
    assert rows["fixed effects (IVW)"]["beta"] == pytest.approx(written.beta, rel=1e-8)
    assert rows["fixed effects (IVW)"]["se"] == pytest.approx(written.standard_error, rel=1e-8)
    if "beta_random" in written:
        assert rows["random effects (DL)"]["beta"] == pytest.approx(written.beta_random, rel=1e-8)
