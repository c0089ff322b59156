"""The study report's figures: Manhattan, QQ, forest, regional and allele-frequency plots.

Each writer draws one matplotlib figure (the object API, no pyplot state: safe to call from any
thread, no display needed: the Agg canvas) and saves it twice: PNG for the report and SVG for
papers (`PlotFiles`). Genome-wide scatters are thinned first (`thinning`), so their cost is
bounded by the picture, not by the number of variants; their thinned bulk is rasterised inside
the SVG (the strong points stay vectors), so the SVG of 10⁷ variants stays small.

Inputs are arrays and small records (`ForestRow`), never files: `federation.report.build`
reads the released aggregates and meta outputs and calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in an SPE, a CI runner or a coordinator's service

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from federation.files import atomic_path  # noqa: E402
from federation.report.thinning import thin_indices  # noqa: E402
from federation.stats.loci import (  # noqa: E402
    GENOME_WIDE_SIGNIFICANCE,
    MAF_BIN_EDGES,
    MafBinLambda,
    maf_bin_index,
)

PNG_DPI = 150  # sharp on a laptop and a phone, ~100-300 kB per figure
# Manhattan plot size in inches: at PNG_DPI its pixels are the thinning grid (1800 x 600).
MANHATTAN_SIZE = (12.0, 4.0)
SUGGESTIVE = 1e-5  # the customary second line of a Manhattan plot
CHROMOSOME_GAP_BP = 10_000_000  # white space between chromosomes on the Manhattan x axis
CHROMOSOME_LABELS = {23: "X", 24: "Y", 25: "MT"}  # GWAS-SSF codes 23-25
MAX_CHROMOSOME_CODE = 25
COLOURS = ("#1f4e79", "#6fa8dc")  # alternating chromosome colours
LEAD_COLOUR = "#c0392b"
NO_LD_NOTE = "No LD colouring: no LD reference leaves a node"
REGION_HALF_WIDTH_BP = 500_000  # regional plots show the lead ±500 kb
DOT_SIZE = 1.6  # points: ~3 px at PNG_DPI, a little more than one thinning cell


@dataclass(frozen=True)
class PlotFiles:
    """A figure as written: PNG for the report, SVG for papers (paths relative to nothing)."""

    png: Path
    svg: Path


@dataclass(frozen=True)
class ForestRow:
    """One line of a forest plot: a node's estimate, or a pooled (fixed/random) estimate."""

    label: str
    beta: float
    se: float
    n: float | None  # the N the node released (None for pooled rows)
    pooled: bool = False

    @property
    def low(self) -> float:
        return self.beta - 1.96 * self.se

    @property
    def high(self) -> float:
        return self.beta + 1.96 * self.se


def save(figure: Figure, stem: Path) -> PlotFiles:
    """Write `stem`.png and `stem`.svg atomically."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = PlotFiles(stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg"))
    with atomic_path(paths.png) as partial:
        figure.savefig(partial, format="png", dpi=PNG_DPI)
    with atomic_path(paths.svg) as partial:
        figure.savefig(partial, format="svg", metadata={"Date": None})  # no date: stable bytes
    return paths


def dots(
    axes: Any, x: np.ndarray, y: np.ndarray, colour: str, *, marker: str = "o", **style: Any
) -> None:
    """Many small points, rasterised inside an SVG. Drawn as one line's markers, not as a
    scatter collection: Agg stamps one cached marker per point, ten times faster for 10⁵
    points (bench/report_plots.py)."""
    axes.plot(
        x, y, linestyle="", marker=marker, markersize=DOT_SIZE, markeredgewidth=0,
        color=colour, rasterized=True, **style,
    )  # fmt: skip


def genome_axis(
    chromosome: np.ndarray, position: np.ndarray
) -> tuple[np.ndarray, dict[int, float]]:
    """Cumulative x positions (chromosomes laid end to end in number order) and the centre
    of each chromosome present (for its tick label)."""
    chromosome = np.asarray(chromosome, dtype=np.int64)
    position = np.asarray(position, dtype=np.int64)
    length = np.zeros(MAX_CHROMOSOME_CODE + 1, dtype=np.int64)
    np.maximum.at(length, chromosome, position)
    present = np.flatnonzero(np.bincount(chromosome, minlength=length.size))
    offset = np.zeros(length.size, dtype=np.int64)
    running = 0
    centres = {}
    for code in present.tolist():
        offset[code] = running
        centres[code] = running + length[code] / 2
        running += int(length[code]) + CHROMOSOME_GAP_BP
    return (offset[chromosome] + position).astype(float), centres


def manhattan(
    chromosome: np.ndarray,
    position: np.ndarray,
    neg_log10_p: np.ndarray,
    stem: Path,
    title: str,
    leads: Sequence[int] | np.ndarray = (),
) -> PlotFiles:
    """Manhattan plot, thinned; genome-wide (5e-8) and suggestive (1e-5) lines; leads marked."""
    x, centres = genome_axis(chromosome, position)
    y = np.asarray(neg_log10_p, dtype=float)
    kept = thin_indices(x, y)
    chromosome = np.asarray(chromosome)
    figure = Figure(figsize=MANHATTAN_SIZE, layout="constrained")
    axes = figure.add_subplot()
    for parity, colour in enumerate(COLOURS):
        drawn = kept[chromosome[kept] % 2 == parity]
        dots(axes, x[drawn], y[drawn], colour)
    lead_rows = np.asarray(leads, dtype=np.int64)
    if lead_rows.size:
        axes.scatter(x[lead_rows], y[lead_rows], c=LEAD_COLOUR, s=18, marker="D", zorder=3)
    axes.axhline(-np.log10(GENOME_WIDE_SIGNIFICANCE), color=LEAD_COLOUR, lw=0.8, ls="--")
    axes.axhline(-np.log10(SUGGESTIVE), color="grey", lw=0.6, ls=":")
    axes.set_xticks(list(centres.values()))
    axes.set_xticklabels([CHROMOSOME_LABELS.get(c, str(c)) for c in centres], fontsize=7)
    axes.set_xlim(-CHROMOSOME_GAP_BP, (x.max() if x.size else 0) + CHROMOSOME_GAP_BP)
    axes.set_ylim(0, max(float(np.nanmax(y[kept])) if kept.size else 0, 8.0) * 1.05)
    axes.set_xlabel("chromosome")
    axes.set_ylabel("-log10 p")
    axes.set_title(title)
    return save(figure, stem)


def expected_neg_log10_p(count: int) -> np.ndarray:
    """-log10 of the uniform order statistics' expectations i/(n+1), smallest p first."""
    return -np.log10(np.arange(1, count + 1) / (count + 1))


def qq(
    neg_log10_p: np.ndarray,
    maf: np.ndarray,
    lambda_gc: float,
    maf_lambdas: Sequence[MafBinLambda],
    stem: Path,
    title: str,
) -> PlotFiles:
    """QQ plot of all variants and one curve per MAF bin, λGC of each in the legend."""
    y = np.asarray(neg_log10_p, dtype=float)
    bins = maf_bin_index(maf, MAF_BIN_EDGES)
    figure = Figure(figsize=(5.5, 5.5), layout="constrained")
    axes = figure.add_subplot()
    top = 1.0
    series = [(f"all (λGC {lambda_gc:.3f})", np.isfinite(y), "black")]
    palette = ("#e67e22", "#27ae60", "#2980b9", "#8e44ad", "#7f8c8d")
    for index, entry in enumerate(maf_lambdas):
        if entry.n_variants:
            label = f"{entry.label} (λGC {entry.lambda_gc:.3f}, n={entry.n_variants:,})"
            series.append((label, (bins == index) & np.isfinite(y), palette[index % 5]))
    for label, mask, colour in series:
        observed = np.sort(y[mask])[::-1]
        if observed.size == 0:
            continue
        expected = expected_neg_log10_p(observed.size)
        kept = thin_indices(expected, observed, width=600, height=600)
        dots(axes, expected[kept], observed[kept], colour, label=label)
        top = max(top, float(expected[0]), float(observed[0]))
    axes.plot([0, top], [0, top], color="grey", lw=0.8)
    axes.set_xlabel("expected -log10 p")
    axes.set_ylabel("observed -log10 p")
    axes.set_title(title)
    axes.legend(fontsize=7, loc="upper left", markerscale=3)
    return save(figure, stem)


def forest(rows: Sequence[ForestRow], stem: Path, title: str) -> PlotFiles:
    """Each node's β ± 1.96 SE with its N, then the fixed- and random-effects estimates."""
    figure = Figure(figsize=(6.5, 1.2 + 0.4 * len(rows)), layout="constrained")
    axes = figure.add_subplot()
    labels = []
    for index, row in enumerate(rows):
        level = len(rows) - 1 - index
        if row.pooled:
            diamond_x = [row.low, row.beta, row.high, row.beta]
            diamond_y = [level, level + 0.25, level, level - 0.25]
            axes.fill(diamond_x, diamond_y, color=LEAD_COLOUR)
        else:
            axes.plot([row.low, row.high], [level, level], color="black", lw=1.2)
            axes.plot([row.beta], [level], "s", color="black", markersize=5)
        n = f" (N={row.n:,.0f})" if row.n is not None and np.isfinite(row.n) else ""
        labels.append((level, f"{row.label}{n}"))
    axes.axvline(0.0, color="grey", lw=0.8, ls=":")
    axes.set_yticks([level for level, _ in labels])
    axes.set_yticklabels([text for _, text in labels], fontsize=8)
    axes.set_ylim(-0.8, len(rows) - 0.2)
    axes.set_xlabel("β (95% CI: β ± 1.96 SE)")
    axes.set_title(title, fontsize=9)
    return save(figure, stem)


def regional(
    position: np.ndarray,
    neg_log10_p: np.ndarray,
    lead_position: int,
    stem: Path,
    title: str,
) -> PlotFiles:
    """-log10 p against position within ±500 kb of the lead (rows already of its chromosome)."""
    position = np.asarray(position, dtype=float)
    y = np.asarray(neg_log10_p, dtype=float)
    near = np.abs(position - lead_position) <= REGION_HALF_WIDTH_BP
    figure = Figure(figsize=(7.0, 3.6), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(position[near] / 1e6, y[near], s=10, c=COLOURS[0], linewidths=0)
    is_lead = near & (position == lead_position)
    axes.scatter(position[is_lead] / 1e6, y[is_lead], s=40, c=LEAD_COLOUR, marker="D", zorder=3)
    axes.axhline(-np.log10(GENOME_WIDE_SIGNIFICANCE), color=LEAD_COLOUR, lw=0.8, ls="--")
    axes.set_xlim(
        (lead_position - REGION_HALF_WIDTH_BP) / 1e6, (lead_position + REGION_HALF_WIDTH_BP) / 1e6
    )
    axes.set_ylim(bottom=0)
    axes.set_xlabel("position (Mb)")
    axes.set_ylabel("-log10 p")
    axes.set_title(title, fontsize=9)
    axes.text(
        0.99, 0.97, NO_LD_NOTE, transform=axes.transAxes, ha="right", va="top", fontsize=8,
        color="dimgrey", style="italic",
    )  # fmt: skip
    return save(figure, stem)


def frequency_scatter(
    pooled: np.ndarray,
    per_node: dict[str, np.ndarray],
    flagged: np.ndarray,
    stem: Path,
    title: str,
) -> PlotFiles:
    """Each node's allele frequency against the pooled one (same variants, same order);
    the variants the differentiation test flags are drawn in red."""
    figure = Figure(figsize=(5.5, 5.5), layout="constrained")
    axes = figure.add_subplot()
    pooled = np.asarray(pooled, dtype=float)
    flagged = np.asarray(flagged, dtype=bool)
    markers = ("o", "s", "^", "v", "D", "P", "X")
    for index, (node, frequency) in enumerate(sorted(per_node.items())):
        frequency = np.asarray(frequency, dtype=float)
        kept = thin_indices(pooled, frequency, keep_above=2.0, width=500, height=500)
        kept = kept[~flagged[kept]]
        dots(
            axes, pooled[kept], frequency[kept], f"C{index}", label=node,
            marker=markers[index % len(markers)], alpha=0.5,
        )  # fmt: skip
        if flagged.any():
            axes.scatter(
                pooled[flagged], frequency[flagged], s=14, marker=markers[index % len(markers)],
                c=LEAD_COLOUR, linewidths=0, label="differentiated (p < 5e-8)" if index == 0 else None,
            )  # fmt: skip
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("pooled allele frequency")
    axes.set_ylabel("node allele frequency")
    axes.set_title(title)
    axes.legend(fontsize=7, markerscale=2, loc="upper left")
    return save(figure, stem)
