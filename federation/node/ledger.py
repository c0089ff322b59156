"""The node's memory of tasks (SQLite): the queue, the decisions on it, and reports still owed.

Every task the node has looked at is kept with who signed it, its sequence number, its status
and when that last changed, so a copy of a decided task is refused as a replay, a task that was
approved, running or in review when the node stopped is resumed, and a result is never
published twice. Each status change marks the task's report to the coordinator as due until it
is sent, so a report lost to a mailbox outage is sent on a later run.

It also keeps the people's decisions (the admin's approvals and vetoes, the output reviewers'
signed decisions, one per reviewer and release), the workflows the admin approved from the
command line with their parameter envelopes, and which approved workflows the node keeps a copy
of (to show an admin what a new one changes).

Migration 1 is the first schema and never changes; later versions are new migrations.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from federation.errors import PolicyViolation, SpecError
from federation.outcomes import AnalysisOutcome, outcomes_as_dict, outcomes_from_ledger
from federation.protocol.messages import TaskStatus
from federation.sqlite import Migration, connect, migrate, now_utc, transaction

MIGRATIONS = (
    Migration(
        1,
        "seen tasks and the last accepted sequence number per coordinator",
        """
        CREATE TABLE IF NOT EXISTS seen_tasks (
            task_id TEXT PRIMARY KEY, coordinator TEXT NOT NULL, sequence INTEGER NOT NULL,
            study_id TEXT NOT NULL, received_at TEXT NOT NULL, status TEXT NOT NULL, reason TEXT
        );
        CREATE TABLE IF NOT EXISTS last_sequence (
            coordinator TEXT PRIMARY KEY, sequence INTEGER NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "a queue that loses nothing: held tasks, decisions, owed reports, workflow approvals",
        """
        ALTER TABLE seen_tasks ADD COLUMN updated_at TEXT;
        ALTER TABLE seen_tasks ADD COLUMN expires_at TEXT;
        ALTER TABLE seen_tasks ADD COLUMN workflow_digest TEXT;
        ALTER TABLE seen_tasks ADD COLUMN public_reason TEXT;
        ALTER TABLE seen_tasks ADD COLUMN analyses_json TEXT;
        ALTER TABLE seen_tasks ADD COLUMN report_due INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE seen_tasks ADD COLUMN process_group INTEGER;
        UPDATE seen_tasks SET status = 'approved' WHERE status = 'accepted';
        UPDATE seen_tasks SET updated_at = received_at WHERE updated_at IS NULL;
        CREATE INDEX seen_tasks_by_status ON seen_tasks (status, sequence);
        DROP TABLE last_sequence;
        CREATE TABLE decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL REFERENCES seen_tasks(task_id),
            kind TEXT NOT NULL, actor TEXT NOT NULL, account TEXT NOT NULL, reason TEXT,
            release_digest TEXT, document TEXT, time TEXT NOT NULL
        );
        CREATE UNIQUE INDEX one_review_per_reviewer ON decisions (task_id, actor, release_digest)
            WHERE kind IN ('review_approved', 'review_rejected');
        CREATE TABLE workflow_approvals (
            id INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL, envelope TEXT,
            approved_by TEXT NOT NULL, account TEXT NOT NULL, task_id TEXT, time TEXT NOT NULL
        );
        CREATE TABLE workflow_copies (digest TEXT PRIMARY KEY, stored_at TEXT NOT NULL);
        """,
    ),
)
# What the agent picks up again on its next run, in sequence order.
OPEN_STATUSES = (
    TaskStatus.DELIVERED,
    TaskStatus.HELD,
    TaskStatus.APPROVED,
    TaskStatus.RUNNING,
    TaskStatus.IN_REVIEW,
)


class DecisionKind(StrEnum):
    APPROVED = "approved"  # the node's admin let a held task run
    VETOED = "vetoed"  # the node's admin refused it (the national veto)
    REVIEW_APPROVED = "review_approved"  # an output reviewer let a gated release leave
    REVIEW_REJECTED = "review_rejected"  # an output reviewer kept it on the node


@dataclass(frozen=True)
class NodeTask:
    """One task as the node ledger knows it. `reason` is node-private (the admin reads it);
    `public_reason` is the category the coordinator is told."""

    task_id: str
    coordinator: str
    sequence: int
    study_id: str
    received_at: str
    status: TaskStatus
    reason: str | None
    updated_at: str
    expires_at: str | None = None
    workflow_digest: str | None = None
    public_reason: str | None = None
    analyses: dict[str, AnalysisOutcome] = field(default_factory=dict)
    report_due: bool = False
    process_group: int | None = None


@dataclass(frozen=True)
class Decision:
    task_id: str
    kind: DecisionKind
    actor: str  # who decided (the reviewer's pinned name, or the admin's)
    account: str  # the operating-system account that ran the command
    reason: str | None
    release_digest: str | None
    document: dict[str, Any] | None  # a reviewer's signed decision
    time: str


@dataclass(frozen=True)
class StoredApproval:
    """A workflow approved from the command line (`federation node approve --remember`)."""

    digest: str
    envelope: dict[str, Any] | None
    approved_by: str
    time: str
    task_id: str | None


def _analyses(row: sqlite3.Row) -> dict[str, AnalysisOutcome]:
    """The task's per-analysis outcomes (rows from before categories hold bare outcomes)."""
    where = f"node ledger task '{row['task_id']}'"
    try:
        return outcomes_from_ledger(json.loads(row["analyses_json"] or "{}"), where)
    except ValueError as error:
        raise SpecError(f"{error}; the row is damaged: restore the node ledger") from None


def _task(row: sqlite3.Row) -> NodeTask:
    return NodeTask(
        task_id=row["task_id"],
        coordinator=row["coordinator"],
        sequence=row["sequence"],
        study_id=row["study_id"],
        received_at=row["received_at"],
        status=TaskStatus(row["status"]),
        reason=row["reason"],
        updated_at=row["updated_at"] or row["received_at"],
        expires_at=row["expires_at"],
        workflow_digest=row["workflow_digest"],
        public_reason=row["public_reason"],
        analyses=_analyses(row),
        report_due=bool(row["report_due"]),
        process_group=row["process_group"],
    )


class NodeLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        with connect(path) as connection:
            migrate(connection, MIGRATIONS, f"node ledger '{path}'")

    # ---------------------------------------------------------------- the queue

    def receive(
        self,
        task_id: str,
        coordinator: str,
        sequence: int,
        study_id: str,
        *,
        expires_at: str | None = None,
        workflow_digest: str | None = None,
    ) -> None:
        """Record a verified task as delivered; a task id seen before is a replay (refused).

        The sequence number orders the queue; it is not a reason to refuse. A task signed
        after another but delivered before it is handled all the same (the module docstring
        of `node.agent` states the rule).
        """
        with connect(self.path) as connection, transaction(connection):
            if connection.execute(
                "SELECT 1 FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone():
                raise PolicyViolation(f"task '{task_id}': already seen (replay); refused")
            now = now_utc()
            connection.execute(
                "INSERT INTO seen_tasks (task_id, coordinator, sequence, study_id, received_at, "
                "status, updated_at, expires_at, workflow_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    coordinator,
                    sequence,
                    study_id,
                    now,
                    TaskStatus.DELIVERED,
                    now,
                    expires_at,
                    workflow_digest,
                ),
            )

    def claim(self, task_id: str, coordinator: str, sequence: int, study_id: str) -> None:
        """Record a task as approved for running at once (refusing a replayed task id)."""
        self.receive(task_id, coordinator, sequence, study_id)
        self.transition(task_id, TaskStatus.APPROVED)

    def record_refusal(
        self, task_id: str, coordinator: str, sequence: int, study_id: str, reason: str
    ) -> None:
        """Remember refused tasks too, so the same bytes are not re-examined forever."""
        with connect(self.path) as connection, transaction(connection):
            now = now_utc()
            connection.execute(
                "INSERT OR IGNORE INTO seen_tasks (task_id, coordinator, sequence, study_id, "
                "received_at, status, reason, updated_at, public_reason, report_due) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    task_id,
                    coordinator,
                    sequence,
                    study_id,
                    now,
                    TaskStatus.REJECTED,
                    reason,
                    now,
                    reason,
                ),
            )

    def transition(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        allowed_from: frozenset[TaskStatus] | None = None,
        reason: str | None = None,
        public_reason: str | None = None,
        analyses: dict[str, AnalysisOutcome] | None = None,
    ) -> bool:
        """Move a task to `status` (only from `allowed_from`, if given) in one transaction and
        mark its report due. Returns whether it moved: a concurrent decision may have won."""
        with connect(self.path) as connection, transaction(connection):
            row = connection.execute(
                "SELECT status, analyses_json FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None or (
                allowed_from is not None and TaskStatus(row["status"]) not in allowed_from
            ):
                return False
            kept = row["analyses_json"]
            connection.execute(
                "UPDATE seen_tasks SET status = ?, reason = ?, public_reason = ?, "
                "analyses_json = ?, updated_at = ?, report_due = 1 WHERE task_id = ?",
                (
                    status,
                    reason,
                    public_reason,
                    (
                        json.dumps(outcomes_as_dict(analyses), sort_keys=True)
                        if analyses is not None
                        else kept
                    ),
                    now_utc(),
                    task_id,
                ),
            )
            return True

    def set_status(self, task_id: str, status: TaskStatus, reason: str | None = None) -> None:
        self.transition(task_id, status, reason=reason)

    def report_sent(self, task_id: str, status: TaskStatus) -> None:
        """The coordinator has this status now (a later change keeps its report due)."""
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "UPDATE seen_tasks SET report_due = 0 WHERE task_id = ? AND status = ?",
                (task_id, status),
            )

    def set_process_group(self, task_id: str, process_group: int | None) -> None:
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "UPDATE seen_tasks SET process_group = ? WHERE task_id = ?",
                (process_group, task_id),
            )

    def task(self, task_id: str) -> NodeTask | None:
        with connect(self.path) as connection:
            row = connection.execute(
                "SELECT * FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return _task(row) if row else None

    def tasks(self, statuses: tuple[TaskStatus, ...] | None = None) -> list[NodeTask]:
        """Tasks (of `statuses`, else all) in the order they are handled: coordinator, sequence."""
        query = "SELECT * FROM seen_tasks"
        arguments: tuple[str, ...] = ()
        if statuses is not None:
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            arguments = tuple(statuses)
        with connect(self.path) as connection:
            rows = connection.execute(
                query + " ORDER BY coordinator, sequence, task_id", arguments
            ).fetchall()
        return [_task(row) for row in rows]

    def open_tasks(self) -> list[NodeTask]:
        """Delivered, held, approved, running or in review: looked at again on every run."""
        return self.tasks(OPEN_STATUSES)

    def reports_due(self) -> list[NodeTask]:
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT * FROM seen_tasks WHERE report_due = 1 ORDER BY coordinator, sequence"
            ).fetchall()
        return [_task(row) for row in rows]

    def status(self, task_id: str) -> TaskStatus | None:
        task = self.task(task_id)
        return task.status if task else None

    def coordinator(self, task_id: str) -> str | None:
        """Who signed the task: its result is encrypted for that coordinator."""
        task = self.task(task_id)
        return task.coordinator if task else None

    def unfinished(self) -> list[str]:
        """Tasks approved or running when the node stopped: resumed on the next run."""
        statuses = (TaskStatus.DELIVERED, TaskStatus.APPROVED, TaskStatus.RUNNING)
        return [task.task_id for task in self.tasks(statuses)]

    # ---------------------------------------------------------------- people's decisions

    def add_decision(
        self,
        task_id: str,
        kind: DecisionKind,
        actor: str,
        account: str,
        *,
        reason: str | None = None,
        release_digest: str | None = None,
        document: dict[str, Any] | None = None,
    ) -> None:
        """Record a decision; a reviewer's second decision on the same release is refused."""
        try:
            with connect(self.path) as connection, transaction(connection):
                connection.execute(
                    "INSERT INTO decisions (task_id, kind, actor, account, reason, "
                    "release_digest, document, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        task_id,
                        kind,
                        actor,
                        account,
                        reason,
                        release_digest,
                        json.dumps(document, sort_keys=True) if document else None,
                        now_utc(),
                    ),
                )
        except sqlite3.IntegrityError:
            raise PolicyViolation(
                f"task '{task_id}': reviewer '{actor}' has already decided on this release; "
                "a second reviewer must decide"
            ) from None

    def decisions(self, task_id: str) -> list[Decision]:
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT * FROM decisions WHERE task_id = ? ORDER BY id", (task_id,)
            ).fetchall()
        return [
            Decision(
                task_id=row["task_id"],
                kind=DecisionKind(row["kind"]),
                actor=row["actor"],
                account=row["account"],
                reason=row["reason"],
                release_digest=row["release_digest"],
                document=json.loads(row["document"]) if row["document"] else None,
                time=row["time"],
            )
            for row in rows
        ]

    def approve_workflow(
        self,
        digest: str,
        envelope: dict[str, Any] | None,
        approved_by: str,
        account: str,
        task_id: str | None = None,
    ) -> None:
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "INSERT INTO workflow_approvals (digest, envelope, approved_by, account, task_id, "
                "time) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    digest,
                    json.dumps(envelope, sort_keys=True) if envelope is not None else None,
                    approved_by,
                    account,
                    task_id,
                    now_utc(),
                ),
            )

    def workflow_approvals(self) -> list[StoredApproval]:
        with connect(self.path) as connection:
            rows = connection.execute("SELECT * FROM workflow_approvals ORDER BY id").fetchall()
        return [
            StoredApproval(
                digest=row["digest"],
                envelope=json.loads(row["envelope"]) if row["envelope"] else None,
                approved_by=row["approved_by"],
                time=row["time"],
                task_id=row["task_id"],
            )
            for row in rows
        ]

    def workflow_copied(self, digest: str) -> None:
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "INSERT OR REPLACE INTO workflow_copies VALUES (?, ?)", (digest, now_utc())
            )

    def workflow_copies(self) -> list[str]:
        """Digests of the approved workflows the node keeps a copy of, the latest last."""
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT digest FROM workflow_copies ORDER BY stored_at, rowid"
            ).fetchall()
        return [row["digest"] for row in rows]
