"""The coordinator's meta-analysis over GWAS-SSF files: read, align, combine, write.

`run_meta` streams each input once into position bins (`meta_inputs`), then walks the bins in
genome order: one bin of every input is aligned (`harmonize`), combined (`meta`) and appended
to the gzip output, so memory is bounded by a bin, not by the genome. The output is GWAS-SSF
with the meta extras of DESIGN.md §3 and a YAML sidecar recording inputs (SHA-256), rows dropped
per reason per input, λGC per input and for the meta-analysis, and software versions.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
from isal import isal_zlib

from federation import harmonize, meta
from federation.errors import MetaAnalysisError, SpecError
from federation.meta_format import format_table, output_columns
from federation.meta_inputs import (
    InputScan,
    check_columns,
    chromosome_of_bin,
    load_bin,
    scan_input,
)
from federation.meta_record import HashingSink, InputTally, build_sidecar, write_meta_sidecar

# ISA-L level 3: its best ratio, still ~300 MB/s on one core (zlib -6 manages ~20 MB/s here).
GZIP_LEVEL = 3
GZIP_WBITS = 31  # 16 + 15: a gzip wrapper with mtime 0, so equal tables give equal bytes
SCAN_THREADS = 2  # the machines this runs on have 2 cores (DESIGN: CI and nodes alike)
FORMAT_THREADS = 2  # formatting text is the costliest stage of the combine phase
# Rows aligned and combined at once: bounds the temporaries (~1 KB per row at peak).
SLICE_ROWS = 200_000
CSV_OPTIONS = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


class Scheme(StrEnum):
    IVW = "ivw"
    SAMPLE_SIZE = "sample-size"


@dataclass(frozen=True)
class MetaOptions:
    random_effects: bool = False
    genomic_control: bool = False
    scheme: Scheme = Scheme.IVW
    palindromic_maf_band: tuple[float, float] = harmonize.DEFAULT_PALINDROMIC_MAF_BAND


@dataclass(frozen=True)
class MetaResult:
    out: Path
    sidecar: Path
    n_variants: int
    lambda_gc: float
    metadata: dict[str, Any]


def parse_maf_band(text: str) -> tuple[float, float]:
    """'0.4-0.6' -> (0.4, 0.6); SpecError naming the option otherwise."""
    try:
        low_text, high_text = text.split("-", 1)
        low, high = float(low_text), float(high_text)
    except ValueError:
        low, high = float("nan"), float("nan")
    if not (0.0 <= low <= 0.5 <= high <= 1.0):
        raise SpecError(
            f"--palindromic-maf-band '{text}': not LOW-HIGH with 0 <= LOW <= 0.5 <= HIGH <= 1; "
            "use e.g. 0.4-0.6"
        )
    return low, high


def run_meta(inputs: Sequence[Path], out: Path, options: MetaOptions) -> MetaResult:
    """Meta-analyse GWAS-SSF `inputs` into `out` (.tsv.gz) and its `.yaml` sidecar."""
    if not inputs:
        raise SpecError("inputs: none given; pass one or more GWAS-SSF .tsv.gz files")
    if not out.name.endswith(".tsv.gz"):
        raise SpecError(f"--out '{out}': must end in .tsv.gz (GWAS-SSF); rename it")
    for path in inputs:  # every header first: a bad input fails before any work is done
        check_columns(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".meta-", dir=out.parent))
    try:
        need_n = options.scheme is Scheme.SAMPLE_SIZE
        # Inputs are read two at a time: ISA-L and pyarrow release the GIL, so a second
        # thread keeps the second core busy while the first waits on parsing.
        with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
            scans = list(
                pool.map(
                    lambda item: scan_input(item[1], item[0], scratch, need_n), enumerate(inputs)
                )
            )
        return _combine(scans, out, options, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        out.with_name(out.name + ".partial").unlink(missing_ok=True)


def _combine(scans: list[InputScan], out: Path, options: MetaOptions, scratch: Path) -> MetaResult:
    factors = [
        meta.genomic_control_se_factor(s.lambda_gc) if options.genomic_control else 1.0
        for s in scans
    ]
    tallies = [InputTally(dropped=dict(s.dropped)) for s in scans]
    all_bins = sorted(set().union(*(s.bins for s in scans)))
    partial = out.with_name(out.name + ".partial")
    compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    z_parts: list[np.ndarray] = []
    n_variants = 0
    # Three stages overlap: the main thread aligns and combines a slice, two formatter threads
    # turn earlier slices into text, and a writer thread compresses and writes them in order
    # (Arrow casts and ISA-L release the GIL, so both cores stay busy).
    with (
        open(partial, "wb") as raw,
        ThreadPoolExecutor(max_workers=FORMAT_THREADS) as formatters,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        sink = HashingSink(raw)
        texts: deque[Future[bytes]] = deque()
        written: Future[None] | None = None

        def write_ready(keep: int) -> None:
            nonlocal written
            while len(texts) > keep:
                data = texts.popleft().result()
                if written is not None:
                    written.result()
                written = writer.submit(_compress_into, compressor, sink, data, False)

        columns = output_columns(options.scheme is Scheme.SAMPLE_SIZE)
        header = ("\t".join(columns) + "\n").encode()
        texts.append(formatters.submit(lambda: header))
        for bin_id in all_bins:
            for rows, input_index in _slices(_load_bin_rows(bin_id, len(scans), scratch)):
                alignment, stats = _combine_slice(
                    rows, input_index, factors, tallies, options, len(scans)
                )
                n_variants += alignment.n_groups
                z_parts.append(stats["z_primary"])
                chromosome = chromosome_of_bin(bin_id)
                texts.append(formatters.submit(_format_text, chromosome, alignment, stats, options))
                write_ready(keep=FORMAT_THREADS)
        if n_variants == 0:
            raise MetaAnalysisError(
                "meta-analysis: no usable variant in any input; see the drop counts in the "
                "input files' checks (missing columns or all rows invalid)"
            )
        write_ready(keep=0)
        if written is not None:
            written.result()
        writer.submit(_compress_into, compressor, sink, b"", True).result()
    partial.replace(out)
    z_all = np.concatenate(z_parts)
    metadata = build_sidecar(
        scans, tallies, options, n_variants, meta.genomic_control_lambda(z_all)
    )
    sidecar = write_meta_sidecar(out, metadata, sink)
    return MetaResult(out, sidecar, n_variants, metadata["lambda_gc"], metadata)


def _format_text(
    chromosome: int, alignment: harmonize.Alignment, stats: dict[str, Any], options: MetaOptions
) -> bytes:
    buffer = io.BytesIO()
    pcsv.write_csv(format_table(chromosome, alignment, stats, options), buffer, CSV_OPTIONS)
    return buffer.getvalue()


def _compress_into(compressor: Any, sink: Any, data: bytes, last: bool) -> None:
    sink.write(compressor.compress(data))
    if last:
        sink.write(compressor.flush())


def _load_bin_rows(bin_id: int, n_inputs: int, scratch: Path) -> tuple[pa.Table, np.ndarray] | None:
    """One position bin of every input, concatenated, with each row's input index."""
    pieces, owners = [], []
    for index in range(n_inputs):
        piece = load_bin(scratch, index, bin_id)
        if piece is not None and piece.num_rows:
            pieces.append(piece)
            owners.append(np.full(piece.num_rows, index, dtype=np.int32))
    if not pieces:
        return None
    return pa.concat_tables(pieces).combine_chunks(), np.concatenate(owners)


def _slices(
    loaded: tuple[pa.Table, np.ndarray] | None,
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """A bin in slices of about SLICE_ROWS rows, cut between positions (a position's rows
    stay together), so a dense bin does not raise peak memory."""
    if loaded is None:
        return
    rows, input_index = loaded
    if rows.num_rows <= SLICE_ROWS:
        yield rows, input_index
        return
    position = rows.column("position").to_numpy()
    order = np.argsort(position, kind="stable")
    position = position[order]
    starts = [0]
    while starts[-1] + SLICE_ROWS < position.size:
        cut = int(np.searchsorted(position, position[starts[-1] + SLICE_ROWS], side="left"))
        if cut <= starts[-1]:  # one position with more rows than a slice: keep it whole
            cut = int(np.searchsorted(position, position[starts[-1]], side="right"))
        starts.append(cut)
    for start, stop in zip(starts, [*starts[1:], position.size], strict=True):
        take = pa.array(order[start:stop])
        yield rows.take(take), input_index[order[start:stop]]


def _combine_slice(
    rows: pa.Table,
    input_index: np.ndarray,
    factors: list[float],
    tallies: list[InputTally],
    options: MetaOptions,
    n_inputs: int,
) -> tuple[harmonize.Alignment, dict[str, Any]]:
    se = rows.column("se").to_numpy() * np.asarray(factors)[input_index]
    beta = rows.column("beta").to_numpy()
    frequency = rows.column("frequency").to_numpy()
    n = rows.column("n").to_numpy()
    alignment = harmonize.align(
        input_index,
        rows.column("position").to_numpy(),
        rows.column("effect_allele"),
        rows.column("other_allele"),
        frequency,
        rows.column("alt_is_effect").to_numpy(zero_copy_only=False),
        options.palindromic_maf_band,
    )
    _tally(alignment, input_index, tallies)
    kept = alignment.kept
    group, sign = alignment.group[kept], alignment.sign[kept]
    beta_k = beta[kept] * sign
    se_k = se[kept]
    freq_k = np.where(sign > 0, frequency[kept], 1.0 - frequency[kept])
    n_k = n[kept]
    input_k = input_index[kept]
    stats = combine_rows(beta_k, se_k, freq_k, n_k, group, alignment.n_groups, options)
    stats["direction"] = direction_strings(beta_k, group, input_k, alignment.n_groups, n_inputs)
    return alignment, stats


def combine_rows(
    beta: np.ndarray,
    se: np.ndarray,
    frequency: np.ndarray,
    n: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    options: MetaOptions,
) -> dict[str, Any]:
    """All per-variant statistics from aligned rows (pure; the columns of the output)."""
    fixed = meta.fixed_effects(beta, se, group, n_groups)
    het = meta.heterogeneity(beta, se, group, fixed)
    random = meta.dersimonian_laird(beta, se, group, fixed, het)
    has_n = np.isfinite(n)
    n_sum = meta.group_sum(np.where(has_n, n, 0.0), group, n_groups)
    n_known = np.bincount(group[has_n], minlength=n_groups) > 0
    primary_beta, primary_se = (
        (random.beta, random.se) if options.random_effects else (fixed.beta, fixed.se)
    )
    primary_z, primary_log_p = (
        (random.z, random.log_p) if options.random_effects else (fixed.z, fixed.log_p)
    )
    stats = {
        "beta": primary_beta,
        "standard_error": primary_se,
        "effect_allele_frequency": meta.weighted_frequency(frequency, n, group, n_groups),
        "log_p": primary_log_p,
        "z_primary": primary_z,
        "n": np.where(n_known, n_sum, np.nan),
        "n_studies": fixed.n_studies,
        "het_q": het.q,
        "het_df": het.df,
        "het_log_p": het.log_p,
        "i2": het.i2,
        "tau2": random.tau2,
        "beta_random": random.beta,
        "se_random": random.se,
        "random_log_p": random.log_p,
    }
    if options.scheme is Scheme.SAMPLE_SIZE:
        weighted = meta.stouffer(beta / se, n, group, n_groups)
        stats["log_p"] = weighted.log_p
        stats["z_primary"] = weighted.z
        stats["stouffer_z"] = weighted.z
    return stats


def direction_strings(
    beta: np.ndarray, group: np.ndarray, input_index: np.ndarray, n_groups: int, n_inputs: int
) -> pa.Array:
    """METAL-style direction per variant: one of + - 0 ? per input, in input order."""
    cells = np.full((n_groups, n_inputs), ord("?"), dtype=np.uint8)
    cells[group, input_index] = np.where(beta > 0, ord("+"), np.where(beta < 0, ord("-"), 48))
    offsets = np.arange(0, (n_groups + 1) * n_inputs, n_inputs, dtype=np.int64)[: n_groups + 1]
    return pa.LargeStringArray.from_buffers(
        n_groups, pa.py_buffer(offsets), pa.py_buffer(cells.tobytes())
    ).cast(pa.string())


def _tally(alignment: harmonize.Alignment, input_index: np.ndarray, tallies: list) -> None:
    n_inputs = len(tallies)
    for fate in harmonize.RowFate:
        if fate is harmonize.RowFate.KEPT:
            continue
        counts = np.bincount(input_index[alignment.fate == fate], minlength=n_inputs)
        for tally, count in zip(tallies, counts, strict=True):
            tally.add_drop(fate.reason, count)
    used = np.bincount(input_index[alignment.kept], minlength=n_inputs)
    swaps = np.bincount(input_index[alignment.swapped], minlength=n_inputs)
    flips = np.bincount(input_index[alignment.strand_flipped], minlength=n_inputs)
    for tally, u, s, f in zip(tallies, used, swaps, flips, strict=True):
        tally.rows_used += int(u)
        tally.allele_swaps += int(s)
        tally.strand_flips += int(f)


def meta_command(
    files: Sequence[Path],
    out: Path,
    *,
    random_effects: bool,
    genomic_control: bool,
    scheme: str,
    palindromic_maf_band: str,
) -> str:
    """What `federation meta` does: pool allele-frequency tables, or meta-analyse GWAS-SSF.

    Returns the one-line summary the command prints.
    """
    from federation.meta_frequencies import pool_frequency_files, reject_mixed_inputs

    try:
        chosen_scheme = Scheme(scheme)
    except ValueError:
        raise SpecError(
            f"--scheme '{scheme}': unknown; use one of {', '.join(s.value for s in Scheme)}"
        ) from None
    band = parse_maf_band(palindromic_maf_band)
    if not out.name.endswith(".tsv.gz"):
        raise SpecError(f"--out '{out}': must end in .tsv.gz (GWAS-SSF); rename it")
    if reject_mixed_inputs(files):
        pooled = pool_frequency_files(files, out)
        return (
            f"{pooled.out}: {pooled.n_variants} variants pooled over {len(files)} tables, "
            f"{pooled.n_population_specific} with node-specific frequencies"
        )
    options = MetaOptions(random_effects, genomic_control, chosen_scheme, band)
    result = run_meta(files, out, options)
    return f"{result.out}: {result.n_variants} variants from {len(files)} inputs, " + (
        f"lambda_gc {result.lambda_gc:.3f}"
    )
