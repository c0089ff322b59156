"""Benchmark: the study report's genome-wide figures for 10⁷ variants, against two anchors.

    uv run python -m bench.report_plots                        # 10,000,000 variants
    uv run python -m bench.report_plots --variants 1000000     # a quick run

Synthetic genome scan: variants spread over chromosomes 1-22 in proportion to their length,
null p-values with 20 planted loci, effect-allele frequencies uniform on 0.005-0.995. Timed in
this process, one after the other:

- anchor "arrays": making the arrays (what any plotter has to hold at least once);
- anchor "naive 10⁶": matplotlib drawing 10⁶ points un-thinned into a PNG, the way a
  Manhattan plot is drawn without thinning (10⁷ would take ten times as long);
- ours: clumping + λGC overall and per MAF bin (`stats.loci`), the thinned Manhattan plot and
  the QQ plot per MAF bin (`report.plots`, PNG + SVG each), for all 10⁷ variants.

Ratios are ours / anchor: the machine's speed and load cancel out of them (the load average is
printed: other work on the 2 cores slows every line alike).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from federation.report import plots
from federation.report.thinning import thin_indices
from federation.stats import loci, meta_analysis
from federation.stats.tails import log_normal_two_sided, neg_log10

CHROMOSOME_WEIGHTS = np.array(
    [
        248,
        242,
        198,
        190,
        181,
        171,
        159,
        145,
        138,
        134,
        135,
        133,
        114,
        107,
        102,
        90,
        83,
        80,
        59,
        64,
        47,
        51,
    ],
    dtype=float,
)  # GRCh38 chromosome lengths in Mb: variants per chromosome in proportion
PLANTED_LOCI = 20
NAIVE_POINTS = 1_000_000


def synthetic_scan(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, CHROMOSOME_WEIGHTS / CHROMOSOME_WEIGHTS.sum())
    chromosome = np.repeat(np.arange(1, 23), counts)
    position = np.concatenate(
        [
            np.sort(rng.integers(1, int(w * 1e6), c))
            for w, c in zip(CHROMOSOME_WEIGHTS, counts, strict=True)
        ]
    )
    z = rng.standard_normal(n)
    hits = rng.choice(n, PLANTED_LOCI, replace=False)
    z[hits] = rng.uniform(6, 15, PLANTED_LOCI)
    frequency = rng.uniform(0.005, 0.995, n)
    return {
        "chromosome": chromosome,
        "position": position,
        "z": z,
        "nlp": neg_log10(log_normal_two_sided(z)),
        "frequency": frequency,
    }


def timed(label: str, action, results: dict[str, float]):
    started = time.perf_counter()
    value = action()
    results[label] = time.perf_counter() - started
    return value


def naive_scatter(scan: dict[str, np.ndarray], out: Path) -> None:
    """NAIVE_POINTS points drawn as they are: what thinning saves."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=plots.MANHATTAN_SIZE)
    axes = figure.add_subplot()
    x, _ = plots.genome_axis(scan["chromosome"][:NAIVE_POINTS], scan["position"][:NAIVE_POINTS])
    axes.scatter(x, scan["nlp"][:NAIVE_POINTS], s=3, linewidths=0)
    figure.savefig(out, dpi=plots.PNG_DPI)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        work = Path(scratch)
        naive_scatter(synthetic_scan(1000, 0), work / "warm.png")  # imports, font cache
        load = os.getloadavg()[0]
        scan = timed("anchor: arrays", lambda: synthetic_scan(args.variants, args.seed), seconds)
        timed(
            "anchor: naive 10^6 scatter", lambda: naive_scatter(scan, work / "naive.png"), seconds
        )
        clumps = timed(
            "clumping",
            lambda: loci.clump_by_distance(scan["chromosome"], scan["position"], scan["nlp"]),
            seconds,
        )
        maf = loci.minor_allele_frequency(scan["frequency"])
        overall, by_maf = timed(
            "lambda GC + per MAF bin",
            lambda: (
                meta_analysis.genomic_control_lambda(scan["z"]),
                loci.lambda_by_maf(scan["z"], scan["frequency"]),
            ),
            seconds,
        )
        x, _ = plots.genome_axis(scan["chromosome"], scan["position"])
        kept = timed("thinning alone", lambda: thin_indices(x, scan["nlp"]), seconds)
        manhattan = timed(
            "Manhattan PNG+SVG",
            lambda: plots.manhattan(
                scan["chromosome"], scan["position"], scan["nlp"], work / "m", "bench", clumps.leads
            ),
            seconds,
        )
        qq = timed(
            "QQ PNG+SVG (5 series)",
            lambda: plots.qq(scan["nlp"], maf, overall, by_maf, work / "q", "bench"),
            seconds,
        )
        sizes = {
            path.name: path.stat().st_size / 1e6
            for path in (manhattan.png, manhattan.svg, qq.png, qq.svg)
        }
    ours = seconds["clumping"] + seconds["lambda GC + per MAF bin"] + seconds["Manhattan PNG+SVG"]
    ours += seconds["QQ PNG+SVG (5 series)"]
    print(f"variants: {args.variants:,}; load average before: {load:.2f} (2 cores)")
    print(f"leads: {clumps.leads.size}; Manhattan points drawn after thinning: {kept.size:,}")
    for label, value in seconds.items():
        print(f"  {label:<32}{value:8.2f} s")
    print(f"  {'report figures, total':<32}{ours:8.2f} s")
    for name, megabytes in sizes.items():
        print(f"  {name:<32}{megabytes:8.2f} MB")
    arrays, naive = seconds["anchor: arrays"], seconds["anchor: naive 10^6 scatter"]
    print(f"ratio total / making the arrays:        {ours / arrays:6.2f}x")
    print(
        f"ratio total / naive 10^6-point scatter: {ours / naive:6.2f}x "
        f"(for 10x the points: a naive 10^7 scatter would be ~{10 * naive:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
