"""The airlock: gated results wait in the node's review area until enough distinct people approve.

With `federation.output_review: one | two` a run's gated release does not go to the outbox but to

    work_dir/review/<task_id>/release/        the files as the gate wrote them (nothing leaves from here unapproved)
    work_dir/review/<task_id>/summary.json    the machine-prefilled summary reviewers read

The summary gives, per released file, its rows; per release, the gate's decision and every
rule's threshold, observed value and rows withheld (counts only), which includes what the
privacy ledger's checks observed (cohort differences, phenotype budget, cell sizes); lambda_GC
and the top hits of each GWAS; and the sidecars. It stays on the node, like the audit log.

A decision is an ed25519-signed document by the reviewer's own key (pinned by name in
`federation.reviewers`), bound to the digest of the exact files under review. It goes into the
node ledger (one per reviewer and release: nobody approves twice) and, hash-chained, into the
node audit log. The agent counts only decisions that verify against the files as they are
now, publishes once the required number of distinct reviewers approved, withholds at the first
rejection, and puts the review's summary in the signed result manifest: the mode, the number
of approvals and the digest of the decisions, never a name or a reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import sumstats
from federation.audit import head_path
from federation.errors import PolicyViolation, SpecError
from federation.files import atomic_write_json, sha256_file
from federation.jsonio import canonical_json
from federation.node.ledger import Decision, DecisionKind
from federation.outcomes import AnalysisOutcome, outcomes_as_dict
from federation.protocol.messages import OutputReview
from federation.protocol.signing import TrustStore, key_id, sign_document, verify_document
from federation.stats.meta_analysis import genomic_control_lambda

REVIEW_DIR = "review"
FILES_DIR = "release"
SUMMARY_NAME = "summary.json"
DECISION_FORMAT = "federation.review-decision/1"
TOP_HITS = 10  # per GWAS: enough to spot an artefact, few enough to read
# The gate's own audit records about a release (release/gate.py).
GATE_EVENTS = ("release_written", "release_withheld", "release_repeated", "release_failed")


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


DECISION_KINDS = {
    Verdict.APPROVE: DecisionKind.REVIEW_APPROVED,
    Verdict.REJECT: DecisionKind.REVIEW_REJECTED,
}


def review_area(work_dir: Path, task_id: str) -> Path:
    return work_dir / REVIEW_DIR / task_id


def files_dir(work_dir: Path, task_id: str) -> Path:
    return review_area(work_dir, task_id) / FILES_DIR


def release_digest(directory: Path) -> str:
    """SHA-256 of the canonical JSON {file name: its SHA-256} of every file under `directory`."""
    files = {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    return hashlib.sha256(canonical_json(files)).hexdigest()


def audit_position(log: Path) -> int:
    """How many records the audit log holds now (its head file says; 0 for a new log)."""
    try:
        return int(json.loads(head_path(log).read_text())["records"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def gate_records(log: Path, since: int) -> list[dict[str, Any]]:
    """The gate's audit records from record `since` on: what it decided in this run."""
    if not log.is_file():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if int(record.get("seq", -1)) >= since and record.get("event") in GATE_EVENTS:
            records.append(record)
    return records


def _gwas_facts(table: Any) -> dict[str, Any]:
    """lambda_GC (Devlin & Roeder 1999: median z^2 / 0.4549) and the top hits of a GWAS."""
    z = (table["beta"] / table["standard_error"]).to_numpy(dtype=float)
    ranked = table.sort_values(sumstats.NEG_LOG10_P, ascending=False).head(TOP_HITS)
    return {
        "lambda_gc": round(genomic_control_lambda(z[np.isfinite(z)]), 4),
        "top_hits": [
            {
                "variant_id": str(row["variant_id"]),
                "beta": float(row["beta"]),
                "standard_error": float(row["standard_error"]),
                "p_value": str(row["p_value"]),
            }
            for _, row in ranked.iterrows()
        ],
    }


def summarise(
    directory: Path,
    *,
    task_id: str,
    study_id: str,
    node_id: str,
    outcomes: dict[str, AnalysisOutcome],
    gate: list[dict[str, Any]],
) -> dict[str, Any]:
    """The machine-prefilled summary of the release in `directory` (see the module docstring)."""
    files, gwas, sidecars = [], {}, {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(directory).as_posix()
        entry: dict[str, Any] = {"name": name, "bytes": path.stat().st_size}
        if name.endswith(".tsv.gz"):
            table = sumstats.read_table(path)
            entry["rows"] = len(table)
            if {"beta", "standard_error", sumstats.NEG_LOG10_P} <= set(table.columns):
                gwas[name.removesuffix(".tsv.gz")] = _gwas_facts(table)
        elif sumstats.is_sidecar(path):
            sidecars[name] = yaml.safe_load(path.read_text())
        files.append(entry)
    releases = [
        {
            key: record.get(key)
            for key in ("event", "release", "released", "rows_in", "rows_released", "rules")
            if key in record
        }
        for record in gate
    ]
    return {
        "task_id": task_id,
        "study_id": study_id,
        "node_id": node_id,
        "release_digest": release_digest(directory),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "analyses": outcomes_as_dict(outcomes),
        "files": files,
        "gate": releases,
        "gwas": gwas,
        "sidecars": sidecars,
    }


def write_summary(work_dir: Path, task_id: str, summary: dict[str, Any]) -> Path:
    return atomic_write_json(review_area(work_dir, task_id) / SUMMARY_NAME, summary)


def read_summary(work_dir: Path, task_id: str) -> dict[str, Any]:
    path = review_area(work_dir, task_id) / SUMMARY_NAME
    if not path.is_file():
        raise SpecError(f"task '{task_id}': no release waits for review (no {path}); check the id")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a reviewer reads it on a terminal."""
    lines = [
        f"task {summary['task_id']}  study {summary['study_id']}  node {summary['node_id']}",
        f"release digest {summary['release_digest']} (made {summary['created_at']})",
        "analyses: "
        + ", ".join(f"{name} {outcome}" for name, outcome in summary["analyses"].items()),
        "files:",
    ]
    for entry in summary["files"]:
        rows = f"{entry['rows']} rows" if "rows" in entry else f"{entry['bytes']} bytes"
        lines.append(f"  {entry['name']:<44} {rows}")
    lines.append("disclosure gate (rows withheld per rule; privacy-ledger checks included):")
    for release in summary["gate"]:
        decision = "released" if release.get("released", True) else "WITHHELD"
        counts = f"{release.get('rows_released', '?')} of {release.get('rows_in', '?')} rows"
        lines.append(f"  {release.get('release')}: {decision}, {counts} ({release['event']})")
        for rule in release.get("rules") or []:
            lines.append(
                f"    {rule['rule']:<26} limit {rule['threshold']!s:<10} observed "
                f"{rule['observed']!s:<12} {rule['verdict']:<14} rows withheld "
                f"{rule.get('rows_suppressed', 0)}"
            )
    for analysis, facts in summary["gwas"].items():
        lines.append(f"{analysis}: lambda_GC {facts['lambda_gc']}; top hits:")
        for hit in facts["top_hits"]:
            lines.append(
                f"    {hit['variant_id']:<28} beta {hit['beta']:+.4g}  se "
                f"{hit['standard_error']:.3g}  p {hit['p_value']}"
            )
    for name, sidecar in summary["sidecars"].items():
        lines.append(f"sidecar {name}:")
        lines += ["    " + line for line in yaml.safe_dump(sidecar, sort_keys=False).splitlines()]
    return "\n".join(lines)


# ---------------------------------------------------------------- decisions


def decision_document(
    task_id: str,
    digest: str,
    verdict: Verdict,
    key: Ed25519PrivateKey,
    reviewers: TrustStore,
) -> tuple[str, dict[str, Any]]:
    """(reviewer, signed decision): the reviewer is the pinned name of `key`'s public key."""
    reviewer = reviewers.signer_of_key_id(key_id(key.public_key()))
    payload = {
        "format": DECISION_FORMAT,
        "task_id": task_id,
        "release_digest": digest,
        "decision": verdict.value,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return reviewer, sign_document(payload, key, reviewer)


@dataclass(frozen=True)
class ReviewState:
    """The verified decisions on one release."""

    mode: OutputReview
    digest: str
    approvals: tuple[str, ...]  # distinct reviewers, in order of decision
    rejections: tuple[str, ...]
    documents: tuple[dict[str, Any], ...]  # the verified signed decisions
    ignored: tuple[str, ...]  # one line per decision that did not verify

    @property
    def approved(self) -> bool:
        return not self.rejections and len(self.approvals) >= self.mode.required_approvals

    @property
    def decisions_sha256(self) -> str:
        return hashlib.sha256(canonical_json(list(self.documents))).hexdigest()

    def manifest_summary(self) -> dict[str, Any]:
        """What the signed result manifest says about the review: no names, no reasons."""
        return {
            "mode": self.mode.value,
            "approvals": len(self.approvals),
            "decisions_sha256": self.decisions_sha256,
        }


def review_state(
    mode: OutputReview, decisions: list[Decision], reviewers: TrustStore, digest: str
) -> ReviewState:
    """Count the decisions that verify: signed by a pinned reviewer, about this task and these
    very files (`digest`), recorded under the signer's own name."""
    approvals: list[str] = []
    rejections: list[str] = []
    documents: list[dict[str, Any]] = []
    ignored: list[str] = []
    for decision in decisions:
        if decision.kind not in DECISION_KINDS.values() or decision.release_digest != digest:
            continue
        try:
            if decision.document is None:
                raise PolicyViolation("unsigned")
            payload, signer = verify_document(decision.document, reviewers)
            expected = {
                "format": DECISION_FORMAT,
                "task_id": decision.task_id,
                "release_digest": digest,
                "decision": (
                    Verdict.APPROVE
                    if decision.kind is DecisionKind.REVIEW_APPROVED
                    else Verdict.REJECT
                ).value,
            }
            if signer != decision.actor or any(payload.get(k) != v for k, v in expected.items()):
                raise PolicyViolation("the signed decision says something else")
        except PolicyViolation as error:
            ignored.append(f"decision by '{decision.actor}' at {decision.time}: {error}")
            continue
        target = approvals if decision.kind is DecisionKind.REVIEW_APPROVED else rejections
        if signer not in target:
            target.append(signer)
            documents.append(decision.document)
    return ReviewState(
        mode, digest, tuple(approvals), tuple(rejections), tuple(documents), tuple(ignored)
    )
