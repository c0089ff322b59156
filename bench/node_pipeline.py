"""The node pipeline against plink2 on one synthetic cohort: wall time, peak memory, JVM starts.

    uv run python -m bench.node_pipeline                       # 5,000 samples x 100,000 variants
    uv run python -m bench.node_pipeline --samples 1000 --variants 10000   # a quick run
    uv run python -m bench.node_pipeline --scaling   # 1k/5k samples x 10k/100k variants, fitted

One cohort is synthesised (not timed against anything), then the node pipeline (Snakemake,
Hail QC -> allele frequencies -> linear GWAS of quant_trait on age + sex -> disclosure gate)
and plink2 (`--freq counts` and `--glm` with the same QC filters) run on the same PLINK
files, one after the other. Each is measured as a process tree: wall time, and peak resident
memory summed over the tree (Snakemake, its step processes and their JVMs), sampled every
0.1 s. JVM start-ups are the Spark driver JVMs seen in the node run: its Hail steps share one
driver (spark-submit also runs a short launcher JVM before it).
Each part (synthesis, node run, floor, plink2) says on stderr, with the time, when it starts
and after how long it ended; the table comes at the end.

The Hail floor (`bench.hail_floor`: the same import + QC + AF + GWAS + export in one script
and one JVM) runs on the same files, so the pipeline's own overhead shows as ours/floor.
`--scaling` runs ours and the floor at four sizes and fits wall = fixed + per-genotype cost
(least squares over the sizes), which separates start-up from work.

The plink2 helpers here (phenotype files, command line, reading and aligning its output) are
shared with `tests/integration/test_node_vs_plink2.py`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil  # a dependency of snakemake
import yaml

from bench.process_tree import run_tree
from federation import sumstats
from federation.cli.common import echo_err

PLINK2 = "plink2"
QUANT_TRAIT = "quant_trait"
BINARY_TRAIT = "binary_trait"
COVARIATES = ("age", "sex")
STUDY_ID = "bench-node-pipeline"
MIB = 1024 * 1024
# The study's QC thresholds (the schema defaults), mirrored by plink2's filters below.
QC = {"sample_call_rate_min": 0.97, "variant_call_rate_min": 0.95, "hwe_p_min": 1e-6}
HAIL_RULES = ("qc", "allele_frequencies", "gwas")  # the Snakemake rules run by the Hail driver
SPARK_LAUNCHER = "org.apache.spark.launcher.Main"


# ---------------------------------------------------------------- plink2 helpers


def plink2_available() -> bool:
    return shutil.which(PLINK2) is not None


def write_plink2_inputs(
    phenotypes_tsv: Path,
    plink_prefix: Path,
    out_dir: Path,
    traits: Sequence[str],
    covariates: Sequence[str] = COVARIATES,
) -> tuple[Path, Path]:
    """plink2 `--pheno` and `--covar` files (FID/IID from the .fam) from `phenotypes.tsv`.

    Binary traits stay coded 0 = control, 1 = case: run plink2 with `--1`.
    """
    fam = pd.read_csv(
        Path(str(plink_prefix) + ".fam"), sep=r"\s+", header=None, usecols=[0, 1], dtype=str
    )
    fam.columns = ["#FID", "IID"]
    table = pd.read_csv(phenotypes_tsv, sep="\t", dtype={"sample_id": str})
    joined = fam.merge(table, left_on="IID", right_on="sample_id", how="inner")
    out_dir.mkdir(parents=True, exist_ok=True)
    pheno, covar = out_dir / "plink2.pheno", out_dir / "plink2.covar"
    joined[["#FID", "IID", *traits]].to_csv(pheno, sep="\t", index=False, na_rep="NA")
    joined[["#FID", "IID", *covariates]].to_csv(covar, sep="\t", index=False, na_rep="NA")
    return pheno, covar


def plink2_command(
    plink_prefix: Path,
    pheno: Path,
    covar: Path,
    out_prefix: Path,
    *,
    threads: int,
    qc_filters: bool = False,
) -> list[str]:
    """`--freq counts` and a Wald `--glm` (no Firth fallback), -log10 p, covariates hidden.

    plink2 reports the effect of A1, which is not always ALT (it omits the major allele):
    align by allele with `align_glm`. With `qc_filters`, samples and variants are filtered
    like the study's QC (call rates, HWE); the MAF floor is left out so --freq sees them all.
    """
    command = [
        PLINK2,
        "--bfile",
        str(plink_prefix),
        "--pheno",
        str(pheno),
        "--covar",
        str(covar),
        "--1",
        "--freq",
        "counts",
        "cols=chrom,pos,ref,alt,altfreq,nobs",
        "--glm",
        "no-firth",
        "hide-covar",
        "log10",
        "cols=chrom,pos,ref,alt,a1freq,nobs,beta,se,tz,p,err",
        "--threads",
        str(threads),
        "--out",
        str(out_prefix),
    ]
    if qc_filters:
        command += [
            "--mind",
            f"{1 - QC['sample_call_rate_min']:.6g}",
            "--geno",
            f"{1 - QC['variant_call_rate_min']:.6g}",
            "--hwe",
            f"{QC['hwe_p_min']:.6g}",
        ]
    return command


def read_plink2_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path,
        sep="\t",
        na_values=["NA", "."],
        keep_default_na=False,
        dtype={"#CHROM": str, "REF": str, "ALT": str, "A1": str},
    ).rename(columns={"#CHROM": "chromosome", "POS": "base_pair_location"})


def _allele_key(
    chromosome: pd.Series, position: pd.Series, a: pd.Series, b: pd.Series
) -> pd.Series:
    low = np.where(a.to_numpy(str) < b.to_numpy(str), a, b)
    high = np.where(a.to_numpy(str) < b.to_numpy(str), b, a)
    # GWAS-SSF codes (X=23) on our side, names (X) on plink2's: both keyed by the code.
    code = sumstats.chromosome_code(chromosome)
    return code + ":" + position.astype(str) + ":" + low + ":" + high


def align_glm(released: pd.DataFrame, plink2: pd.DataFrame) -> pd.DataFrame:
    """Released GWAS-SSF rows with plink2's estimates for the same effect allele.

    Joined on chromosome, position and the allele pair; plink2's BETA is negated where its A1
    is our other allele. Adds `plink2_beta`, `plink2_se`, `plink2_nlp` (NaN where plink2 has no
    result or its alleles do not match) and `plink2_obs`.
    """
    ours = released.copy()
    ours["key"] = _allele_key(
        ours.chromosome, ours.base_pair_location, ours.effect_allele, ours.other_allele
    )
    theirs = plink2.copy()
    theirs["key"] = _allele_key(
        theirs.chromosome, theirs.base_pair_location, theirs.REF, theirs.ALT
    )
    theirs = theirs[["key", "A1", "BETA", "SE", "LOG10_P", "OBS_CT"]]
    merged = ours.merge(theirs, on="key", how="left", validate="one_to_one")
    sign = np.where(
        merged.effect_allele == merged.A1,
        1.0,
        np.where(merged.other_allele == merged.A1, -1.0, np.nan),
    )
    merged["plink2_beta"] = merged.BETA * sign
    merged["plink2_se"] = merged.SE.where(np.isfinite(sign))
    merged["plink2_nlp"] = merged.LOG10_P.where(np.isfinite(sign))
    merged["plink2_obs"] = merged.OBS_CT
    return merged.drop(columns=["key", "BETA", "SE", "LOG10_P", "OBS_CT"])


def align_counts(released: pd.DataFrame, acount: pd.DataFrame) -> pd.DataFrame:
    """Released allele-frequency rows with plink2's ALT count and allele number for our ALT."""
    ours = released.copy()
    ours["key"] = _allele_key(ours.chromosome, ours.base_pair_location, ours.ref, ours.alt)
    theirs = acount.copy()
    theirs["key"] = _allele_key(
        theirs.chromosome, theirs.base_pair_location, theirs.REF, theirs.ALT
    )
    merged = ours.merge(
        theirs[["key", "ALT", "ALT_CTS", "OBS_CT"]], on="key", how="left", validate="one_to_one"
    )
    same = merged.alt == merged.ALT
    merged["plink2_alt_count"] = np.where(same, merged.ALT_CTS, merged.OBS_CT - merged.ALT_CTS)
    merged["plink2_allele_number"] = merged.OBS_CT
    return merged.drop(columns=["key", "ALT", "ALT_CTS", "OBS_CT"])


def relative_difference(ours: pd.Series, theirs: pd.Series) -> np.ndarray:
    ours_a, theirs_a = ours.to_numpy(float), theirs.to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(ours_a - theirs_a) / np.abs(theirs_a)


# ---------------------------------------------------------------- measuring process trees


@dataclass(frozen=True)
class Measured:
    wall_seconds: float
    cpu_seconds: float  # user + system over the whole tree
    peak_rss_bytes: int  # max over samples of the tree's summed RSS, or of any one process
    jvm_starts: int  # Spark driver JVMs (each Hail session starts one)
    jvm_processes: int  # all `java` processes, including spark-submit's short launcher JVMs
    returncode: int
    output: str


def run_measured(command: Sequence[str], cwd: Path | None = None) -> Measured:
    """Run `command` as a measured process tree (`bench.process_tree`), noting `java` processes."""
    jvms: dict[tuple[int, float], bool] = {}  # (pid, start time) -> is a Spark driver

    def note_jvm(member: psutil.Process) -> None:
        key = (member.pid, member.create_time())
        if key not in jvms and member.name() == "java":
            # spark-submit's launcher JVM only prints the driver's command line
            jvms[key] = SPARK_LAUNCHER not in member.cmdline()

    run = run_tree(command, cwd=cwd, on_member=note_jvm)
    return Measured(
        wall_seconds=run.wall_seconds,
        cpu_seconds=run.cpu_seconds,
        peak_rss_bytes=run.peak_rss_bytes,
        jvm_starts=sum(jvms.values()),
        jvm_processes=len(jvms),
        returncode=run.returncode,
        output=run.output,
    )


# ---------------------------------------------------------------- the benchmark


def run_stage(label: str, command: Sequence[str]) -> Measured:
    """`run_measured`, with a timestamped line on stderr when it starts and when it ends: a
    large cohort's node run takes an hour, and its output is only printed at the end."""
    echo_err(f"bench: {label} started")
    run = run_measured(command)
    outcome = "ended" if run.returncode == 0 else f"failed (exit {run.returncode})"
    echo_err(f"bench: {label} {outcome} after {run.wall_seconds:.1f} s")
    return run


def write_configs(cohort_dir: Path, run_dir: Path, cores: int) -> tuple[Path, Path]:
    node = {
        "node_id": cohort_dir.name,
        "genotypes": {"format": "plink", "path": str(cohort_dir / "genotypes")},
        "phenotypes": str(cohort_dir / "phenotypes.tsv"),
        "reference_genome": "GRCh38",
        "work_dir": str(run_dir / "work"),
        "results_dir": str(run_dir / "results"),
        "hail": {"master": f"local[{cores}]", "driver_memory": "4g"},
    }
    study = {
        "study_id": STUDY_ID,
        "reference_genome": "GRCh38",
        "qc": dict(QC),
        "analyses": [
            {"id": "allele_frequencies", "type": "allele_frequency"},
            {
                "id": "quant_trait_gwas",
                "type": "gwas",
                "trait": QUANT_TRAIT,
                "trait_type": "quantitative",
                "covariates": list(COVARIATES),
            },
        ],
    }
    node_path, study_path = run_dir / "node.yaml", run_dir / "study.yaml"
    node_path.write_text(yaml.safe_dump(node, sort_keys=False))
    study_path.write_text(yaml.safe_dump(study, sort_keys=False))
    return node_path, study_path


def hail_jobs(snakemake_log: Path) -> int:
    """Snakemake jobs of the rules that start a Hail JVM, from the run's log."""
    names = {f"rule {rule}:" for rule in HAIL_RULES} | {f"localrule {rule}:" for rule in HAIL_RULES}
    return sum(line.strip() in names for line in snakemake_log.read_text().splitlines())


def _agreement(run_dir: Path, plink2_prefix: Path, cohort_dir: Path) -> str:
    released = run_dir / "results" / STUDY_ID / "nodes" / cohort_dir.name
    gwas = pd.read_csv(released / "quant_trait_gwas.tsv.gz", sep="\t", dtype={"chromosome": str})
    aligned = align_glm(gwas, read_plink2_table(Path(f"{plink2_prefix}.{QUANT_TRAIT}.glm.linear")))
    ok = aligned.plink2_beta.notna()
    beta = relative_difference(aligned.beta[ok], aligned.plink2_beta[ok])
    se = relative_difference(aligned.standard_error[ok], aligned.plink2_se[ok])
    nlp = np.abs(aligned.neg_log_10_p_value[ok] - aligned.plink2_nlp[ok])
    return (
        f"agreement with plink2 on {ok.sum()} of {len(aligned)} released variants: max relative "
        f"difference beta {beta.max():.2g}, SE {se.max():.2g}; max |d(-log10 p)| {nlp.max():.2g}"
    )


def _line_count(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


TABLE_COLUMNS = ("wall (s)", "CPU (s)", "peak (MiB)", "driver JVMs")


def _cells(run: Measured) -> tuple[str, ...]:
    return (
        f"{run.wall_seconds:.1f}",
        f"{run.cpu_seconds:.1f}",
        f"{run.peak_rss_bytes / MIB:.0f}",
        f"{run.jvm_starts}",
    )


def _ratios(ours: Measured, anchor: Measured) -> tuple[str, ...]:
    return (
        f"{ours.wall_seconds / anchor.wall_seconds:.2f}x",
        f"{ours.cpu_seconds / max(anchor.cpu_seconds, 1e-3):.2f}x",
        f"{ours.peak_rss_bytes / max(anchor.peak_rss_bytes, 1):.2f}x",
        "-",
    )


def print_table(ours: Measured, anchors: dict[str, Measured]) -> None:
    """Wall, CPU and peak memory of ours and of each anchor measured in this same run, then
    ours over each anchor."""
    print(f"{'':<14}" + "".join(f"{column:>14}" for column in TABLE_COLUMNS))
    for label, run in {"ours": ours, **anchors}.items():
        print(f"{label:<14}" + "".join(f"{cell:>14}" for cell in _cells(run)))
    for label, anchor in anchors.items():
        print(f"{'ours/' + label:<14}" + "".join(f"{cell:>14}" for cell in _ratios(ours, anchor)))


SCALING_SIZES = ((1000, 10_000), (1000, 100_000), (5000, 10_000), (5000, 100_000))
GOAL_OVER_FLOOR = 1.3  # the goal: the whole node run within 1.3x of the Hail floor


def _configs(node_path: Path, study_path: Path) -> list[str]:
    return ["--node-config", str(node_path), "--study-config", str(study_path)]


def pipeline_command(node_path: Path, study_path: Path, cores: int) -> list[str]:
    run_pipeline = [sys.executable, "-m", "federation", "node", "run-pipeline"]
    return [*run_pipeline, *_configs(node_path, study_path), "--cores", str(cores)]


def floor_command(node_path: Path, study_path: Path, out: Path) -> list[str]:
    floor = [sys.executable, "-m", "bench.hail_floor"]
    return [*floor, *_configs(node_path, study_path), "--out", str(out)]


def fit_fixed_and_per_genotype(
    genotypes: Sequence[float], walls: Sequence[float]
) -> tuple[float, float]:
    """Least-squares wall = fixed + slope * genotypes; returns (fixed s, s per 10^6 genotypes)."""
    slope, fixed = np.polyfit(np.asarray(genotypes, dtype=float) / 1e6, np.asarray(walls), 1)
    return float(fixed), float(slope)


def synthesize_cohort(out: Path, samples: int, variants: int, seed: int) -> tuple[Path, float]:
    """One node's synthetic cohort in `out`: its directory, and how long synthesis took (s)."""
    from federation.sandbox.synth import synthesize

    label = f"synthesis of {samples} samples x {variants} variants"
    echo_err(f"bench: {label} started")
    start = time.perf_counter()
    result = synthesize(
        out,
        nodes=1,
        samples_per_node=samples,
        variants=variants,
        seed=seed,
        force=True,
        progress=lambda line: None,
    )
    seconds = time.perf_counter() - start
    echo_err(f"bench: {label} ended after {seconds:.1f} s")
    return result.nodes[0].directory, seconds


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'1000x10000,5000x100000' -> ((1000, 10000), (5000, 100000))."""
    sizes = []
    for item in text.split(","):
        samples, _, variants = item.strip().partition("x")
        if not (samples.isdigit() and variants.isdigit()):
            raise argparse.ArgumentTypeError(f"--sizes: '{item}' is not SAMPLESxVARIANTS")
        sizes.append((int(samples), int(variants)))
    return tuple(sizes)


def scaling(
    out: Path, seed: int, cores: int, sizes: Sequence[tuple[int, int]] = SCALING_SIZES
) -> int:
    """Ours and the floor at `sizes`; a table, then the fitted fixed + per-genotype costs."""
    rows = []
    for samples, variants in sizes:
        cohort_dir, _ = synthesize_cohort(
            out / f"cohort-{samples}x{variants}", samples, variants, seed
        )
        run_dir = out / f"run-{samples}x{variants}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        node_path, study_path = write_configs(cohort_dir, run_dir, cores)
        size = f"{samples} x {variants}"
        ours = run_stage(f"{size}: node run", pipeline_command(node_path, study_path, cores))
        floor = run_stage(
            f"{size}: Hail floor", floor_command(node_path, study_path, run_dir / "floor")
        )
        if ours.returncode or floor.returncode:
            print((ours.output + floor.output)[-3000:], file=sys.stderr)
            return 1
        rows.append((samples, variants, ours, floor))
        print(
            f"{samples:>7} x {variants:>7}  ours {ours.wall_seconds:6.1f} s  floor "
            f"{floor.wall_seconds:6.1f} s  ours/floor {ours.wall_seconds / floor.wall_seconds:.2f}x  "
            f"CPU s {ours.cpu_seconds:.1f}/{floor.cpu_seconds:.1f}  "
            f"peak MiB {ours.peak_rss_bytes / MIB:.0f}/{floor.peak_rss_bytes / MIB:.0f}  "
            f"driver JVMs {ours.jvm_starts}/{floor.jvm_starts}",
            flush=True,
        )
    genotypes = [samples * variants for samples, variants, _, _ in rows]
    if len(set(genotypes)) < 2:
        return 0  # one size: nothing to fit
    for label, index in (("ours", 2), ("floor", 3)):
        fixed, slope = fit_fixed_and_per_genotype(
            genotypes, [row[index].wall_seconds for row in rows]
        )
        print(f"fit {label:<5}: wall = {fixed:.1f} s + {slope:.3f} s per 10^6 genotypes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.node_pipeline", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--samples", type=int, default=5000, help="samples in the cohort")
    parser.add_argument("--variants", type=int, default=100_000, help="variants (chr1-22)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cores", type=int, default=2, help="cores for Snakemake/Hail and plink2")
    parser.add_argument(
        "--out", type=Path, help="keep everything here (default: a temporary directory)"
    )
    parser.add_argument(
        "--cohort", type=Path, help="reuse a `federation synth` output (its first node)"
    )
    parser.add_argument(
        "--scaling", action="store_true", help="ours and the floor at four sizes, with a fit"
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=SCALING_SIZES,
        help="with --scaling: SAMPLESxVARIANTS,... (default 1k/5k x 10k/100k)",
    )
    args = parser.parse_args(argv)
    if args.scaling:
        out = args.out or Path(tempfile.mkdtemp(prefix="bench-node-scaling-"))
        return scaling(out, args.seed, args.cores, args.sizes)
    if not plink2_available():
        print("plink2 not found on PATH (Debian package plink2)", file=sys.stderr)
        return 2

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-node-pipeline-"))
    out.mkdir(parents=True, exist_ok=True)
    synth_seconds = None
    if args.cohort:
        cohort_dir = sorted(p for p in args.cohort.iterdir() if (p / "phenotypes.tsv").is_file())[0]
    else:
        cohort_dir, synth_seconds = synthesize_cohort(
            out / "cohort", args.samples, args.variants, args.seed
        )
    n_samples = _line_count(cohort_dir / "genotypes.fam")
    n_variants = _line_count(cohort_dir / "genotypes.bim")

    load_before = os.getloadavg()[0]
    run_dir = out / "node_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir()
    node_path, study_path = write_configs(cohort_dir, run_dir, args.cores)
    ours = run_stage("node run", pipeline_command(node_path, study_path, args.cores))
    if ours.returncode != 0:
        print(ours.output[-3000:], file=sys.stderr)
        return 1
    floor = run_stage("Hail floor", floor_command(node_path, study_path, run_dir / "floor"))
    if floor.returncode != 0:
        print(floor.output[-3000:], file=sys.stderr)
        return 1
    jobs = hail_jobs(run_dir / "work" / STUDY_ID / "logs" / "snakemake.log")

    plink_dir = out / "plink2"
    plink_dir.mkdir(exist_ok=True)
    prefix = cohort_dir / "genotypes"
    pheno, covar = write_plink2_inputs(
        cohort_dir / "phenotypes.tsv", prefix, plink_dir, [QUANT_TRAIT]
    )
    theirs = run_stage(
        "plink2",
        plink2_command(
            prefix, pheno, covar, plink_dir / "out", threads=args.cores, qc_filters=True
        ),
    )
    if theirs.returncode != 0:
        print(theirs.output[-3000:], file=sys.stderr)
        return 1

    print(f"cohort: {n_samples} samples x {n_variants} variants ({cohort_dir})")
    print(
        f"machine: {os.cpu_count()} CPUs; 1-minute load average {load_before:.1f} before the "
        f"node run, {os.getloadavg()[0]:.1f} after plink2 (other work on the machine slows both)"
    )
    if synth_seconds is not None:
        print(f"synthesis (not compared): {synth_seconds:.1f} s")
    print(
        f"work: {args.cores} cores; ours = the whole node run (Snakemake + Hail QC, allele "
        "frequencies, linear GWAS on age + sex, disclosure gate, release); floor = the same Hail "
        "work in one script and one JVM; plink2 = --freq counts + --glm, same QC"
    )
    print_table(ours, {"floor": floor, "plink2": theirs})
    ratio = ours.wall_seconds / floor.wall_seconds
    print(
        f"goal: ours/floor wall <= {GOAL_OVER_FLOOR}x: "
        f"{'met' if ratio <= GOAL_OVER_FLOOR else 'not met'} ({ratio:.2f}x)"
    )
    print(
        f"Hail steps in the Snakemake run: {jobs}; Spark driver JVMs started: {ours.jvm_starts}; "
        f"all java processes: {ours.jvm_processes} (spark-submit also starts a short launcher "
        "JVM per session)"
    )
    print(_agreement(run_dir, plink_dir / "out", cohort_dir))
    if not args.out:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
