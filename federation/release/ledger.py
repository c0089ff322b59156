"""The node's privacy ledger (SQLite): what this node has released, for the cell guard, the
per-person phenotype budget and byte-identical repeats. It never leaves the node.

No sample ID is stored in clear. With a node secret `k` (32 random bytes, a 0600 file):

* a cohort's commitment is HMAC-SHA256(k, "cohort\\0" + the sorted sample IDs, one per line);
* each member is stored as HMAC-SHA256(k, "sample\\0" + ID). Without `k` the hashes cannot be
  tested against guessed IDs, which a plain hash of a structured ID would allow.

From the members of every released cohort the ledger keeps one membership signature per
salted sample hash and, per cell (samples with the same signature), its size, the most
no-calls of a released row covering it and its distinct phenotypes (`release.cells`). A new
release is checked against them under the ledger's write lock and recorded in the same
transaction.

Per cohort the ledger keeps the phenotypes released; per release the request key, the variant
set's digest and size, the most no-calls of a released row, and the released files in a
content-addressed store beside the database, so an identical request gets the stored bytes
back instead of a recomputation.

Lost history fails closed: a ledger that is missing or empty while its secret exists, or that
has fewer releases than it counted, refuses every release until an admin starts a new history
with `federation node privacy-ledger reinit` (`reinitialise`, audited).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from federation.audit import append_event
from federation.errors import DisclosureError
from federation.files import atomic_path, sha256_file
from federation.jsonio import canonical_json, parse_json_strictly
from federation.release.cells import (
    EMPTY,
    Cell,
    CellCheck,
    check_release,
    observed_missing,
    updated_cells,
)
from federation.sqlite import Migration, connect, migrate, now_utc, transaction

SECRET_BYTES = 32
SECRET_MODE = 0o600  # only the node's service account may read the salt
CHECK_MESSAGE = b"federation.privacy-ledger/secret-check"
REQUEST_FORMAT = "federation.release-request/1"
MIGRATIONS = (
    Migration(
        1,
        "cohorts, their salted members and phenotypes, releases and their stored files",
        """
        CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS cohorts (
            id INTEGER PRIMARY KEY, commitment TEXT UNIQUE NOT NULL, size INTEGER NOT NULL,
            first_released_at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS cohorts_by_size ON cohorts (size);
        CREATE TABLE IF NOT EXISTS members (
            cohort_id INTEGER NOT NULL REFERENCES cohorts (id), sample_hash BLOB NOT NULL,
            PRIMARY KEY (cohort_id, sample_hash)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS phenotypes (
            cohort_id INTEGER NOT NULL REFERENCES cohorts (id), phenotype TEXT NOT NULL,
            first_released_at TEXT NOT NULL, PRIMARY KEY (cohort_id, phenotype)
        );
        CREATE TABLE IF NOT EXISTS releases (
            request_key TEXT PRIMARY KEY, cohort_id INTEGER NOT NULL REFERENCES cohorts (id),
            label TEXT NOT NULL, phenotype TEXT, variant_set_sha256 TEXT NOT NULL,
            variants INTEGER NOT NULL, released_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS release_files (
            request_key TEXT NOT NULL REFERENCES releases (request_key), name TEXT NOT NULL,
            sha256 TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (request_key, name)
        );
        """,
    ),
    Migration(
        2,
        "cell guard: one membership signature per salted sample, cells, release counter, "
        "no-calls per release",
        """
        CREATE TABLE IF NOT EXISTS cell_samples (
            sample_hash BLOB PRIMARY KEY, signature BLOB NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS cells (
            signature BLOB PRIMARY KEY, size INTEGER NOT NULL, missing INTEGER NOT NULL,
            phenotypes TEXT NOT NULL
        ) WITHOUT ROWID;
        ALTER TABLE releases ADD COLUMN max_missing INTEGER NOT NULL DEFAULT 0;
        INSERT OR REPLACE INTO meta
            SELECT 'releases_recorded', CAST(COUNT(*) AS TEXT) FROM releases;
        INSERT OR REPLACE INTO meta VALUES ('cells_built', '0');
        """,
    ),
)


# Salted sample hash -> indices of the node's variants where that sample has no call.
NoCalls = Mapping[bytes, frozenset[int]]


@dataclass(frozen=True)
class Cohort:
    commitment: str
    size: int
    member_hashes: frozenset[bytes] = field(repr=False)


@dataclass(frozen=True)
class LedgerCheck:
    cells: CellCheck  # what this release does to the node's cells (`release.cells`)
    new_cohort: bool  # no earlier release had exactly this cohort


@dataclass(frozen=True)
class StoredFile:
    name: str
    sha256: str
    size: int


class LedgerLost(DisclosureError):
    """The privacy ledger's history is gone or cut while its secret remains: no release."""


REINIT_COMMAND = "federation node privacy-ledger reinit --config NODE.yaml --reason TEXT"


def read_sample_ids(path: Path) -> list[str]:
    """The analysed cohort written by the Hail step: one sample ID per line (node-private)."""
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DisclosureError(f"cohort file '{path.name}': no sample IDs; nothing can be released")
    if len(set(ids)) != len(ids):
        # Never name the duplicate: the message reaches logs.
        raise DisclosureError(
            f"cohort file '{path.name}': {len(ids) - len(set(ids))} duplicated sample IDs"
        )
    return ids


def request_key(document: Mapping[str, object]) -> str:
    """SHA-256 of a release request's canonical JSON (what was asked, of which cohort)."""
    return hashlib.sha256(canonical_json({"format": REQUEST_FORMAT, **document})).hexdigest()


def variant_set_digest(variant_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(variant_ids)).encode()).hexdigest()


def _load_secret(path: Path, may_create: bool) -> bytes:
    if not path.exists():
        if not may_create:
            raise DisclosureError(
                f"privacy ledger secret '{path}': missing but the ledger has releases; restore it "
                "(without it earlier cohorts cannot be compared)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(SECRET_BYTES))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise DisclosureError(
            f"privacy ledger secret '{path}': mode {mode:o} lets others read it; chmod 600"
        )
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise DisclosureError(
            f"privacy ledger secret '{path}': {len(secret)} bytes, expected {SECRET_BYTES}"
        )
    return secret


def _lost(path: Path, secret_path: Path, what: str) -> LedgerLost:
    return LedgerLost(
        f"privacy ledger '{path}': {what} while its secret '{secret_path}' exists; the node's "
        "release history is lost and no release can be checked against it; restore the ledger "
        f"from a backup, or start a new history with `{REINIT_COMMAND}` (audited)"
    )


class PrivacyLedger:
    """Open (or, on a node's first release, create) the ledger at `path` with the node secret
    at `secret_path`. A ledger missing, empty or cut while the secret exists is refused."""

    def __init__(self, path: Path, secret_path: Path) -> None:
        self.path = path
        self.store = path.with_name(path.name + ".files")
        if not path.exists() and secret_path.exists():
            raise _lost(path, secret_path, "missing")
        with self._connect() as connection:
            migrate(connection, MIGRATIONS, f"privacy ledger '{path}'")
            row = connection.execute(
                "SELECT value FROM meta WHERE name = 'secret_check'"
            ).fetchone()
            if row is None and secret_path.exists():
                raise _lost(path, secret_path, "empty (no history, not even its creation)")
            self._secret = _load_secret(secret_path, may_create=row is None)
            check = hmac.new(self._secret, CHECK_MESSAGE, hashlib.sha256).hexdigest()
            if row is None:
                connection.execute("INSERT INTO meta VALUES ('secret_check', ?)", (check,))
            elif not hmac.compare_digest(row["value"], check):
                raise DisclosureError(
                    f"privacy ledger '{path}': the secret in '{secret_path}' is not the one the "
                    "ledger was created with; restore the original secret file"
                )
            counted = _meta_int(connection, "releases_recorded")
            (present,) = connection.execute("SELECT COUNT(*) FROM releases").fetchone()
            if present < counted:
                raise _lost(path, secret_path, f"{present} releases of {counted} recorded remain")
            if _meta_int(connection, "cells_built") == 0:
                with transaction(connection):
                    _rebuild_cells(connection)

    def __repr__(self) -> str:  # never the secret
        return f"PrivacyLedger({str(self.path)!r})"

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        # Salted hashes only, but still nobody else's business: the file is created 0600.
        return connect(self.path, write_ahead_log=False, create_mode=SECRET_MODE)

    @classmethod
    def reinitialise(
        cls, path: Path, secret_path: Path, audit_log: Path, reason: str, node_id: str
    ) -> PrivacyLedger:
        """Start a new, empty history: the old ledger and its file store are kept aside
        (`<name>.lost-<time>`), the secret is kept (created if absent), and the node's audit
        log records who did it, why, and what was set aside."""
        reason = " ".join(reason.split())
        if not reason:
            raise DisclosureError(
                "privacy ledger reinit: --reason is empty; say why the history is being restarted"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept: dict[str, object] = {}
        for old in (path, path.with_name(path.name + ".files")):
            if old.exists():
                aside = old.with_name(f"{old.name}.lost-{stamp}")
                digest = sha256_file(old) if old.is_file() else None
                old.replace(aside)
                kept[str(aside)] = digest
        ledger = cls(path, secret_path) if not secret_path.exists() else None
        if ledger is None:  # the secret exists: bind a fresh ledger to it explicitly
            with connect(path, write_ahead_log=False, create_mode=SECRET_MODE) as connection:
                migrate(connection, MIGRATIONS, f"privacy ledger '{path}'")
                secret = _load_secret(secret_path, may_create=False)
                check = hmac.new(secret, CHECK_MESSAGE, hashlib.sha256).hexdigest()
                connection.execute("INSERT INTO meta VALUES ('secret_check', ?)", (check,))
            ledger = cls(path, secret_path)
        append_event(
            audit_log,
            "privacy_ledger_reinitialised",
            node_id=node_id,
            ledger=str(path),
            by=getpass.getuser(),
            reason=reason[:500],
            set_aside=kept,
        )
        return ledger

    def _sample_hash(self, sample: str) -> bytes:
        return hmac.new(self._secret, b"sample\0" + sample.encode(), hashlib.sha256).digest()

    def cohort(self, sample_ids: Iterable[str]) -> Cohort:
        ids = sorted(set(sample_ids))
        joined = "\n".join(ids).encode()
        commitment = hmac.new(self._secret, b"cohort\0" + joined, hashlib.sha256).hexdigest()
        return Cohort(commitment, len(ids), frozenset(self._sample_hash(s) for s in ids))

    def no_call_profiles(self, profiles: Mapping[str, Iterable[int]]) -> NoCalls:
        """Sample ID -> variant indices without a call, keyed by salted sample hash instead."""
        return {self._sample_hash(sample): frozenset(v) for sample, v in profiles.items()}

    # ------------------------------------------------------------------ lookups

    def stored(self, key: str) -> list[StoredFile] | None:
        """The files of an earlier release of the same request, if any."""
        with self._connect() as connection:
            return self._stored(connection, key)

    def _stored(self, connection: sqlite3.Connection, key: str) -> list[StoredFile] | None:
        if not connection.execute(
            "SELECT 1 FROM releases WHERE request_key = ?", (key,)
        ).fetchone():
            return None
        rows = connection.execute(
            "SELECT name, sha256, size FROM release_files WHERE request_key = ? ORDER BY name",
            (key,),
        ).fetchall()
        return [StoredFile(row["name"], row["sha256"], row["size"]) for row in rows]

    def copy_stored(self, files: list[StoredFile], destinations: Mapping[str, Path]) -> None:
        """Write stored bytes to `destinations` (by name), checking each digest first."""
        for entry in files:
            source = self.store / entry.sha256
            if not source.is_file() or sha256_file(source) != entry.sha256:
                raise DisclosureError(
                    f"privacy ledger store: '{entry.name}' ({entry.sha256[:12]}...) missing or damaged; "
                    "the earlier release cannot be repeated byte for byte"
                )
            target = destinations[entry.name]
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)

    def preview(
        self,
        cohort: Cohort,
        phenotype: str | None,
        min_cell_size: int,
        no_calls: NoCalls | None = None,
    ) -> LedgerCheck:
        """The cell check as it stands now, without the write lock (`reserve` checks again
        under it): the release step uses it to drop rows with too many no-calls first.
        `no_calls`: profiles of samples outside the cohort (`release.cells`)."""
        with self._connect() as connection:
            return _check(connection, cohort, phenotype, min_cell_size, no_calls)

    # ------------------------------------------------------------------ decide and record

    @contextmanager
    def reserve(
        self,
        key: str,
        cohort: Cohort,
        phenotype: str | None,
        min_cell_size: int,
        no_calls: NoCalls | None = None,
    ) -> Iterator[Reservation]:
        """Check and record under one write lock, so two release steps running at once cannot
        both pass the cell guard or the budget with what the other is releasing."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                reservation = Reservation(
                    self, connection, key, cohort, phenotype, min_cell_size, no_calls
                )
                yield reservation
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            if reservation.files is None:
                connection.execute("ROLLBACK")
            else:
                connection.execute("COMMIT")


def _meta_int(connection: sqlite3.Connection, name: str) -> int:
    row = connection.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return 0 if row is None else int(row["value"])


def _fill_candidate(connection: sqlite3.Connection, hashes: Iterable[bytes]) -> None:
    connection.execute(
        "CREATE TEMP TABLE IF NOT EXISTS candidate (sample_hash BLOB PRIMARY KEY) WITHOUT ROWID"
    )
    connection.execute("DELETE FROM candidate")
    # In key order: appending to the B-tree is several times faster than random inserts.
    connection.executemany("INSERT INTO candidate VALUES (?)", ((h,) for h in sorted(hashes)))


def _touched(connection: sqlite3.Connection) -> dict[bytes, int]:
    """Signature -> members of the candidate cohort that have it (EMPTY: never released)."""
    rows = connection.execute(
        "SELECT s.signature AS signature, COUNT(*) AS members FROM candidate "
        "LEFT JOIN cell_samples s USING (sample_hash) GROUP BY s.signature"
    ).fetchall()
    return {bytes(row["signature"] or EMPTY): int(row["members"]) for row in rows}


def _cells(connection: sqlite3.Connection, signatures: Iterable[bytes]) -> dict[bytes, Cell]:
    found: dict[bytes, Cell] = {}
    for signature in signatures:
        row = connection.execute(
            "SELECT size, missing, phenotypes FROM cells WHERE signature = ?", (signature,)
        ).fetchone()
        if row is not None:
            phenotypes = parse_json_strictly(row["phenotypes"].encode())
            found[signature] = Cell(signature, row["size"], row["missing"], frozenset(phenotypes))
    return found


def _cohort_id(connection: sqlite3.Connection, commitment: str) -> int | None:
    row = connection.execute(
        "SELECT id FROM cohorts WHERE commitment = ?", (commitment,)
    ).fetchone()
    return None if row is None else int(row["id"])


def _observed(
    connection: sqlite3.Connection, cells: Mapping[bytes, Cell], no_calls: NoCalls | None
) -> dict[bytes, int]:
    """Signature -> the no-call bound of the cell's members outside the candidate cohort,
    where all of them have profiles (`cells.observed_missing`); only cells with a bound > 0."""
    if not no_calls:
        return {}
    observed = {}
    for signature, cell in cells.items():
        if cell.missing == 0:
            continue  # nothing to refine
        outside = connection.execute(
            "SELECT sample_hash FROM cell_samples WHERE signature = ? "
            "AND sample_hash NOT IN (SELECT sample_hash FROM candidate)",
            (signature,),
        ).fetchall()
        bound = observed_missing((bytes(row["sample_hash"]) for row in outside), no_calls)
        if bound is not None:
            observed[signature] = bound
    return observed


def _check(
    connection: sqlite3.Connection,
    cohort: Cohort,
    phenotype: str | None,
    min_cell_size: int,
    no_calls: NoCalls | None = None,
) -> LedgerCheck:
    _fill_candidate(connection, cohort.member_hashes)
    touched = _touched(connection)
    new_cohort = _cohort_id(connection, cohort.commitment) is None
    cells = _cells(connection, touched)
    observed = _observed(connection, cells, no_calls) if new_cohort else {}
    check = check_release(touched, cells, new_cohort, phenotype, min_cell_size, observed)
    return LedgerCheck(check, new_cohort)


def _apply(
    connection: sqlite3.Connection,
    cohort_id: int,
    new_cohort: bool,
    phenotype: str | None,
    missing: int,
    no_calls: NoCalls | None = None,
) -> None:
    """Move the members in `candidate` to their new cells and write the cells' new state."""
    touched = _touched(connection)
    cells = _cells(connection, touched)
    observed = _observed(connection, cells, no_calls) if new_cohort else {}
    moves, write, delete = updated_cells(
        touched, cells, cohort_id, new_cohort, phenotype, missing, observed
    )
    if new_cohort:
        connection.execute(
            "CREATE TEMP TABLE IF NOT EXISTS moves (old BLOB PRIMARY KEY, new BLOB NOT NULL)"
        )
        connection.execute("DELETE FROM moves")
        connection.executemany("INSERT INTO moves VALUES (?, ?)", moves.items())
        connection.execute(
            "INSERT OR REPLACE INTO cell_samples (sample_hash, signature) "
            "SELECT c.sample_hash, m.new FROM candidate c "
            "LEFT JOIN cell_samples s USING (sample_hash) "
            "JOIN moves m ON m.old = coalesce(s.signature, ?)",
            (EMPTY,),
        )
    connection.executemany("DELETE FROM cells WHERE signature = ?", ((s,) for s in delete))
    connection.executemany(
        "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?)",
        (
            (
                cell.signature,
                cell.size,
                cell.missing,
                canonical_json(sorted(cell.phenotypes)).decode(),
            )
            for cell in write
        ),
    )


def _rebuild_cells(connection: sqlite3.Connection) -> None:
    """Cells from the members of every released cohort, replayed in release order: a ledger
    from before the cell guard gets its signatures (no-calls of its old releases unknown: 0)."""
    connection.execute("DELETE FROM cell_samples")
    connection.execute("DELETE FROM cells")
    cohorts = connection.execute("SELECT id FROM cohorts ORDER BY id").fetchall()
    for row in cohorts:
        cohort_id = int(row["id"])
        connection.execute(
            "CREATE TEMP TABLE IF NOT EXISTS candidate (sample_hash BLOB PRIMARY KEY) WITHOUT ROWID"
        )
        connection.execute("DELETE FROM candidate")
        connection.execute(
            "INSERT INTO candidate SELECT sample_hash FROM members WHERE cohort_id = ?",
            (cohort_id,),
        )
        phenotypes = [
            r["phenotype"]
            for r in connection.execute(
                "SELECT phenotype FROM phenotypes WHERE cohort_id = ? ORDER BY phenotype",
                (cohort_id,),
            )
        ]
        _apply(connection, cohort_id, True, phenotypes[0] if phenotypes else None, 0)
        for phenotype in phenotypes[1:]:
            _apply(connection, cohort_id, False, phenotype, 0)
    connection.execute("INSERT OR REPLACE INTO meta VALUES ('cells_built', '1')")


class Reservation:
    """One release being decided; `record` commits it when the `reserve` block ends."""

    def __init__(
        self,
        ledger: PrivacyLedger,
        connection: sqlite3.Connection,
        key: str,
        cohort: Cohort,
        phenotype: str | None,
        min_cell_size: int,
        no_calls: NoCalls | None = None,
    ) -> None:
        self._ledger, self._connection, self._cohort = ledger, connection, cohort
        self.key, self.phenotype, self._no_calls = key, phenotype, no_calls
        self.repeat = ledger._stored(connection, key)
        self.files: list[StoredFile] | None = None
        self.check = _check(connection, cohort, phenotype, min_cell_size, no_calls)

    def record(
        self,
        label: str,
        variant_ids: Iterable[str],
        files: Mapping[str, Path],
        max_missing: int = 0,
    ) -> None:
        """Record the release: its cohort (members, cells), phenotype, variants and files.
        `max_missing`: the most no-calls of a released row (the cells it covers keep it)."""
        connection, cohort, now = self._connection, self._cohort, now_utc()
        cohort_id = _cohort_id(connection, cohort.commitment)
        new_cohort = cohort_id is None
        if cohort_id is None:
            inserted = connection.execute(
                "INSERT INTO cohorts (commitment, size, first_released_at) VALUES (?, ?, ?)",
                (cohort.commitment, cohort.size, now),
            ).lastrowid
            assert inserted is not None
            cohort_id = int(inserted)
            connection.executemany(
                "INSERT INTO members VALUES (?, ?)",
                ((cohort_id, h) for h in sorted(cohort.member_hashes)),
            )
        _apply(connection, cohort_id, new_cohort, self.phenotype, max_missing, self._no_calls)
        if self.phenotype is not None:
            connection.execute(
                "INSERT OR IGNORE INTO phenotypes VALUES (?, ?, ?)",
                (cohort_id, self.phenotype, now),
            )
        ids = list(variant_ids)
        connection.execute(
            "INSERT INTO releases (request_key, cohort_id, label, phenotype, variant_set_sha256, "
            "variants, released_at, max_missing) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.key,
                cohort_id,
                label,
                self.phenotype,
                variant_set_digest(ids),
                len(ids),
                now,
                max_missing,
            ),
        )
        connection.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
            "WHERE name = 'releases_recorded'"
        )
        stored = []
        self._ledger.store.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, path in sorted(files.items()):
            digest = sha256_file(path)
            target = self._ledger.store / digest
            if not target.exists():
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
            size = path.stat().st_size
            connection.execute(
                "INSERT INTO release_files VALUES (?, ?, ?, ?)", (self.key, name, digest, size)
            )
            stored.append(StoredFile(name, digest, size))
        self.files = stored
