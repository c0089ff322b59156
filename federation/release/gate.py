"""The release step's gate machinery: policy, ledger decision, fail-closed handling, audit.

`federation.release.tables` builds the candidate tables; a `Gate` decides whether they leave.
Order: the effective policy (environment attempts and study loosening refused and logged),
the cohort's commitment, an identical earlier request (its stored bytes are returned), the
rules, the rows whose no-calls the cell guard cannot cover dropped, then the privacy ledger's
cell guard and per-person phenotype budget under the ledger's lock, and only then the files.
Any exception on the way releases nothing and is logged. A refusal carries its researcher-
facing category (`RefusalCategory`); the rule and the observed value go to the audit log only.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation import sumstats
from federation.audit import append_event
from federation.errors import DisclosureError
from federation.outcomes import RefusalCategory, ReleaseOutcome, record_outcome
from federation.release.ledger import (
    Cohort,
    NoCalls,
    PrivacyLedger,
    read_sample_ids,
    request_key,
)
from federation.release.rules import (
    DisclosurePolicy,
    DisclosureReport,
    RuleOutcome,
    cell_values,
    environment_overrides,
    error_outcome,
    guarded,
    guarded_rows,
    max_missing_calls,
    min_cell_size,
    min_rows_released,
    phenotypes_per_person,
)
from federation.settings import NodeSettings
from federation.spec import StudySpec

LOG = logging.getLogger(__name__)
LEDGER_NAME = "privacy-ledger.sqlite"
SECRET_NAME = "privacy-ledger.secret"
# Anything between separators could be a sample ID quoted in an exception message.
TOKEN = re.compile(r"[^\s'\",:;()\[\]{}=]+")


class ReleaseWithheld(DisclosureError):
    """A rule refused the release; the audit log already has the full report. `category` is
    all the researcher is told."""

    def __init__(self, message: str, category: RefusalCategory) -> None:
        super().__init__(message, (category.value,))
        self.category = category


def node_policy(
    node: NodeSettings, study: StudySpec, audit_log: Path | None = None
) -> DisclosurePolicy:
    """Built-in defaults, tightened by the node admin, then by the study; never loosened.

    Environment variables never change a threshold; one that looks like an attempt is
    reported in the audit log. A study that tries to loosen is refused and logged.
    """
    attempts = environment_overrides(os.environ)
    if attempts and audit_log is not None:
        append_event(
            audit_log,
            "disclosure_override_refused",
            node_id=node.node_id,
            source="environment",
            variables=attempts,
        )
    try:
        policy = DisclosurePolicy().tightened(node.disclosure, f"node '{node.node_id}' config")
        return policy.tightened(study.disclosure, f"study '{study.study_id}'")
    except DisclosureError as error:
        if audit_log is None:
            raise
        append_event(
            audit_log,
            "disclosure_loosening_refused",
            node_id=node.node_id,
            study_id=study.study_id,
            reason=str(error),
        )
        raise ReleaseWithheld(str(error), RefusalCategory.POLICY_LOOSENING) from None


def ledger_paths(node: NodeSettings) -> tuple[Path, Path]:
    """The node's privacy ledger and its secret (configured, or in the work dir)."""
    return (
        node.privacy_ledger or node.work_dir / LEDGER_NAME,
        node.privacy_secret or node.work_dir / SECRET_NAME,
    )


def audit_log_of(node: NodeSettings) -> Path:
    """The node's audit log, where the pipeline's release steps write (rules/common.smk)."""
    return node.federation.audit_log if node.federation else node.work_dir / "audit.jsonl"


def ledger_for(node: NodeSettings) -> PrivacyLedger:
    """The node-wide ledger: one per node, not per study, so studies cannot difference each other."""
    return PrivacyLedger(*ledger_paths(node))


def remove_outputs(out_path: Path) -> None:
    for stale in sumstats.table_files(out_path):
        stale.unlink(missing_ok=True)


def redact(text: str, sample_ids: set[str]) -> str:
    """An error text for the audit log, with anything that is a sample ID blanked out."""
    return TOKEN.sub(lambda m: "<id>" if m.group(0) in sample_ids else m.group(0), text)


@dataclass(frozen=True)
class Gate:
    """One release being decided: who asks, for which cohort, where its files go."""

    node: NodeSettings
    policy: DisclosurePolicy
    ledger: PrivacyLedger
    cohort: Cohort
    key: str  # the request key: same request of the same cohort, same bytes
    label: str
    out_path: Path
    audit_log: Path
    # No-call profiles of the samples the analysis left out (`release.cells`); empty: none.
    no_calls: NoCalls = field(default_factory=dict, repr=False)

    @property
    def outputs(self) -> dict[str, Path]:
        return {path.name: path for path in sumstats.table_files(self.out_path)}

    def withhold(self, report: DisclosureReport) -> None:
        append_event(
            self.audit_log,
            "release_withheld",
            node_id=self.node.node_id,
            request=self.key,
            **report.audit_record(),
        )
        remove_outputs(self.out_path)
        reasons = "; ".join(report.withheld_reasons())
        raise ReleaseWithheld(
            f"node '{self.node.node_id}': {report.release}: {reasons}; result withheld (node policy)",
            report.category or RefusalCategory.CHECK_FAILED,
        )

    def repeat(self) -> bool:
        """Write the stored bytes of an identical earlier request, if there was one."""
        stored = self.ledger.stored(self.key)
        if stored is None:
            return False
        # Releases stored before sidecars took the GWAS-SSF name come back under their name.
        legacy = self.out_path.with_name(self.out_path.name + sumstats.LEGACY_SIDECAR_SUFFIX)
        self.ledger.copy_stored(stored, {legacy.name: legacy, **self.outputs})
        append_event(
            self.audit_log,
            "release_repeated",
            node_id=self.node.node_id,
            release=self.label,
            request=self.key,
            files={entry.name: entry.sha256 for entry in stored},
        )
        LOG.debug("%s: identical request %s..., stored bytes returned", self.label, self.key[:12])
        return True

    def finish(
        self,
        phenotype: str | None,
        outcomes: list[RuleOutcome],
        rows_in: int,
        released: pd.DataFrame,
        metadata: dict[str, Any],
        no_calls: pd.Series,
    ) -> Path:
        """Rules, then the ledger's decision under its lock, then the files; or nothing.

        `no_calls` counts, per candidate row (same index as `released`), the cohort members
        without a call there: a row is a sum over the called members only, so the cell guard
        drops rows with more no-calls than its cells can spare."""
        policy, label = self.policy, self.label
        outcomes = [
            guarded("cell_values", cell_values, released, policy.max_variant_id_length),
            *outcomes,
        ]
        report = DisclosureReport(label, tuple(outcomes), rows_in, len(released))
        if not report.released:
            self.withhold(report)
        allowance = self.ledger.preview(
            self.cohort, phenotype, policy.min_cell_size, self.no_calls
        ).cells.allowance
        row_missing = no_calls.reindex(released.index).to_numpy(dtype=np.int64)
        missing_outcome, keep = guarded_rows(
            "max_missing_calls", len(released), max_missing_calls, row_missing, allowance
        )
        released, row_missing = released[keep], row_missing[keep]
        most_missing = int(row_missing.max()) if row_missing.size else 0
        outcomes.append(missing_outcome)
        if "variants_released" in metadata:
            metadata = {**metadata, "variants_released": len(released)}
        ledger_rules = (
            min_cell_size(None, policy.min_cell_size),
            phenotypes_per_person(0, policy.max_phenotypes_per_person),
        )  # only their names and thresholds reach the public summary
        summary = DisclosureReport(label, (*outcomes, *ledger_rules), rows_in, len(released))
        # Written aside first, so the ledger's lock is held only for the decision.
        staging = self.out_path.with_name(f".staging-{self.out_path.name}")
        shutil.rmtree(staging, ignore_errors=True)
        staged = staging / self.out_path.name
        sumstats.write_table(
            released,
            staged,
            {**metadata, "disclosure": summary.public_summary()},
            float_format="%.8g",
        )
        files = {path.name: path for path in sumstats.table_files(staged)}
        try:
            with self.ledger.reserve(
                self.key, self.cohort, phenotype, policy.min_cell_size, self.no_calls
            ) as reservation:
                if reservation.repeat is None:
                    cells = reservation.check.cells
                    # With this release's own no-calls, its cells keep min(inside) - missing.
                    smallest = (
                        None
                        if cells.smallest_cell is None
                        else min(
                            cells.smallest_cell,
                            cells.allowance + policy.min_cell_size - most_missing,
                        )
                    )
                    outcomes += [
                        guarded("min_cell_size", min_cell_size, smallest, policy.min_cell_size),
                        guarded(
                            "max_phenotypes_per_person",
                            phenotypes_per_person,
                            cells.most_phenotypes,
                            policy.max_phenotypes_per_person,
                        ),
                        # after the guard: rows it dropped are its refusal, not an empty result
                        min_rows_released(len(released)),
                    ]
                    report = DisclosureReport(label, tuple(outcomes), rows_in, len(released))
                    if report.released:
                        reservation.record(
                            label, released["variant_id"].astype(str), files, most_missing
                        )
            if reservation.repeat is not None:  # an identical request finished meanwhile
                self.repeat()
                return self.out_path
            if not report.released:
                self.withhold(report)
            for name, path in files.items():
                path.replace(self.out_path.with_name(name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        append_event(
            self.audit_log,
            "release_written",
            node_id=self.node.node_id,
            file=self.out_path.name,
            request=self.key,
            **report.audit_record(),
        )
        LOG.debug("%s: %d of %d rows released", label, len(released), rows_in)
        return self.out_path


def withhold_unanalysed(
    node: NodeSettings,
    study: StudySpec,
    analysis_id: str,
    report: DisclosureReport,
    out_path: Path,
    audit_log: Path,
) -> None:
    """Refuse an analysis that had nothing to analyse (no cohort reaches the ledger): audit,
    record the outcome with the report's category, write nothing."""
    append_event(audit_log, "release_withheld", node_id=node.node_id, **report.audit_record())
    remove_outputs(out_path)
    category = report.category or RefusalCategory.CHECK_FAILED
    record_outcome(
        node.work_dir, study.study_id, analysis_id, ReleaseOutcome.WITHHELD, category.value
    )
    reasons = "; ".join(report.withheld_reasons())
    raise ReleaseWithheld(
        f"node '{node.node_id}': {report.release}: {reasons}; nothing released", category
    )


@dataclass(frozen=True)
class GateContext:
    """What `opened_gate` learns before the gate exists; `ids` serve only to redact errors."""

    ids: set[str] = field(default_factory=set, repr=False)


@contextmanager
def opened_gate(
    node: NodeSettings,
    study: StudySpec,
    request: dict[str, Any],
    samples_path: Path,
    out_path: Path,
    audit_log: Path,
) -> Iterator[Gate]:
    """A `Gate` for `request`; any error inside the block releases nothing and is logged."""
    label = f"analysis '{request['id']}'"
    context = GateContext()

    def outcome(decision: ReleaseOutcome, category: RefusalCategory | None = None) -> None:
        """Tell the runner what was decided; on the way out of a refusal this is best effort
        (the refusal stands and the audit log has it, whether or not the file is written)."""
        try:
            record_outcome(
                node.work_dir,
                study.study_id,
                str(request["id"]),
                decision,
                None if category is None else category.value,
            )
        except OSError as error:
            if decision is ReleaseOutcome.RELEASED:
                raise
            LOG.warning("%s: outcome not recorded (%s)", label, error)

    try:
        policy = node_policy(node, study, audit_log)
        if samples_path.resolve().is_relative_to(out_path.parent.resolve()):
            raise DisclosureError(
                f"cohort file '{samples_path.name}': inside the release folder "
                f"'{out_path.parent}'; sample lists stay in the node's private work dir"
            )
        listed = read_sample_ids(samples_path)
        context.ids.update(listed)
        ledger = ledger_for(node)
        cohort = ledger.cohort(listed)
        key = request_key(
            {
                "node_id": node.node_id,
                "study_id": study.study_id,
                "analysis": request,
                "reference_genome": study.reference_genome,
                "qc": study.raw.get("qc", {}),
                "pca": study.raw.get("pca", {}),
                "policy": policy.as_dict(),
                "cohort": cohort.commitment,
            }
        )
        yield Gate(node, policy, ledger, cohort, key, label, out_path, audit_log)
    except ReleaseWithheld as withheld:
        outcome(ReleaseOutcome.WITHHELD, withheld.category)
        raise
    except DisclosureError as error:  # our own one-line reasons (cohort file, ledger secret)
        remove_outputs(out_path)
        append_event(
            audit_log,
            "release_failed",
            node_id=node.node_id,
            release=label,
            reason=redact(str(error), context.ids),
        )
        outcome(ReleaseOutcome.FAILED, RefusalCategory.CHECK_FAILED)
        raise
    except Exception as error:  # fail closed: a failing check is never a pass
        remove_outputs(out_path)
        reason = redact(str(error_outcome("release_step", error).observed), context.ids)
        append_event(
            audit_log, "release_failed", node_id=node.node_id, release=label, reason=reason
        )
        outcome(ReleaseOutcome.FAILED, RefusalCategory.CHECK_FAILED)
        raise DisclosureError(
            f"node '{node.node_id}': {label}: the disclosure gate could not complete "
            f"({type(error).__name__}); nothing released; the node audit log has the reason"
        ) from None
    outcome(ReleaseOutcome.RELEASED)
