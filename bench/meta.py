"""Benchmark: `federation meta` against GWAMA and PLINK 1.9 on the same simulated studies.

    uv run python -m bench.meta                         # 5 studies x 1,000,000 variants
    uv run python -m bench.meta --variants 100000       # a quick run
    uv run python -m bench.meta --studies 5 --variants 5000000 --no-anchors   # memory at scale

Each tool runs once and is measured as a process tree (`bench.process_tree`: wall and CPU time,
peak RSS summed over the tree: ours forks a worker per core for the combine phase). Ours reads
GWAS-SSF .tsv.gz and writes .tsv.gz + sidecar; GWAMA and PLINK read and write plain text.
All three do random effects (GWAMA -r; PLINK always reports them). Agreement is checked on the
variants where the tools are right (no bad row, no palindromic SNP; PLINK: no strand flip).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import meta_anchors as anchors
from bench.process_tree import run_tree


@dataclass(frozen=True)
class Measured:
    name: str
    wall_seconds: float
    cpu_seconds: float  # user + system: comparable even when other work shares the cores
    peak_rss_mb: float


def environment() -> dict[str, str]:
    """This environment, but letting Python cache bytecode: an installed tool has .pyc files,
    and compiling numpy/pandas/scipy afresh on every run would be timed otherwise."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def warm_up() -> None:
    modules = "import federation.cli, federation.meta.runner, federation.meta.frequencies"
    subprocess.run([sys.executable, "-c", modules], check=True, env=environment())


def measure(name: str, command: list[str], cwd: Path) -> Measured:
    """Run `command` as a measured process tree; wall and CPU seconds and peak RSS in MB."""
    run = run_tree(command, cwd=cwd, env=environment())
    if run.returncode != 0:
        raise SystemExit(f"{name} failed (exit {run.returncode}):\n{run.output[-2000:]}")
    return Measured(name, run.wall_seconds, run.cpu_seconds, run.peak_rss_bytes / 2**20)


def simulate(work: Path, studies: int, variants: int, seed: int, anchors_too: bool):
    started = time.perf_counter()
    sim = anchors.simulate(work, n_studies=studies, n_variants=variants, seed=seed, tau=30.0)
    gwama, plink = [], []
    if anchors_too:
        for index, study in enumerate(sim.studies):
            gwama.append(work / f"gwama{index}.txt")
            plink.append(work / f"plink{index}.txt")
            anchors.write_gwama_input(study, gwama[-1])
            anchors.write_plink_input(study, plink[-1])
    print(f"simulated {studies} x {variants:,} variants in {time.perf_counter() - started:.1f} s")
    return sim, gwama, plink


def agreement(work: Path, sim: anchors.Simulation) -> dict[str, float]:
    """Largest relative differences (ours vs each tool) over the variants they get right."""
    ours = pd.read_csv(work / "ours.tsv.gz", sep="\t")
    gwama = pd.read_csv(work / "gwama.out", sep="\t", na_values=["-nan", "nan"], low_memory=False)
    plink = pd.read_csv(work / "plink.meta", sep=r"\s+")
    rows = pd.concat([s[["variant_id", "truth_bad", "truth_flipped"]] for s in sim.studies])
    bad = set(rows.variant_id[rows.truth_bad != ""])
    flipped = set(rows.variant_id[rows.truth_flipped])
    ours_id, ours_sign = anchors.truth_keys(
        sim.variants,
        ours.chromosome,
        ours.base_pair_location,
        ours.effect_allele,
        ours.other_allele,
    )
    parts = gwama.rs_number.str.split(":")
    gwama_id, gwama_sign = anchors.truth_keys(
        sim.variants,
        parts.str[0].astype(int),
        parts.str[1].astype(int),
        gwama.reference_allele,
        gwama.other_allele,
    )
    plink_id, plink_sign = anchors.truth_keys(sim.variants, plink.CHR, plink.BP, plink.A1, plink.A2)
    ours = ours.assign(truth_id=ours_id, sign=ours_sign).set_index("truth_id")
    gwama = gwama.assign(truth_id=gwama_id, sign=gwama_sign).set_index("truth_id")
    plink = plink.assign(truth_id=plink_id, sign=plink_sign).set_index("truth_id")
    complementary = set(
        sim.variants.variant_id[
            (sim.variants.ref + sim.variants.alt).isin(["AT", "TA", "CG", "GC"])
        ]
    )
    usable = ours.index[(ours.n_studies > 1) & ~ours.index.isin(bad | complementary)]
    g = gwama.reindex(usable)
    o = ours.loc[usable]
    sign = o.sign * g.sign
    result = {
        "gwama_beta_random": _max_relative(o.beta, sign * g.beta, 5e-7),
        "gwama_se_random": _max_relative(o.standard_error, g.se, 5e-7),
    }
    usable_plink = usable[~usable.isin(flipped)]
    o, p = ours.loc[usable_plink], plink.reindex(usable_plink)
    sign = o.sign * p.sign
    # Run with --random-effects: the primary columns hold the random-effects model.
    result["plink_beta_random"] = _max_relative(o.beta, sign * p["BETA(R)"], 5e-5)
    result["plink_p_random"] = _max_relative(o.p_value, p["P(R)"], 0.0, printed_digits=4)
    result["variants_compared"] = float(len(usable))
    return result


def _max_relative(
    ours: pd.Series, theirs: pd.Series, half_unit: float, printed_digits: int | None = None
) -> float:
    """Largest |ours - theirs| beyond the tool's printed precision, relative to |theirs|."""
    ours_v, theirs_v = ours.to_numpy(dtype=float), theirs.to_numpy(dtype=float)
    if printed_digits is not None:
        with np.errstate(divide="ignore"):
            magnitude = np.floor(np.log10(np.abs(theirs_v)))
        half_unit_v = 0.5 * 10.0 ** (magnitude - printed_digits + 1)
    else:
        half_unit_v = np.full(theirs_v.shape, half_unit)
    printed = np.isfinite(theirs_v) & (theirs_v != 0)  # PLINK prints p below ~1e-308 as 0
    ours_v, theirs_v, half_unit_v = ours_v[printed], theirs_v[printed], half_unit_v[printed]
    excess = np.maximum(np.abs(ours_v - theirs_v) - half_unit_v, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nanmax(np.where(excess > 0, excess / np.abs(theirs_v), 0.0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--variants", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-anchors", action="store_true", help="Time ours only (scale runs).")
    parser.add_argument("--work-dir", type=Path, help="Keep the files here (default: temporary).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-meta-") as temporary:
        work = args.work_dir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        sim, gwama_inputs, plink_inputs = simulate(
            work, args.studies, args.variants, args.seed, not args.no_anchors
        )
        warm_up()
        ours = measure(
            "federation",
            [sys.executable, "-m", "federation", "meta", *map(str, sim.paths)]
            + ["--out", str(work / "ours.tsv.gz"), "--random-effects", *anchors.UNDECLARED_ARGS],
            work,
        )
        results = [ours]
        if not args.no_anchors:
            (work / "gwama.in").write_text("".join(f"{p}\n" for p in gwama_inputs))
            gwama_cmd = [anchors.GWAMA, "-i", "gwama.in", "-qt", "--indel_alleles", "-r"]
            results.append(measure("gwama", [*gwama_cmd, "-o", "gwama"], work))
            plink_cmd = [anchors.PLINK, "--meta-analysis", *map(str, plink_inputs), "+", "qt"]
            plink_cmd += ["logscale", "report-all", "--out", "plink", "--threads", "2"]
            results.append(measure("plink1.9", plink_cmd, work))
        print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; others' work slows all)")
        print(
            f"{'tool':<12}{'wall s':>8}{'cpu s':>8}{'peak MB':>9}{'wall ratio':>12}{'cpu ratio':>11}"
        )
        for item in results:
            wall_ratio = item.wall_seconds / ours.wall_seconds
            cpu_ratio = item.cpu_seconds / ours.cpu_seconds
            print(
                f"{item.name:<12}{item.wall_seconds:>8.2f}{item.cpu_seconds:>8.2f}"
                f"{item.peak_rss_mb:>9.0f}{wall_ratio:>11.2f}x{cpu_ratio:>10.2f}x"
            )
        if not args.no_anchors:
            for name, value in agreement(work, sim).items():
                print(f"agreement {name}: {value:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
