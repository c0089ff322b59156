"""Properties of the whole meta-analysis that must hold for any input (hypothesis)."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.meta_anchors import UNDECLARED
from federation.meta.bins import combine_rows
from federation.meta.runner import MetaOptions, run_meta
from federation.stats import harmonize

# Allele pairs (ref, alt): the two non-palindromic SNP classes (A/G = C/T and G/T = A/C up to
# strand), both palindromic ones, and indels.
PAIRS = [("A", "G"), ("G", "T"), ("A", "T"), ("C", "G"), ("A", "AT"), ("TCC", "T")]
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
NUMERIC = ["beta", "se", "q", "tau2", "beta_random", "se_random", "frequency", "n_studies"]


@st.composite
def studies(draw: st.DrawFn, min_studies: int = 2) -> list[pd.DataFrame]:
    """Studies of one chromosome: variants (position, pair) present in random subsets, with
    random swaps and strand flips; palindromic frequencies kept clear of 0.5."""
    n_variants = draw(st.integers(1, 12))
    n_studies = draw(st.integers(min_studies, 5))
    variants = [
        (draw(st.integers(1, 6)) * 100, draw(st.sampled_from(PAIRS))) for _ in range(n_variants)
    ]
    variants = list(dict.fromkeys(variants))
    frames = []
    for _ in range(n_studies):
        rows = []
        for position, (ref, alt) in variants:
            if not draw(st.booleans()) and len(frames) > 0:
                continue
            palindromic = len(ref) == 1 and len(alt) == 1 and COMPLEMENT[ref] == alt
            frequency = draw(st.floats(0.05, 0.3)) if palindromic else draw(st.floats(0.01, 0.99))
            beta = draw(st.floats(-2, 2, allow_nan=False, allow_subnormal=False))
            se = draw(st.floats(0.01, 2))
            effect, other, claim = alt, ref, True
            if draw(st.booleans()):  # allele swap
                effect, other, beta, frequency, claim = ref, alt, -beta, 1 - frequency, False
            if len(ref) == 1 and len(alt) == 1 and not palindromic and draw(st.booleans()):
                effect, other = COMPLEMENT[effect], COMPLEMENT[other]  # strand flip
            rows.append((position, effect, other, beta, se, frequency, 1000.0, claim))
        frames.append(
            pd.DataFrame(rows, columns=["position", "ea", "oa", "beta", "se", "f", "n", "claim"])
        )
    return frames


def meta_of(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Align + combine in memory, keyed by (position, effect, other)."""
    rows = pd.concat([f for f in frames if len(f)], ignore_index=True)
    index = np.concatenate([np.full(len(f), i) for i, f in enumerate(frames)]).astype(np.int64)
    alignment = harmonize.align(
        index,
        rows.position.to_numpy(np.int64),
        rows.ea.to_numpy(object),
        rows.oa.to_numpy(object),
        rows.f.to_numpy(float),
        rows.claim.to_numpy(bool),
    )
    kept = alignment.kept
    sign = alignment.sign[kept]
    stats = combine_rows(
        rows.beta.to_numpy()[kept] * sign,
        rows.se.to_numpy()[kept],
        np.where(sign > 0, rows.f.to_numpy()[kept], 1 - rows.f.to_numpy()[kept]),
        rows.n.to_numpy()[kept],
        alignment.group[kept],
        alignment.n_groups,
        MetaOptions(**UNDECLARED),
    )
    return pd.DataFrame(
        {
            "position": alignment.position,
            "effect": alignment.effect_allele,
            "other": alignment.other_allele,
            "beta": stats["beta"],
            "se": stats["standard_error"],
            "q": stats["het_q"],
            "tau2": stats["tau2"],
            "beta_random": stats["beta_random"],
            "se_random": stats["se_random"],
            "frequency": stats["effect_allele_frequency"],
            "n_studies": stats["n_studies"],
        }
    ).set_index(["position", "effect", "other"])


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a.index.equals(b.index)
    np.testing.assert_allclose(
        a[NUMERIC].to_numpy(float), b[NUMERIC].to_numpy(float), rtol=1e-9, atol=1e-12
    )


@settings(max_examples=150, deadline=None)
@given(studies(), st.randoms(use_true_random=False))
def test_permuting_inputs_changes_nothing(frames: list[pd.DataFrame], random) -> None:
    order = list(range(len(frames)))
    random.shuffle(order)
    same(meta_of(frames), meta_of([frames[i] for i in order]))


@settings(max_examples=150, deadline=None)
@given(studies(), st.data())
def test_swapping_all_alleles_of_one_input_changes_nothing(
    frames: list[pd.DataFrame], data
) -> None:
    which = data.draw(st.integers(0, len(frames) - 1))
    swapped = frames[which].copy()
    swapped["ea"], swapped["oa"] = frames[which].oa, frames[which].ea
    swapped["beta"], swapped["f"] = -frames[which].beta, 1 - frames[which].f
    swapped["claim"] = ~frames[which].claim
    changed = [swapped if i == which else f for i, f in enumerate(frames)]
    same(meta_of(frames), meta_of(changed))


@settings(max_examples=150, deadline=None)
@given(studies(min_studies=1))
def test_a_single_input_gives_back_its_own_estimates(frames: list[pd.DataFrame]) -> None:
    study = frames[0].drop_duplicates(["position", "ea", "oa"])
    result = meta_of([study]).reset_index()
    assert len(result) == len(study)
    for row in study.itertuples():
        # The output may be on the other strand or the other allele order: match on either.
        ours = result[(result.position == row.position)]
        pair = {row.ea.upper(), row.oa.upper()}
        comp = {"".join(COMPLEMENT[b] for b in a) for a in pair}
        ours = ours[[{e, o} in (pair, comp) for e, o in zip(ours.effect, ours.other, strict=True)]]
        assert len(ours) == 1
        hit = ours.iloc[0]
        same_effect = hit.effect in (row.ea, "".join(COMPLEMENT[b] for b in row.ea))
        same_effect &= not ({hit.effect, hit.other} == pair and hit.effect != row.ea)
        expected = row.beta if same_effect else -row.beta
        assert np.isclose(hit.beta, expected, rtol=1e-12, atol=0)
        assert np.isclose(hit.se, row.se, rtol=1e-12) and hit.tau2 == 0 and hit.q == 0
        assert np.isclose(hit.beta_random, hit.beta, rtol=1e-12)


def _write(frame: pd.DataFrame, path: Path, se: float | None = None) -> Path:
    table = pd.DataFrame(
        {
            "chromosome": 1,
            "base_pair_location": frame.position,
            "effect_allele": frame.ea,
            "other_allele": frame.oa,
            "beta": frame.beta,
            "standard_error": frame.se if se is None else se,
            "effect_allele_frequency": frame.f,
            "p_value": 0.5,
            "n": 1000,
            "variant_id": [
                f"1:{p}:{o if c else e}:{e if c else o}"
                for p, e, o, c in zip(frame.position, frame.ea, frame.oa, frame.claim, strict=True)
            ],
        }
    )
    with gzip.open(path, "wt") as handle:
        table.to_csv(handle, sep="\t", index=False, float_format="%.17g")
    return path


@settings(max_examples=25, deadline=None)
@given(studies())
def test_adding_an_input_with_infinite_se_changes_nothing(frames: list[pd.DataFrame]) -> None:
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        paths = [_write(f, work / f"s{i}.tsv.gz") for i, f in enumerate(frames)]
        extra = _write(frames[0], work / "inf.tsv.gz", se=float("inf"))
        run_meta(paths, work / "a.tsv.gz", MetaOptions(random_effects=True, **UNDECLARED))
        run_meta([*paths, extra], work / "b.tsv.gz", MetaOptions(random_effects=True, **UNDECLARED))
        a = pd.read_csv(work / "a.tsv.gz", sep="\t")
        b = pd.read_csv(work / "b.tsv.gz", sep="\t")
        assert b.direction.str[-1].eq("?").all()
        b["direction"] = b.direction.str[:-1]
        pd.testing.assert_frame_equal(a, b)
