"""The node's privacy ledger: salted commitments, the cell guard, the per-person budget, repeats
and lost history."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from federation.audit import verify_log
from federation.errors import DisclosureError
from federation.jsonio import parse_json_strictly
from federation.release.cells import CellCheck
from federation.release.ledger import (
    MIGRATIONS,
    LedgerLost,
    PrivacyLedger,
    read_sample_ids,
    request_key,
    variant_set_digest,
)

LIMIT = 10  # DisclosurePolicy.min_cell_size


def _ids(start: int, stop: int) -> list[str]:
    return [f"FIN{i:06d}" for i in range(start, stop)]


def _ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger.sqlite", tmp_path / "ledger.secret")


def _release(
    ledger: PrivacyLedger,
    tmp_path: Path,
    ids: list[str],
    phenotype: str | None,
    key: str,
    missing: int = 0,
) -> CellCheck:
    """Check a release and record it whatever the check says (the gate decides; this is the
    ledger's bookkeeping)."""
    cohort = ledger.cohort(ids)
    data = tmp_path / f"{key}.tsv.gz"
    data.write_bytes(f"bytes of {key}".encode())
    with ledger.reserve(key, cohort, phenotype, LIMIT) as reservation:
        check = reservation.check.cells
        reservation.record(f"analysis '{key}'", ["1:1:A:G"], {"a.tsv.gz": data}, missing)
    return check


def _check(ledger: PrivacyLedger, ids: list[str], phenotype: str | None = None) -> CellCheck:
    return ledger.preview(ledger.cohort(ids), phenotype, LIMIT).cells


def test_commitment_is_order_free_and_salted(tmp_path):
    ledger = _ledger(tmp_path)
    ids = _ids(0, 200)
    assert ledger.cohort(ids).commitment == ledger.cohort(list(reversed(ids))).commitment
    assert ledger.cohort(ids).size == 200
    other = PrivacyLedger(tmp_path / "other.sqlite", tmp_path / "other.secret")
    assert other.cohort(ids).commitment != ledger.cohort(ids).commitment
    assert ledger.cohort(ids).commitment != ledger.cohort(ids[:-1]).commitment
    assert "secret" not in repr(ledger) and "FIN" not in repr(ledger.cohort(ids))


def test_no_sample_id_is_stored_in_clear(tmp_path):
    ledger = _ledger(tmp_path)
    ids = _ids(0, 150)
    _release(ledger, tmp_path, ids, "height", "r1")
    stored = b"".join(
        path.read_bytes() for path in tmp_path.glob("ledger.sqlite*") if path.is_file()
    )
    assert not any(sample.encode() in stored for sample in ids)
    assert b"FIN0" not in stored


@pytest.mark.parametrize(
    ("change", "smallest", "refused"),
    [
        ("same", 200, False),  # the same cohort again splits nothing
        ("add 1", 1, True),
        ("remove 1", 1, True),
        ("add 9", 9, True),
        ("swap 4", 4, True),  # 4 out, 4 in: two cells of 4
        ("add 10", 10, False),
        ("swap 10", 10, False),
        ("disjoint", 200, False),  # no one in common: each cohort is one cell
    ],
)
def test_cell_guard_contains_the_pairwise_rule(tmp_path, change, smallest, refused):
    ledger = _ledger(tmp_path)
    base = _ids(0, 200)
    _release(ledger, tmp_path, base, "height", "first")
    changed = {
        "same": base,
        "add 1": base + _ids(500, 501),
        "remove 1": base[1:],
        "add 9": base + _ids(500, 509),
        "swap 4": base[4:] + _ids(500, 504),
        "add 10": base + _ids(500, 510),
        "swap 10": base[10:] + _ids(500, 510),
        "disjoint": _ids(1000, 1200),
    }[change]
    check = _check(ledger, changed, "height")
    assert check.smallest_cell == smallest
    assert (check.smallest_cell < LIMIT) is refused


def test_four_cohort_tracker_is_stopped_at_the_release_that_makes_the_small_cell(tmp_path):
    """The issue's attack: two call-rate thresholds x with/without a covariate 15 samples lack.
    Every pair differs by >= 11 samples, yet A - B - C + D is one person. Here the person is
    the one sample that fails the strict call rate among those lacking the covariate."""
    ledger = _ledger(tmp_path)
    everyone = _ids(0, 300)
    lacks_covariate = set(_ids(0, 15))
    low_call = set(_ids(14, 26))  # fails the strict threshold; overlaps the 15 in one sample
    a = everyone  # lenient, covariate not used
    b = [s for s in everyone if s not in lacks_covariate]  # lenient, with covariate
    c = [s for s in everyone if s not in low_call]  # strict, no covariate
    d = [s for s in b if s not in low_call]  # strict, with covariate
    sizes = {len(set(x) ^ set(y)) for x, y in [(a, b), (a, c), (a, d), (b, c), (b, d), (c, d)]}
    assert min(sizes) >= 11  # the pairwise 1-9 rule would have passed all four
    assert _release(ledger, tmp_path, a, "t", "A").smallest_cell == 300
    assert _release(ledger, tmp_path, b, "t", "B").smallest_cell == 15
    third = _check(ledger, c, "t")
    # C splits the 15 into 14 + 1: the sample lacking the covariate with a low call rate.
    assert third.smallest_cell == 1


def test_cells_are_counted_over_every_release_of_any_study(tmp_path):
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 200), None, "a")
    _release(ledger, tmp_path, _ids(0, 230), None, "b")
    assert _check(ledger, _ids(0, 227)).smallest_cell == 3  # 227..229 become a cell of 3
    assert _check(ledger, _ids(0, 215)).smallest_cell == 15


def test_no_calls_of_earlier_rows_shrink_the_cells_they_cover(tmp_path):
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 200), None, "a", missing=4)
    # 12 new members: fine alone; the 188 left of the first cohort keep 188 - 4.
    assert _check(ledger, _ids(0, 188)).smallest_cell == 8  # the 12 left out, less 4 no-calls
    check = _check(ledger, _ids(0, 200) + _ids(500, 520))
    assert check.smallest_cell == 20 and check.allowance == 10


def test_per_person_budget_counts_distinct_phenotypes_across_perturbed_cohorts(tmp_path):
    ledger = _ledger(tmp_path)
    everyone = _ids(0, 200)
    assert _release(ledger, tmp_path, everyone, "height", "h").most_phenotypes == 1
    assert _release(ledger, tmp_path, everyone, "height", "h2").most_phenotypes == 1  # again
    assert _release(ledger, tmp_path, everyone, None, "af").most_phenotypes == 1  # no phenotype
    # A stricter threshold drops 10 samples: a fresh cohort, but the same 190 people.
    assert _release(ledger, tmp_path, everyone[10:], "bmi", "b").most_phenotypes == 2
    assert _release(ledger, tmp_path, everyone[:190], "ldl", "l").most_phenotypes == 3
    assert _check(ledger, _ids(1000, 1100), "ldl").most_phenotypes == 1  # other people


def test_a_reservation_not_recorded_leaves_no_trace(tmp_path):
    ledger = _ledger(tmp_path)
    cohort = ledger.cohort(_ids(0, 100))
    with ledger.reserve("k", cohort, "height", LIMIT) as reservation:
        assert reservation.repeat is None
    assert ledger.stored("k") is None
    assert _check(ledger, _ids(0, 101), "height").smallest_cell == 101  # nothing was recorded


def test_identical_request_gets_the_stored_bytes(tmp_path):
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 100), "height", "k1")
    stored = ledger.stored("k1")
    assert stored is not None and [entry.name for entry in stored] == ["a.tsv.gz"]
    target = tmp_path / "out" / "a.tsv.gz"
    ledger.copy_stored(stored, {"a.tsv.gz": target})
    assert target.read_bytes() == b"bytes of k1"
    (ledger.store / stored[0].sha256).write_bytes(b"tampered")
    with pytest.raises(DisclosureError, match="damaged"):
        ledger.copy_stored(stored, {"a.tsv.gz": target})


def test_request_key_and_variant_digest_are_canonical():
    assert request_key({"a": 1, "b": [1, 2]}) == request_key({"b": [1, 2], "a": 1})
    assert request_key({"a": 1}) != request_key({"a": 2})
    assert variant_set_digest(["2:1:A:G", "1:1:A:G"]) == variant_set_digest(["1:1:A:G", "2:1:A:G"])


def test_secret_is_created_private_and_checked(tmp_path):
    ledger = _ledger(tmp_path)
    secret = tmp_path / "ledger.secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
    assert (tmp_path / "ledger.sqlite").stat().st_mode & 0o777 == 0o600
    _release(ledger, tmp_path, _ids(0, 100), None, "k")
    secret.chmod(0o644)
    with pytest.raises(DisclosureError, match="chmod 600"):
        _ledger(tmp_path)
    secret.chmod(0o600)
    secret.write_bytes(bytes(32))
    with pytest.raises(DisclosureError, match="not the one the ledger was created with"):
        _ledger(tmp_path)
    secret.unlink()
    with pytest.raises(DisclosureError, match="missing but the ledger has releases"):
        _ledger(tmp_path)


def test_sample_list_is_checked_without_naming_samples(tmp_path):
    path = tmp_path / "samples.txt"
    path.write_text("FIN1\nFIN2\nFIN1\n")
    with pytest.raises(DisclosureError) as error:
        read_sample_ids(path)
    assert "1 duplicated" in str(error.value) and "FIN1" not in str(error.value)
    path.write_text("\n")
    with pytest.raises(DisclosureError, match="no sample IDs"):
        read_sample_ids(path)


def test_concurrent_releases_cannot_both_spend_the_last_budget(tmp_path):
    ledger = _ledger(tmp_path)
    ids = _ids(0, 20)
    _release(ledger, tmp_path, ids, "t0", "t0")  # the budget below is 2: one left
    outcomes: list[int] = []
    barrier = threading.Barrier(2)

    def release(trait: str) -> None:
        barrier.wait()
        cohort = ledger.cohort(ids)
        data = tmp_path / f"{trait}.bin"
        data.write_bytes(trait.encode())
        with ledger.reserve(trait, cohort, trait, LIMIT) as reservation:
            if reservation.check.cells.most_phenotypes <= 2:
                reservation.record(trait, [], {"f": data})
                outcomes.append(1)

    threads = [threading.Thread(target=release, args=(trait,)) for trait in ("height", "bmi")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [1]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as connection:
        assert connection.execute("SELECT COUNT(*) FROM phenotypes").fetchone() == (2,)


# ---------------------------------------------------------------- lost history fails closed


def test_a_deleted_ledger_whose_secret_remains_stops_every_release(tmp_path):
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 200), None, "a")
    (tmp_path / "ledger.sqlite").unlink()
    with pytest.raises(LedgerLost, match="missing while its secret") as error:
        _ledger(tmp_path)
    assert "privacy-ledger reinit" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "ledger.sqlite").exists()  # nothing silently re-created
    (tmp_path / "ledger.sqlite").write_bytes(b"")  # emptied
    with pytest.raises(LedgerLost, match="empty"):
        _ledger(tmp_path)


def test_a_ledger_with_releases_deleted_stops_every_release(tmp_path):
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 200), None, "a")
    _release(ledger, tmp_path, _ids(0, 200), "t", "b")
    with sqlite3.connect(tmp_path / "ledger.sqlite") as connection:
        connection.execute("DELETE FROM release_files")
        connection.execute("DELETE FROM releases")
    with pytest.raises(LedgerLost, match="0 releases of 2 recorded remain"):
        _ledger(tmp_path)


def test_reinitialising_is_explicit_audited_and_keeps_the_old_file(tmp_path):
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 200), None, "a")
    (tmp_path / "ledger.sqlite").write_bytes(b"")
    audit = tmp_path / "audit.jsonl"
    with pytest.raises(DisclosureError, match="--reason is empty"):
        PrivacyLedger.reinitialise(
            tmp_path / "ledger.sqlite", tmp_path / "ledger.secret", audit, "  ", "fi"
        )
    fresh = PrivacyLedger.reinitialise(
        tmp_path / "ledger.sqlite", tmp_path / "ledger.secret", audit, "disk lost", "fi"
    )
    assert _check(fresh, _ids(0, 5)).smallest_cell == 5  # a new, empty history
    assert list(tmp_path.glob("ledger.sqlite.lost-*"))  # the old file is set aside, not deleted
    record = parse_json_strictly(audit.read_text().splitlines()[-1].encode())
    assert record["event"] == "privacy_ledger_reinitialised" and record["reason"] == "disk lost"
    assert verify_log(audit).intact
    _ledger(tmp_path)  # opens normally from now on


def test_a_ledger_from_before_the_cell_guard_gets_its_cells_on_upgrade(tmp_path):
    path, secret = tmp_path / "ledger.sqlite", tmp_path / "ledger.secret"
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 200), "height", "a")
    _release(ledger, tmp_path, _ids(0, 215), None, "b")
    # Back to schema 1: drop what migration 2 added, as an old node would have it.
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE cell_samples")
        connection.execute("DROP TABLE cells")
        connection.execute("ALTER TABLE releases DROP COLUMN max_missing")
        connection.execute("DELETE FROM meta WHERE name != 'secret_check'")
        connection.execute("PRAGMA user_version = 1")
    upgraded = PrivacyLedger(path, secret)
    assert len(MIGRATIONS) == 2
    assert _check(upgraded, _ids(0, 212)).smallest_cell == 3
    assert _check(upgraded, _ids(0, 200), "bmi").most_phenotypes == 2


# ----------------------------- the missing-covariate split: no-calls of the left-out members


def _af_then_gwas(tmp_path: Path, left_out: int, profiles: dict[str, list[int]]) -> CellCheck:
    """An AF release of 1,000 samples whose worst row misses 23 calls, then the preview of a
    GWAS that leaves `left_out` of them out (a missing covariate), with their profiles."""
    ledger = _ledger(tmp_path)
    everyone = _ids(0, 1000)
    _release(ledger, tmp_path, everyone, None, "af", missing=23)
    cohort = ledger.cohort(everyone[left_out:])
    return ledger.preview(cohort, "ldl", LIMIT, ledger.no_call_profiles(profiles)).cells


def test_left_out_samples_without_profiles_inherit_the_cohort_no_calls(tmp_path):
    assert _af_then_gwas(tmp_path, 10, {}).smallest_cell == 10 - 23


@pytest.mark.parametrize(
    ("left_out", "missing_at_variant_7", "smallest"),
    [(10, 0, 10), (10, 1, 9), (11, 1, 10), (9, 0, 9), (20, 3, 17)],
)
def test_left_out_samples_count_their_own_no_calls(
    tmp_path, left_out, missing_at_variant_7, smallest
):
    """At, below and above min_cell_size 10: the cell of left-out samples an attacker gets
    by differencing the AF and the GWAS cohorts holds its called members only."""
    profiles = {sample: [] for sample in _ids(0, left_out)}
    for sample in _ids(0, missing_at_variant_7):
        profiles[sample] = [7, 100 + int(sample[-3:])]
    assert _af_then_gwas(tmp_path, left_out, profiles).smallest_cell == smallest


def test_one_left_out_member_without_a_profile_keeps_the_inherited_bound(tmp_path):
    profiles = {sample: [] for sample in _ids(1, 20)}  # FIN000000 has none
    assert _af_then_gwas(tmp_path, 20, profiles).smallest_cell == 20 - 23


def test_the_recorded_outside_cell_keeps_its_observed_no_calls_for_later_releases(tmp_path):
    ledger = _ledger(tmp_path)
    everyone = _ids(0, 1000)
    _release(ledger, tmp_path, everyone, None, "af", missing=23)
    profiles = ledger.no_call_profiles({sample: [] for sample in _ids(0, 12)})
    cohort = ledger.cohort(everyone[12:])
    data = tmp_path / "gwas.tsv.gz"
    data.write_bytes(b"gwas")
    with ledger.reserve("gwas", cohort, "ldl", LIMIT, profiles) as reservation:
        assert reservation.check.cells.smallest_cell == 12
        reservation.record("analysis 'gwas'", ["1:1:A:G"], {"a.tsv.gz": data}, 4)
    # A later cohort with the 12 and half the rest: the 12 count 12 (their stored bound is
    # 0, not 23); the halves of the 988 keep 23 (now max(23, 4)).
    later = _check(ledger, everyone[:12] + everyone[12:500])
    assert later.smallest_cell == 12 and later.smallest_raw_cell == 12
