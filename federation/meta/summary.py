"""What a meta-analysis file says at a glance: variants, N so far, λGC, the top variants.

Read by the demo's summary and the dashboard's live meta-analysis. λGC and the nodes come
from the file's sidecar (`meta.record.build_sidecar` computed λGC over all variants when it
wrote the file); N is the largest per-variant `n` (the samples behind the best-covered
variant); the top variants are the smallest p values (largest -log10 p), so p below 1e-300
still ranks correctly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from federation import sumstats
from federation.meta.frequencies import POOLED_NODE_ID

TOP_VARIANTS = 5  # how many variants a summary names


@dataclass(frozen=True)
class TopVariant:
    variant_id: str
    chromosome: str
    position: int
    neg_log10_p: float
    beta: float | None


@dataclass(frozen=True)
class MetaFileSummary:
    analysis: str
    path: str
    variants: int
    n: int | None  # the largest per-variant N (None for tables without an `n` column)
    lambda_gc: float | None
    nodes: tuple[str, ...]  # the nodes whose results the file combines
    top: tuple[TopVariant, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def top_variants(table: pd.DataFrame, count: int = TOP_VARIANTS) -> list[TopVariant]:
    """The `count` rows with the smallest p value, best first."""
    if sumstats.NEG_LOG10_P not in table.columns:
        return []
    ranked = table.sort_values(sumstats.NEG_LOG10_P, ascending=False).head(count)
    return [
        TopVariant(
            variant_id=str(row["variant_id"]),
            chromosome=str(row["chromosome"]),
            position=int(row["base_pair_location"]),
            neg_log10_p=float(row[sumstats.NEG_LOG10_P]),
            beta=float(row["beta"]) if "beta" in table.columns else None,
        )
        for _, row in ranked.iterrows()
    ]


def summarise_meta_file(path: Path, count: int = TOP_VARIANTS) -> MetaFileSummary:
    """The summary of one meta-analysis (or pooled allele-frequency) file."""
    table = sumstats.read_table(path)
    sidecar = sumstats.read_sidecar(path)
    lambda_gc = sidecar.get("lambda_gc")
    inputs = sidecar.get("inputs") or []
    nodes = tuple(str(entry.get("node_id")) for entry in inputs if isinstance(entry, dict))
    n_column = "n"
    if "node_id" in table.columns:  # pooled frequencies: a row per node and a pooled row
        nodes = nodes or tuple(sorted({str(node) for node in table["node_id"]} - {POOLED_NODE_ID}))
        table = table[table["node_id"].astype(str) == POOLED_NODE_ID]
        n_column = "n_samples"
    n = int(table[n_column].max()) if n_column in table.columns and len(table) else None
    return MetaFileSummary(
        analysis=path.name.removesuffix(".tsv.gz"),
        path=str(path),
        variants=len(table),
        n=n,
        lambda_gc=float(lambda_gc) if isinstance(lambda_gc, int | float) else None,
        nodes=nodes,
        top=tuple(top_variants(table, count)),
    )
