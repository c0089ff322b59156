"""The node-owned, default-deny disclosure gate.

Each rule is one small function that looks at an aggregate about to leave the node and
returns a `RuleOutcome` (rule, threshold, observed value, verdict). A release-level rule
that fails withholds the whole release; a row-level rule removes rows, and removed rows
look exactly like rows that failed QC (they are absent; no reason code is released).
The thresholds are DESIGN.md §5. A node admin or a study may tighten them, never loosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from federation.errors import DisclosureError


class Verdict(StrEnum):
    PASS = "pass"
    SUPPRESS_ROWS = "suppress_rows"
    WITHHOLD = "withhold"


@dataclass(frozen=True)
class DisclosurePolicy:
    min_cohort_af: int = 50  # allele frequencies of smaller cohorts stay home
    min_mac_af: int = 10  # rarer alleles could point at individuals
    min_an_af: int = 100  # an AF row must summarise at least 50 diploid samples
    min_cohort_gwas: int = 100
    min_mac_gwas: int = 20
    min_carriers_per_group: int = (
        10  # binary traits: minor-allele carriers among cases and controls
    )
    min_residual_df: int = 10
    max_parameter_fraction: float = 0.33  # parameters <= 0.33 N: no saturated models
    n_rounding: int = 5  # sample sizes leave rounded to the nearest 5
    max_phenotype_fraction: float = 0.05  # phenotype budget: floor(0.05 N) per cohort

    def tightened(self, overrides: Mapping[str, Any], source: str) -> DisclosurePolicy:
        """Apply stricter `overrides`; a looser value is refused (fail closed), naming it."""
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in known:
                raise DisclosureError(
                    f"{source} disclosure '{name}': unknown threshold; use one of {sorted(known)}"
                )
            current = getattr(self, name)
            looser = value > current if name.startswith("max_") else value < current
            if looser:
                raise DisclosureError(
                    f"{source} disclosure '{name}': {value} would loosen the node policy ({current}); "
                    "a study or node may only tighten release thresholds"
                )
            changes[name] = value
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    threshold: float | str
    observed: float | str
    verdict: Verdict
    rows_suppressed: int = 0


@dataclass(frozen=True)
class DisclosureReport:
    release: str
    outcomes: tuple[RuleOutcome, ...]
    rows_in: int
    rows_released: int

    @property
    def released(self) -> bool:
        return all(outcome.verdict is not Verdict.WITHHOLD for outcome in self.outcomes)

    def withheld_reasons(self) -> list[str]:
        return [
            f"{o.rule}: observed {o.observed}, limit {o.threshold}"
            for o in self.outcomes
            if o.verdict is Verdict.WITHHOLD
        ]

    def audit_record(self) -> dict[str, Any]:
        """Full detail for the node audit log (never released)."""
        return {
            "release": self.release,
            "released": self.released,
            "rows_in": self.rows_in,
            "rows_released": self.rows_released,
            "rules": [{**asdict(o), "verdict": o.verdict.value} for o in self.outcomes],
        }

    def public_summary(self) -> dict[str, Any]:
        """What the released metadata may say: which rules ran and the thresholds, no counts per reason."""
        return {"gate": "default-deny", "rules": {o.rule: o.threshold for o in self.outcomes}}


# ---------------------------------------------------------------- release-level rules


def allowed_columns(frame: pd.DataFrame, allowed: tuple[str, ...]) -> RuleOutcome:
    """Only allow-listed columns leave; anything else (sample IDs, sum_x, free text) stops the release."""
    extra = [str(column) for column in frame.columns if column not in allowed]
    verdict = Verdict.WITHHOLD if extra else Verdict.PASS
    return RuleOutcome("column_allow_list", "allow-list", ",".join(extra) or "none", verdict)


def min_cohort(rule: str, n: int, limit: int) -> RuleOutcome:
    return RuleOutcome(rule, limit, n, Verdict.PASS if n >= limit else Verdict.WITHHOLD)


def min_residual_df(residual_df: int, limit: int) -> RuleOutcome:
    return RuleOutcome(
        "min_residual_df",
        limit,
        residual_df,
        Verdict.PASS if residual_df >= limit else Verdict.WITHHOLD,
    )


def max_parameters(n_parameters: int, n: int, fraction: float) -> RuleOutcome:
    ok = n_parameters <= fraction * n
    return RuleOutcome(
        "max_parameter_fraction",
        fraction,
        round(n_parameters / max(n, 1), 4),
        Verdict.PASS if ok else Verdict.WITHHOLD,
    )


# ---------------------------------------------------------------- row-level rules


def _row_rule(
    rule: str, keep: np.ndarray, limit: float, observed_min: float
) -> tuple[RuleOutcome, np.ndarray]:
    suppressed = int((~keep).sum())
    verdict = Verdict.SUPPRESS_ROWS if suppressed else Verdict.PASS
    return RuleOutcome(rule, limit, observed_min, verdict, suppressed), keep


def min_minor_allele_count(
    rule: str, alt_count: np.ndarray, allele_number: np.ndarray, limit: int
) -> tuple[RuleOutcome, np.ndarray]:
    mac = np.minimum(alt_count, allele_number - alt_count)
    return _row_rule(rule, mac >= limit, limit, float(mac.min()) if mac.size else 0.0)


def min_allele_number(allele_number: np.ndarray, limit: int) -> tuple[RuleOutcome, np.ndarray]:
    return _row_rule(
        "min_an_af",
        allele_number >= limit,
        limit,
        float(allele_number.min()) if allele_number.size else 0.0,
    )


def min_carriers(
    minor_carriers_cases: np.ndarray, minor_carriers_controls: np.ndarray, limit: int
) -> tuple[RuleOutcome, np.ndarray]:
    fewest = np.minimum(minor_carriers_cases, minor_carriers_controls)
    return _row_rule(
        "min_carriers_per_group",
        fewest >= limit,
        limit,
        float(fewest.min()) if fewest.size else 0.0,
    )


def round_n(n: int | float, step: int) -> int:
    """Nearest multiple of `step` (halves up), so small differences between cohorts do not show."""
    return int(np.floor(n / step + 0.5) * step)


def round_n_array(n: np.ndarray, step: int) -> np.ndarray:
    return (np.floor(n / step + 0.5) * step).astype(np.int64)
