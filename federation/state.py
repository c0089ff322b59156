"""SQLite ledgers: the coordinator's (studies, tasks, results, events) and the node's (seen tasks).

SQLite is the embedded default: one file, transactional, survives restarts. Every state
change is one transaction, so a coordinator or node killed at any point restarts from a
consistent ledger and nothing is lost or counted twice (results are keyed by task).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from federation.errors import PolicyViolation, SpecError

# Writers wait this long for a lock instead of failing at once (a watch loop and a CLI call
# may touch the same ledger).
BUSY_TIMEOUT_SECONDS = 30


class TaskStatus(StrEnum):
    DELIVERED = "delivered"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RUNNING = "running"
    RELEASED = "released"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


# Once a task reaches one of these, later reports cannot change it.
FINAL_STATUSES = frozenset(
    {TaskStatus.REJECTED, TaskStatus.RELEASED, TaskStatus.FAILED, TaskStatus.TIMED_OUT}
)


class StudyStatus(StrEnum):
    SUBMITTED = "submitted"
    META_ANALYSED = "meta_analysed"
    FAILED = "failed"


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA foreign_keys=ON")
    try:
        yield connection
    finally:
        connection.close()


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


COORDINATOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY, spec_json TEXT NOT NULL, submitted_at TEXT NOT NULL,
    quorum INTEGER NOT NULL, deadline TEXT, status TEXT NOT NULL, missing_nodes TEXT, meta_nodes TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(study_id),
    node_id TEXT NOT NULL, sequence INTEGER NOT NULL, envelope_json TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT, updated_at TEXT NOT NULL, UNIQUE (study_id, node_id)
);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY REFERENCES tasks(task_id), study_id TEXT NOT NULL, node_id TEXT NOT NULL,
    manifest_digest TEXT NOT NULL, path TEXT NOT NULL, received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, study_id TEXT, node_id TEXT,
    task_id TEXT, event TEXT NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS sequences (node_id TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL);
"""


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


class CoordinatorLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        with _connect(path) as connection:
            connection.executescript(COORDINATOR_SCHEMA)

    def _event(self, connection: sqlite3.Connection, event: str, *, study_id: str | None = None,
               node_id: str | None = None, task_id: str | None = None, detail: str | None = None) -> None:  # fmt: skip
        connection.execute(
            "INSERT INTO events (time, study_id, node_id, task_id, event, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (now_utc(), study_id, node_id, task_id, event, detail),
        )

    def add_study(
        self, study_id: str, spec: dict[str, Any], quorum: int, deadline: str | None
    ) -> None:
        with _connect(self.path) as connection, _transaction(connection):
            if connection.execute(
                "SELECT 1 FROM studies WHERE study_id = ?", (study_id,)
            ).fetchone():
                raise SpecError(
                    f"study_id '{study_id}': already submitted; give the study a new study_id"
                )
            connection.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    study_id,
                    json.dumps(spec, sort_keys=True),
                    now_utc(),
                    quorum,
                    deadline,
                    StudyStatus.SUBMITTED,
                ),
            )
            self._event(connection, "study_submitted", study_id=study_id)

    def next_sequence(self, node_id: str) -> int:
        """Per-node task sequence numbers only go up, across restarts (nodes refuse older ones)."""
        with _connect(self.path) as connection, _transaction(connection):
            row = connection.execute(
                "SELECT last_sequence FROM sequences WHERE node_id = ?", (node_id,)
            ).fetchone()
            sequence = (row["last_sequence"] if row else 0) + 1
            connection.execute(
                "INSERT INTO sequences VALUES (?, ?) ON CONFLICT(node_id) DO UPDATE SET last_sequence = ?",
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
        with _connect(self.path) as connection, _transaction(connection):
            connection.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, study_id, node_id, sequence, json.dumps(envelope, sort_keys=True),
                 status, reason, now_utc()),
            )  # fmt: skip
            self._event(connection, f"task_{status}", study_id=study_id, node_id=node_id,
                        task_id=task_id, detail=reason)  # fmt: skip

    def set_task_status(self, task_id: str, status: TaskStatus, reason: str | None = None) -> bool:
        """Move a task on; a final status is never overwritten. Returns whether it changed."""
        with _connect(self.path) as connection, _transaction(connection):
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
            self._event(connection, f"task_{status}", study_id=row["study_id"], node_id=row["node_id"],
                        task_id=task_id, detail=reason)  # fmt: skip
            return True

    def record_result(self, task_id: str, manifest_digest: str, path: Path) -> bool:
        """Store a verified result once; a second copy of the same task's result is ignored."""
        with _connect(self.path) as connection, _transaction(connection):
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
            self._event(connection, "result_received", study_id=task["study_id"], node_id=task["node_id"],
                        task_id=task_id, detail=manifest_digest)  # fmt: skip
            return True

    def tasks(self, study_id: str) -> list[TaskRecord]:
        with _connect(self.path) as connection:
            rows = connection.execute(
                "SELECT * FROM tasks WHERE study_id = ? ORDER BY node_id", (study_id,)
            ).fetchall()
        return [
            TaskRecord(
                row["task_id"],
                row["study_id"],
                row["node_id"],
                row["sequence"],
                TaskStatus(row["status"]),
                row["reason"],
                row["updated_at"],
                json.loads(row["envelope_json"]),
            )  # fmt: skip
            for row in rows
        ]

    def results(self, study_id: str) -> dict[str, Path]:
        """node_id -> the folder of its verified result."""
        with _connect(self.path) as connection:
            rows = connection.execute(
                "SELECT node_id, path FROM results WHERE study_id = ? ORDER BY node_id", (study_id,)
            ).fetchall()
        return {row["node_id"]: Path(row["path"]) for row in rows}

    def study(self, study_id: str) -> dict[str, Any]:
        with _connect(self.path) as connection:
            row = connection.execute(
                "SELECT * FROM studies WHERE study_id = ?", (study_id,)
            ).fetchone()
        if row is None:
            raise SpecError(
                f"study_id '{study_id}': not known to this coordinator; check `federation study status`"
            )
        record = dict(row)
        record["spec"] = json.loads(record.pop("spec_json"))
        return record

    def set_study_status(
        self,
        study_id: str,
        status: StudyStatus,
        missing_nodes: list[str] | None = None,
        meta_nodes: list[str] | None = None,
    ) -> None:
        with _connect(self.path) as connection, _transaction(connection):
            connection.execute(
                "UPDATE studies SET status = ?, missing_nodes = ?, meta_nodes = ? WHERE study_id = ?",
                (status, json.dumps(missing_nodes or []), json.dumps(meta_nodes or []), study_id),
            )
            self._event(
                connection,
                f"study_{status}",
                study_id=study_id,
                detail=json.dumps(missing_nodes or []),
            )

    def events(self, study_id: str) -> list[dict[str, Any]]:
        with _connect(self.path) as connection:
            rows = connection.execute(
                "SELECT * FROM events WHERE study_id = ? ORDER BY id", (study_id,)
            ).fetchall()
        return [dict(row) for row in rows]


NODE_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_tasks (
    task_id TEXT PRIMARY KEY, coordinator TEXT NOT NULL, sequence INTEGER NOT NULL,
    study_id TEXT NOT NULL, received_at TEXT NOT NULL, status TEXT NOT NULL, reason TEXT
);
CREATE TABLE IF NOT EXISTS last_sequence (coordinator TEXT PRIMARY KEY, sequence INTEGER NOT NULL);
"""


class NodeLedger:
    """The node's memory of tasks: replay and sequence checks that survive restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with _connect(path) as connection:
            connection.executescript(NODE_SCHEMA)

    def claim(self, task_id: str, coordinator: str, sequence: int, study_id: str) -> None:
        """Record a task as accepted for running, or refuse a replay / an older sequence number."""
        with _connect(self.path) as connection, _transaction(connection):
            if connection.execute(
                "SELECT 1 FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone():
                raise PolicyViolation(f"task '{task_id}': already seen (replay); refused")
            row = connection.execute(
                "SELECT sequence FROM last_sequence WHERE coordinator = ?", (coordinator,)
            ).fetchone()
            if row is not None and sequence <= row["sequence"]:
                raise PolicyViolation(
                    f"task '{task_id}': sequence {sequence} <= last accepted {row['sequence']} from "
                    f"coordinator '{coordinator}' (replay or reordering); refused"
                )
            connection.execute(
                "INSERT INTO seen_tasks VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (task_id, coordinator, sequence, study_id, now_utc(), TaskStatus.ACCEPTED),
            )
            connection.execute(
                "INSERT INTO last_sequence VALUES (?, ?) ON CONFLICT(coordinator) DO UPDATE SET sequence = ?",
                (coordinator, sequence, sequence),
            )

    def record_refusal(
        self, task_id: str, coordinator: str, sequence: int, study_id: str, reason: str
    ) -> None:
        """Remember refused tasks too, so the same bytes are not re-examined forever."""
        with _connect(self.path) as connection, _transaction(connection):
            connection.execute(
                "INSERT OR IGNORE INTO seen_tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task_id, coordinator, sequence, study_id, now_utc(), TaskStatus.REJECTED, reason),
            )

    def set_status(self, task_id: str, status: TaskStatus, reason: str | None = None) -> None:
        with _connect(self.path) as connection, _transaction(connection):
            connection.execute(
                "UPDATE seen_tasks SET status = ?, reason = ? WHERE task_id = ?",
                (status, reason, task_id),
            )

    def status(self, task_id: str) -> TaskStatus | None:
        with _connect(self.path) as connection:
            row = connection.execute(
                "SELECT status FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return TaskStatus(row["status"]) if row else None

    def coordinator(self, task_id: str) -> str | None:
        """Who signed the task: its result is encrypted for that coordinator."""
        with _connect(self.path) as connection:
            row = connection.execute(
                "SELECT coordinator FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return str(row["coordinator"]) if row else None

    def unfinished(self) -> list[str]:
        """Tasks accepted or running when the node stopped: resumed on the next run."""
        with _connect(self.path) as connection:
            rows = connection.execute(
                "SELECT task_id FROM seen_tasks WHERE status IN (?, ?) ORDER BY sequence",
                (TaskStatus.ACCEPTED, TaskStatus.RUNNING),
            ).fetchall()
        return [row["task_id"] for row in rows]
