"""The node's privacy ledger: salted commitments, symmetric differences, budget and repeats."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from federation.errors import DisclosureError
from federation.release.ledger import (
    PrivacyLedger,
    read_sample_ids,
    request_key,
    variant_set_digest,
)

LIMIT = 10  # DisclosurePolicy.min_cohort_difference


def _ids(start: int, stop: int) -> list[str]:
    return [f"FIN{i:06d}" for i in range(start, stop)]


def _ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger.sqlite", tmp_path / "ledger.secret")


def _release(
    ledger: PrivacyLedger, tmp_path: Path, ids: list[str], phenotype: str | None, key: str
):
    cohort = ledger.cohort(ids)
    data = tmp_path / f"{key}.tsv.gz"
    data.write_bytes(f"bytes of {key}".encode())
    with ledger.reserve(key, cohort, phenotype, LIMIT) as reservation:
        check = reservation.check
        reservation.record(f"analysis '{key}'", ["1:1:A:G"], {"a.tsv.gz": data})
    return check


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
    ("change", "difference", "refused"),
    [
        ("same", None, False),  # identical cohort: difference 0 is not "too close"
        ("add 1", 1, True),
        ("remove 1", 1, True),
        ("add 9", 9, True),
        ("swap 4", 8, True),  # 4 out, 4 in: symmetric difference 8
        ("add 10", None, False),  # |A| - |B| = 10: cannot be too close, not even compared
        ("swap 5", 10, False),
        ("disjoint", 400, False),  # same size, no one in common
    ],
)
def test_symmetric_difference_to_released_cohorts(tmp_path, change, difference, refused):
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
        "swap 5": base[5:] + _ids(500, 505),
        "disjoint": _ids(1000, 1200),
    }[change]
    check = _release(ledger, tmp_path, changed, "height", "second")
    assert check.smallest_difference == difference
    too_close = check.smallest_difference is not None and 0 < check.smallest_difference < LIMIT
    assert too_close is refused


def test_smallest_difference_over_several_released_cohorts(tmp_path):
    ledger = _ledger(tmp_path)
    _release(ledger, tmp_path, _ids(0, 200), None, "a")
    _release(ledger, tmp_path, _ids(0, 230), None, "b")
    check = _release(ledger, tmp_path, _ids(0, 227), None, "c")
    assert check.smallest_difference == 3  # 3 from b, 27 from a


def test_phenotypes_counted_per_cohort_and_distinct(tmp_path):
    ledger = _ledger(tmp_path)
    ids = _ids(0, 100)
    assert _release(ledger, tmp_path, ids, "height", "h1").phenotypes == 1
    assert _release(ledger, tmp_path, ids, "height", "h2").phenotypes == 1  # same trait again
    assert _release(ledger, tmp_path, ids, None, "af").phenotypes == 1  # AF names no phenotype
    assert _release(ledger, tmp_path, ids, "bmi", "b1").phenotypes == 2
    assert _release(ledger, tmp_path, _ids(0, 150), "bmi", "other").phenotypes == 1


def test_a_reservation_not_recorded_leaves_no_trace(tmp_path):
    ledger = _ledger(tmp_path)
    cohort = ledger.cohort(_ids(0, 100))
    with ledger.reserve("k", cohort, "height", LIMIT) as reservation:
        assert reservation.repeat is None
    assert ledger.stored("k") is None
    assert _release(ledger, tmp_path, _ids(0, 101), "height", "x").smallest_difference is None


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
    ids = _ids(0, 20)  # budget floor(0.05 * 20) = 1 phenotype
    outcomes: list[int] = []
    barrier = threading.Barrier(2)

    def release(trait: str) -> None:
        barrier.wait()
        cohort = ledger.cohort(ids)
        data = tmp_path / f"{trait}.bin"
        data.write_bytes(trait.encode())
        with ledger.reserve(trait, cohort, trait, LIMIT) as reservation:
            if reservation.check.phenotypes <= 1:
                reservation.record(trait, [], {"f": data})
                outcomes.append(1)

    threads = [threading.Thread(target=release, args=(trait,)) for trait in ("height", "bmi")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [1]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as connection:
        assert connection.execute("SELECT COUNT(*) FROM phenotypes").fetchone() == (1,)
