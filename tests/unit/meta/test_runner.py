"""The file-level meta-analysis: bad rows per reason, output format, sidecar, CLI exits."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special

from bench.meta_anchors import UNDECLARED, UNDECLARED_ARGS
from federation.cli import main
from federation.meta.inputs import DropReason
from federation.meta.runner import MetaOptions, Scheme, run_meta
from federation.sumstats import (
    BGZF_EOF,
    FIXED_EFFECTS_COLUMNS,
    MANDATORY_COLUMNS,
    META_EXTRAS,
    NEG_LOG10_P,
    RANDOM_EFFECTS_COLUMNS,
)

GOOD = {
    "chromosome": "1",
    "base_pair_location": 1000,
    "effect_allele": "G",
    "other_allele": "A",
    "beta": 0.1,
    "standard_error": 0.05,
    "effect_allele_frequency": 0.3,
    "p_value": 0.05,
    "n": 1000,
}


def write(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame([{**GOOD, **row} for row in rows])
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, sep="\t", index=False, na_rep="NA")
    return path


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"p_value": str, "het_p": str})


def sidecar(path: Path) -> dict:
    return yaml.safe_load(Path(f"{path}-meta.yaml").read_text())


BAD_ROWS = {
    DropReason.MISSING_VALUE: {"beta": None},
    DropReason.UNKNOWN_CHROMOSOME: {"chromosome": "chrUn"},
    DropReason.INVALID_POSITION: {"base_pair_location": -5},
    DropReason.INVALID_ALLELE: {"effect_allele": "N"},
    DropReason.BETA_NOT_FINITE: {"beta": np.inf},
    DropReason.SE_MISSING: {"standard_error": None},
    DropReason.SE_INFINITE: {"standard_error": np.inf},
    DropReason.SE_NOT_POSITIVE: {"standard_error": 0.0},
    DropReason.P_OUT_OF_RANGE: {"p_value": 1.5},
    DropReason.FREQUENCY_OUT_OF_RANGE: {"effect_allele_frequency": -0.1},
    DropReason.N_INVALID: {"n": -10},
}


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_each_bad_row_is_dropped_and_counted_not_fatal(tmp_path: Path, reason: DropReason) -> None:
    rows = [{"base_pair_location": 1000 + i} for i in range(5)]
    rows.append({"base_pair_location": 2000, **BAD_ROWS[reason]})
    out = tmp_path / "meta.tsv.gz"
    result = run_meta([write(tmp_path / "a.tsv.gz", rows)], out, MetaOptions(**UNDECLARED))
    assert result.n_variants == 5
    dropped = sidecar(out)["inputs"][0]["dropped"]
    assert dropped == {reason.value: 1}
    assert 2000 not in read(out).base_pair_location.to_list()


def test_negative_se_and_equal_alleles_are_bad_too(tmp_path: Path) -> None:
    rows = [{}, {"base_pair_location": 2, "standard_error": -0.1}]
    rows.append({"base_pair_location": 3, "effect_allele": "A"})
    out = tmp_path / "meta.tsv.gz"
    run_meta([write(tmp_path / "a.tsv.gz", rows)], out, MetaOptions(**UNDECLARED))
    assert sidecar(out)["inputs"][0]["dropped"] == {"invalid_allele": 1, "se_not_positive": 1}


def test_duplicates_and_ambiguous_palindromes_are_counted_per_input(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a.tsv.gz",
        [{}, {"effect_allele": "A", "other_allele": "G", "beta": -0.1}]
        + [{"base_pair_location": 5, "effect_allele": "A", "other_allele": "T"}],
    )
    b = write(
        tmp_path / "b.tsv.gz",
        [
            {},
            {
                "base_pair_location": 5,
                "effect_allele": "A",
                "other_allele": "T",
                "effect_allele_frequency": 0.5,
            },
        ],
    )
    out = tmp_path / "meta.tsv.gz"
    run_meta([a, b], out, MetaOptions(**UNDECLARED))
    inputs = sidecar(out)["inputs"]
    assert inputs[0]["dropped"] == {"duplicate_variant": 2}
    assert inputs[1]["dropped"] == {"palindromic_ambiguous": 1}
    table = read(out)
    assert table.set_index("base_pair_location").n_studies.to_dict() == {5: 1, 1000: 1}


def test_rows_with_wrong_field_count_and_junk_numbers_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "junk.tsv.gz"
    header = "\t".join(GOOD)
    good = "\t".join(str(v) for v in GOOD.values())
    junk = good.replace("\t0.1\t", "\tabc\t", 1)
    with gzip.open(path, "wt") as handle:
        handle.write(f"{header}\n{good}\n1\t7\tG\n{junk.replace('1000', '9', 1)}\n")
    out = tmp_path / "meta.tsv.gz"
    assert run_meta([path], out, MetaOptions(**UNDECLARED)).n_variants == 1
    assert sidecar(out)["inputs"][0]["dropped"] == {"missing_value": 2}


def test_sample_size_scheme_needs_n(tmp_path: Path) -> None:
    rows = [{}, {"base_pair_location": 2, "n": None}]
    out = tmp_path / "meta.tsv.gz"
    run_meta(
        [write(tmp_path / "a.tsv.gz", rows)],
        out,
        MetaOptions(scheme=Scheme.SAMPLE_SIZE, **UNDECLARED),
    )
    assert sidecar(out)["inputs"][0]["dropped"] == {"n_missing": 1}
    table = read(out)
    assert table.stouffer_z.iloc[0] == pytest.approx(0.1 / 0.05)


def test_output_is_gwas_ssf_with_the_meta_extras(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a.tsv.gz",
        [{"chromosome": "X"}, {"chromosome": "chr2", "beta": 2.0, "standard_error": 0.05}],
    )
    b = write(
        tmp_path / "b.tsv.gz",
        [{"chromosome": "23"}, {"chromosome": "2", "beta": 2.1, "standard_error": 0.05}],
    )
    out = tmp_path / "meta.tsv.gz"
    run_meta([a, b], out, MetaOptions(random_effects=True, **UNDECLARED))
    table = read(out)
    assert list(table.columns) == [
        *MANDATORY_COLUMNS,
        "n",
        "variant_id",
        NEG_LOG10_P,
        *META_EXTRAS,
        *FIXED_EFFECTS_COLUMNS,
    ]
    assert table.chromosome.tolist() == [2, 23], "sorted, X written as 23"
    assert table.variant_id.tolist() == ["2_1000_A_G", "23_1000_A_G"]
    assert table.direction.tolist() == ["++", "++"]
    assert table.n.tolist() == [2000, 2000]
    # Random effects: Q = 2, tau² = 0.0025, se = 0.05, z = 41: p = 2Φ(-41) ~ 1.8e-367,
    # written exactly from ln p, not as 0.
    expected = -(np.log(2) + special.log_ndtr(-41.0)) / np.log(10)
    assert float(table[NEG_LOG10_P][0]) == pytest.approx(expected, rel=1e-9)
    mantissa, exponent = table.p_value[0].split("e-")
    assert np.log10(float(mantissa)) - int(exponent) == pytest.approx(-expected, abs=1e-5)
    assert table.tau2[0] == pytest.approx(0.0025)
    meta_ = sidecar(out)
    assert meta_["model"].startswith("random-effects")
    assert [i["sha256"] for i in meta_["inputs"]] == [
        __import__("hashlib").sha256(p.read_bytes()).hexdigest() for p in (a, b)
    ]
    assert "numpy" in meta_["software_versions"]
    assert meta_["software_versions"]["federation._tsv"].startswith("gcc ")


def test_genomic_control_inflates_se_by_sqrt_lambda(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(0, 1.5, 400)
    rows = [{"base_pair_location": 10 + i, "beta": v * 0.05} for i, v in enumerate(z)]
    path = write(tmp_path / "a.tsv.gz", rows)
    plain, corrected = tmp_path / "plain.tsv.gz", tmp_path / "gc.tsv.gz"
    run_meta([path], plain, MetaOptions(**UNDECLARED))
    run_meta([path], corrected, MetaOptions(genomic_control=True, **UNDECLARED))
    lam = sidecar(plain)["inputs"][0]["lambda_gc"]
    assert lam > 1.5
    ratio = read(corrected).standard_error / read(plain).standard_error
    assert np.allclose(ratio, np.sqrt(lam), rtol=1e-5)
    assert sidecar(corrected)["inputs"][0]["se_inflation_applied"] is True


def test_cli_meta_runs_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write(tmp_path / "a.tsv.gz", [{}])
    out = tmp_path / "meta.tsv.gz"
    assert (
        main(
            [
                "meta",
                str(a),
                "--out",
                str(out),
                "--palindromic-maf-band",
                "0.45-0.55",
                *UNDECLARED_ARGS,
            ]
        )
        == 0
    )
    assert "1 variants from 1 inputs" in capsys.readouterr().out
    assert sidecar(out)["palindromic_maf_band"] == [0.45, 0.55]


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("4", "4")])
def test_cli_meta_runs_openblas_on_one_thread_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    if given is None:
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", given)
    a = write(tmp_path / "a.tsv.gz", [{}])
    assert main(["meta", str(a), "--out", str(tmp_path / "meta.tsv.gz"), *UNDECLARED_ARGS]) == 0
    assert os.environ["OPENBLAS_NUM_THREADS"] == expected


@pytest.mark.parametrize(
    ("make_input", "needle"),
    [
        (lambda d: d / "missing.tsv.gz", "file not found"),
        (lambda d: _raw(d / "text.tsv.gz", b"\x1f\x8bnot really gzip"), "cannot be read"),
        (lambda d: write(d / "nocol.tsv.gz", [{}]).parent / "nocol2.tsv.gz", "file not found"),
        (lambda d: _no_se(d / "nose.tsv.gz"), "column 'standard_error' missing"),
        (lambda d: _truncated(d / "cut.tsv.gz"), "truncated or corrupt"),
    ],
)
def test_cli_exits_2_with_one_line_on_bad_input_and_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, make_input, needle: str
) -> None:
    good = write(tmp_path / "good.tsv.gz", [{}])
    out = tmp_path / "meta.tsv.gz"
    out.write_bytes(b"previous result")
    bad = make_input(tmp_path)
    assert main(["meta", str(good), str(bad), "--out", str(out), *UNDECLARED_ARGS]) == 2
    message = capsys.readouterr().err.strip()
    assert needle in message and len(message.splitlines()) == 1 and message.startswith("error:")
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".meta-")) == []
    assert not Path(f"{out}.partial").exists()


@pytest.mark.parametrize(
    "args",
    [["--scheme", "median"], ["--palindromic-maf-band", "0.6-0.4"], ["--out", "x.tsv"]],
)
def test_cli_rejects_bad_options_with_exit_2(tmp_path: Path, args: list[str]) -> None:
    a = write(tmp_path / "a.tsv.gz", [{}])
    base = ["meta", str(a), "--out", str(tmp_path / "m.tsv.gz"), *UNDECLARED_ARGS]
    assert main(base + args) == 2


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(path: Path) -> Path:
    rows = [{"base_pair_location": i, "beta": i / 7} for i in range(1, 20_000)]
    whole = write(path.with_name("whole.tsv.gz"), rows).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _no_se(path: Path) -> Path:
    frame = pd.DataFrame([GOOD]).drop(columns=["standard_error"])
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, sep="\t", index=False)
    return path


def test_allele_frequency_tables_are_pooled_with_a_homogeneity_test(tmp_path: Path) -> None:
    def table(node: str, rows: list[tuple]) -> Path:
        frame = pd.DataFrame(
            rows,
            columns=[
                "chromosome",
                "base_pair_location",
                "ref",
                "alt",
                "allele_count",
                "allele_number",
            ],
        )
        frame["variant_id"] = "x"
        frame["allele_frequency"] = frame.allele_count / frame.allele_number
        frame["n_samples"] = frame.allele_number // 2
        frame["node_id"] = node
        path = tmp_path / f"{node}.tsv.gz"
        with gzip.open(path, "wt") as handle:
            frame.to_csv(handle, sep="\t", index=False)
        return path

    fi = table("fi", [("1", 100, "A", "G", 20, 1000), ("1", 200, "C", "T", 100, 1000)])
    ee = table(
        "ee",
        [
            ("1", 100, "g", "a", 980, 1000),
            ("1", 200, "C", "T", 400, 1000),
            ("1", 300, "A", "N", 1, 2),
        ],
    )
    out = tmp_path / "af.tsv.gz"
    assert main(["meta", str(fi), str(ee), "--out", str(out)]) == 0
    pooled = pd.read_csv(out, sep="\t")
    assert set(pooled.node_id) == {"fi", "ee", "pooled"}
    first = pooled[pooled.base_pair_location == 100].set_index("node_id")
    assert first.loc["ee", "allele_count"] == 20, "swapped ref/alt turned round"
    assert first.loc["pooled", "allele_frequency"] == pytest.approx(40 / 2000)
    assert not first.loc["pooled", "population_specific"]
    second = pooled[pooled.base_pair_location == 200].set_index("node_id")
    assert second.loc["pooled", "allele_frequency"] == pytest.approx(0.25)
    assert second.loc["pooled", "population_specific"]
    assert second.loc["pooled", "fst"] > 0.05
    assert sidecar(out)["dropped_rows"][str(ee)] == 1


def test_slicing_a_dense_bin_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from federation.meta import bins as meta_bins

    rng = np.random.default_rng(9)
    inputs = []
    for index in range(3):
        rows = [
            {"base_pair_location": int(p), "beta": float(b), "effect_allele": e}
            for p, b, e in zip(
                rng.choice(60, 50, replace=False) + 1,
                rng.normal(0, 0.1, 50),
                rng.choice(["G", "C"], 50),
                strict=True,
            )
        ]
        inputs.append(write(tmp_path / f"in{index}.tsv.gz", rows))
    whole, sliced = tmp_path / "whole.tsv.gz", tmp_path / "sliced.tsv.gz"
    run_meta(inputs, whole, MetaOptions(random_effects=True, **UNDECLARED))
    monkeypatch.setattr(meta_bins, "SLICE_ROWS", 7)
    run_meta(inputs, sliced, MetaOptions(random_effects=True, **UNDECLARED))
    assert whole.read_bytes() == sliced.read_bytes()
    assert read(whole).base_pair_location.is_monotonic_increasing


# ------------------------------------------------------------------ declared inputs


def declared(path: Path, rows: list[dict], **sidecar_fields) -> Path:
    """A GWAS-SSF input with a sidecar, as a node releases it (GRCh38, quantitative, aligned)."""
    write(path, rows)
    fields = {
        "genome_assembly": "GRCh38",
        "trait_type": "quantitative",
        "reference_aligned": True,
        **sidecar_fields,
    }
    Path(f"{path}-meta.yaml").write_text(yaml.safe_dump(fields))
    return path


@pytest.mark.parametrize(
    ("field", "first", "second"),
    [("genome_assembly", "GRCh37", "GRCh38"), ("trait_type", "quantitative", "binary")],
)
def test_meta_refuses_inputs_of_mixed_builds_or_trait_types_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture, field: str, first: str, second: str
) -> None:
    a = declared(tmp_path / "a.tsv.gz", [{}], **{field: first})
    b = declared(tmp_path / "b.tsv.gz", [{}], **{field: second})
    out = tmp_path / "meta.tsv.gz"
    assert main(["meta", str(a), str(b), "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and field in message
    assert str(a) in message and str(b) in message and first in message and second in message
    assert not out.exists()


def test_meta_refuses_an_input_without_a_sidecar_unless_build_and_trait_type_are_given(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    a = declared(tmp_path / "a.tsv.gz", [{}])
    bare = write(tmp_path / "bare.tsv.gz", [{"base_pair_location": 2000}])
    out = tmp_path / "meta.tsv.gz"
    assert main(["meta", str(a), str(bare), "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert "bare.tsv.gz-meta.yaml" in message and "--assume-build" in message
    assert main(["meta", str(a), str(bare), "--out", str(out), "--assume-build", "GRCh38"]) == 2
    assert main(["meta", str(a), str(bare), "--out", str(out), *UNDECLARED_ARGS]) == 0
    inputs = sidecar(out)["inputs"]
    assert [(i["sidecar"], i["reference_aligned"]) for i in inputs] == [
        (True, True),
        (False, False),
    ]
    wrong = ["--assume-build", "GRCh37", "--trait-type", "quantitative"]
    assert main(["meta", str(a), str(bare), "--out", str(out), *wrong]) == 2, "GRCh37 vs GRCh38"


def test_the_old_sidecar_name_is_still_read(tmp_path: Path) -> None:
    a = declared(tmp_path / "a.tsv.gz", [{}])
    Path(f"{a}-meta.yaml").rename(Path(f"{a}.yaml"))
    run_meta([a], tmp_path / "meta.tsv.gz", MetaOptions())
    assert sidecar(tmp_path / "meta.tsv.gz")["genome_assembly"] == "GRCh38"


@pytest.mark.parametrize("random_effects", [False, True])
def test_both_models_are_in_their_own_columns_and_no_column_repeats_another(
    tmp_path: Path, random_effects: bool
) -> None:
    rng = np.random.default_rng(3)
    ses = {"a": 0.03, "b": 0.05, "c": 0.08}  # unequal: random and fixed weights differ
    paths = [
        declared(
            tmp_path / f"{k}.tsv.gz",
            [
                {"base_pair_location": 1000 + i, "beta": b, "standard_error": se}
                for i, b in enumerate(rng.normal(0.1, 0.2, 30))
            ],
        )
        for k, se in ses.items()
    ]
    out = tmp_path / "meta.tsv.gz"
    run_meta(paths, out, MetaOptions(random_effects=random_effects))
    table = read(out)
    other = FIXED_EFFECTS_COLUMNS if random_effects else RANDOM_EFFECTS_COLUMNS
    same = RANDOM_EFFECTS_COLUMNS if random_effects else FIXED_EFFECTS_COLUMNS
    assert set(other) <= set(table.columns) and not set(same) & set(table.columns)
    numeric = table.select_dtypes("number")
    for i, left in enumerate(numeric.columns):
        for right in numeric.columns[i + 1 :]:
            assert not numeric[left].equals(numeric[right]), f"{left} repeats {right}"
    # The fixed-effects estimate (inverse variance) is where the sidecar says it is.
    beta = np.array([read_beta(p) for p in paths])
    w = 1 / np.array(list(ses.values()))[:, None] ** 2
    fixed = (w * beta).sum(axis=0) / w.sum(axis=0)
    fixed_column = "beta_fixed" if random_effects else "beta"
    assert np.allclose(table[fixed_column], fixed, rtol=1e-8)
    meta_ = sidecar(out)
    assert meta_["primary_model"].startswith("random" if random_effects else "fixed")
    assert meta_["columns"][meta_["primary_model"]] == ["beta", "standard_error", "p_value"]
    assert meta_["columns"][next(m for m in meta_["columns"] if m != meta_["primary_model"])] == [
        *other
    ]


def read_beta(path: Path) -> np.ndarray:
    return pd.read_csv(path, sep="\t").beta.to_numpy()


def test_meta_output_is_bgzf_with_a_tabix_index(tmp_path: Path) -> None:
    a = declared(
        tmp_path / "a.tsv.gz",
        [{"chromosome": c, "base_pair_location": p} for c in ("1", "2") for p in (10, 20, 30)],
    )
    out = tmp_path / "meta.tsv.gz"
    run_meta([a], out, MetaOptions())
    data = out.read_bytes()
    assert data[:4] == b"\x1f\x8b\x08\x04" and data[12:14] == b"BC", "a BGZF block header"
    assert data.endswith(BGZF_EOF)
    assert Path(f"{out}.tbi").is_file()
    import pysam

    with pysam.TabixFile(str(out)) as tabix:
        rows = [line.split("\t")[:2] for line in tabix.fetch("2", 15, 30)]
    assert rows == [["2", "20"], ["2", "30"]]
    assert sidecar(out)["data_file_md5sum"] == __import__("hashlib").md5(data).hexdigest()


def test_pooled_rows_missing_a_node_are_exactly_the_incomplete_ones(tmp_path: Path) -> None:
    """Three nodes suppress different variants; a pooled row is complete iff all three have it."""
    present = {"fi": {100, 200, 300}, "ee": {100, 200, 400}, "nl": {100, 300, 400, 500}}
    paths = []
    for node, positions in present.items():
        frame = pd.DataFrame(
            {
                "chromosome": "1",
                "base_pair_location": sorted(positions),
                "ref": "A",
                "alt": "G",
                "variant_id": [f"1_{p}_A_G" for p in sorted(positions)],
                "allele_count": 50,
                "allele_number": 1000,
                "allele_frequency": 0.05,
                "n_samples": 500,
                "node_id": node,
            }
        )
        paths.append(tmp_path / f"{node}.tsv.gz")
        with gzip.open(paths[-1], "wt") as handle:
            frame.to_csv(handle, sep="\t", index=False)
    out = tmp_path / "af.tsv.gz"
    assert main(["meta", *map(str, paths), "--out", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    pooled = table[table.node_id == "pooled"].set_index("base_pair_location")
    holders = {p: sum(p in s for s in present.values()) for p in range(100, 600, 100)}
    assert pooled.n_nodes.to_dict() == holders
    assert pooled.allele_number.to_dict() == {p: 1000 * k for p, k in holders.items()}
    assert set(pooled.index[~pooled.complete.astype(bool)]) == {
        p for p, k in holders.items() if k < 3
    }
    assert table[table.node_id != "pooled"].complete.isna().all()
    assert sidecar(out)["n_incomplete"] == 4
