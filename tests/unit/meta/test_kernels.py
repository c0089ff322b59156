"""The C++ text kernels (`federation/meta/kernels/`) against plain-Python statements of their rules.

`parse_block` is held to a row-by-row reference of the checks documented in `federation.meta.inputs`;
`format_rows` to Python's own correctly rounded `%.9e` and, for the layout, to Arrow's
float-to-text cast, which wrote these files before the kernel did.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from federation import _tsv
from federation.meta.format import p_column, round_significant
from federation.meta.inputs import (
    CHROMOSOME_CODES,
    KERNEL_COLUMNS,
    NA_VALUES,
    ROW_CHECKS,
    DropReason,
    parse_block,
)
from federation.sumstats import format_p_value

# ---------------------------------------------------------------------------------------
# Reading: a plain-Python version of every row rule
# ---------------------------------------------------------------------------------------


def reference_number(text: str) -> float:
    if text in NA_VALUES:
        return math.nan
    text = text.strip(" \t\r\v\f")
    text = text[1:] if text.startswith("+") else text
    if not text or "_" in text or text[0] == "+":  # Python's float() takes 1_000; we do not
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def reference_chromosome(text: str) -> int:
    name = text.strip().upper()
    return CHROMOSOME_CODES.get(name[3:] if name.startswith("CHR") else name, 0)


def is_nucleotides(allele: str) -> bool:
    return bool(allele) and set(allele.upper()) <= set("ACGT")


def reference_row(row: dict[str, str], need_n: bool) -> tuple[DropReason | None, tuple]:
    """(first failing check or None, the usable row's values)."""
    value = {c: reference_number(row.get(c, "NA")) for c in KERNEL_COLUMNS[4:9]}
    position = reference_number(row["base_pair_location"])
    effect, other = row["effect_allele"], row["other_allele"]
    beta, se, n = value["beta"], value["standard_error"], value["n"]
    frequency, p = value["effect_allele_frequency"], value["p_value"]
    checks = [
        row["chromosome"] in NA_VALUES
        or math.isnan(position)
        or effect in NA_VALUES
        or other in NA_VALUES
        or math.isnan(beta),
        reference_chromosome(row["chromosome"]) == 0,
        not math.isfinite(position) or position < 1 or position != math.floor(position),
        not (is_nucleotides(effect) and is_nucleotides(other) and effect.upper() != other.upper()),
        not math.isfinite(beta),
        math.isnan(se),
        math.isinf(se),
        se <= 0,
        p < 0 or p > 1,
        frequency < 0 or frequency > 1,
        n < 0 or math.isinf(n),
        need_n and math.isnan(n),
    ]
    for reason, failed in zip(ROW_CHECKS, checks, strict=True):
        if failed:
            return reason, ()
    identifier = row.get("variant_id", "NA")
    names_other_last = identifier not in NA_VALUES and (
        re.sub(r"^.*[:_]", "", identifier.upper(), flags=re.DOTALL) == other.upper()
    )
    values = (int(position), effect.upper(), other.upper(), beta, se, frequency, n)
    return None, (*values, not names_other_last, reference_chromosome(row["chromosome"]))


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["x", "NA", "", ".", "1e400", "-1e400", "1e-400", "+0.5", " 2.5 ", "1_0"]),
    st.sampled_from(["inf", "-Infinity", "nan", "0", "-0", "1e", "--1", "0x10", "1.", ".5"]),
)
FRACTIONS = st.one_of(st.floats(-0.5, 1.5).map(repr), st.sampled_from(["NA", "2", "-1e-9", "1"]))
ALLELES = st.sampled_from(["A", "c", "G", "t", "AC", "acgT", "N", "", "NA", "A ", "-", "TTTTG"])
ID_ALPHABET = st.sampled_from(list("ACGTacgtN:_r0123"))
FIELDS = {
    "chromosome": st.sampled_from(
        ["1", "22", "chr5", "CHRX", "x", "MT", "m", "0", "26", "01", " 3 ", "NA", "", "chrom1"]
    ),
    "base_pair_location": st.sampled_from(
        ["1", "10177", "0", "-5", "1.5", "12.0", "1e3", "NA", "abc", "inf", "+7", " 42 "]
    ),
    "effect_allele": ALLELES,
    "other_allele": ALLELES,
    "beta": NUMBERS,
    "standard_error": st.one_of(NUMBERS, st.floats(0.01, 10).map(repr)),
    "effect_allele_frequency": FRACTIONS,
    "p_value": FRACTIONS,
    "n": st.sampled_from(["1000", "-1", "inf", "NA", "12.5", "0"]),
    "variant_id": st.one_of(
        st.text(ID_ALPHABET, max_size=12),
        st.just("NA"),
        st.builds("1:5:{}:{}".format, ALLELES, ALLELES),
        st.builds("1_5_{}_{}".format, ALLELES, ALLELES),
    ),
}
# Values that pass every check, so that half the fields of a row are good ones and usable
# rows are common.
GOOD = {
    "chromosome": st.sampled_from(["1", "7", "X", "chr2"]),
    "base_pair_location": st.integers(1, 10**9).map(str),
    "effect_allele": st.sampled_from(["A", "C", "g", "T", "AT"]),
    "other_allele": st.sampled_from(["A", "c", "G", "T", "ACG"]),
    "beta": st.floats(-5, 5).map(repr),
    "standard_error": st.floats(0.001, 5).map(repr),
    "effect_allele_frequency": st.floats(0, 1).map(repr),
    "p_value": st.floats(0, 1).map(repr),
    "n": st.integers(1, 10**6).map(str),
}


# A usable row whose ID ends in its other allele (so alt_is_effect is False).
ONE_ROW = ["1", "5", "A", "G", "0.1", "0.2", "0.5", "0.3", "9", "1:5:A:g"]


@st.composite
def blocks(draw: st.DrawFn) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """(header, well-formed rows, lines of text incl. malformed rows, blanks and CRLF)."""
    optional = draw(st.lists(st.sampled_from(KERNEL_COLUMNS[6:]), unique=True))
    extra = draw(st.lists(st.sampled_from(["rsid", "info"]), unique=True))
    header = draw(st.permutations([*KERNEL_COLUMNS[:6], *optional, *extra]))
    rows, lines = [], []
    for _ in range(draw(st.integers(0, 25))):
        row = {c: draw(st.one_of(GOOD[c], FIELDS[c])) if c in GOOD else "x" for c in header}
        if "variant_id" in header:
            row["variant_id"] = draw(FIELDS["variant_id"])
        fields = [row[c] for c in header]
        shape = draw(st.sampled_from(["ok"] * 6 + ["short", "long", "blank", "crlf"]))
        if shape == "short":
            lines.append("\t".join(fields[:-1]))
        elif shape == "long":
            lines.append("\t".join([*fields, "surplus"]))
        elif shape == "blank":
            lines.append("")
        else:
            rows.append(row)
            lines.append("\t".join(fields) + ("\r" if shape == "crlf" else ""))
    return header, rows, lines


@given(blocks(), st.booleans())
@settings(max_examples=300, deadline=None)
@example(
    (list(KERNEL_COLUMNS), [dict(zip(KERNEL_COLUMNS, ONE_ROW, strict=True))], ["\t".join(ONE_ROW)]),
    False,
)
def test_parse_block_follows_the_row_rules(block, need_n: bool) -> None:
    header, rows, lines = block
    text = ("\n".join(lines) + "\n").encode() if lines else b""
    parsed = parse_block(text, header, need_n)

    expected = [reference_row(row, need_n) for row in rows]
    counts = {reason: 0 for reason in ROW_CHECKS}
    for reason, _ in expected:
        if reason is not None:
            counts[reason] += 1
    malformed = len([line for line in lines if line]) - len(rows)
    counts[DropReason.MISSING_VALUE] += malformed
    assert parsed.rows_read == len(rows) + malformed
    assert dict(zip(ROW_CHECKS, parsed.drop_counts.tolist(), strict=True)) == counts

    usable = [values for reason, values in expected if reason is None]
    note(f"{len(usable)} usable rows of {len(rows)}")
    table = parsed.usable.to_pylist()
    assert len(table) == len(usable) == len(parsed.chromosome)
    for got, chromosome, want in zip(table, parsed.chromosome.tolist(), usable, strict=True):
        got_values = (
            got["position"],
            got["effect_allele"],
            got["other_allele"],
            got["beta"],
            got["se"],
            got["frequency"],
            got["n"],
            got["alt_is_effect"],
            chromosome,
        )
        assert _same(got_values, want), (got_values, want)


def _same(a: tuple, b: tuple) -> bool:
    def equal(x: object, y: object) -> bool:
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        return x == y and type(x) is type(y)

    return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))


def test_parse_block_handles_a_last_line_without_newline_and_an_empty_block() -> None:
    header = list(KERNEL_COLUMNS[:6])
    parsed = parse_block(b"1\t5\tA\tG\t0.5\t0.1", header, False)
    assert parsed.rows_read == 1 and parsed.usable.num_rows == 1
    assert parse_block(b"", header, False).rows_read == 0


def test_parse_block_rejects_a_column_past_the_header() -> None:
    with pytest.raises(ValueError, match="past n_fields"):
        _tsv.parse_block(b"", 3, [0, 1, 2, 3, 4, 5, -1, -1, -1, -1], False)


# ---------------------------------------------------------------------------------------
# Writing: numbers
# ---------------------------------------------------------------------------------------


def reference_significant(x: float) -> str:
    """10 significant digits, correctly rounded (Python's %.9e), in Arrow's layout."""
    if not math.isfinite(x):
        return "NA"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0"
    mantissa, exponent_text = f"{abs(x):.9e}".split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    exponent = int(exponent_text)
    if -6 <= exponent < 10:
        if exponent < 0:
            return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
        whole = digits[: exponent + 1].ljust(exponent + 1, "0")
        fraction = digits[exponent + 1 :]
        return sign + whole + (f".{fraction}" if fraction else "")
    rest = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{rest}e{'-' if exponent < 0 else '+'}{abs(exponent)}"


def format_column(kind: str, *arrays: object) -> list[str]:
    first = np.asarray(arrays[0])
    specs = [(kind, *(np.ascontiguousarray(a, dtype=first.dtype) for a in arrays))]
    return _tsv.format_rows(len(first), specs).decode().splitlines()


@given(st.lists(st.floats(), min_size=1, max_size=50))
@settings(max_examples=300, deadline=None)
@example([0.0, -0.0, 1e-6, 9.99999999949e-7, 9999999999.5, 1e10, 123456789012.0, 5e-324])
@example([2.906150071500000, 1.0000000005, 0.30000000000000004, 1.7976931348623157e308])
def test_floats_are_rounded_to_ten_digits_exactly(values: list[float]) -> None:
    assert format_column("significant", values) == [reference_significant(x) for x in values]


@given(st.integers(10**9, 10**10 - 1), st.integers(-330, 300))
@settings(max_examples=300, deadline=None)
def test_decimal_ties_round_like_the_exact_value(digits: int, exponent: int) -> None:
    """x = d.ddddddddd5 × 10^k: which way it rounds depends on the double's exact value,
    the case where scaling by a power of ten and rounding can go wrong."""
    x = float(f"{digits}5e{exponent}")
    assert format_column("significant", [x, -x]) == [
        reference_significant(x),
        reference_significant(-x),
    ]


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
@settings(max_examples=300, deadline=None)
@example([2.9061500715, 1.0000000005, 7.744779088000000e-19, 9.9999999995e-5, 5e-324, 1e300])
def test_floats_kept_as_numbers_are_rounded_the_same_way(values: list[float]) -> None:
    """round_significant (allele-frequency tables keep numbers) gives the double nearest the
    correctly rounded 10-digit decimal, as the text kernel writes it."""
    rounded = round_significant(np.array(values))
    assert rounded.tolist() == [float(f"{x:.9e}") for x in values]


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_layout_is_arrows_float_to_text_cast(values: list[float]) -> None:
    """On values that already have at most 10 digits, Arrow's cast prints the same text."""
    short = [float(f"{x:.9e}") for x in values]
    # Leaving out 1.7976931348e308, which rounds up past the range, and subnormals, whose
    # shortest form has fewer digits than their 10-digit rounding (5e-324 is 4.940656458e-324).
    short = [x for x in short if math.isfinite(x) and (x == 0 or abs(x) >= sys.float_info.min)]
    arrow = pc.cast(pa.array(short, type=pa.float64()), pa.string()).to_pylist()
    assert format_column("significant", short) == arrow


@given(st.lists(st.floats(), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
@example([0.5, 1.5, 2.5, -2.5, 9.2e18, 70568.0])
def test_whole_numbers_round_half_to_even(values: list[float]) -> None:
    expected = [str(round(x)) if math.isfinite(x) and abs(x) < 9.0e18 else "NA" for x in values]
    assert format_column("integer", values) == expected


@given(st.lists(st.floats(-2000.0, 0.0), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
@example([0.0, -1e-12, -690.0, -691.0, -700.0, -1500.0, float("-inf"), float("nan")])
def test_p_values_from_log_keep_their_tail(log_p: list[float]) -> None:
    ln_p = np.array(log_p)
    p, nlp = np.exp(ln_p), -ln_p / math.log(10)
    tail = np.isfinite(nlp) & (nlp >= 300)
    expected = [reference_significant(x) for x in p]
    for i, text in zip(np.flatnonzero(tail), format_p_value(p[tail], nlp[tail]), strict=True):
        expected[i] = text
    assert format_column("p_value", p, nlp) == expected
    assert p_column(ln_p) == expected
    assert all(text != "0" for text, in_tail in zip(expected, tail, strict=True) if in_tail)


# ---------------------------------------------------------------------------------------
# Writing: rows
# ---------------------------------------------------------------------------------------


def test_rows_join_and_copy_columns_written_before() -> None:
    alleles = pa.array(["A", "CT", "G"])
    _, offsets, data = alleles.buffers()
    direction = np.frombuffer(b"+-?0", dtype=np.uint8).reshape(2, 2)
    specs = [
        ("constant", b"7"),
        ("int64", np.array([101, 2_000_000_000_000], dtype=np.int64)),
        ("coded_text", np.array([1, 0], dtype=np.int64), offsets, data),
        ("coded_text", np.array([2, 2], dtype=np.int64), offsets, data),
        ("join", (0, 1, 3, 2), b"_"),
        ("fixed_width", direction, 2),
        ("significant", np.array([0.25, np.nan])),
        ("join", (6,), b""),
    ]
    assert _tsv.format_rows(2, specs).decode().splitlines() == [
        "7\t101\tCT\tG\t7_101_G_CT\t+-\t0.25\t0.25",
        "7\t2000000000000\tA\tG\t7_2000000000000_G_A\t?0\tNA\tNA",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (("significant", np.zeros(1)), "fewer than 2 rows"),
        (("join", (0,), b""), "join of a later column"),
        (("coded_text", np.array([0, 5]), np.array([0, 1], np.int32), b"A"), "out of range"),
        (("bogus", np.zeros(2)), "unknown column spec 'bogus'"),
    ],
)
def test_bad_column_specs_are_refused(spec: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _tsv.format_rows(2, [spec])


def test_an_unbuilt_checkout_says_how_to_build_the_kernels() -> None:
    script = (
        "import sys\n"
        "class Unbuilt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'federation._tsv':\n"
        "            raise ImportError('no compiled module')\n"
        "sys.meta_path.insert(0, Unbuilt())\n"
        "import federation\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode != 0
    assert "is not built in this checkout; run `make bootstrap`" in run.stderr.splitlines()[-1]
