"""The cell guard: its arithmetic below, at and above the floor, and the property that after
it no combination of a node's releases singles out fewer than k people."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.node.selftest_cases import recovered_samples
from federation.release.cells import (
    EMPTY,
    Cell,
    check_release,
    extend,
    observed_missing,
    outside_missing,
    updated_cells,
)
from federation.release.ledger import PrivacyLedger


def test_a_new_cohort_splits_each_cell_it_touches_into_inside_and_outside():
    cell = Cell(b"a" * 16, 30, missing=2, phenotypes=frozenset({"bmi"}))
    check = check_release({cell.signature: 18, EMPTY: 12}, {cell.signature: cell}, True, "ldl", 10)
    # Inside 18 - 2, outside 12 - 2, the never-released 12 - 0.
    assert check.smallest_cell == 10 and check.smallest_raw_cell == 12
    assert check.allowance == 2  # 12 - 10: a row may miss 2 calls
    assert check.most_phenotypes == 2
    moves, write, delete = updated_cells(
        {cell.signature: 18, EMPTY: 12}, {cell.signature: cell}, 7, True, "ldl", 1
    )
    assert moves == {cell.signature: extend(cell.signature, 7), EMPTY: extend(EMPTY, 7)}
    sizes = {c.signature: (c.size, c.missing, c.phenotypes) for c in write}
    assert sizes[extend(cell.signature, 7)] == (18, 2, frozenset({"bmi", "ldl"}))
    assert sizes[cell.signature] == (12, 2, frozenset({"bmi"}))
    assert sizes[extend(EMPTY, 7)] == (12, 1, frozenset({"ldl"}))
    assert delete == []


def test_the_same_cohort_again_splits_nothing():
    cell = Cell(b"b" * 16, 25)
    check = check_release({cell.signature: 25}, {cell.signature: cell}, False, "x", 10)
    assert (check.smallest_cell, check.allowance) == (25, 15)
    _, write, delete = updated_cells({cell.signature: 25}, {cell.signature: cell}, 3, False, "x", 4)
    assert write == [Cell(cell.signature, 25, 4, frozenset({"x"}))] and delete == []


def test_a_cell_taken_whole_moves_and_its_old_signature_goes():
    cell = Cell(b"c" * 16, 20)
    _, write, delete = updated_cells({cell.signature: 20}, {cell.signature: cell}, 9, True, None, 0)
    assert [c.signature for c in write] == [extend(cell.signature, 9)] and delete == [
        cell.signature
    ]


def _pattern_cells(released: list[set[int]], n: int) -> list[int]:
    """Sizes of the cells the released cohorts induce (samples in no cohort excluded)."""
    patterns: dict[tuple[bool, ...], int] = {}
    for sample in range(n):
        pattern = tuple(sample in cohort for cohort in released)
        if any(pattern):
            patterns[pattern] = patterns.get(pattern, 0) + 1
    return sorted(patterns.values())


REQUESTS = st.lists(
    st.tuples(st.sampled_from(["random", "drop", "add", "again"]), st.integers(0, 2**31)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(12, 70), k=st.sampled_from([2, 3, 5, 10]), requests=REQUESTS)
def test_after_the_guard_every_cell_is_empty_or_at_least_k_and_least_squares_finds_no_one(
    n, k, requests
):
    rng = np.random.default_rng(n * 1000 + k)
    genotypes = rng.binomial(2, 0.35, size=(n, 6)).astype(float)
    ids = [f"S{i:04d}" for i in range(n)]
    released: list[set[int]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        ledger = PrivacyLedger(root / "l.sqlite", root / "l.secret")
        for number, (kind, seed) in enumerate(requests):
            pick = np.random.default_rng(seed)
            previous = released[-1] if released else set(range(n))
            if kind == "random" or not released:
                members = {i for i in range(n) if pick.random() < 0.6}
            elif kind == "drop":  # the tracker's move: a few samples fewer
                members = previous - set(pick.choice(n, size=pick.integers(1, 4)).tolist())
            elif kind == "add":
                members = previous | set(pick.choice(n, size=pick.integers(1, 4)).tolist())
            else:
                members = set(previous)
            if not members:
                continue
            cohort = ledger.cohort(ids[i] for i in members)
            data = root / f"{number}.bin"
            data.write_bytes(b"x")
            with ledger.reserve(f"r{number}", cohort, None, k) as reservation:
                smallest = reservation.check.cells.smallest_cell
                if smallest is not None and smallest >= k:
                    reservation.record(f"r{number}", [], {"f": data})
                    released.append(members)
    cells = _pattern_cells(released, n)
    assert all(size >= k for size in cells), cells
    if released:
        membership = np.array([[i in cohort for i in range(n)] for cohort in released], float)
        sums = membership @ genotypes  # the released allele counts, exact
        assert recovered_samples(membership, sums, genotypes) == []


# ------------------------------------------- the outside part of a split: observed no-calls

BIG = Cell(b"q" * 16, 1000, missing=23)  # the QC cohort after an AF release (23 no-calls)


def test_a_split_off_cell_inherits_the_cohort_no_calls_without_profiles():
    check = check_release({BIG.signature: 990}, {BIG.signature: BIG}, True, "ldl", 10)
    assert check.smallest_cell == 10 - 23  # the over-cautious bound: refused


@pytest.mark.parametrize(
    ("left_out", "observed", "smallest"),
    [(10, 1, 9), (10, 0, 10), (11, 1, 10), (12, 1, 11), (9, 0, 9)],
)
def test_a_split_off_cell_keeps_its_size_minus_its_own_no_calls(left_out, observed, smallest):
    """Below, at and above min_cell_size 10: the outside part counts only its own members'
    no-calls at any one variant (an attacker differencing two releases gets those sums)."""
    touched = {BIG.signature: BIG.size - left_out}
    check = check_release(touched, {BIG.signature: BIG}, True, "ldl", 10, {BIG.signature: observed})
    assert check.smallest_cell == smallest
    _, write, _ = updated_cells(
        touched, {BIG.signature: BIG}, 5, True, "ldl", 0, {BIG.signature: observed}
    )
    assert {c.signature: c.missing for c in write}[BIG.signature] == observed


def test_observed_no_calls_never_raise_the_inherited_bound():
    touched = {BIG.signature: 970}
    check = check_release(touched, {BIG.signature: BIG}, True, None, 10, {BIG.signature: 40})
    assert check.smallest_cell == 30 - 23
    assert outside_missing(BIG, {BIG.signature: 40}) == 23


def test_observed_missing_counts_members_without_a_call_at_the_same_variant():
    profiles = {b"a": frozenset({1, 5}), b"b": frozenset({5}), b"c": frozenset()}
    assert observed_missing([b"a", b"b", b"c"], profiles) == 2  # both miss variant 5
    assert observed_missing([b"a", b"c"], profiles) == 1
    assert observed_missing([b"c"], profiles) == 0
    assert observed_missing([], profiles) == 0
    assert observed_missing([b"a", b"unknown"], profiles) is None  # a member without profile
