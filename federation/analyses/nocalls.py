"""No-call profiles of the QC samples an analysis leaves out, for the cell guard.

When an analysis drops a few QC samples (a missing covariate, say), its cohort splits them
off as a cell against the node's earlier releases. The cell guard must know how many of that
cell can lack a call at a released variant; without more it assumes the most no-calls any
earlier released row had in the whole cohort, which for a cell of ten is over-cautious.
This step writes, for each left-out sample, the indices of the node's imported variants where
it has no call: a superset of every row any release of this node's genotypes can hold. The
release step (`release.cells.observed_missing`) then counts, per variant, the left-out
members of each split cell without a call. The file is node-private (0600, in the work dir).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import hail as hl

from federation.files import atomic_write

# Profiles are only needed for small split-off cells; beyond this many left-out samples the
# file is written empty and the guard keeps its inherited bound (never lower).
MAX_PROFILED_SAMPLES = 2_000
PROFILE_FORMAT = "federation.no-call-profiles/1"


def no_call_profiles(genotypes: hl.MatrixTable, samples: set[str]) -> dict[str, list[int]]:
    """Sample -> sorted indices (in the imported genotypes' row order) of its no-calls."""
    if not samples:
        return {}
    mt = genotypes.add_row_index("variant_index")
    mt = mt.filter_cols(hl.literal(samples).contains(mt.s))
    entries = mt.filter_entries(hl.is_missing(mt.GT)).entries()
    found = entries.aggregate(hl.agg.group_by(entries.s, hl.agg.collect(entries.variant_index)))
    profiles: dict[str, list[int]] = {sample: [] for sample in sorted(samples)}
    for sample, indices in found.items():
        profiles[sample] = sorted(int(index) for index in indices)
    return profiles


def write_no_call_profiles(
    genotypes: Callable[[], hl.MatrixTable], left_out: set[str], path: Path
) -> dict[str, list[int]]:
    """Write the profiles of `left_out` to `path` (empty when there are none or too many);
    `genotypes` loads the node's imported genotypes, only when needed."""
    profiled = 0 < len(left_out) <= MAX_PROFILED_SAMPLES
    profiles = no_call_profiles(genotypes(), left_out) if profiled else {}
    document = {"format": PROFILE_FORMAT, "samples": profiles}
    atomic_write(path, json.dumps(document, sort_keys=True), mode=0o600)
    return profiles
