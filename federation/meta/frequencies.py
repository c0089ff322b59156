"""Pooled allele frequencies over per-node allele-frequency tables.

Input tables have the columns `chromosome, base_pair_location, ref, alt, variant_id,
allele_count, allele_number, allele_frequency, n_samples` and `node_id` (one or more nodes per
file). Rows are matched on chromosome + position + {ref, alt} (case-insensitive); a node that
wrote the pair the other way round has its count turned round (AC -> AN - AC). Strand is not
touched: ref/alt come from the reference genome, and frequencies legitimately differ between
populations, which is what the homogeneity test looks for.

Output: every node's row kept (aligned), plus one `pooled` row per variant with ΣAC/ΣAN and a
Pearson chi-square test of equal frequency across nodes (`freq_chi2, freq_df, freq_p, fst`,
`population_specific` where freq_p < 5e-8). A pooled row says what it pools: `n_nodes` (the
nodes whose rows it sums), `allele_number` (ΣAN) and `complete`, true only when every node that
released a table has the variant. A node suppresses rare variants, so an incomplete row's
frequency leaves out the nodes where the variant is rare: it is kept, but marked, and must not be
read as the frequency over all nodes (node rows have `complete` NA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from federation.errors import MetaAnalysisError
from federation.files import sha256_file
from federation.meta.format import p_column, round_significant
from federation.meta.inputs import CHROMOSOME_CODES, check_columns, declare_inputs
from federation.stats import meta_analysis
from federation.sumstats import ALLELE_FREQUENCY_COLUMNS, read_table, write_table
from federation.versions import IDENTITY_KEY, code_identity, software_versions

REQUIRED_FREQUENCY_COLUMNS = (
    "chromosome",
    "base_pair_location",
    "ref",
    "alt",
    "allele_count",
    "allele_number",
    "node_id",
)
POOLED_NODE_ID = "pooled"
# Genome-wide significance: millions of variants are tested for a frequency difference.
POPULATION_SPECIFIC_P = 5e-8
TEST_COLUMNS = (
    "n_nodes",
    "complete",
    "freq_chi2",
    "freq_df",
    "freq_p",
    "fst",
    "population_specific",
)


@dataclass(frozen=True)
class PooledFrequencies:
    out: Path
    n_variants: int
    n_population_specific: int


def pool_frequency_files(paths: Sequence[Path], out: Path) -> PooledFrequencies:
    """Read per-node allele-frequency tables, pool them, write the table and its sidecar."""
    frames, dropped = [], {}
    for path in paths:
        check_columns(path, REQUIRED_FREQUENCY_COLUMNS)
        frame = read_table(path)
        frame["node_id"] = frame["node_id"].astype(str)
        good = usable_frequency_rows(frame)
        dropped[str(path)] = int((~good).sum())
        frames.append(frame[good])
    declarations = declare_inputs(paths, need_trait=False, require_sidecar=False)
    usable = pd.concat(frames, ignore_index=True)
    if usable.empty:
        raise MetaAnalysisError(
            f"allele frequencies: no usable row in any of {len(paths)} tables; see their "
            "dropped rows (unknown chromosome, non-ACGT alleles, AC outside 0..AN)"
        )
    table = pool_frequencies(usable)
    pooled = table[table.node_id == POOLED_NODE_ID]
    nodes = sorted(set(table.node_id) - {POOLED_NODE_ID})
    metadata = {
        "genome_assembly": declarations[0].genome_assembly if declarations else "NR",
        "analysis": "pooled allele frequencies",
        "node_id": "coordinator",
        "nodes_released": nodes,
        "complete_means": (
            f"the pooled row sums all {len(nodes)} nodes that released a table; incomplete rows "
            "leave out nodes where the variant was suppressed or failed QC"
        ),
        "n_incomplete": int((~pooled.complete.astype(bool)).sum()),
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in paths],
        "dropped_rows": dropped,
        "population_specific_p": POPULATION_SPECIFIC_P,
        "software_versions": software_versions(),
        IDENTITY_KEY: code_identity(),
    }
    write_table(table, out, metadata)
    return PooledFrequencies(out, len(pooled), int(pooled.population_specific.eq(True).sum()))


def usable_frequency_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows with a known chromosome, position, A/C/G/T alleles and 0 <= AC <= AN, AN > 0."""
    ac = pd.to_numeric(frame["allele_count"], errors="coerce").to_numpy(dtype=float)
    an = pd.to_numeric(frame["allele_number"], errors="coerce").to_numpy(dtype=float)
    chrom = frame["chromosome"].astype(str).str.upper().str.removeprefix("CHR")
    ref = frame["ref"].astype(str).str.upper()
    alt = frame["alt"].astype(str).str.upper()
    with np.errstate(invalid="ignore"):
        return (
            chrom.isin(list(CHROMOSOME_CODES)).to_numpy()
            & ref.str.fullmatch("[ACGT]+").to_numpy()
            & alt.str.fullmatch("[ACGT]+").to_numpy()
            & (ref != alt).to_numpy()
            & np.isfinite(ac)
            & np.isfinite(an)
            & (an > 0)
            & (ac >= 0)
            & (ac <= an)
            & pd.to_numeric(frame["base_pair_location"], errors="coerce").gt(0).to_numpy()
        )


def pool_frequencies(frame: pd.DataFrame) -> pd.DataFrame:
    """Align node rows, add a pooled row per variant with the homogeneity test (pure)."""
    chrom = frame["chromosome"].astype(str).str.upper().str.removeprefix("CHR")
    chrom_code = chrom.map(CHROMOSOME_CODES).to_numpy(dtype=np.int64)
    position = pd.to_numeric(frame["base_pair_location"]).to_numpy(dtype=np.int64)
    ref = frame["ref"].astype(str).str.upper().to_numpy(dtype=object)
    alt = frame["alt"].astype(str).str.upper().to_numpy(dtype=object)
    ac = pd.to_numeric(frame["allele_count"]).to_numpy(dtype=float)
    an = pd.to_numeric(frame["allele_number"]).to_numpy(dtype=float)
    first = np.where(ref < alt, ref, alt)
    second = np.where(ref < alt, alt, ref)
    keys = pd.MultiIndex.from_arrays([chrom_code, position, first, second])
    group, uniques = pd.factorize(keys, sort=True)
    n_groups = len(uniques)
    n_released = frame["node_id"].nunique()
    # Orientation: the (ref, alt) order most nodes wrote; ties -> alphabetical ref first.
    ref_is_first = ref == first
    votes_first = np.bincount(group[ref_is_first], minlength=n_groups)
    votes_second = np.bincount(group[~ref_is_first], minlength=n_groups)
    out_ref_first = votes_first >= votes_second
    turned = ref_is_first != out_ref_first[group]
    ac = np.where(turned, an - ac, ac)
    out_ref = np.where(out_ref_first[group], first, second)
    out_alt = np.where(out_ref_first[group], second, first)
    n_samples = (
        pd.to_numeric(frame["n_samples"], errors="coerce").to_numpy(dtype=float)
        if "n_samples" in frame
        else np.full(len(frame), np.nan)
    )
    nodes = pd.DataFrame(
        {
            "chromosome": chrom_code,
            "base_pair_location": position,
            "ref": out_ref,
            "alt": out_alt,
            "allele_count": ac,
            "allele_number": an,
            "allele_frequency": ac / an,
            "n_samples": n_samples,
            "node_id": frame["node_id"].to_numpy(),
            "_group": group,
        }
    )
    test = meta_analysis.frequency_homogeneity(ac, an, group, n_groups)
    head = nodes.drop_duplicates("_group").sort_values("_group")
    p = np.exp(test.log_p)
    pooled = pd.DataFrame(
        {
            "chromosome": head.chromosome.to_numpy(),
            "base_pair_location": head.base_pair_location.to_numpy(),
            "ref": head.ref.to_numpy(),
            "alt": head.alt.to_numpy(),
            "allele_count": test.allele_count,
            "allele_number": test.allele_number,
            "allele_frequency": test.frequency,
            "n_samples": meta_analysis.group_sum(
                np.nan_to_num(nodes.n_samples.to_numpy()), group, n_groups
            ),
            "node_id": POOLED_NODE_ID,
            "_group": np.arange(n_groups),
            "n_nodes": test.n_nodes,
            "complete": test.n_nodes == n_released,
            "freq_chi2": round_significant(test.chi2),
            "freq_df": test.df,
            "freq_p": p_column(test.log_p),
            "fst": round_significant(test.fst),
            "population_specific": np.where(test.df > 0, p < POPULATION_SPECIFIC_P, False),
        }
    )
    nodes["complete"] = pd.NA  # a node's own row pools nothing
    table = pd.concat([nodes, pooled.astype({"complete": object})], ignore_index=True)
    table["_pooled_last"] = table.node_id == POOLED_NODE_ID
    table = table.sort_values(["_group", "_pooled_last", "node_id"], kind="stable")
    table["variant_id"] = (
        table.chromosome.astype(str)
        + "_"
        + table.base_pair_location.astype(str)
        + "_"
        + table.ref
        + "_"
        + table.alt
    )
    for name in ("allele_count", "allele_number", "n_samples", "n_nodes", "freq_df"):
        table[name] = table[name].round().astype("Int64")
    table["allele_frequency"] = round_significant(table.allele_frequency.to_numpy())
    columns = [*ALLELE_FREQUENCY_COLUMNS, "node_id", *TEST_COLUMNS]
    return table[columns].reset_index(drop=True)
