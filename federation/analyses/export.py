"""Turn Hail tables into flat, node-private TSV files for the release step.

These files hold aggregates that still need the disclosure gate (and some columns the gate
uses but never releases, such as carrier counts), so they are written under the node's
work directory, never into the results folder.
"""

from __future__ import annotations

from pathlib import Path

import hail as hl

from federation.files import atomic_path


def variant_fields(table: hl.Table) -> dict[str, hl.Expression]:
    """chromosome (no `chr` prefix), position, ref and alt of a biallelic locus/alleles key."""
    return {
        "chromosome": table.locus.contig.replace("^chr", ""),
        "base_pair_location": table.locus.position,
        "ref": table.alleles[0],
        "alt": table.alleles[1],
    }


def _full_precision(value: hl.Float64Expression) -> hl.StringExpression:
    """Hail's export prints 5 significant digits; statistics need all 17 (non-finite -> NA)."""
    return hl.or_missing(hl.is_finite(value), hl.format("%.17e", value))


def export_private_table(table: hl.Table, path: Path) -> Path:
    """Write `table` (key dropped, fields flattened) as one TSV; atomically via a temporary name."""
    flat = table.key_by().drop("locus", "alleles").flatten()
    flat = flat.annotate(
        **{
            name: _full_precision(flat[name])
            for name, dtype in flat.row.dtype.items()
            if dtype == hl.tfloat64
        }
    )
    # The temporary name keeps the extension Hail chooses its compression by.
    with atomic_path(path) as tmp:
        flat.export(str(tmp), header=True, delimiter="\t")
    return path
