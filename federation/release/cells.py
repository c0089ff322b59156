"""The cell guard's arithmetic: how one more release splits the node's samples into cells.

A node has released statistics on cohorts C1..Cm. Samples with the same membership pattern
(in C1? in C2? ...) form a cell. Every released sum is a sum over whole cells, so every
linear combination of released sums - the tracker A - B - C + D included - is a combination
of per-cell sums: nobody can learn more about a person than the sum over their cell. The
guard keeps each non-empty cell at `min_cell_size` people or more.

Each sample carries one membership *signature*: a 16-byte hash chained over the ids of the
cohorts that contain it, in the order they were first released (samples in no cohort have
`EMPTY`). Equal signatures mean equal patterns, so a release is checked by looking up the
signatures of its own members only - O(|cohort|), whatever the number of earlier releases.

Per cell the ledger keeps its size, `missing` (an upper bound of the no-calls among the
cell's members at any released row of a cohort containing it: at such a variant the cell's
sum covers `size - missing` members at least) and the distinct phenotypes released on
cohorts containing it (the per-person phenotype budget).

A release that splits a cell leaves a part outside its cohort. That part's sums could only be
separated from now on, and its members' own no-calls bound them: when the release step knows
every outside member's no-call profile (the variants of the node's genotypes where they have
no call; the GWAS step writes them for the samples it leaves out), the part's `missing` is
the most of them uncalled at any one variant (`observed_missing`), if that is below the
inherited bound. Without profiles it inherits the cell's bound (never lower). Everything here
is pure: no I/O, no database.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SIGNATURE_BYTES = 16  # 128 bits: no two patterns collide among any node's cohorts
EMPTY = bytes(SIGNATURE_BYTES)  # the signature of a sample in no released cohort


def extend(signature: bytes, cohort_id: int) -> bytes:
    """The signature of a sample with `signature` that joins released cohort `cohort_id`."""
    return hashlib.blake2b(
        signature + cohort_id.to_bytes(8, "big"), digest_size=SIGNATURE_BYTES
    ).digest()


@dataclass(frozen=True)
class Cell:
    """One cell as the ledger keeps it (EMPTY's is never stored: it has no released sums)."""

    signature: bytes
    size: int
    missing: int = 0
    phenotypes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CellCheck:
    """What one more release would do to the cells it touches.

    `smallest_cell` is the smallest effective size (size - missing) among the non-empty
    cells after the release, before this release's own no-calls; `allowance` is how many
    no-calls a row of this release may have so that no cell it covers drops below
    `min_cell_size` (negative: already too small); `most_phenotypes` is the largest count of
    distinct phenotypes a member would have with this release.
    """

    smallest_cell: int | None
    smallest_raw_cell: int | None  # members only, for the admin's audit record
    allowance: int
    most_phenotypes: int
    cells_touched: int


def observed_missing(
    members: Iterable[bytes], no_calls: Mapping[bytes, frozenset[int]]
) -> int | None:
    """The most of `members` without a call at any one variant, from their no-call profiles
    (salted sample hash -> variant indices); None unless every member has a profile."""
    uncalled: Counter[int] = Counter()
    for member in members:
        profile = no_calls.get(member)
        if profile is None:
            return None
        uncalled.update(profile)
    return max(uncalled.values(), default=0)


def outside_missing(cell: Cell, observed: Mapping[bytes, int]) -> int:
    """The no-call bound of the part of `cell` a release leaves outside its cohort: the
    observed one where known and lower, else the cell's own (both are upper bounds)."""
    return min(cell.missing, observed.get(cell.signature, cell.missing))


def check_release(
    touched: Mapping[bytes, int],
    cells: Mapping[bytes, Cell],
    new_cohort: bool,
    phenotype: str | None,
    min_cell_size: int,
    observed: Mapping[bytes, int] | None = None,
) -> CellCheck:
    """Check a release whose members have the signatures counted in `touched` (signature ->
    members of the cohort that have it; EMPTY for samples never released). `cells` holds the
    ledger's cells for those signatures. A cohort released before (`new_cohort` False) splits
    nothing: its members' signatures already carry it. `observed`: signature -> the no-call
    bound of the cell's outside part from its members' profiles (`observed_missing`)."""
    observed = observed or {}
    effective: list[int] = []
    raw: list[int] = []
    allowance: int | None = None
    most = 0
    for signature, inside in touched.items():
        cell = cells.get(signature, Cell(signature, inside))
        if signature != EMPTY and inside > cell.size:
            raise ValueError(
                f"cell {signature.hex()[:12]}: {inside} members in the cohort, {cell.size} in the "
                "ledger; the ledger's cells are inconsistent (rebuild them)"
            )
        outside = 0 if signature == EMPTY or not new_cohort else cell.size - inside
        effective.append(inside - cell.missing)
        raw.append(inside)
        if outside:
            effective.append(outside - outside_missing(cell, observed))
            raw.append(outside)
        room = inside - min_cell_size
        allowance = room if allowance is None else min(allowance, room)
        most = max(most, len(cell.phenotypes | ({phenotype} if phenotype else set())))
    return CellCheck(
        smallest_cell=min(effective) if effective else None,
        smallest_raw_cell=min(raw) if raw else None,
        allowance=-1 if allowance is None else allowance,
        most_phenotypes=most,
        cells_touched=len(touched),
    )


def updated_cells(
    touched: Mapping[bytes, int],
    cells: Mapping[bytes, Cell],
    cohort_id: int,
    new_cohort: bool,
    phenotype: str | None,
    missing: int,
    observed: Mapping[bytes, int] | None = None,
) -> tuple[dict[bytes, bytes], list[Cell], list[bytes]]:
    """The ledger's change for a recorded release: (old -> new signature of the cohort's
    members, cells to write, cells to delete). `missing` is the most no-calls of a released
    row; `observed` as in `check_release`."""
    observed = observed or {}
    moves: dict[bytes, bytes] = {}
    write: list[Cell] = []
    delete: list[bytes] = []
    added = frozenset({phenotype}) if phenotype else frozenset()
    for signature, inside in touched.items():
        cell = cells.get(signature, Cell(signature, inside))
        target = extend(signature, cohort_id) if new_cohort else signature
        moves[signature] = target
        write.append(Cell(target, inside, max(cell.missing, missing), cell.phenotypes | added))
        if new_cohort and signature != EMPTY:
            if cell.size > inside:
                outside = Cell(
                    signature, cell.size - inside, outside_missing(cell, observed), cell.phenotypes
                )
                write.append(outside)
            else:
                delete.append(signature)
    return moves, write, delete
