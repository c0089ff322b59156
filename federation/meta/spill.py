"""Reading GWAS-SSF inputs once, in parallel blocks, into per-bin scratch files.

Each input is decompressed on the calling thread (ISA-L releases the GIL) and cut into text
blocks of READ_BLOCK_BYTES ending at a line end. Blocks are parsed, checked (`inputs`) and
spilled by a shared thread pool, so both cores stay busy whatever the number and size of the
inputs. Usable rows go to Arrow IPC files `<input>/<bin>/<block>.arrow`, one per (position bin,
block): the meta-analysis then reads one bin of every input at a time, in block order, so its
memory is bounded by a bin and its row order (hence every floating-point sum) never depends on
which thread finished first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from federation.errors import SpecError
from federation.files import sha256_file
from federation.meta.inputs import ROW_CHECKS, open_text, parse_block
from federation.stats import meta_analysis
from federation.stats.arrow_numpy import arrow_of, numpy_of

# Position bins: 25 Mb keeps a bin under 1% of the genome (bounded memory) while a
# chromosome needs at most 10 bins (few files).
BIN_SIZE = 25_000_000
BINS_PER_CHROMOSOME = 1000
# Blocks of 8 MB of text (~70k rows); at most BLOCKS_IN_FLIGHT of them are decompressed but
# not yet spilled, which bounds the memory of reading (~150 MB) whatever the input size.
READ_BLOCK_BYTES = 8 << 20
BLOCKS_IN_FLIGHT = 4


@dataclass(frozen=True)
class InputScan:
    """What reading one input found."""

    path: Path
    sha256: str
    rows_read: int
    rows_usable: int
    dropped: dict[str, int]
    lambda_gc: float
    bins: frozenset[int]


@dataclass(frozen=True)
class BlockScan:
    """What one block of an input held."""

    rows_read: int
    drop_counts: np.ndarray  # per ROW_CHECKS reason
    z: np.ndarray  # beta / SE of the usable rows
    bins: frozenset[int]


def bin_of(chromosome: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(chromosome, 25 Mb window) as one sortable int: processing bins in order keeps the
    output sorted by chromosome and position."""
    window = np.minimum(position // BIN_SIZE, BINS_PER_CHROMOSOME - 1)
    return chromosome.astype(np.int64) * BINS_PER_CHROMOSOME + window


def chromosome_of_bin(bin_id: int) -> int:
    return bin_id // BINS_PER_CHROMOSOME


def scan_inputs(
    paths: Sequence[Path],
    headers: Sequence[list[str]],
    spill_dir: Path,
    need_n: bool,
    pool: Executor,
) -> list[InputScan]:
    """Read every input once: count drops, compute λGC, spill usable rows per position bin.

    `headers` are the inputs' column names, already checked (`inputs.check_columns`).

    This thread decompresses the inputs one after another and hands their blocks to `pool`; it
    never waits for an input's last blocks (or its digest and λGC, also computed in the pool)
    before starting on the next, so the pool does not run dry between inputs.
    """
    digests = [pool.submit(sha256_file, path) for path in paths]
    in_flight: deque[Future[BlockScan]] = deque()
    summaries: list[Future[InputScan]] = []
    try:
        for index, path in enumerate(paths):
            parser = BlockParser(headers[index], need_n, spill_dir / str(index))
            blocks = []
            for block_index, text in enumerate(_text_blocks(path)):
                blocks.append(pool.submit(parser.scan, block_index, text))
                in_flight.append(blocks[-1])
                while len(in_flight) >= BLOCKS_IN_FLIGHT:
                    in_flight.popleft().result()
            # Queued after all of this input's blocks, so it only ever waits on running work.
            summaries.append(pool.submit(_summarise, path, blocks, digests[index]))
        return [summary.result() for summary in summaries]
    finally:
        queued: list[Future[Any]] = [*digests, *in_flight, *summaries]
        for future in queued:  # after an error: drop the work not started yet
            future.cancel()


def _summarise(path: Path, blocks: list[Future[BlockScan]], digest: Future[str]) -> InputScan:
    scans = [block.result() for block in blocks]
    counts = sum((b.drop_counts for b in scans), np.zeros(len(ROW_CHECKS), dtype=np.int64))
    z_all = np.concatenate([b.z for b in scans]) if scans else np.zeros(0)
    return InputScan(
        path=path,
        sha256=digest.result(),
        rows_read=sum(b.rows_read for b in scans),
        rows_usable=int(z_all.size),
        dropped={reason.value: int(c) for reason, c in zip(ROW_CHECKS, counts, strict=True) if c},
        lambda_gc=meta_analysis.genomic_control_lambda(z_all),
        bins=frozenset().union(*(b.bins for b in scans)),
    )


def _text_blocks(path: Path) -> Iterator[memoryview]:
    """The file's text after the header, in blocks of READ_BLOCK_BYTES that end at a line end."""
    try:
        yield from _blocks_of(path)
    except (OSError, EOFError) as error:
        raise SpecError(
            f"input '{path}': unreadable after the header ({error}); "
            "the file is truncated or corrupt, give a complete GWAS-SSF .tsv.gz"
        ) from error


def _blocks_of(path: Path) -> Iterator[memoryview]:
    with open_text(path) as handle:
        handle.readline()
        carry = b""
        while data := handle.read(READ_BLOCK_BYTES):
            block = carry + data if carry else data
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            if cut:
                yield memoryview(block)[:cut]  # no copy of the 8 MB block
        if carry.strip():
            yield memoryview(carry + b"\n")


class BlockParser:
    """Parses, checks and spills blocks of one input; safe to call from several threads."""

    def __init__(self, header: list[str], need_n: bool, input_dir: Path) -> None:
        self.header = header
        self.need_n = need_n
        self.input_dir = input_dir

    def scan(self, block_index: int, text: memoryview) -> BlockScan:
        block = parse_block(text, self.header, self.need_n)
        return BlockScan(
            rows_read=block.rows_read,
            drop_counts=block.drop_counts,
            z=block.z,
            bins=frozenset(self._spill(f"{block_index:08d}", block.usable, block.chromosome)),
        )

    def _spill(self, name: str, table: pa.Table, chromosome: np.ndarray) -> set[int]:
        if table.num_rows == 0:
            return set()
        bins = bin_of(chromosome, numpy_of(table.column("position")))
        if np.any(bins[1:] < bins[:-1]):  # GWAS-SSF files are sorted: usually nothing to do
            order = np.argsort(bins, kind="stable")
            bins = bins[order]
            table = table.take(arrow_of(order))
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        stops = np.r_[starts[1:], bins.size]
        for start, stop in zip(starts, stops, strict=True):
            bin_dir = self.input_dir / str(int(bins[start]))
            bin_dir.mkdir(parents=True, exist_ok=True)
            # One file per (bin, block), named so that sorting gives reading order.
            path = bin_dir / f"{name}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table.slice(start, stop - start))
        return {int(b) for b in bins[starts]}


def load_bin(spill_dir: Path, input_index: int, bin_id: int) -> pa.Table | None:
    """One bin of one input, its blocks in reading order; None if the input has no rows there."""
    bin_dir = spill_dir / str(input_index) / str(bin_id)
    if not bin_dir.is_dir():
        return None
    pieces = []
    for path in sorted(bin_dir.iterdir()):
        with pa.OSFile(str(path), "rb") as source:
            pieces.append(pa.ipc.open_stream(source).read_all())
    return pa.concat_tables(pieces)
