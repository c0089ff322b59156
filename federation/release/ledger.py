"""The node's privacy ledger (SQLite): what this node has released, for the differencing guard,
the phenotype budget and byte-identical repeats. It never leaves the node.

No sample ID is stored in clear. With a node secret `k` (32 random bytes, a 0600 file):

* a cohort's commitment is HMAC-SHA256(k, "cohort\\0" + the sorted sample IDs, one per line);
* each member is stored as HMAC-SHA256(k, "sample\\0" + ID), so the size of the symmetric
  difference between a new cohort A and a released cohort B is |A| + |B| - 2|A ∩ B|, with
  the intersection counted by joining salted hashes. Without `k` the hashes cannot be
  tested against guessed IDs, which a plain hash of a structured ID would allow.

Per cohort the ledger keeps the phenotypes released; per release the request key, the variant
set's digest and size, and the released files in a content-addressed store beside the
database, so an identical request gets the stored bytes back instead of a recomputation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from federation.errors import DisclosureError
from federation.files import atomic_path, sha256_file
from federation.jsonio import canonical_json
from federation.sqlite import Migration, connect, migrate, now_utc

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
)


@dataclass(frozen=True)
class Cohort:
    commitment: str
    size: int
    member_hashes: frozenset[bytes] = field(repr=False)


@dataclass(frozen=True)
class LedgerCheck:
    # The smallest non-zero symmetric difference to a released cohort, among those whose size
    # is within the guard's limit (None: no such cohort, so none can be too close).
    smallest_difference: int | None
    phenotypes: int  # distinct phenotypes of this cohort, this release's included


@dataclass(frozen=True)
class StoredFile:
    name: str
    sha256: str
    size: int


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


class PrivacyLedger:
    """Open (or create) the ledger at `path` with the node secret at `secret_path`."""

    def __init__(self, path: Path, secret_path: Path) -> None:
        self.path = path
        self.store = path.with_name(path.name + ".files")
        with self._connect() as connection:
            migrate(connection, MIGRATIONS, f"privacy ledger '{path}'")
            row = connection.execute(
                "SELECT value FROM meta WHERE name = 'secret_check'"
            ).fetchone()
            self._secret = _load_secret(secret_path, may_create=row is None)
            check = hmac.new(self._secret, CHECK_MESSAGE, hashlib.sha256).hexdigest()
            if row is None:
                connection.execute("INSERT INTO meta VALUES ('secret_check', ?)", (check,))
            elif not hmac.compare_digest(row["value"], check):
                raise DisclosureError(
                    f"privacy ledger '{path}': the secret in '{secret_path}' is not the one the "
                    "ledger was created with; restore the original secret file"
                )

    def __repr__(self) -> str:  # never the secret
        return f"PrivacyLedger({str(self.path)!r})"

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        # Salted hashes only, but still nobody else's business: the file is created 0600.
        return connect(self.path, write_ahead_log=False, create_mode=SECRET_MODE)

    def cohort(self, sample_ids: Iterable[str]) -> Cohort:
        ids = sorted(set(sample_ids))
        joined = "\n".join(ids).encode()
        commitment = hmac.new(self._secret, b"cohort\0" + joined, hashlib.sha256).hexdigest()
        hashes = frozenset(
            hmac.new(self._secret, b"sample\0" + sample.encode(), hashlib.sha256).digest()
            for sample in ids
        )
        return Cohort(commitment, len(ids), hashes)

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

    def _smallest_difference(
        self, connection: sqlite3.Connection, cohort: Cohort, limit: int
    ) -> int | None:
        # |A Δ B| >= ||A| - |B||: only cohorts of nearly the same size can be too close.
        candidates = connection.execute(
            "SELECT id, size FROM cohorts WHERE size > ? AND size < ? AND commitment != ?",
            (cohort.size - limit, cohort.size + limit, cohort.commitment),
        ).fetchall()
        if not candidates:
            return None
        connection.execute(
            "CREATE TEMP TABLE IF NOT EXISTS candidate (sample_hash BLOB PRIMARY KEY)"
        )
        connection.execute("DELETE FROM candidate")
        connection.executemany(
            "INSERT INTO candidate VALUES (?)", ((h,) for h in cohort.member_hashes)
        )
        smallest: int | None = None
        for row in candidates:
            (shared,) = connection.execute(
                "SELECT COUNT(*) FROM members JOIN candidate USING (sample_hash) WHERE cohort_id = ?",
                (row["id"],),
            ).fetchone()
            difference = cohort.size + row["size"] - 2 * shared
            if difference > 0 and (smallest is None or difference < smallest):
                smallest = difference
        connection.execute("DELETE FROM candidate")
        return smallest

    # ------------------------------------------------------------------ decide and record

    @contextmanager
    def reserve(
        self, key: str, cohort: Cohort, phenotype: str | None, limit: int
    ) -> Iterator[Reservation]:
        """Check and record under one write lock, so two release steps running at once cannot
        both pass the budget or the differencing guard with what the other is releasing."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                reservation = Reservation(self, connection, key, cohort, phenotype, limit)
                yield reservation
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            if reservation.files is None:
                connection.execute("ROLLBACK")
            else:
                connection.execute("COMMIT")


class Reservation:
    """One release being decided; `record` commits it when the `reserve` block ends."""

    def __init__(
        self,
        ledger: PrivacyLedger,
        connection: sqlite3.Connection,
        key: str,
        cohort: Cohort,
        phenotype: str | None,
        limit: int,
    ) -> None:
        self._ledger, self._connection, self._cohort = ledger, connection, cohort
        self.key, self.phenotype = key, phenotype
        self.repeat = ledger._stored(connection, key)
        self.files: list[StoredFile] | None = None
        row = connection.execute(
            "SELECT id FROM cohorts WHERE commitment = ?", (cohort.commitment,)
        ).fetchone()
        known = set()
        if row is not None:
            known = {
                r["phenotype"]
                for r in connection.execute(
                    "SELECT phenotype FROM phenotypes WHERE cohort_id = ?", (row["id"],)
                )
            }
        if phenotype is not None:
            known.add(phenotype)
        self.check = LedgerCheck(ledger._smallest_difference(connection, cohort, limit), len(known))

    def record(self, label: str, variant_ids: Iterable[str], files: Mapping[str, Path]) -> None:
        connection, cohort, now = self._connection, self._cohort, now_utc()
        row = connection.execute(
            "SELECT id FROM cohorts WHERE commitment = ?", (cohort.commitment,)
        ).fetchone()
        if row is None:
            cohort_id = connection.execute(
                "INSERT INTO cohorts (commitment, size, first_released_at) VALUES (?, ?, ?)",
                (cohort.commitment, cohort.size, now),
            ).lastrowid
            connection.executemany(
                "INSERT INTO members VALUES (?, ?)", ((cohort_id, h) for h in cohort.member_hashes)
            )
        else:
            cohort_id = row["id"]
        if self.phenotype is not None:
            connection.execute(
                "INSERT OR IGNORE INTO phenotypes VALUES (?, ?, ?)",
                (cohort_id, self.phenotype, now),
            )
        ids = list(variant_ids)
        connection.execute(
            "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.key, cohort_id, label, self.phenotype, variant_set_digest(ids), len(ids), now),
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
