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

from federation.files import atomic_write
from federation.yamlio import load_yaml

TABLE_SUFFIX = ".tsv.gz"
# The GWAS Catalog's sidecar name first, then the project's earlier one.
SIDECAR_SUFFIXES = ("-meta.yaml", ".yaml")


def find_sidecar(table: Path) -> Path | None:
    """The sidecar of `table`, under either name, or None."""
    for suffix in SIDECAR_SUFFIXES:
        candidate = table.with_name(table.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def is_sidecar(path: Path) -> bool:
    return any(path.name.endswith(TABLE_SUFFIX + suffix) for suffix in SIDECAR_SUFFIXES)


def sidecars_in(directory: Path) -> list[Path]:
    """Every table sidecar directly in `directory`, sorted."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.is_file() and is_sidecar(path))


def read_sidecar_of(table: Path) -> dict[str, Any]:
    sidecar = find_sidecar(table)
    if sidecar is None:
        return {}
    loaded = load_yaml(sidecar.read_bytes())
    return loaded if isinstance(loaded, dict) else {}


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
