"""The data of a forest plot: each node's estimate of a lead variant, on the meta's effect allele.

Node rows are found in the nodes' released GWAS-SSF files by chromosome and position and turned
to the meta-analysis's effect allele: the same pair keeps β, the swapped pair negates it (a
strand flip of a non-palindromic SNP counts as its complement). For palindromic SNPs (A/T, C/G)
the labels cannot tell a flip from a swap, so the node's effect-allele frequency decides, as in
the meta-analysis (`stats.harmonize`). The pooled rows are recomputed from exactly these node
rows with the meta-analysis's own formulas (`stats.meta_analysis`: inverse-variance fixed
effects, DerSimonian-Laird random effects), so the plot shows what its rows combine to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from federation.report.inputs import chromosome_codes
from federation.report.plots import ForestRow
from federation.stats import meta_analysis
from federation.stats.harmonize import COMPLEMENT


@dataclass(frozen=True)
class Lead:
    """A lead variant as the meta-analysis wrote it."""

    chromosome: int
    position: int
    effect_allele: str
    other_allele: str
    frequency: float  # the meta's effect-allele frequency (NaN when not written)


def node_rows(lead: Lead, node_tables: Mapping[str, pd.DataFrame]) -> list[ForestRow]:
    """Each node's β and SE of `lead` on the meta's effect allele, with the node's N; nodes
    without the variant are left out."""
    rows = []
    for node_id, table in node_tables.items():
        here = table[
            (chromosome_codes(table["chromosome"]) == lead.chromosome)
            & (table["base_pair_location"].to_numpy() == lead.position)
        ]
        for _, row in here.iterrows():
            sign = orientation(
                lead,
                str(row["effect_allele"]),
                str(row["other_allele"]),
                float(row.get("effect_allele_frequency", np.nan)),
            )
            if sign == 0:
                continue
            n = float(row["n"]) if "n" in row and pd.notna(row["n"]) else None
            rows.append(
                ForestRow(node_id, sign * float(row["beta"]), float(row["standard_error"]), n)
            )
            break
    return rows


def orientation(lead: Lead, effect: str, other: str, frequency: float) -> int:
    """+1 if (effect, other) is the lead's effect allele, -1 if it is the other one, 0 if the
    row is another variant at the same position."""
    effect, other = effect.upper(), other.upper()
    wanted = (lead.effect_allele.upper(), lead.other_allele.upper())
    flipped = (COMPLEMENT.get(effect), COMPLEMENT.get(other))
    palindromic = COMPLEMENT.get(wanted[0]) == wanted[1]
    if palindromic and {effect, other} == set(wanted):
        if np.isfinite(frequency) and np.isfinite(lead.frequency):
            same = abs(frequency - lead.frequency) <= abs(1.0 - frequency - lead.frequency)
            return 1 if same else -1
        return 1 if (effect, other) == wanted else -1
    if (effect, other) == wanted or flipped == wanted:
        return 1
    if (other, effect) == wanted or flipped[::-1] == wanted:
        return -1
    return 0


def pooled_rows(nodes: list[ForestRow]) -> list[ForestRow]:
    """The fixed- and random-effects estimates of `nodes` (empty for no node)."""
    if not nodes:
        return []
    beta = np.array([row.beta for row in nodes])
    se = np.array([row.se for row in nodes])
    group = np.zeros(len(nodes), dtype=np.int64)
    fixed = meta_analysis.fixed_effects(beta, se, group, 1)
    het = meta_analysis.heterogeneity(beta, se, group, fixed)
    random = meta_analysis.dersimonian_laird(beta, se, group, fixed, het)
    return [
        ForestRow("fixed effects (IVW)", float(fixed.beta[0]), float(fixed.se[0]), None, True),
        ForestRow("random effects (DL)", float(random.beta[0]), float(random.se[0]), None, True),
    ]
