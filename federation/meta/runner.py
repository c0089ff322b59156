"""The coordinator's meta-analysis over GWAS-SSF files: read, align, combine, write.

`run_meta` streams each input once into position bins (`inputs`, `spill`), then processes the bins
(`bins`: align, combine, format, compress) and writes them in genome order, so memory is
bounded by a bin, not by the genome. Large runs use one worker process per core for the bins:
Python threads would serialise on the interpreter lock. The output is BGZF GWAS-SSF with a tabix index, the meta
extras (n_studies, direction, heterogeneity, the model the primary columns do not hold) and a
YAML sidecar recording the primary model, inputs (SHA-256, build, trait type, whether reference
aligned), rows dropped per reason per input, λGC per input and for the meta-analysis, and
software versions.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federation.errors import MetaAnalysisError, SpecError
from federation.files import atomic_path
from federation.meta.bins import BinCounts, BinJob, BinResult
from federation.meta.format import output_columns
from federation.meta.inputs import (
    InputDeclaration,
    check_columns,
    declare_inputs,
    reject_mixed_inputs,
)
from federation.meta.options import MetaOptions, Scheme, parse_maf_band
from federation.meta.record import HashingSink, InputTally, build_sidecar, write_meta_sidecar
from federation.meta.spill import InputScan, scan_inputs
from federation.stats import meta_analysis, tails
from federation.sumstats import BGZF_EOF, bgzf_blocks, tabix_index
from federation.versions import software_versions

__all__ = ["MetaOptions", "MetaResult", "Scheme", "meta_command", "parse_maf_band", "run_meta"]

CORES = 2  # the machines this runs on have 2 cores (CI and the reference node alike)
# Below this many usable rows the bins are processed in this process: starting workers
# would cost more than it saves.
PARALLEL_MIN_ROWS = 300_000


@dataclass(frozen=True)
class MetaResult:
    out: Path
    sidecar: Path
    n_variants: int
    lambda_gc: float
    metadata: dict[str, Any]


def run_meta(inputs: Sequence[Path], out: Path, options: MetaOptions) -> MetaResult:
    """Meta-analyse GWAS-SSF `inputs` into `out` (BGZF .tsv.gz), its tabix index and its
    `-meta.yaml` sidecar. Inputs must agree on genome build and trait type (`declare_inputs`)."""
    if not inputs:
        raise SpecError("inputs: none given; pass one or more GWAS-SSF .tsv.gz files")
    if not out.name.endswith(".tsv.gz"):
        raise SpecError(f"--out '{out}': must end in .tsv.gz (GWAS-SSF); rename it")
    # Every header and sidecar first: a bad input fails before any work is done.
    headers = [check_columns(path) for path in inputs]
    declarations = declare_inputs(inputs, options.assume_build, options.trait_type)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".meta-", dir=out.parent))
    try:
        need_n = options.scheme is Scheme.SAMPLE_SIZE
        # Inputs are decompressed one after the other and parsed in blocks by a thread per
        # core: ISA-L and pyarrow release the GIL while they work.
        with ThreadPoolExecutor(max_workers=CORES) as pool:
            # Looking up package versions reads many files, and scipy.special takes a while to
            # import: both are done now, so the sidecar and the bins find them ready.
            pool.submit(software_versions)
            pool.submit(tails.special)
            scans = scan_inputs(inputs, headers, scratch, need_n, pool)
        return _combine(scans, declarations, out, options, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _combine(
    scans: list[InputScan],
    declarations: list[InputDeclaration],
    out: Path,
    options: MetaOptions,
    scratch: Path,
) -> MetaResult:
    factors = tuple(
        meta_analysis.genomic_control_se_factor(s.lambda_gc) if options.genomic_control else 1.0
        for s in scans
    )
    aligned = tuple(declaration.reference_aligned for declaration in declarations)
    job = BinJob(scratch, len(scans), factors, options, aligned)
    all_bins = sorted(set().union(*(s.bins for s in scans)))
    parallel = len(all_bins) > 1 and sum(s.rows_usable for s in scans) >= PARALLEL_MIN_ROWS
    counts = BinCounts.zeros(len(scans))
    z_parts: list[np.ndarray] = []
    n_variants = 0
    with atomic_path(out) as partial, open(partial, "wb") as raw:
        sink = HashingSink(raw)
        columns = output_columns(options)
        sink.write(bgzf_blocks(("\t".join(columns) + "\n").encode()))
        for result in _bin_results(job, all_bins, parallel):
            sink.write(result.member)
            counts = counts + result.counts
            z_parts.append(result.z_primary)
            n_variants += result.n_variants
        if n_variants == 0:  # nothing is written over `out`
            raise MetaAnalysisError(
                "meta-analysis: no usable variant in any input; see the drop counts in the "
                "input files' checks (missing columns or all rows invalid)"
            )
        sink.write(BGZF_EOF)
    tabix_index(out)
    tallies = [InputTally(dropped=dict(s.dropped)) for s in scans]
    counts.add_to(tallies)
    metadata = build_sidecar(
        scans,
        declarations,
        tallies,
        options,
        n_variants,
        meta_analysis.genomic_control_lambda(np.concatenate(z_parts)),
    )
    sidecar = write_meta_sidecar(out, metadata, sink)
    return MetaResult(out, sidecar, n_variants, metadata["lambda_gc"], metadata)


def _bin_results(job: BinJob, bins: list[int], parallel: bool) -> Iterator[BinResult]:
    """Each bin's result, in bin order: here, or from one worker process per core.

    Workers are forked: they inherit the imported modules, so they start in milliseconds, and
    they only read the scratch files and return bytes and counts.
    """
    if not parallel:
        yield from map(job, bins)
        return
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=CORES, mp_context=context) as workers:
            yield from workers.map(job, bins)
    except BrokenProcessPool as error:
        raise MetaAnalysisError(
            f"meta-analysis: a worker process died ({error}); the machine may be out of "
            "memory, free some or run fewer inputs at once"
        ) from error


def meta_command(
    files: Sequence[Path],
    out: Path,
    *,
    random_effects: bool,
    genomic_control: bool,
    scheme: str,
    palindromic_maf_band: str,
    assume_build: str | None = None,
    trait_type: str | None = None,
) -> str:
    """What `federation meta` does: pool allele-frequency tables, or meta-analyse GWAS-SSF.

    Returns the one-line summary the command prints.
    """
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
        # Only allele-frequency pooling needs pandas: GWAS runs do not pay for its import.
        from federation.meta.frequencies import pool_frequency_files

        pooled = pool_frequency_files(files, out)
        return (
            f"{pooled.out}: {pooled.n_variants} variants pooled over {len(files)} tables, "
            f"{pooled.n_population_specific} with node-specific frequencies"
        )
    options = MetaOptions(
        random_effects, genomic_control, chosen_scheme, band, assume_build, trait_type
    )
    result = run_meta(files, out, options)
    return f"{result.out}: {result.n_variants} variants from {len(files)} inputs, " + (
        f"lambda_gc {result.lambda_gc:.3f}"
    )
