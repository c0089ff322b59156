"""Turn Hail tables into flat, node-private TSV files for the release step.

These files hold aggregates that still need the disclosure gate (and some columns the gate
uses but never releases, such as carrier counts), so they are written under the node's
work directory, never into the results folder.
"""

from __future__ import annotations

from pathlib import Path

import hail as hl


def variant_fields(table: hl.Table) -> dict[str, hl.Expression]:
    """chromosome (no `chr` prefix), position, ref and alt of a biallelic locus/alleles key."""
    return {
        "chromosome": table.locus.contig.replace("^chr", ""),
        "base_pair_location": table.locus.position,
        "ref": table.alleles[0],
        "alt": table.alleles[1],
    }


def export_private_table(table: hl.Table, path: Path) -> Path:
    """Write `table` (key dropped, fields flattened) as one TSV; atomically via a temporary name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".partial-" + path.name)  # keeps the extension Hail compresses by
    table.key_by().drop("locus", "alleles").flatten().export(str(tmp), header=True, delimiter="\t")
    tmp.replace(path)
    return path
