"""federation.sqlite: ledgers upgrade in place and keep their history; newer ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.errors import SpecError
from federation.sqlite import Migration, connect, migrate, schema_version, transaction

V1 = Migration(1, "events", "CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT NOT NULL);")
V2 = Migration(
    2,
    "who did it",
    """
    ALTER TABLE events ADD COLUMN who TEXT NOT NULL DEFAULT 'unknown';
    CREATE INDEX events_by_who ON events (who);
    """,
)


def test_a_new_database_is_created_at_the_latest_version(tmp_path: Path):
    with connect(tmp_path / "l.sqlite") as connection:
        assert migrate(connection, [V1, V2], "ledger") == 2
        assert schema_version(connection) == 2
        connection.execute("INSERT INTO events (what, who) VALUES ('x', 'admin')")


def test_an_upgrade_keeps_every_row_written_before_it(tmp_path: Path):
    path = tmp_path / "l.sqlite"
    with connect(path) as connection:
        migrate(connection, [V1], "ledger")
        connection.execute("INSERT INTO events (what) VALUES ('released')")
    with connect(path) as connection:
        migrate(connection, [V1, V2], "ledger")
        rows = [tuple(row) for row in connection.execute("SELECT id, what, who FROM events")]
    assert rows == [(1, "released", "unknown")]


def test_opening_again_changes_nothing(tmp_path: Path):
    path = tmp_path / "l.sqlite"
    for _ in range(3):
        with connect(path) as connection:
            migrate(connection, [V1, V2], "ledger")
    with connect(path) as connection:
        assert schema_version(connection) == 2


def test_a_database_from_newer_software_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "l.sqlite"
    with connect(path) as connection:
        migrate(connection, [V1, V2], "ledger")
    with connect(path) as connection, pytest.raises(SpecError) as refused:
        migrate(connection, [V1], "node ledger 'l.sqlite'")
    assert "schema version 2 is newer than this software knows (1)" in str(refused.value)
    assert "upgrade federation" in str(refused.value)


def test_a_failing_migration_rolls_back_to_the_version_before(tmp_path: Path):
    path = tmp_path / "l.sqlite"
    broken = Migration(2, "broken", "ALTER TABLE events ADD COLUMN x TEXT; SELECT * FROM nowhere;")
    with connect(path) as connection:
        migrate(connection, [V1], "ledger")
        with pytest.raises(Exception, match="nowhere"):
            migrate(connection, [V1, broken], "ledger")
        assert schema_version(connection) == 1
        columns = [row["name"] for row in connection.execute("PRAGMA table_info(events)")]
        assert columns == ["id", "what"]


def test_migrations_must_be_numbered_in_order(tmp_path: Path):
    with connect(tmp_path / "l.sqlite") as connection, pytest.raises(ValueError, match="1..2"):
        migrate(connection, [V2, V1], "ledger")


def test_a_transaction_rolls_back_on_error(tmp_path: Path):
    with connect(tmp_path / "l.sqlite") as connection:
        migrate(connection, [V1], "ledger")
        with pytest.raises(KeyError), transaction(connection):
            connection.execute("INSERT INTO events (what) VALUES ('half')")
            raise KeyError("stop")
        assert connection.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_a_ledger_created_here_can_be_private(tmp_path: Path):
    path = tmp_path / "private.sqlite"
    with connect(path, write_ahead_log=False, create_mode=0o600):
        pass
    assert path.stat().st_mode & 0o777 == 0o600
