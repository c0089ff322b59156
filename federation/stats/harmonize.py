"""Allele and strand alignment of summary-statistic rows from several inputs (pure, no I/O).

Rows are matched on position + allele pair, up to order (allele swap) and, for SNPs that are
not palindromic, up to strand (complement). Alleles are compared case-insensitively; indels
and other multi-base alleles match on the exact pair or its swap (no strand flip: complementing
an indel would also move it). A multi-allelic site is one variant per allele pair.

Palindromic SNPs (A/T, C/G) look the same on both strands, so a strand flip cannot be told from
the alleles. Rows of a reference-aligned input (its sidecar declares its alleles REF/ALT of the
declared build, as a VCF's are) know their strand: they are kept as reported and never flipped.
The other rows of a variant reported by more than one input are placed by allele frequency: rows
whose minor allele disagrees with the reference-aligned rows (or, with none of those, with the
majority) are strand flips and are turned round (and counted); rows with MAF inside the
ambiguous band (default 0.4-0.6) or no frequency are dropped and counted, never flipped silently
(the case METAL gets silently wrong). A palindromic SNP seen by one input only needs no
alignment and is kept as reported. When as many inputs put the minor allele on one label as on
the other, the rows are still combined consistently, but which strand the written labels belong
to cannot be known (for A/T and C/G a complement is a swap).

The output orientation of a variant does not depend on the order of the inputs, nor on which
allele an input chose as its effect allele: each row claims a reference/alternate orientation
(from its `variant_id` when that names the alleles, else effect = alternate) and the majority
claim wins (ties broken by a fixed rule). The effect allele written is that alternate allele.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from federation.stats.arrow_numpy import numpy_of

COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}
# Palindromic SNPs with minor allele frequency inside this band are too close to 0.5 for the
# frequency to tell the strand (0.4-0.6 is the common default, e.g. TwoSampleMR uses 0.42).
DEFAULT_PALINDROMIC_MAF_BAND = (0.4, 0.6)
# Count (variant, input) cells with a dense bincount up to this many cells (64 MB of int64);
# beyond it, sort instead.
DENSE_CELL_LIMIT = 8_000_000


class RowFate(IntEnum):
    """What alignment did with a row (small ints so they fit a numpy array)."""

    KEPT = 0
    DUPLICATE_VARIANT = 1
    PALINDROMIC_AMBIGUOUS = 2
    PALINDROMIC_NO_FREQUENCY = 3

    @property
    def reason(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class AllelePairs:
    """Per distinct (effect, other) pair: its canonical form and where the row's alleles sit."""

    key: np.ndarray  # "C1/C2", C1 < C2, on the canonical strand
    effect_is_first: np.ndarray  # the effect allele is C1 (after any complement)
    on_complement: np.ndarray  # the pair is written on the strand opposite the canonical one
    palindromic: np.ndarray
    complementable: np.ndarray  # a SNP that is not palindromic


@dataclass(frozen=True)
class Alignment:
    """Rows mapped onto variants, with the sign that turns each row to the variant's alleles."""

    group: np.ndarray  # per row: variant index (meaningful where fate == KEPT)
    sign: np.ndarray  # per row: +1 or -1 (multiply beta; f -> 1-f where -1)
    fate: np.ndarray  # per row: RowFate
    swapped: np.ndarray  # per kept row: effect allele was the variant's other allele
    strand_flipped: np.ndarray  # per kept row: alleles were on the other strand
    position: np.ndarray  # per variant, sorted by position then allele key
    allele_table: np.ndarray  # distinct allele strings
    effect_code: np.ndarray  # per variant: index into allele_table
    other_code: np.ndarray  # per variant: index into allele_table

    @property
    def effect_allele(self) -> np.ndarray:
        return self.allele_table[self.effect_code]

    @property
    def other_allele(self) -> np.ndarray:
        return self.allele_table[self.other_code]

    @property
    def n_groups(self) -> int:
        return int(self.position.shape[0])

    @property
    def kept(self) -> np.ndarray:
        return self.fate == RowFate.KEPT


def complement(allele: str) -> str:
    return "".join(COMPLEMENT[base] for base in allele)


def describe_pairs(effect: list[str], other: list[str]) -> AllelePairs:
    """Canonical form of each (effect, other) pair; alleles are upper-case A/C/G/T strings."""
    keys, first, flipped, palin, compl = [], [], [], [], []
    for e, o in zip(effect, other, strict=True):
        is_snp = len(e) == 1 and len(o) == 1
        is_palindromic = is_snp and COMPLEMENT[e] == o
        on_complement = False
        if is_snp and not is_palindromic:
            forward, reverse = sorted((e, o)), sorted((COMPLEMENT[e], COMPLEMENT[o]))
            on_complement = reverse < forward
        c1, c2 = sorted((COMPLEMENT[e], COMPLEMENT[o])) if on_complement else sorted((e, o))
        keys.append(f"{c1}/{c2}")
        first.append((COMPLEMENT[e] if on_complement else e) == c1)
        flipped.append(on_complement)
        palin.append(is_palindromic)
        compl.append(is_snp and not is_palindromic)
    return AllelePairs(
        np.array(keys, dtype=object),
        np.array(first, dtype=bool),
        np.array(flipped, dtype=bool),
        np.array(palin, dtype=bool),
        np.array(compl, dtype=bool),
    )


def _codes(alleles: np.ndarray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Row -> code into the distinct upper-cased alleles (Arrow hashing, no Python loop)."""
    array = alleles if isinstance(alleles, pa.Array | pa.ChunkedArray) else pa.array(alleles)
    encoded = pc.dictionary_encode(pc.ascii_upper(array))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return numpy_of(encoded.indices), encoded.dictionary.to_pylist()


def _unique_codes(values: np.ndarray, upper: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) for ints in [0, upper): by table, not by sort,
    when the table is small (allele pairs: a few dozen codes over ~10^5 rows)."""
    if upper > DENSE_CELL_LIMIT:
        uniques, inverse = np.unique(values, return_inverse=True)
        return uniques, inverse.reshape(-1)
    uniques = np.flatnonzero(np.bincount(values, minlength=upper))
    index = np.zeros(upper, dtype=np.intp)
    index[uniques] = np.arange(uniques.size)
    return uniques, index[values]


def _factorize_pairs(
    effect: np.ndarray | pa.Array, other: np.ndarray | pa.Array
) -> tuple[np.ndarray, AllelePairs]:
    """Row -> distinct-pair code, and the description of each distinct pair."""
    e_codes, e_names = _codes(effect)
    o_codes, o_names = _codes(other)
    width = max(len(o_names), 1)
    combined = e_codes.astype(np.int64) * width + o_codes
    pair_values, pair_codes = _unique_codes(combined, max(len(e_names), 1) * width)
    e_up = [e_names[c // width] for c in pair_values]
    o_up = [o_names[c % width] for c in pair_values]
    return pair_codes.reshape(-1), describe_pairs(e_up, o_up)


@dataclass(frozen=True)
class _Groups:
    """Rows grouped into variants: position + canonical allele key."""

    group: np.ndarray  # per row: variant index
    values: np.ndarray  # per variant: position * n_keys + key index (sorted)
    key_uniques: np.ndarray  # the distinct canonical keys "C1/C2"
    pair_codes: np.ndarray  # per row: index into `pairs`
    pairs: AllelePairs

    @property
    def n_groups(self) -> int:
        return int(self.values.shape[0])


def _group_rows(
    position: np.ndarray, effect_allele: np.ndarray | pa.Array, other_allele: np.ndarray | pa.Array
) -> _Groups:
    pair_codes, pairs = _factorize_pairs(effect_allele, other_allele)
    key_uniques, key_of_pair = np.unique(pairs.key.astype(str), return_inverse=True)
    row_key = key_of_pair.reshape(-1)[pair_codes]
    combined = position.astype(np.int64) * max(len(key_uniques), 1) + row_key
    group_values, group = np.unique(combined, return_inverse=True)
    return _Groups(group.reshape(-1), group_values, key_uniques, pair_codes, pairs)


def _duplicate_rows(group: np.ndarray, input_index: np.ndarray, n_groups: int) -> np.ndarray:
    """Rows whose input reports the same variant twice: neither row can be trusted."""
    n_inputs = int(input_index.max()) + 1 if group.size else 0
    cell = group.astype(np.int64) * max(n_inputs, 1) + input_index
    if n_groups * max(n_inputs, 1) <= DENSE_CELL_LIMIT:
        cell_count = np.bincount(cell, minlength=n_groups * max(n_inputs, 1))[cell]
    else:
        _, cell_inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
        cell_count = counts[cell_inverse.reshape(-1)]
    return cell_count > 1


def _place_palindromes(
    groups: _Groups,
    fate: np.ndarray,
    effect_first: np.ndarray,
    effect_frequency: np.ndarray,
    maf_band: tuple[float, float],
    reference_aligned: np.ndarray,
) -> np.ndarray:
    """Drop palindromic rows whose strand the frequency cannot tell (marking `fate`) and return
    which of the rest are strand flips.

    Rows of reference-aligned inputs are never dropped or flipped here. Only the other rows of
    variants reported by more than one input need placing: by the reference-aligned rows whose
    frequency is outside the band when there are any, else by the majority of the placed rows
    (whether C1 is the minor allele). A lone row is kept as reported.
    """
    group, n_groups = groups.group, groups.n_groups
    palindromic = groups.pairs.palindromic[groups.pair_codes]
    reported = np.bincount(group[fate == RowFate.KEPT], minlength=n_groups)
    candidates = palindromic & (fate == RowFate.KEPT) & (reported[group] > 1)
    needs_frequency = candidates & ~reference_aligned
    first_frequency = np.where(effect_first, effect_frequency, 1.0 - effect_frequency)
    known = np.isfinite(first_frequency)
    no_frequency = needs_frequency & ~known
    low, high = maf_band
    in_band = ((first_frequency >= low) & (first_frequency <= high)) | (
        (1.0 - first_frequency >= low) & (1.0 - first_frequency <= high)
    )
    ambiguous = needs_frequency & ~no_frequency & in_band
    fate[no_frequency] = RowFate.PALINDROMIC_NO_FREQUENCY
    fate[ambiguous] = RowFate.PALINDROMIC_AMBIGUOUS
    decides = needs_frequency & (fate == RowFate.KEPT)
    anchors = candidates & reference_aligned & known & ~in_band
    first_is_minor = first_frequency < 0.5

    def votes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.bincount(group[rows & first_is_minor], minlength=n_groups),
            np.bincount(group[rows & ~first_is_minor], minlength=n_groups),
        )

    anchor_minor, anchor_major = votes(anchors)
    placed_minor, placed_major = votes(decides)
    anchored = (anchor_minor + anchor_major) > 0
    group_first_minor = np.where(
        anchored, anchor_minor >= anchor_major, placed_minor >= placed_major
    )
    return decides & (first_is_minor != group_first_minor[group])


def _orientation(
    group: np.ndarray,
    n_groups: int,
    kept: np.ndarray,
    on_complement: np.ndarray,
    effect_first: np.ndarray,
    alt_is_effect: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per variant: (written on the complement strand, alternate allele is C1), by majority of
    the rows' claims; class = 2·strand + (claimed alternate is C1), ties prefer class 0."""
    claimed_alt_first = np.where(alt_is_effect, effect_first, ~effect_first)
    vote_class = 2 * on_complement.astype(np.int64) + claimed_alt_first
    counts = np.bincount(
        group[kept].astype(np.int64) * 4 + vote_class[kept], minlength=4 * n_groups
    ).reshape(n_groups, 4)
    best = np.argmax(counts * 4 + np.array([3, 2, 1, 0]), axis=1)
    return best // 2 == 1, best % 2 == 1


def align(
    input_index: np.ndarray,
    position: np.ndarray,
    effect_allele: np.ndarray | pa.Array,
    other_allele: np.ndarray | pa.Array,
    effect_frequency: np.ndarray,
    alt_is_effect: np.ndarray,
    maf_band: tuple[float, float] = DEFAULT_PALINDROMIC_MAF_BAND,
    reference_aligned: np.ndarray | None = None,
) -> Alignment:
    """Group rows (all from one chromosome) into variants and orient each row.

    `alt_is_effect[i]` is row i's claim that its effect allele is the alternate allele;
    `reference_aligned[i]` that its alleles are REF/ALT of the build (None: no row is).
    Alleles must already be valid A/C/G/T strings with effect != other.
    """
    if reference_aligned is None:
        reference_aligned = np.zeros(position.shape[0], dtype=bool)
    groups = _group_rows(position, effect_allele, other_allele)
    group, n_groups = groups.group, groups.n_groups
    fate = np.zeros(position.shape[0], dtype=np.int8)
    fate[_duplicate_rows(group, input_index, n_groups)] = RowFate.DUPLICATE_VARIANT

    effect_first = groups.pairs.effect_is_first[groups.pair_codes].copy()
    on_complement = groups.pairs.on_complement[groups.pair_codes]
    palindromic_flip = _place_palindromes(
        groups, fate, effect_first, effect_frequency, maf_band, reference_aligned
    )
    effect_first ^= palindromic_flip
    kept = fate == RowFate.KEPT
    out_complement, out_alt_first = _orientation(
        group, n_groups, kept, on_complement, effect_first, alt_is_effect
    )
    sign = np.where(effect_first == out_alt_first[group], 1, -1).astype(np.int8)
    strand_flipped = kept & ((on_complement != out_complement[group]) | palindromic_flip)

    # Drop variants with no kept row and renumber the rest (still sorted by position, key).
    alive = np.bincount(group[kept], minlength=n_groups) > 0
    new_index = np.cumsum(alive) - 1
    # Allele strings per distinct key (few), then codes into them per variant (no per-variant
    # Python): table = [C1 | C2 | comp(C1) | comp(C2)], each block one entry per key.
    halves = [str(k).split("/") for k in groups.key_uniques]
    n_keys = len(halves)
    table = np.array(
        [h[0] for h in halves]
        + [h[1] for h in halves]
        + [complement(h[0]) for h in halves]
        + [complement(h[1]) for h in halves],
        dtype=object,
    )
    key_index = groups.values[alive] % max(n_keys, 1)
    c1 = key_index + np.where(out_complement[alive], 2 * n_keys, 0)
    c2 = c1 + n_keys
    alt_first = out_alt_first[alive]
    return Alignment(
        group=np.where(kept, new_index[group], -1),
        sign=sign,
        fate=fate,
        swapped=kept & (sign < 0),
        strand_flipped=strand_flipped,
        position=groups.values[alive] // max(n_keys, 1),
        allele_table=table,
        effect_code=np.where(alt_first, c1, c2),
        other_code=np.where(alt_first, c2, c1),
    )
