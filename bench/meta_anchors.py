"""Simulated multi-study GWAS summary statistics, and the anchors (GWAMA, PLINK 1.9) run on them.

Shared by `bench.meta` and `tests/integration/test_meta_anchors.py`. The simulation knows the
truth for every row (allele swap, strand flip, bad value), so a test can tell which tool is
right where they differ. Effects are on a scale where SEs are ~1-10, so the tools' fixed
decimals (GWAMA 6, PLINK 4) still carry 7+ significant digits.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from isal import igzip

from federation import sumstats

BASES = np.array(list("ACGT"))
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
GWAMA = "GWAMA"
PLINK = "plink1.9"
# The simulated inputs have no sidecar: the meta-analysis is told their build and trait type,
# and treats them as not reference-aligned (their palindromic SNPs are placed by frequency).
UNDECLARED = {"assume_build": "GRCh38", "trait_type": "quantitative"}
UNDECLARED_ARGS = ("--assume-build", "GRCh38", "--trait-type", "quantitative")


@dataclass(frozen=True)
class Simulation:
    """Truth per variant plus, per study, the rows as written (with their provenance)."""

    variants: pd.DataFrame  # chromosome, position, ref, alt, variant_id, frequency, effect
    studies: list[pd.DataFrame]  # per study: GWAS-SSF columns + truth flags
    paths: list[Path]  # the GWAS-SSF .tsv.gz written per study


def _variants(n_variants: int, rng: np.random.Generator, indel_rate: float) -> pd.DataFrame:
    chromosome = np.sort(rng.integers(1, 23, n_variants))
    position = np.zeros(n_variants, dtype=np.int64)
    for chrom in range(1, 23):
        where = np.flatnonzero(chromosome == chrom)
        steps = rng.integers(1, 200, where.size)
        position[where] = 10_000 + np.cumsum(steps)
    # ~3% multi-allelic: the next variant reuses the position with another alternate allele.
    multi = rng.random(n_variants) < 0.03
    multi[0] = False
    same_chrom = np.r_[False, chromosome[1:] == chromosome[:-1]]
    multi &= same_chrom
    position[multi] = position[np.flatnonzero(multi) - 1]
    ref_i = rng.integers(0, 4, n_variants)
    ref_i[multi] = ref_i[np.flatnonzero(multi) - 1]
    alt_i = (ref_i + rng.integers(1, 4, n_variants)) % 4
    prev_alt = np.r_[-1, alt_i[:-1]]
    clash = multi & (alt_i == prev_alt)
    alt_i[clash] = (alt_i[clash] + 1) % 4
    alt_i[clash & (alt_i == ref_i)] = (alt_i[clash & (alt_i == ref_i)] + 1) % 4
    ref = BASES[ref_i].astype(object)
    alt = BASES[alt_i].astype(object)
    indel = (rng.random(n_variants) < indel_rate) & ~multi
    alt[indel] = ref[indel] + BASES[rng.integers(0, 4, indel.sum())]
    frequency = rng.uniform(0.03, 0.97, n_variants)
    effect = np.where(rng.random(n_variants) < 0.01, rng.normal(0, 300.0, n_variants), 0.0)
    frame = pd.DataFrame(
        {
            "chromosome": chromosome,
            "position": position,
            "ref": ref,
            "alt": alt,
            "frequency": frequency,
            "effect": effect,
        }
    )
    frame["variant_id"] = (
        frame.chromosome.astype(str) + ":" + frame.position.astype(str) + ":" + ref + ":" + alt
    )
    return frame


def _complement(alleles: np.ndarray) -> np.ndarray:
    return np.array(["".join(COMPLEMENT[b] for b in a) for a in alleles], dtype=object)


def simulate(
    out_dir: Path,
    n_studies: int = 3,
    n_variants: int = 20_000,
    seed: int = 1,
    *,
    tau: float = 30.0,
    missing_rate: float = 0.1,
    swap_rate: float = 0.2,
    flip_rate: float = 0.05,
    bad_rate: float = 0.01,
    indel_rate: float = 0.03,
    lowercase_rate: float = 0.02,
) -> Simulation:
    """Write `n_studies` GWAS-SSF files of one trait; return the truth with them.

    Each row records `truth_swapped`, `truth_flipped` and `truth_bad` (the reason it is bad).
    Strand flips are applied to SNPs only (palindromic ones included: the trap the tools fall
    into). `tau` is the SD of study-specific true effects (heterogeneity).
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = _variants(n_variants, rng, indel_rate)
    studies, paths = [], []
    for study in range(n_studies):
        keep = rng.random(n_variants) >= missing_rate
        v = variants[keep].reset_index(drop=True)
        m = len(v)
        n = rng.integers(2_000, 20_000)
        f = np.clip(v.frequency.to_numpy() + rng.normal(0, 0.02, m), 0.01, 0.99)
        se = 4000.0 / np.sqrt(2 * f * (1 - f) * n) * rng.uniform(0.9, 1.1, m)
        beta = v.effect.to_numpy() + rng.normal(0, tau, m) + rng.normal(0, 1, m) * se
        ea, oa, eaf = v.alt.to_numpy().copy(), v.ref.to_numpy().copy(), f.copy()
        swapped = rng.random(m) < swap_rate
        ea[swapped], oa[swapped] = oa[swapped], v.alt.to_numpy()[swapped]
        beta = np.where(swapped, -beta, beta)
        eaf = np.where(swapped, 1 - eaf, eaf)
        snp = (v.ref.str.len() == 1).to_numpy() & (v.alt.str.len() == 1).to_numpy()
        flipped = snp & (rng.random(m) < flip_rate)
        ea[flipped], oa[flipped] = _complement(ea[flipped]), _complement(oa[flipped])
        lower = rng.random(m) < lowercase_rate
        ea[lower] = [a.lower() for a in ea[lower]]
        frame = pd.DataFrame(
            {
                "chromosome": v.chromosome.to_numpy(),
                "base_pair_location": v.position.to_numpy(),
                "effect_allele": ea,
                "other_allele": oa,
                "beta": beta,
                "standard_error": se,
                "effect_allele_frequency": eaf,
                "p_value": 0.5,
                "n": n,
                "variant_id": v.variant_id.to_numpy(),
                "truth_swapped": swapped,
                "truth_flipped": flipped,
                "truth_bad": "",
            }
        )
        _spoil(frame, rng, bad_rate)
        studies.append(frame)
        path = out_dir / f"study{study}.tsv.gz"
        write_ssf(frame, path)
        paths.append(path)
    return Simulation(variants, studies, paths)


def _spoil(frame: pd.DataFrame, rng: np.random.Generator, bad_rate: float) -> None:
    """Make `bad_rate` of the rows bad in one of the ways the meta-analysis must survive."""
    bad = np.flatnonzero(rng.random(len(frame)) < bad_rate)
    kinds = np.array(["se_zero", "se_negative", "se_infinite", "se_missing", "p_out_of_range"])
    kind = kinds[rng.integers(0, len(kinds), bad.size)]
    se = frame["standard_error"].to_numpy().copy()
    p_value = frame["p_value"].to_numpy(dtype=float).copy()
    truth = frame["truth_bad"].to_numpy(dtype=object).copy()
    for name, value in (("se_zero", 0.0), ("se_negative", -1.0), ("se_infinite", np.inf)):
        se[bad[kind == name]] = value
    se[bad[kind == "se_missing"]] = np.nan
    p_value[bad[kind == "p_out_of_range"]] = 1.5
    truth[bad] = kind
    frame["standard_error"], frame["p_value"], frame["truth_bad"] = se, p_value, truth


SSF_COLUMNS = [*sumstats.MANDATORY_COLUMNS, *sumstats.STANDARD_EXTRAS]


def write_ssf(frame: pd.DataFrame, path: Path) -> None:
    """GWAS-SSF .tsv.gz with full float precision (shortest repr), NA for missing."""
    path.write_bytes(igzip.compress(_tsv_bytes(frame[SSF_COLUMNS]), compresslevel=1))


def _tsv_bytes(frame: pd.DataFrame) -> bytes:
    """Tab-separated text with a header, NA for missing, floats as their shortest repr."""
    columns = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind == "f":
            array = pa.array(values, mask=np.isnan(values))
        elif values.dtype.kind in "iub":
            array = pa.array(values)
        else:
            array = pa.array(values.astype(str), type=pa.string())
        columns.append(pc.fill_null(pc.cast(array, pa.string()), "NA"))
    table = pa.table(columns, names=[str(c) for c in frame.columns])
    sink = pa.BufferOutputStream()
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    pcsv.write_csv(table, sink, options)
    return "\t".join(map(str, frame.columns)).encode() + b"\n" + sink.getvalue().to_pybytes()


def write_gwama_input(frame: pd.DataFrame, path: Path) -> None:
    """GWAMA quantitative-trait input (MARKERNAME EA NEA BETA SE EAF N STRAND), %.17g floats."""
    out = pd.DataFrame(
        {
            "MARKERNAME": frame.variant_id,
            "EA": frame.effect_allele.str.upper(),
            "NEA": frame.other_allele.str.upper(),
            "BETA": frame.beta,
            "SE": frame.standard_error,
            "EAF": frame.effect_allele_frequency,
            "N": frame.n,
            "STRAND": "+",
        }
    )
    _write_text(out, path)


def write_plink_input(frame: pd.DataFrame, path: Path) -> None:
    """PLINK 1.9 --meta-analysis input (CHR BP SNP A1 A2 BETA SE P)."""
    out = pd.DataFrame(
        {
            "CHR": frame.chromosome,
            "BP": frame.base_pair_location,
            "SNP": frame.variant_id,
            "A1": frame.effect_allele.str.upper(),
            "A2": frame.other_allele.str.upper(),
            "BETA": frame.beta,
            "SE": frame.standard_error,
            "P": frame.p_value,
        }
    )
    _write_text(out, path)


def _write_text(frame: pd.DataFrame, path: Path) -> None:
    path.write_bytes(_tsv_bytes(frame))


def run_gwama(inputs: list[Path], out_root: Path, random_effects: bool) -> pd.DataFrame:
    """Run GWAMA (-qt, --indel_alleles); its `<root>.out` as a frame."""
    filelist = out_root.with_suffix(".in")
    filelist.write_text("".join(f"{p}\n" for p in inputs))
    command = [GWAMA, "-i", str(filelist), "-qt", "--indel_alleles", "-o", str(out_root)]
    if random_effects:
        command.append("-r")
    subprocess.run(command, check=True, capture_output=True, cwd=out_root.parent)
    return pd.read_csv(f"{out_root}.out", sep="\t", na_values=["-nan", "nan", "NA"])


def run_plink(inputs: list[Path], out_root: Path) -> pd.DataFrame:
    """Run PLINK 1.9 --meta-analysis (qt logscale report-all); its `.meta` as a frame."""
    command = [
        PLINK,
        "--meta-analysis",
        *map(str, inputs),
        "+",
        "qt",
        "logscale",
        "report-all",
        "--out",
        str(out_root),
        "--threads",
        "2",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=out_root.parent)
    return pd.read_csv(f"{out_root}.meta", sep=r"\s+", na_values=["NA"])


def tools_available() -> bool:
    return shutil.which(GWAMA) is not None and shutil.which(PLINK) is not None


def truth_keys(
    variants: pd.DataFrame,
    chromosome: pd.Series,
    position: pd.Series,
    effect: pd.Series,
    other: pd.Series,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the truth variant_id it denotes (alleles up to swap and strand) and the sign
    that turns its effect allele into the truth alternate allele (0 where no truth variant)."""
    from federation.stats.harmonize import describe_pairs

    def keyed(chrom: pd.Series, pos: pd.Series, e: pd.Series, o: pd.Series) -> tuple:
        pairs = describe_pairs(list(e.str.upper()), list(o.str.upper()))
        key = chrom.astype(str).to_numpy() + ":" + pos.astype(str).to_numpy() + ":" + pairs.key
        return key.astype(str), pairs.effect_is_first

    truth_key, truth_first = keyed(
        variants.chromosome, variants.position, variants.alt, variants.ref
    )
    lookup = pd.Series(np.arange(len(variants)), index=truth_key)
    key, first = keyed(chromosome, position, effect, other)
    where = lookup.reindex(key).to_numpy()
    found = ~np.isnan(where)
    index = np.where(found, where, 0).astype(int)
    sign = np.where(first == truth_first[index], 1, -1) * found
    ids = np.where(found, variants.variant_id.to_numpy()[index], None)
    return ids, sign
