"""What a release step decided, as data: one small JSON file per analysis in the node's work dir.

The release steps run inside Snakemake or cwltool, in their own processes; the runner and the
node agent learn what each decided from these files, never by searching a message's text:

    work_dir/<study_id>/outcomes/<analysis_id>.json   {"analysis": ..., "outcome": released|withheld|failed,
                                                       "category": the researcher-facing refusal category or null}

They stay on the node (the work dir is node-private) and carry no reason: the reason is in the
node's audit log. The category (`RefusalCategory`) is what the coordinator may be told: which
remedy applies, never a count. A task's per-analysis outcomes travel as `AnalysisOutcome`
records (outcome and category) in the node's signed status reports and result manifests, so
the categories live here, below the protocol, rather than in `release/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from federation.files import atomic_write_json
from federation.jsonio import parse_json_strictly

OUTCOMES_DIR = "outcomes"


class ReleaseOutcome(StrEnum):
    RELEASED = "released"
    WITHHELD = "withheld"  # a disclosure rule refused it
    FAILED = "failed"  # a check could not complete (fail closed: nothing released)


class RefusalCategory(StrEnum):
    """What a researcher is told about a withheld release: which remedy applies, never the
    rule's observed value (a cell size, a count) - that stays in the node's audit log."""

    COHORT_TOO_SMALL = "cohort_too_small"
    OVERLAPS_EARLIER_RELEASES = "overlaps_earlier_releases"
    PHENOTYPE_BUDGET_SPENT = "phenotype_budget_spent"
    MODEL_TOO_LARGE = "model_too_large"
    CONTENT_NOT_ALLOWED = "content_not_allowed"
    POLICY_LOOSENING = "policy_loosening"
    CHECK_FAILED = "check_failed"
    NO_USABLE_DATA = "no_usable_data"  # no sample with every value, or no row left to release
    WITHHELD_AT_REVIEW = "withheld_at_review"  # the gate passed it, the node's reviewers did not

    @property
    def remedy(self) -> str:
        return REMEDIES[self]


REMEDIES = {
    RefusalCategory.COHORT_TOO_SMALL: "the analysed cohort is below the node's minimum; "
    "include more samples",
    RefusalCategory.OVERLAPS_EARLIER_RELEASES: "with the node's earlier releases this cohort "
    "would single out a small group; analyse the node's QC cohort (mean-impute missing "
    "covariates: missing_covariates: mean) with the QC thresholds of earlier studies",
    RefusalCategory.PHENOTYPE_BUDGET_SPENT: "members of this cohort have reached the node's "
    "per-person phenotype budget; release fewer traits or ask the node for an agreement",
    RefusalCategory.MODEL_TOO_LARGE: "too many model parameters for the cohort; use fewer "
    "covariates or principal components",
    RefusalCategory.CONTENT_NOT_ALLOWED: "the analysis produced columns or values the node "
    "does not release; use an approved workflow",
    RefusalCategory.POLICY_LOOSENING: "the study asks for thresholds looser than the node's "
    "policy; remove the disclosure settings or make them stricter",
    RefusalCategory.CHECK_FAILED: "a disclosure check could not complete; the node admin has "
    "the reason",
    RefusalCategory.NO_USABLE_DATA: "no sample had the trait and every covariate, or no "
    "variant was left to release; check the phenotype columns and their missing-value codes",
    RefusalCategory.WITHHELD_AT_REVIEW: "the node's output reviewers did not approve the "
    "release; ask the node which change would pass its review",
}
CATEGORY_NAMES = frozenset(category.value for category in RefusalCategory)


@dataclass(frozen=True)
class AnalysisOutcome:
    """What the gate decided for one analysis of a task, as the coordinator may be told it:
    released, or withheld/failed with the researcher-facing category (never a count)."""

    outcome: ReleaseOutcome
    category: RefusalCategory | None = None

    @property
    def released(self) -> bool:
        return self.outcome is ReleaseOutcome.RELEASED

    def as_dict(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome.value,
            "category": None if self.category is None else self.category.value,
        }

    def describe(self) -> str:
        """`released`, `withheld (cohort_too_small)`: how status lines show it."""
        if self.category is None or self.released:
            return self.outcome.value
        return f"{self.outcome.value} ({self.category.value})"

    @classmethod
    def from_dict(cls, value: Any, where: str) -> AnalysisOutcome:
        """The record in `value` ({"outcome", "category"}, nothing else); ValueError naming
        `where` otherwise. A released analysis has no category."""
        if not isinstance(value, dict) or set(value) != {"outcome", "category"}:
            raise ValueError(f"{where}: not an object with exactly 'outcome' and 'category'")
        try:
            outcome = ReleaseOutcome(value["outcome"])
        except ValueError:
            raise ValueError(
                f"{where}: outcome {value['outcome']!r} is not one of "
                f"{[item.value for item in ReleaseOutcome]}"
            ) from None
        category = value["category"]
        if category is None:
            return cls(outcome)
        if outcome is ReleaseOutcome.RELEASED:
            raise ValueError(f"{where}: a released analysis carries category {category!r}")
        try:
            return cls(outcome, RefusalCategory(category))
        except ValueError:
            raise ValueError(
                f"{where}: category {category!r} is not one of "
                f"{[item.value for item in RefusalCategory]}"
            ) from None


def withheld_at_review(outcomes: Mapping[str, AnalysisOutcome]) -> dict[str, AnalysisOutcome]:
    """`outcomes` after the node's output review rejected the release: nothing left the node,
    so what the gate passed is withheld too (the gate's own refusals keep their category)."""
    return {
        key: AnalysisOutcome(ReleaseOutcome.WITHHELD, RefusalCategory.WITHHELD_AT_REVIEW)
        if outcome.released
        else outcome
        for key, outcome in outcomes.items()
    }


def outcomes_as_dict(outcomes: Mapping[str, AnalysisOutcome]) -> dict[str, dict[str, str | None]]:
    """analysis id -> {"outcome", "category"}, sorted by id (for signed documents and ledgers)."""
    return {key: outcome.as_dict() for key, outcome in sorted(outcomes.items())}


def outcomes_from_dict(value: Any, where: str) -> dict[str, AnalysisOutcome]:
    """The inverse of `outcomes_as_dict`, checked; ValueError naming `where` otherwise."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"{where}: 'analyses' is not an object of analysis ids")
    return {
        key: AnalysisOutcome.from_dict(item, f"{where} analysis '{key}'")
        for key, item in sorted(value.items())
    }


def outcomes_from_ledger(value: Any, where: str) -> dict[str, AnalysisOutcome]:
    """What a ledger row stored with `outcomes_as_dict`, read back. Rows written before
    outcomes carried a category hold a bare outcome string per analysis ("withheld"): such a
    row reads as that outcome without a category, so a ledger kept for years stays readable."""
    if isinstance(value, dict):
        value = {
            key: {"outcome": item, "category": None} if isinstance(item, str) else item
            for key, item in value.items()
        }
    return outcomes_from_dict(value, where)


def outcomes_dir(work_dir: Path, study_id: str) -> Path:
    return work_dir / study_id / OUTCOMES_DIR


def record_outcome(
    work_dir: Path,
    study_id: str,
    analysis_id: str,
    outcome: ReleaseOutcome,
    category: str | None = None,
) -> Path:
    path = outcomes_dir(work_dir, study_id) / f"{analysis_id}.json"
    document = {"analysis": analysis_id, "outcome": outcome.value, "category": category}
    return atomic_write_json(path, document)


def _documents(work_dir: Path, study_id: str) -> list[dict[str, object]]:
    directory = outcomes_dir(work_dir, study_id)
    if not directory.is_dir():
        return []
    documents = []
    for path in sorted(directory.glob("*.json")):
        try:
            document = parse_json_strictly(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def refusal_categories(work_dir: Path, study_id: str) -> list[str]:
    """The distinct refusal categories the latest run's release steps recorded, sorted."""
    return sorted(
        {
            str(document["category"])
            for document in _documents(work_dir, study_id)
            if document.get("outcome") != ReleaseOutcome.RELEASED.value and document.get("category")
        }
    )


def read_outcomes(work_dir: Path, study_id: str) -> dict[str, AnalysisOutcome]:
    """analysis id -> what its release step decided in the latest run, with the category of a
    refusal (unreadable files skipped; an unknown category reads as none)."""
    outcomes: dict[str, AnalysisOutcome] = {}
    for document in _documents(work_dir, study_id):
        try:
            outcome = ReleaseOutcome(str(document["outcome"]))
            analysis = str(document["analysis"])
        except (ValueError, KeyError, TypeError):
            continue
        category = document.get("category")
        known = isinstance(category, str) and category in CATEGORY_NAMES
        if known and outcome is not ReleaseOutcome.RELEASED:
            outcomes[analysis] = AnalysisOutcome(outcome, RefusalCategory(str(category)))
        else:
            outcomes[analysis] = AnalysisOutcome(outcome)
    return outcomes
