"""The node's memory of tasks (SQLite): replay and sequence checks that survive restarts.

Every task the node has looked at is kept with who signed it, its sequence number and its
status, so a copy of a decided task is refused as a replay, a task accepted or running when
the node stopped is resumed, and a result is never published twice.
"""

from __future__ import annotations

from pathlib import Path

from federation.errors import PolicyViolation
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
)


class NodeLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        with connect(path) as connection:
            migrate(connection, MIGRATIONS, f"node ledger '{path}'")

    def claim(self, task_id: str, coordinator: str, sequence: int, study_id: str) -> None:
        """Record a task as accepted for running, or refuse a replay / an older sequence number."""
        with connect(self.path) as connection, transaction(connection):
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
                "INSERT INTO last_sequence VALUES (?, ?) "
                "ON CONFLICT(coordinator) DO UPDATE SET sequence = ?",
                (coordinator, sequence, sequence),
            )

    def record_refusal(
        self, task_id: str, coordinator: str, sequence: int, study_id: str, reason: str
    ) -> None:
        """Remember refused tasks too, so the same bytes are not re-examined forever."""
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "INSERT OR IGNORE INTO seen_tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task_id, coordinator, sequence, study_id, now_utc(), TaskStatus.REJECTED, reason),
            )

    def set_status(self, task_id: str, status: TaskStatus, reason: str | None = None) -> None:
        with connect(self.path) as connection, transaction(connection):
            connection.execute(
                "UPDATE seen_tasks SET status = ?, reason = ? WHERE task_id = ?",
                (status, reason, task_id),
            )

    def status(self, task_id: str) -> TaskStatus | None:
        with connect(self.path) as connection:
            row = connection.execute(
                "SELECT status FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return TaskStatus(row["status"]) if row else None

    def coordinator(self, task_id: str) -> str | None:
        """Who signed the task: its result is encrypted for that coordinator."""
        with connect(self.path) as connection:
            row = connection.execute(
                "SELECT coordinator FROM seen_tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return str(row["coordinator"]) if row else None

    def unfinished(self) -> list[str]:
        """Tasks accepted or running when the node stopped: resumed on the next run."""
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT task_id FROM seen_tasks WHERE status IN (?, ?) ORDER BY sequence",
                (TaskStatus.ACCEPTED, TaskStatus.RUNNING),
            ).fetchall()
        return [row["task_id"] for row in rows]
