"""Compare what two runs released and meta-analysed: byte for byte, timestamps and paths aside.

    uv run python tools/compare_outputs.py BEFORE_DIR AFTER_DIR

Each directory is a `federation demo --out` directory (or any `results_dir`). Every file under
`results/<study_id>/nodes/` and `results/<study_id>/meta/` is compared: tables (`.tsv.gz`) and
QC metrics byte for byte; YAML sidecars field by field, except the fields that name a run's time
(IGNORED_FIELDS) and with each run's own directory blanked out of every path. Prints one
line per difference and exits 1 if there is any, 0 when the two runs released the same bytes.
Used to show that a refactoring changed no result.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from federation.yamlio import load_yaml

# Fields that differ between two runs of the same study without any result changing.
IGNORED_FIELDS = frozenset({"date_metadata_last_modified"})
RUN_DIR = "<run>"  # what a run's own directory is replaced by in paths


def released_files(root: Path) -> dict[str, Path]:
    """relative name -> path of every released and meta-analysis file under `root`."""
    results = root / "results" if (root / "results").is_dir() else root
    found = {}
    for path in sorted(results.rglob("*")):
        parts = path.relative_to(results).parts
        if path.is_file() and len(parts) >= 3 and parts[1] in ("nodes", "meta"):
            found[path.relative_to(results).as_posix()] = path
    return found


def normalised(document: Any, run_dir: str) -> Any:
    """A sidecar without its run-specific fields; the run's directory in any path (a value or
    a key) replaced by RUN_DIR."""
    if isinstance(document, dict):
        return {
            normalised(key, run_dir): normalised(value, run_dir)
            for key, value in document.items()
            if key not in IGNORED_FIELDS
        }
    if isinstance(document, list):
        return [normalised(item, run_dir) for item in document]
    if isinstance(document, str):
        return document.replace(run_dir, RUN_DIR)
    return document


def differences(before: Path, after: Path) -> list[str]:
    old, new = released_files(before), released_files(after)
    problems = [f"only in {before}: {name}" for name in sorted(old.keys() - new.keys())]
    problems += [f"only in {after}: {name}" for name in sorted(new.keys() - old.keys())]
    for name in sorted(old.keys() & new.keys()):
        if name.endswith(".yaml"):
            left = normalised(load_yaml(old[name].read_bytes()), str(before.resolve()))
            right = normalised(load_yaml(new[name].read_bytes()), str(after.resolve()))
            changed = sorted(
                key for key in set(left) | set(right) if left.get(key) != right.get(key)
            )
            if changed:
                problems.append(f"{name}: sidecar fields differ: {', '.join(changed)}")
        elif old[name].read_bytes() != new[name].read_bytes():
            problems.append(f"{name}: bytes differ")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: compare_outputs.py BEFORE_DIR AFTER_DIR", file=sys.stderr)
        return 2
    before, after = (Path(arg) for arg in argv)
    problems = differences(before, after)
    for line in problems:
        print(line)
    compared = len(released_files(before).keys() & released_files(after).keys())
    print(f"{compared} files compared; {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
