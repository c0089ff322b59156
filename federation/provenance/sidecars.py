"""Finding and extending the YAML sidecars of released and meta-analysed tables.

A GWAS-SSF table's sidecar is `<file>-meta.yaml` (the GWAS Catalog's name); files written
before that name carry `<file>.yaml`. Everything here finds sidecars through `find_sidecar` and
`sidecars_in`, which accept both, so crates and checks work on either generation of results.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from federation import sumstats
from federation.files import atomic_write
from federation.yamlio import load_yaml

# Finding and reading a sidecar, under either name, is `sumstats`'s job; re-exported here for
# the crate, verify and reproduce.
find_sidecar = sumstats.find_sidecar
is_sidecar = sumstats.is_sidecar
read_sidecar_of = sumstats.read_sidecar


def sidecars_in(directory: Path) -> list[Path]:
    """Every table sidecar directly in `directory`, sorted."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.is_file() and is_sidecar(path))


def add_to_sidecars(directory: Path, fields: Mapping[str, Any]) -> list[Path]:
    """Add `fields` to every sidecar in `directory` (their data digests cover the tables, which
    stay as they are); return the sidecars changed."""
    changed = []
    for sidecar in sidecars_in(directory):
        document = load_yaml(sidecar.read_bytes())
        if not isinstance(document, dict):
            continue
        document.update(fields)
        atomic_write(sidecar, yaml.safe_dump(document, sort_keys=False))
        changed.append(sidecar)
    return changed
