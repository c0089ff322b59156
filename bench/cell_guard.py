"""Benchmark: the cell guard's cost per release on a node of 10^6 samples with thousands of
earlier releases, against an anchor every release pays anyway.

    uv run python -m bench.cell_guard                              # 10^6 samples; 100 and 2,000 releases
    uv run python -m bench.cell_guard --samples 200000 --releases 50 500   # a quick run

The privacy ledger is put in the state it would have after R releases (one membership
signature per sample, R + 1 cells) without running them; then one more release of a cohort of
90% of the node is checked (`preview`) and checked-and-recorded under the lock (`reserve`
+ `record`: members, signatures, cells). The anchor, measured in the same run, is turning the
cohort's sample IDs into salted hashes (`PrivacyLedger.cohort`), which every release does
before any rule. The guard's cost should be a small multiple of the anchor and should not
grow with R: it looks up the signatures of the cohort's own members only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from federation.release.cells import SIGNATURE_BYTES, extend
from federation.release.ledger import Cohort, PrivacyLedger
from federation.sqlite import connect, transaction

COHORT_FRACTION = 0.9  # the released cohort: the QC cohort less a few thousand samples


def _seed_state(
    ledger: PrivacyLedger, hashes: list[bytes], releases: int, rng: np.random.Generator
) -> None:
    """Cells as R nested-and-perturbed releases would leave them: R + 1 cells of random sizes."""
    cell_of = rng.integers(0, releases + 1, size=len(hashes))
    signatures = [extend(bytes(SIGNATURE_BYTES), cell) for cell in range(releases + 1)]
    sizes = np.bincount(cell_of, minlength=releases + 1)
    with connect(ledger.path, write_ahead_log=False) as connection, transaction(connection):
        connection.executemany(
            "INSERT INTO cell_samples VALUES (?, ?)",
            ((h, signatures[c]) for h, c in zip(hashes, cell_of.tolist(), strict=True)),
        )
        connection.executemany(
            "INSERT INTO cells VALUES (?, ?, 0, '[]')",
            ((signatures[c], int(sizes[c])) for c in range(releases + 1) if sizes[c]),
        )


def _timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(samples: int, releases: int, root: Path) -> dict[str, float]:
    rng = np.random.default_rng(releases)
    ledger = PrivacyLedger(root / f"ledger-{releases}.sqlite", root / f"ledger-{releases}.secret")
    ids = [f"NODE{i:08d}" for i in range(samples)]
    members = sorted(
        rng.choice(samples, size=int(COHORT_FRACTION * samples), replace=False).tolist()
    )
    chosen = [ids[i] for i in members]

    holder: dict[str, Cohort] = {}
    anchor = _timed(lambda: holder.setdefault("cohort", ledger.cohort(chosen)))
    cohort = holder["cohort"]
    everyone = ledger.cohort(ids).member_hashes
    _seed_state(ledger, sorted(everyone), releases, rng)

    check = _timed(lambda: ledger.preview(cohort, "trait", 10))
    data = root / f"release-{releases}.bin"
    data.write_bytes(b"released bytes")

    def record() -> None:
        with ledger.reserve(
            hashlib.sha256(data.name.encode()).hexdigest(), cohort, "trait", 10
        ) as r:
            r.record("bench", ["1:1:A:G"], {"f": data}, 0)

    recorded = _timed(record)
    return {"anchor": anchor, "check": check, "check_and_record": recorded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--releases", type=int, nargs="+", default=[100, 2000])
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; others' work slows all)")
    print(
        f"node of {args.samples:,} samples; released cohort {COHORT_FRACTION:.0%} of it; "
        "anchor = salted hashes of the cohort's IDs"
    )
    print(
        f"{'earlier releases':>17}{'anchor s':>10}{'check s':>10}{'ratio':>8}{'check+record s':>16}{'ratio':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-cell-guard-") as scratch:
        for releases in args.releases:
            result = measure(args.samples, releases, Path(scratch))
            print(
                f"{releases:>17,}{result['anchor']:>10.2f}{result['check']:>10.2f}"
                f"{result['check'] / result['anchor']:>7.2f}x"
                f"{result['check_and_record']:>16.2f}"
                f"{result['check_and_record'] / result['anchor']:>7.2f}x"
            )


if __name__ == "__main__":
    main()
