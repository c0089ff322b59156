"""Plain-text FASTA reading and the REF-allele test of the genome-build check.

`Fasta` reads bases at positions of a reference FASTA (with its samtools `.fai` index when
present, else by scanning the file once); `mismatches` counts the REF alleles that differ,
and `build_refusal` words the refusal when too many do. The Hail side that samples the
variants is `analyses.reference`. No download, no FASTA support needed in Hail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from federation.errors import SpecError
from federation.settings import KNOWN_REFERENCE_GENOMES


@dataclass(frozen=True)
class FastaEntry:
    """One sequence of a FASTA file, as a samtools .fai line describes it."""

    length: int
    offset: int  # byte offset of the first base
    line_bases: int
    line_bytes: int


def fasta_index(path: Path) -> dict[str, FastaEntry]:
    """Sequence name -> layout, from `<path>.fai` or, without one, by scanning the file once."""
    fai = Path(f"{path}.fai")
    if fai.is_file():
        entries = {}
        for line in fai.read_text().splitlines():
            name, length, offset, line_bases, line_bytes = line.split("\t")[:5]
            entries[name] = FastaEntry(int(length), int(offset), int(line_bases), int(line_bytes))
        return entries
    return _scan(path)


def _scan(path: Path) -> dict[str, FastaEntry]:
    entries: dict[str, FastaEntry] = {}
    name, length, offset, line_bases, line_bytes = None, 0, 0, 0, 0
    position = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.startswith(b">"):
                if name is not None:
                    entries[name] = FastaEntry(length, offset, line_bases, line_bytes)
                name = line[1:].split()[0].decode()
                length, offset, line_bases, line_bytes = 0, position + len(line), 0, 0
            else:
                bases = len(line.rstrip(b"\r\n"))
                if line_bases == 0:
                    line_bases, line_bytes = bases, len(line)
                length += bases
            position += len(line)
    if name is not None:
        entries[name] = FastaEntry(length, offset, line_bases, line_bytes)
    return entries


class Fasta:
    """Random access to the bases of a plain-text FASTA file."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise SpecError(f"node config 'reference_fasta': '{path}' not found; check the path")
        self.path = path
        self.index = fasta_index(path)

    def contig(self, name: str) -> str | None:
        """The FASTA's name for contig `name` (`1` and `chr1` are the same contig)."""
        for candidate in (name, f"chr{name}", name.removeprefix("chr")):
            if candidate in self.index:
                return candidate
        return None

    def bases(self, contig: str, position: int, length: int) -> str | None:
        """Upper-case bases at 1-based `position`; None outside the sequence."""
        name = self.contig(contig)
        if name is None:
            return None
        entry = self.index[name]
        if position < 1 or position + length - 1 > entry.length:
            return None
        start = position - 1
        line, column = divmod(start, entry.line_bases)
        offset = entry.offset + line * entry.line_bytes + column
        span = length + (length // max(entry.line_bases, 1) + 2) * 2  # room for line breaks
        with self.path.open("rb") as handle:
            handle.seek(offset)
            raw = handle.read(span).replace(b"\n", b"").replace(b"\r", b"")
        return raw[:length].decode().upper()


def mismatches(fasta: Fasta, variants: Iterable[tuple[str, int, str]]) -> tuple[int, int]:
    """(REF alleles that differ from the FASTA or lie outside it, variants checked)."""
    differ = checked = 0
    for contig, position, ref in variants:
        checked += 1
        if fasta.bases(contig, position, len(ref)) != ref.upper():
            differ += 1
    return differ, checked


def build_refusal(
    declared: str, differ: int, checked: int, max_rate: float, fasta: Path
) -> str | None:
    """The one-line refusal when the mismatch rate is above `max_rate` (None: it is not)."""
    if checked == 0 or differ / checked <= max_rate:
        return None
    others = [build for build in KNOWN_REFERENCE_GENOMES if build != declared]
    likely = f"likely {' or '.join(others)}" if others else "another build"
    return (
        f"node config 'reference_genome': REF alleles differ from '{fasta.name}' at {differ} of "
        f"{checked} sampled variants ({differ / checked:.1%} > {max_rate:.1%}); the genotypes are "
        f"not {declared} ({likely}); set reference_genome (and reference_fasta) to their build "
        "or lift them over"
    )
