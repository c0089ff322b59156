"""SQLite for every ledger (coordinator, node, privacy): connections, transactions, migrations.

SQLite is the embedded default: one file, transactional, survives restarts. Every state change
is one transaction, so a process killed at any point restarts from a consistent ledger.

Each ledger declares its schema as an ordered list of `Migration`s. `migrate` applies the ones
a database has not seen yet, each in its own transaction, and records the version reached in
``PRAGMA user_version``: an upgraded node or coordinator keeps its history, and a database
written by a newer version of this software is refused rather than misread.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from federation.errors import SpecError

# Writers wait this long for a lock instead of failing at once (a watch loop and a CLI call
# may touch the same ledger).
BUSY_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Migration:
    """Schema version `version` is reached by running `sql` (one or more statements)."""

    version: int
    description: str
    sql: str


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def connect(
    path: Path, *, write_ahead_log: bool = True, create_mode: int | None = None
) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode (transactions are explicit), rows as `sqlite3.Row`.

    `create_mode` (e.g. 0o600) is the mode of a database file created here.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if create_mode is not None and not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, create_mode))
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    connection.row_factory = sqlite3.Row
    if write_ahead_log:
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA foreign_keys=ON")
    try:
        yield connection
    finally:
        connection.close()


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (the write lock is taken at once)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration], label: str) -> int:
    """Bring the database to the last of `migrations`; return the version it is at.

    Versions must be 1, 2, 3, ... in order. A database at a higher version than the last one
    known here was written by newer software: SpecError, nothing touched.
    """
    expected = list(range(1, len(migrations) + 1))
    if [migration.version for migration in migrations] != expected:
        raise ValueError(f"{label}: migrations must be numbered 1..{len(migrations)} in order")
    latest = len(migrations)
    current = schema_version(connection)
    if current > latest:
        raise SpecError(
            f"{label}: schema version {current} is newer than this software knows ({latest}); "
            "upgrade federation before using this ledger"
        )
    for migration in migrations[current:]:
        with transaction(connection):
            for statement in _statements(migration.sql):
                connection.execute(statement)
            # PRAGMA user_version takes no parameters; the version is an int we control.
            connection.execute(f"PRAGMA user_version = {int(migration.version)}")
    return latest


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction); a ';'
    inside a string literal does not end a statement (sqlite3.complete_statement knows)."""
    statements, current = [], ""
    for piece in sql.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n\t;"):
                statements.append(current.strip())
            current = ""
    return statements
