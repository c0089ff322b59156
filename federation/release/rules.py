"""The node-owned, default-deny disclosure gate.

Each rule is one small function that looks at an aggregate about to leave the node and
returns a `RuleOutcome` (rule, threshold, observed value, verdict). A release-level rule
that fails withholds the whole release; a row-level rule removes rows, and removed rows
look exactly like rows that failed QC (they are absent; no reason code is released).
A rule that raises withholds the release too (`guarded`): an error is never a pass.
The thresholds are the README's default disclosure policy. A node admin or a study may tighten them, never loosen;
the environment cannot change them at all (`environment_overrides` only reports attempts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from federation import sumstats
from federation.errors import DisclosureError
from federation.outcomes import RefusalCategory

# Environment variables that look like threshold overrides. They are never read as
# thresholds; their presence is an attempt to loosen the gate and goes to the audit log.
ENV_OVERRIDE_PREFIX = "FEDERATION_DISCLOSURE_"
ERROR_TEXT_LIMIT = 200  # an error in the audit log is a reason, not a data dump


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
    min_carriers_per_group: int = 10  # binary traits: minor-allele carriers in cases and controls
    min_residual_df: int = 10
    max_parameter_fraction: float = 0.33  # parameters <= 0.33 N: no saturated models
    # Cell guard: the node's released cohorts split its samples into cells (samples with the
    # same membership pattern); every linear combination of released sums is a sum over whole
    # cells, so no cell may hold fewer people than this (after subtracting the most no-calls
    # a released row of one of its cohorts had). Contains the old pairwise 1-9 rule.
    min_cell_size: int = 10
    # Phenotype budget per person: distinct phenotypes released on cohorts that contain a
    # sample. Each released phenotype is another set of sums over the same person's values;
    # reconstruction attacks need many of them (Dinur & Nissim 2003). 20 is well above the
    # handful of traits a consortium study runs per node and far below a PheWAS, which needs
    # the node's own agreement (a node may lower it; a study may lower it for itself).
    max_phenotypes_per_person: int = 20
    # Released cohort sizes and allele counts are exact (docs/privacy-model.md: counts). Only
    # QC counts of samples that failed or lacked data - groups no statistic is computed on -
    # are rounded to the nearest multiple of this, as small-count tables usually are.
    qc_count_rounding: int = 5
    # chr:pos:ref:alt of real variants fits easily; longer IDs are a channel for smuggled text.
    max_variant_id_length: int = 256

    def tightened(self, overrides: Mapping[str, Any], source: str) -> DisclosurePolicy:
        """Apply stricter `overrides`; a looser value is refused (fail closed), naming it."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in known:
                raise DisclosureError(
                    f"{source} disclosure '{name}': unknown threshold; use one of {sorted(known)}"
                )
            current = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise DisclosureError(
                    f"{source} disclosure '{name}': {value!r} is not a number; the node policy has {current}"
                )
            looser = value > current if name.startswith("max_") else value < current
            if looser:
                raise DisclosureError(
                    f"{source} disclosure '{name}': {value} would loosen the node policy ({current}); "
                    "a study or node may only tighten release thresholds"
                )
            if isinstance(current, int) and value != int(value):
                raise DisclosureError(
                    f"{source} disclosure '{name}': {value} is not a whole number; use an integer >= {current}"
                )
            changes[name] = int(value) if isinstance(current, int) else float(value)
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment_overrides(environ: Mapping[str, str]) -> list[str]:
    """Names of environment variables that try to set disclosure thresholds (all ignored)."""
    return sorted(name for name in environ if name.upper().startswith(ENV_OVERRIDE_PREFIX))


# Which category a withholding rule falls into (a rule not listed: CHECK_FAILED).
RULE_CATEGORIES = {
    "min_cohort_gwas": RefusalCategory.COHORT_TOO_SMALL,
    "min_cohort_af": RefusalCategory.COHORT_TOO_SMALL,
    "cohort_list_matches": RefusalCategory.CHECK_FAILED,
    "min_cell_size": RefusalCategory.OVERLAPS_EARLIER_RELEASES,
    "max_phenotypes_per_person": RefusalCategory.PHENOTYPE_BUDGET_SPENT,
    "min_residual_df": RefusalCategory.MODEL_TOO_LARGE,
    "max_parameter_fraction": RefusalCategory.MODEL_TOO_LARGE,
    "column_allow_list": RefusalCategory.CONTENT_NOT_ALLOWED,
    "private_column_allow_list": RefusalCategory.CONTENT_NOT_ALLOWED,
    "cell_values": RefusalCategory.CONTENT_NOT_ALLOWED,
    "min_usable_samples": RefusalCategory.NO_USABLE_DATA,
    "min_rows_released": RefusalCategory.NO_USABLE_DATA,
}
# A release needs at least one sample and one row: an empty table is not a result, and a
# researcher must not read "released" over nothing.
MIN_USABLE_SAMPLES = 1
MIN_ROWS_RELEASED = 1


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

    @property
    def category(self) -> RefusalCategory | None:
        """The researcher-facing category of the first rule that withholds (None: released).
        A rule that could not be evaluated is a failed check, whatever its name."""
        for outcome in self.outcomes:
            if outcome.verdict is Verdict.WITHHOLD:
                if outcome.threshold == "evaluable":
                    return RefusalCategory.CHECK_FAILED
                return RULE_CATEGORIES.get(outcome.rule, RefusalCategory.CHECK_FAILED)
        return None

    def withheld_reasons(self) -> list[str]:
        return [
            f"{o.rule}: observed {o.observed}, limit {o.threshold}"
            for o in self.outcomes
            if o.verdict is Verdict.WITHHOLD
        ]

    def audit_record(self) -> dict[str, Any]:
        """Full detail for the node audit log (never released)."""
        category = self.category
        return {
            "release": self.release,
            "released": self.released,
            "category": None if category is None else category.value,
            "rows_in": self.rows_in,
            "rows_released": self.rows_released,
            "rules": [{**asdict(o), "verdict": o.verdict.value} for o in self.outcomes],
        }

    def public_summary(self) -> dict[str, Any]:
        """What the released metadata may say: which rules ran and the thresholds, no counts per reason."""
        return {"gate": "default-deny", "rules": {o.rule: o.threshold for o in self.outcomes}}


def error_outcome(rule: str, error: BaseException) -> RuleOutcome:
    """A rule that could not be evaluated withholds the release and says why (audit log only)."""
    text = f"error: {type(error).__name__}: {error}".replace("\n", " ")[:ERROR_TEXT_LIMIT]
    return RuleOutcome(rule, "evaluable", text, Verdict.WITHHOLD)


def guarded(rule: str, check: Callable[..., RuleOutcome], *args: Any) -> RuleOutcome:
    try:
        return check(*args)
    except Exception as error:  # fail closed: any failure inside a check releases nothing
        return error_outcome(rule, error)


def guarded_rows(
    rule: str, size: int, check: Callable[..., tuple[RuleOutcome, np.ndarray]], *args: Any
) -> tuple[RuleOutcome, np.ndarray]:
    try:
        outcome, keep = check(*args)
        if keep.shape != (size,) or keep.dtype != np.bool_:
            raise ValueError(
                f"row mask of shape {keep.shape}, dtype {keep.dtype}; expected ({size},) bool"
            )
        return outcome, keep
    except Exception as error:
        return error_outcome(rule, error), np.zeros(size, dtype=bool)


# ---------------------------------------------------------------- release-level rules


def allowed_columns(frame: pd.DataFrame, allowed: tuple[str, ...]) -> RuleOutcome:
    """Only allow-listed columns leave; anything else (sample IDs, sum_x, free text) stops the release."""
    extra = [str(column) for column in frame.columns if column not in allowed]
    verdict = Verdict.WITHHOLD if extra else Verdict.PASS
    return RuleOutcome("column_allow_list", "allow-list", ",".join(extra) or "none", verdict)


def private_columns(frame: pd.DataFrame, expected: frozenset[str]) -> RuleOutcome:
    """The step's private table must have exactly the expected columns. An unexpected one
    (sample_id, sum_x, y_transpose_x, a comment) means the analysis is not the approved one."""
    extra = sorted(str(column) for column in frame.columns if column not in expected)
    missing = sorted(expected - {str(column) for column in frame.columns})
    observed = ",".join([*extra, *(f"missing:{name}" for name in missing)]) or "none"
    verdict = Verdict.WITHHOLD if extra or missing else Verdict.PASS
    return RuleOutcome("private_column_allow_list", "expected columns", observed, verdict)


CHROMOSOME = re.compile(r"(?:[1-9]|1[0-9]|2[0-5])")  # GWAS-SSF codes: X=23, Y=24, MT=25
ALLELE = re.compile(r"[ACGTN]+")
P_VALUE_TEXT = re.compile(r"(?:NA|[0-9][0-9.]*(?:e[-+]?[0-9]+)?)")
NODE_ID = re.compile(r"[a-z0-9_-]{1,32}")
TEXT_COLUMNS = {
    "chromosome": CHROMOSOME,
    "effect_allele": ALLELE,
    "other_allele": ALLELE,
    "ref": ALLELE,
    "alt": ALLELE,
    "p_value": P_VALUE_TEXT,
    "node_id": NODE_ID,
    "rsid": re.compile(r"rs[0-9]{1,12}"),  # dbSNP IDs (`release/rsids.py`); missing where none
}
NULLABLE_TEXT_COLUMNS = frozenset({"rsid"})


def cell_values(frame: pd.DataFrame, max_variant_id_length: int) -> RuleOutcome:
    """Every cell has the shape its column promises: no free text anywhere, variant IDs that are
    exactly chr_pos_ref_alt of their own row and not over-long, numbers that are numbers."""
    problems: list[str] = []
    for column in frame.columns:
        values = frame[column]
        if column in TEXT_COLUMNS:
            pattern = TEXT_COLUMNS[str(column)]
            if column in NULLABLE_TEXT_COLUMNS:
                values = values.dropna()
            bad = ~values.astype(str).map(lambda text, p=pattern: bool(p.fullmatch(text)))
            if bad.any():
                problems.append(f"{column}: {int(bad.sum())} cells outside {pattern.pattern}")
        elif column == "variant_id":
            lengths = values.astype(str).str.len()
            if len(values) and int(lengths.max()) > max_variant_id_length:
                problems.append(
                    f"variant_id: length {int(lengths.max())} > {max_variant_id_length}"
                )
        elif not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            problems.append(f"{column}: not numeric ({values.dtype})")
    if "variant_id" in frame.columns and not problems:
        ref, alt = ("other_allele", "effect_allele") if "effect_allele" in frame else ("ref", "alt")
        own = sumstats.variant_id(
            frame["chromosome"], frame["base_pair_location"], frame[ref], frame[alt]
        )
        mismatched = int((own != frame["variant_id"].astype(str)).sum())
        if mismatched:
            problems.append(f"variant_id: {mismatched} IDs are not chr_pos_ref_alt of their row")
    verdict = Verdict.WITHHOLD if problems else Verdict.PASS
    return RuleOutcome("cell_values", "typed cells", "; ".join(problems) or "ok", verdict)


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


def cohort_listed(n_analysed: int, n_listed: int) -> RuleOutcome:
    """The sample list the ledger sees must be the cohort that was analysed; otherwise the
    differencing guard and the budget would be judging some other set of people."""
    return RuleOutcome(
        "cohort_list_matches",
        n_analysed,
        n_listed,
        Verdict.PASS if n_analysed == n_listed else Verdict.WITHHOLD,
    )


def min_usable_samples(n_usable: int, limit: int = MIN_USABLE_SAMPLES) -> RuleOutcome:
    """An analysis needs samples with the trait and every covariate (after QC)."""
    return RuleOutcome(
        "min_usable_samples",
        limit,
        n_usable,
        Verdict.PASS if n_usable >= limit else Verdict.WITHHOLD,
    )


def min_rows_released(rows: int, limit: int = MIN_ROWS_RELEASED) -> RuleOutcome:
    """A release with no row left after every rule is refused, never written as empty."""
    return RuleOutcome(
        "min_rows_released", limit, rows, Verdict.PASS if rows >= limit else Verdict.WITHHOLD
    )


def min_cell_size(smallest_cell: int | None, limit: int) -> RuleOutcome:
    """Cell guard. `smallest_cell`: the smallest effective size (members minus the no-calls a
    released row may leave out) among the non-empty cells this release would create or change,
    over every release of the node (None: the release touches no cell, e.g. an empty cohort)."""
    refused = smallest_cell is not None and smallest_cell < limit
    observed: int | str = "none" if smallest_cell is None else smallest_cell
    return RuleOutcome(
        "min_cell_size", limit, observed, Verdict.WITHHOLD if refused else Verdict.PASS
    )


def phenotypes_per_person(most: int, budget: int) -> RuleOutcome:
    """Per-person phenotype budget: `most` is the largest number of distinct phenotypes any
    member of this cohort would have had released about them, this release included."""
    return RuleOutcome(
        "max_phenotypes_per_person",
        budget,
        most,
        Verdict.PASS if most <= budget else Verdict.WITHHOLD,
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


def max_missing_calls(no_calls: np.ndarray, allowance: int) -> tuple[RuleOutcome, np.ndarray]:
    """A row is a sum over the cohort's members called at that variant. The cell guard leaves
    every cell `allowance` members more than `min_cell_size`, so a row may miss at most that
    many calls: a cell can then never shrink below the floor at any variant."""
    return _row_rule(
        "max_missing_calls",
        no_calls <= allowance,
        allowance,
        float(no_calls.max()) if no_calls.size else 0.0,
    )


def round_count(n: int | float, step: int) -> int:
    """Nearest multiple of `step` (halves up): QC counts of excluded samples, never cohort sizes."""
    return int(np.floor(n / step + 0.5) * step)
