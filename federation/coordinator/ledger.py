"""The coordinator's SQLite ledger: studies, tasks, verified results and an event history.

Every state change is one transaction, so a coordinator killed at any point continues from a
consistent ledger and never counts a result twice (results are keyed by task). A study is
stored as its validated config and read back as a `StudySpec`, never as a raw dict.

Submission is planned before anything is sent: each node's task (its id, sequence number and
envelope) is recorded first, then delivered, then recorded as delivered. A coordinator killed
in between re-runs `submit` and delivers the planned envelopes themselves, so no node gets a
study twice. Every task carries its state (the words of `TaskStatus`), since when, and what
the node reported per analysis and about its output review; the events table is the history
with times (`coordinator.status` reads them for `study status --json` and the dashboard).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from federation.errors import PolicyViolation, SpecError
from federation.jsonio import parse_json_strictly
from federation.outcomes import AnalysisOutcome, outcomes_as_dict, outcomes_from_ledger
from federation.protocol.messages import FINAL_STATUSES, TaskStatus
from federation.spec import StudySpec, study_from_dict
from federation.sqlite import Migration, connect, migrate, now_utc, transaction

MIGRATIONS = (
    Migration(
        1,
        "studies, tasks, results, events and per-node sequence numbers",
        """
        CREATE TABLE IF NOT EXISTS studies (
            study_id TEXT PRIMARY KEY, spec_json TEXT NOT NULL, submitted_at TEXT NOT NULL,
            quorum INTEGER NOT NULL, deadline TEXT, status TEXT NOT NULL, missing_nodes TEXT,
            meta_nodes TEXT
        );
        CREATE TABLE IF NOT EXISTS tasks (
            task_id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(study_id),
            node_id TEXT NOT NULL, sequence INTEGER NOT NULL, envelope_json TEXT NOT NULL,
            status TEXT NOT NULL, reason TEXT, updated_at TEXT NOT NULL,
            UNIQUE (study_id, node_id)
        );
        CREATE TABLE IF NOT EXISTS results (
            task_id TEXT PRIMARY KEY REFERENCES tasks(task_id), study_id TEXT NOT NULL,
            node_id TEXT NOT NULL, manifest_digest TEXT NOT NULL, path TEXT NOT NULL,
            received_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, study_id TEXT,
            node_id TEXT, task_id TEXT, event TEXT NOT NULL, detail TEXT
        );
        CREATE TABLE IF NOT EXISTS sequences (
            node_id TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "planned deliveries; per-analysis outcomes and output review per task",
        """
        ALTER TABLE tasks ADD COLUMN analyses_json TEXT;
        ALTER TABLE tasks ADD COLUMN review_json TEXT;
        UPDATE tasks SET status = 'approved' WHERE status = 'accepted';
        CREATE TABLE planned_tasks (
            study_id TEXT NOT NULL REFERENCES studies(study_id), node_id TEXT NOT NULL,
            task_id TEXT NOT NULL UNIQUE, sequence INTEGER NOT NULL, envelope_json TEXT NOT NULL,
            planned_at TEXT NOT NULL, PRIMARY KEY (study_id, node_id)
        );
        """,
    ),
)


class StudyStatus(StrEnum):
    SUBMITTED = "submitted"
    META_ANALYSED = "meta_analysed"
    FAILED = "failed"
    CANCELLED = "cancelled"


CANCELLED_BY_COORDINATOR = "cancelled by the coordinator"


def cancellation_reason(by: str | None = None, reason: str | None = None) -> str:
    """What a cancelled task's reason says: the coordinator, and who and why when known."""
    said = [part for part in (f"by {by}" if by else None, reason) if part]
    return f"{CANCELLED_BY_COORDINATOR} ({': '.join(said)})" if said else CANCELLED_BY_COORDINATOR


@dataclass(frozen=True)
class StudyRecord:
    """A submitted study as the ledger knows it."""

    spec: StudySpec
    submitted_at: str
    quorum: int
    deadline: datetime | None
    status: StudyStatus
    missing_nodes: tuple[str, ...]
    meta_nodes: tuple[str, ...]  # the nodes whose results the last meta-analysis used

    @property
    def study_id(self) -> str:
        return self.spec.study_id


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    study_id: str
    node_id: str
    sequence: int
    status: TaskStatus
    reason: str | None
    updated_at: str
    envelope: dict[str, Any]
    # analysis id -> released, or withheld|failed with the node's refusal category
    analyses: dict[str, AnalysisOutcome] = field(default_factory=dict)
    review: dict[str, Any] | None = None  # how the node's output review went (no names)


@dataclass(frozen=True)
class PlannedTask:
    """A task recorded before it is sent: a resumed submit delivers this very envelope."""

    study_id: str
    node_id: str
    task_id: str
    sequence: int
    envelope: dict[str, Any]


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(parse_json_strictly((text or "[]").encode()))


def _analyses(row: sqlite3.Row) -> dict[str, AnalysisOutcome]:
    """A task's per-analysis outcomes (rows from before categories hold bare outcomes)."""
    where = f"coordinator ledger task '{row['task_id']}'"
    try:
        return outcomes_from_ledger(
            parse_json_strictly((row["analyses_json"] or "{}").encode()), where
        )
    except ValueError as error:
        raise SpecError(f"{error}; the row is damaged: restore the coordinator ledger") from None


class CoordinatorLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        with connect(path) as connection:
            migrate(connection, MIGRATIONS, f"coordinator ledger '{path}'")

    def _event(
        self,
        connection: sqlite3.Connection,
        event: str,
        *,
        study_id: str | None = None,
        node_id: str | None = None,
        task_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        connection.execute(
            "INSERT INTO events (time, study_id, node_id, task_id, event, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (now_utc(), study_id, node_id, task_id, event, detail),
        )

    def add_study(self, spec: StudySpec, quorum: int, deadline: str | None) -> bool:
        """Record a new study; True if the same study was submitted before (a re-run of
        `submit`: its deliveries are completed, nothing is sent twice). A different study
        under a known id is refused."""
        with connect(self.path) as connection, transaction(connection):
            row = connection.execute(
                "SELECT spec_json FROM studies WHERE study_id = ?", (spec.study_id,)
            ).fetchone()
            if row is not None:
                if json.loads(row["spec_json"]) == json.loads(json.dumps(spec.raw)):
                    return True
                raise SpecError(
                    f"study_id '{spec.study_id}': already submitted with other content; "
                    "give the study a new study_id"
                )
            connection.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    spec.study_id,
                    json.dumps(spec.raw, sort_keys=True),
                    now_utc(),
                    quorum,
                    deadline,
                    StudyStatus.SUBMITTED,
                ),
            )
            self._event(connection, "study_submitted", study_id=spec.study_id)
        return False

    def plan_task(
        self, study_id: str, node_id: str, task_id: str, sequence: int, envelope: dict[str, Any]
    ) -> PlannedTask:
        """Record the task a node will get; if one is planned already, that one is kept."""
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "INSERT OR IGNORE INTO planned_tasks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    study_id,
                    node_id,
                    task_id,
                    sequence,
                    json.dumps(envelope, sort_keys=True),
                    now_utc(),
                ),
            )
        return self.planned(study_id)[node_id]

    def planned(self, study_id: str) -> dict[str, PlannedTask]:
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT * FROM planned_tasks WHERE study_id = ? ORDER BY node_id", (study_id,)
            ).fetchall()
        return {
            row["node_id"]: PlannedTask(
                row["study_id"],
                row["node_id"],
                row["task_id"],
                row["sequence"],
                json.loads(row["envelope_json"]),
            )
            for row in rows
        }

    def next_sequence(self, node_id: str) -> int:
        """Per-node task sequence numbers only go up, across restarts (nodes refuse older ones)."""
        with connect(self.path) as connection, transaction(connection):
            row = connection.execute(
                "SELECT last_sequence FROM sequences WHERE node_id = ?", (node_id,)
            ).fetchone()
            sequence = (row["last_sequence"] if row else 0) + 1
            connection.execute(
                "INSERT INTO sequences VALUES (?, ?) "
                "ON CONFLICT(node_id) DO UPDATE SET last_sequence = ?",
                (node_id, sequence, sequence),
            )
            return sequence

    def add_task(
        self,
        task_id: str,
        study_id: str,
        node_id: str,
        sequence: int,
        envelope: dict[str, Any],
        *,
        status: TaskStatus = TaskStatus.DELIVERED,
        reason: str | None = None,
    ) -> None:
        """Record a task as delivered, or (with status FAILED and a reason) as not delivered."""
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "INSERT INTO tasks (task_id, study_id, node_id, sequence, envelope_json, status, "
                "reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    study_id,
                    node_id,
                    sequence,
                    json.dumps(envelope, sort_keys=True),
                    status,
                    reason,
                    now_utc(),
                ),
            )
            self._event(
                connection,
                f"task_{status}",
                study_id=study_id,
                node_id=node_id,
                task_id=task_id,
                detail=reason,
            )

    def set_task_status(self, task_id: str, status: TaskStatus, reason: str | None = None) -> bool:
        """Move a task on; a final status is never overwritten. Returns whether it changed."""
        with connect(self.path) as connection, transaction(connection):
            row = connection.execute(
                "SELECT study_id, node_id, status FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None:
                raise PolicyViolation(
                    f"task '{task_id}': unknown to this coordinator; ignoring its report"
                )
            if TaskStatus(row["status"]) in FINAL_STATUSES or row["status"] == status:
                return False
            connection.execute(
                "UPDATE tasks SET status = ?, reason = ?, updated_at = ? WHERE task_id = ?",
                (status, reason, now_utc(), task_id),
            )
            self._event(
                connection,
                f"task_{status}",
                study_id=row["study_id"],
                node_id=row["node_id"],
                task_id=task_id,
                detail=reason,
            )
            return True

    def set_task_outcomes(
        self,
        task_id: str,
        analyses: Mapping[str, AnalysisOutcome] | None,
        review: dict[str, Any] | None = None,
    ) -> None:
        """What a node reported per analysis (with each refusal's category) and about its
        output review; None or empty keeps what the ledger has."""
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "UPDATE tasks SET analyses_json = COALESCE(?, analyses_json), "
                "review_json = COALESCE(?, review_json) WHERE task_id = ?",
                (
                    json.dumps(outcomes_as_dict(analyses), sort_keys=True) if analyses else None,
                    json.dumps(review, sort_keys=True) if review else None,
                    task_id,
                ),
            )

    def record_result(self, task_id: str, manifest_digest: str, path: Path) -> bool:
        """Store a verified result once; a second copy of the same task's result is ignored."""
        with connect(self.path) as connection, transaction(connection):
            task = connection.execute(
                "SELECT study_id, node_id, status FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if task is None:
                raise PolicyViolation(f"result for task '{task_id}': unknown task; ignored")
            if connection.execute("SELECT 1 FROM results WHERE task_id = ?", (task_id,)).fetchone():
                return False
            connection.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, task["study_id"], task["node_id"], manifest_digest, str(path), now_utc()),
            )
            connection.execute(
                "UPDATE tasks SET status = ?, reason = NULL, updated_at = ? WHERE task_id = ?",
                (TaskStatus.RELEASED, now_utc(), task_id),
            )
            self._event(
                connection,
                "result_received",
                study_id=task["study_id"],
                node_id=task["node_id"],
                task_id=task_id,
                detail=manifest_digest,
            )
            return True

    def tasks(self, study_id: str) -> list[TaskRecord]:
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT * FROM tasks WHERE study_id = ? ORDER BY node_id", (study_id,)
            ).fetchall()
        return [
            TaskRecord(
                task_id=row["task_id"],
                study_id=row["study_id"],
                node_id=row["node_id"],
                sequence=row["sequence"],
                status=TaskStatus(row["status"]),
                reason=row["reason"],
                updated_at=row["updated_at"],
                envelope=parse_json_strictly(row["envelope_json"].encode()),
                analyses=_analyses(row),
                review=(
                    parse_json_strictly(row["review_json"].encode()) if row["review_json"] else None
                ),
            )
            for row in rows
        ]

    def results(self, study_id: str) -> dict[str, Path]:
        """node_id -> the folder of its verified result."""
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT node_id, path FROM results WHERE study_id = ? ORDER BY node_id", (study_id,)
            ).fetchall()
        return {row["node_id"]: Path(row["path"]) for row in rows}

    def study_ids(self) -> list[str]:
        """Every study, in the order they were submitted."""
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT study_id FROM studies ORDER BY submitted_at, rowid"
            ).fetchall()
        return [row["study_id"] for row in rows]

    def cancel_study(
        self, study_id: str, by: str | None = None, reason: str | None = None
    ) -> list[str]:
        """Mark a study cancelled and every task not yet final cancelled; planned tasks not yet
        delivered are dropped. Who cancelled it and why (if given) are recorded with each task
        and in the study's event. Returns the task ids that were cancelled."""
        said = cancellation_reason(by, reason)
        with connect(self.path) as connection, transaction(connection):
            rows = connection.execute(
                "SELECT task_id, node_id, status FROM tasks WHERE study_id = ?", (study_id,)
            ).fetchall()
            cancelled = []
            for row in rows:
                if TaskStatus(row["status"]) in FINAL_STATUSES:
                    continue
                connection.execute(
                    "UPDATE tasks SET status = ?, reason = ?, updated_at = ? WHERE task_id = ?",
                    (TaskStatus.CANCELLED, said, now_utc(), row["task_id"]),
                )
                self._event(
                    connection,
                    "task_cancelled",
                    study_id=study_id,
                    node_id=row["node_id"],
                    task_id=row["task_id"],
                    detail=said,
                )
                cancelled.append(row["task_id"])
            connection.execute(
                "DELETE FROM planned_tasks WHERE study_id = ? AND task_id NOT IN "
                "(SELECT task_id FROM tasks)",
                (study_id,),
            )
            connection.execute(
                "UPDATE studies SET status = ? WHERE study_id = ?",
                (StudyStatus.CANCELLED, study_id),
            )
            self._event(connection, "study_cancelled", study_id=study_id, detail=said)
        return cancelled

    def study(self, study_id: str) -> StudyRecord:
        with connect(self.path) as connection:
            row = connection.execute(
                "SELECT * FROM studies WHERE study_id = ?", (study_id,)
            ).fetchone()
        if row is None:
            raise SpecError(
                f"study_id '{study_id}': not known to this coordinator; see `federation study list`"
            )
        return StudyRecord(
            spec=study_from_dict(
                parse_json_strictly(row["spec_json"].encode()), f"stored study '{study_id}'"
            ),
            submitted_at=row["submitted_at"],
            quorum=row["quorum"],
            deadline=datetime.fromisoformat(row["deadline"]) if row["deadline"] else None,
            status=StudyStatus(row["status"]),
            missing_nodes=_names(row["missing_nodes"]),
            meta_nodes=_names(row["meta_nodes"]),
        )

    def set_study_status(
        self,
        study_id: str,
        status: StudyStatus,
        missing_nodes: list[str] | None = None,
        meta_nodes: list[str] | None = None,
    ) -> None:
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "UPDATE studies SET status = ?, missing_nodes = ?, meta_nodes = ? "
                "WHERE study_id = ?",
                (status, json.dumps(missing_nodes or []), json.dumps(meta_nodes or []), study_id),
            )
            self._event(
                connection,
                f"study_{status}",
                study_id=study_id,
                detail=json.dumps(missing_nodes or []),
            )

    def events(self, study_id: str) -> list[dict[str, Any]]:
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT * FROM events WHERE study_id = ? ORDER BY id", (study_id,)
            ).fetchall()
        return [dict(row) for row in rows]
