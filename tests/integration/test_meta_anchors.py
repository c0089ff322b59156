"""The meta-analysis against GWAMA 2.2.2 and PLINK 1.9 `--meta-analysis`, and where they are wrong.

Inputs are simulated with allele swaps, strand flips (palindromic SNPs included), lower-case
alleles, indels, multi-allelic sites, variants missing from some studies and bad rows. The
simulation knows the truth for every row, so each difference is decided by the truth.

Printed precision: GWAMA writes beta/se with 6 decimals, PLINK beta with 4 decimals and p with
4 significant digits (and no SE at all). Effects are simulated with SEs ~30-130, so 4-6 decimals
are still ~1e-7 relative; each comparison allows half a printed unit plus 1e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from bench import meta_anchors as anchors
from federation.meta.runner import MetaOptions, run_meta
from federation.stats.harmonize import describe_pairs
from tests import gwas_ssf

pytestmark = [
    pytest.mark.integration,
]

RELATIVE = 1e-6


def close(ours: np.ndarray, theirs: np.ndarray, printed_unit: float) -> np.ndarray:
    return np.abs(ours - theirs) <= RELATIVE * np.abs(theirs) + printed_unit / 2 + 1e-12


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("anchors")
    sim = anchors.simulate(root, n_studies=3, n_variants=20_000, seed=11)
    gwama_inputs, plink_inputs = [], []
    for index, study in enumerate(sim.studies):
        gwama_inputs.append(root / f"gwama{index}.txt")
        plink_inputs.append(root / f"plink{index}.txt")
        anchors.write_gwama_input(study, gwama_inputs[-1])
        anchors.write_plink_input(study, plink_inputs[-1])
    run_meta(sim.paths, root / "fixed.tsv.gz", MetaOptions(**anchors.UNDECLARED))
    run_meta(
        sim.paths, root / "random.tsv.gz", MetaOptions(random_effects=True, **anchors.UNDECLARED)
    )
    frames = {
        "fixed": pd.read_csv(root / "fixed.tsv.gz", sep="\t"),
        "random": pd.read_csv(root / "random.tsv.gz", sep="\t"),
        "gwama": anchors.run_gwama(gwama_inputs, root / "gwama_fixed", random_effects=False),
        "gwama_r": anchors.run_gwama(gwama_inputs, root / "gwama_random", random_effects=True),
        "plink": anchors.run_plink(plink_inputs, root / "plink"),
    }
    for name, frame in frames.items():
        if name.startswith("gwama"):
            chrom, pos = _split_ids(frame.rs_number)
            ids, sign = anchors.truth_keys(
                sim.variants, chrom, pos, frame.reference_allele, frame.other_allele
            )
        elif name == "plink":
            ids, sign = anchors.truth_keys(sim.variants, frame.CHR, frame.BP, frame.A1, frame.A2)
        else:
            ids, sign = anchors.truth_keys(
                sim.variants,
                frame.chromosome,
                frame.base_pair_location,
                frame.effect_allele,
                frame.other_allele,
            )
        frame["truth_id"], frame["to_truth"] = ids, sign
        frames[name] = frame.set_index("truth_id")
    return {"sim": sim, "root": root, **frames, "categories": _categories(sim)}


def _split_ids(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    parts = ids.str.split(":")
    return parts.str[0].astype(int), parts.str[1].astype(int)


def _categories(sim: anchors.Simulation) -> pd.DataFrame:
    """Per truth variant: does any study row have a bad value, a strand flip; is it palindromic."""
    rows = pd.concat(sim.studies, ignore_index=True)
    per_variant = rows.groupby("variant_id").agg(
        bad=("truth_bad", lambda s: (s != "").any()),
        bad_p_only=("truth_bad", lambda s: (s == "p_out_of_range").any()),
        flipped=("truth_flipped", "any"),
    )
    pairs = describe_pairs(list(sim.variants.alt), list(sim.variants.ref))
    variants = sim.variants.set_index("variant_id")
    variants["palindromic"] = pairs.palindromic
    joined = variants.join(per_variant)
    for name in ("bad", "bad_p_only", "flipped"):
        joined[name] = joined[name].astype("boolean").fillna(False).astype(bool)
    return joined


def truth_ivw(sim: anchors.Simulation, band: tuple[float, float] = (0.4, 0.6)) -> pd.DataFrame:
    """Fixed effects from the rows turned to the truth's alternate allele by the simulation's
    own record (not by any alignment code), over the rows our rules keep."""
    rows = pd.concat(sim.studies, ignore_index=True)
    rows = rows[rows.truth_bad == ""].copy()
    sign = np.where(rows.truth_swapped, -1.0, 1.0)
    rows["b"] = rows.beta * sign
    rows["f"] = np.where(
        rows.truth_swapped, 1 - rows.effect_allele_frequency, rows.effect_allele_frequency
    )
    palindromic = _categories(sim).palindromic.reindex(rows.variant_id).to_numpy()
    reported = rows.groupby("variant_id").variant_id.transform("size").to_numpy()
    in_band = (rows.f >= band[0]) & (rows.f <= band[1])
    rows = rows[~(palindromic & (reported > 1) & in_band.to_numpy())]
    rows["w"] = 1 / rows.standard_error**2
    rows["wb"] = rows.w * rows.b
    sums = rows.groupby("variant_id")[["w", "wb"]].sum()
    return pd.DataFrame({"beta": sums.wb / sums.w, "se": 1 / np.sqrt(sums.w)})


def test_fixed_effects_agree_with_gwama_where_gwama_is_right(run: dict) -> None:
    cats = run["categories"]
    clean = cats.index[~cats.bad & ~cats.palindromic]
    ours, gwama = run["fixed"].reindex(clean).dropna(subset=["beta"]), run["gwama"]
    gwama = gwama.reindex(ours.index)
    assert len(ours) > 10_000 and gwama.beta.notna().all()
    sign = ours.to_truth * gwama.to_truth
    assert close(ours.beta.to_numpy(), (sign * gwama.beta).to_numpy(), 1e-6).all()
    assert close(ours.standard_error.to_numpy(), gwama.se.to_numpy(), 1e-6).all()
    assert (ours.n_studies == gwama.n_studies).all()
    z = ours.beta / ours.standard_error
    assert close(z.to_numpy(), (sign * gwama.z).to_numpy(), 1e-6).all()
    # GWAMA's own p is good to ~5 digits only; ours is the exact normal tail of the same z.
    exact = -np.log10(2 * stats.norm.sf(np.abs(gwama.z.to_numpy())))
    assert close(ours.neg_log_10_p_value.to_numpy(), exact, 1e-5).all()
    assert close(ours.het_q.to_numpy(), gwama.q_statistic.to_numpy(), 1e-6).all()
    multi = ours.n_studies > 1
    assert close(ours.i2[multi].to_numpy(), gwama.i2[multi].to_numpy(), 1e-6).all()
    frequency = np.where(sign > 0, gwama.eaf, 1 - gwama.eaf)
    assert close(ours.effect_allele_frequency.to_numpy(), frequency, 1e-6).all()
    flipped = ours.index.isin(cats.index[cats.flipped])
    assert flipped.sum() > 500, "strand flips of non-palindromic SNPs are in the comparison"


def test_random_effects_agree_with_gwama_for_two_or_more_studies(run: dict) -> None:
    cats = run["categories"]
    clean = cats.index[~cats.bad & ~cats.palindromic]
    ours = run["random"].reindex(clean).dropna(subset=["beta"])
    ours = ours[ours.n_studies > 1]
    gwama = run["gwama_r"].reindex(ours.index)
    sign = ours.to_truth * gwama.to_truth
    assert (ours.tau2 > 0).sum() > 1000, "heterogeneity is exercised"
    assert close(ours.beta.to_numpy(), (sign * gwama.beta).to_numpy(), 1e-6).all()
    assert close(ours.standard_error.to_numpy(), gwama.se.to_numpy(), 1e-6).all()
    fixed = run["fixed"].reindex(ours.index)
    assert np.array_equal(ours.beta_fixed, fixed.beta), "the fixed model stays, in beta_fixed"
    assert np.array_equal(ours.se_fixed, fixed.standard_error)
    assert "beta_random" not in ours.columns and "beta_random" in fixed.columns


def test_gwama_random_effects_for_one_study_are_rounding_noise_ours_are_exact(run: dict) -> None:
    """k=1: Q is 0 and DerSimonian-Laird's denominator Σw - Σw²/Σw is 0. GWAMA divides its
    rounding residue by that ~0 and inflates the SE; ours keeps tau² = 0, i.e. the study."""
    cats = run["categories"]
    ours = run["random"].reindex(cats.index[~cats.bad & ~cats.palindromic])
    single = ours[ours.n_studies == 1]
    gwama = run["gwama_r"].reindex(single.index)
    assert len(single) > 100
    assert (single.tau2 == 0).all()
    assert np.array_equal(single.se_fixed, single.standard_error)
    truth = truth_ivw(run["sim"]).reindex(single.index)
    assert np.allclose(single.standard_error, truth.se, rtol=1e-9)
    inflated = gwama.se.to_numpy() > single.standard_error.to_numpy() * (1 + 1e-4)
    assert inflated.sum() >= 1, "GWAMA's k=1 random-effects SE is not the study SE"


def test_fixed_and_random_agree_with_plink_where_plink_is_right(run: dict) -> None:
    """PLINK 1.9 neither prints SE nor complements strands (it reports ALLELE_MISMATCH), so
    the comparison excludes flipped rows and checks SE through p (4 significant digits)."""
    cats = run["categories"]
    clean = cats.index[~cats.bad & ~cats.palindromic & ~cats.flipped]
    ours = run["fixed"].reindex(clean).dropna(subset=["beta"])
    random = run["random"].reindex(ours.index)
    plink = run["plink"].reindex(ours.index)
    assert len(ours) > 8000
    sign = ours.to_truth * plink.to_truth
    assert close(ours.beta.to_numpy(), (sign * plink.BETA).to_numpy(), 1e-4).all()
    assert close(random.beta.to_numpy(), (sign * plink["BETA(R)"]).to_numpy(), 1e-4).all()
    assert (ours.n_studies == plink.N).all()
    four_digits = np.abs(ours.p_value - plink.P) <= 5e-4 * plink.P * 1.01
    assert four_digits.all()
    multi = ours.n_studies > 1
    assert close(ours.het_p[multi].to_numpy(), plink.Q[multi].to_numpy(), 1e-4).all()
    assert close(100 * ours.i2[multi].to_numpy(), plink.I[multi].to_numpy(), 1e-2).all()


def test_plink_drops_strand_flips_that_we_align(run: dict) -> None:
    cats = run["categories"]
    problems = pd.read_csv(run["root"] / "plink.prob", sep=r"\s+", header=None)
    mismatched = set(problems[problems[2] == "ALLELE_MISMATCH"][1])
    flipped_ids = set(cats.index[cats.flipped & ~cats.palindromic])
    assert mismatched and mismatched <= flipped_ids | set(cats.index[cats.bad])
    ours = run["fixed"].reindex(sorted(mismatched - set(cats.index[cats.bad])))
    plink = run["plink"].reindex(ours.index)
    assert (ours.n_studies > plink.N).all()
    truth = truth_ivw(run["sim"]).reindex(ours.index)
    assert np.allclose(ours.beta * ours.to_truth, truth.beta, rtol=1e-8)


def test_palindromic_snps_follow_frequency_where_the_tools_take_labels_at_face_value(
    run: dict,
) -> None:
    """A/T and C/G SNPs reported on the other strand look like allele swaps. GWAMA and PLINK
    flip their sign as if they were; we place them by allele frequency (or drop them when MAF is
    in 0.4-0.6), which matches the truth. With as many inputs on each strand the labels of the
    two alleles cannot be told apart (complement = swap), so the comparison is of |beta|: a
    row combined with the wrong sign changes |beta|, a relabelled variant does not."""
    cats = run["categories"]
    tricky = cats.index[cats.palindromic & cats.flipped & ~cats.bad]
    ours = run["fixed"].reindex(tricky).dropna(subset=["beta"])
    ours = ours[ours.n_studies > 1]
    truth = truth_ivw(run["sim"]).reindex(ours.index)
    assert len(ours) > 50
    assert np.allclose(ours.beta.abs(), truth.beta.abs(), rtol=1e-8)
    assert np.allclose(ours.standard_error, truth.se, rtol=1e-8)
    gwama = run["gwama"].reindex(ours.index)
    wrong = ~np.isclose(gwama.beta.abs(), truth.beta.abs(), rtol=1e-5, atol=1e-5)
    assert wrong.mean() > 0.5, "GWAMA combines strand-flipped palindromes with the wrong sign"
    plink = run["plink"].reindex(ours.index)
    assert (~np.isclose(plink.BETA.abs(), truth.beta.abs(), rtol=1e-3)).mean() > 0.5


def test_bad_rows_are_dropped_where_gwama_uses_out_of_range_p(run: dict) -> None:
    """GWAMA reads no p-value column, so a row with p = 1.5 still counts there; we drop it."""
    cats = run["categories"]
    p_only = cats.index[cats.bad_p_only & ~cats.palindromic]
    ours = run["fixed"].reindex(p_only)
    gwama = run["gwama"].reindex(p_only)
    present = gwama.n_studies.notna() & ours.n_studies.notna()
    assert present.sum() > 20
    assert (ours.n_studies[present] < gwama.n_studies[present]).all()


def test_everything_we_keep_matches_the_truth(run: dict) -> None:
    ours = run["fixed"].dropna(subset=["beta"])
    truth = truth_ivw(run["sim"]).reindex(ours.index)
    assert ours.index.notna().all() and len(ours) == len(truth.dropna())
    palindromic = run["categories"].palindromic.reindex(ours.index).to_numpy()
    signed = (ours.beta * ours.to_truth)[~palindromic]
    assert np.allclose(signed, truth.beta[~palindromic], rtol=1e-8, atol=1e-8)
    assert np.allclose(ours.beta.abs(), truth.beta.abs(), rtol=1e-8, atol=1e-8)
    assert np.allclose(ours.standard_error, truth.se, rtol=1e-8)


def test_output_passes_gwas_ssf_validate(run: dict) -> None:
    for name in ("fixed.tsv.gz", "random.tsv.gz"):
        gwas_ssf.validate(run["root"] / name, min_rows=1000)


def test_sidecar_fits_the_gwas_catalog_metadata_model(run: dict) -> None:
    """The sidecar is `<file>-meta.yaml`, where gwas-ssf looks, and the GWAS Catalog's
    metadata model (gwas-sumstats-tools, pydantic) accepts it."""
    sidecar = run["root"] / "fixed.tsv.gz-meta.yaml"
    assert gwas_ssf.metadata_fields(sidecar) == ["GWAS-SSF", "v1.0", "fixed.tsv.gz", "GRCh38"]


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Releases as nodes write them from VCFs: alleles REF/ALT of the build (no strand flips,
    effect = ALT) and a sidecar saying so. Ours and GWAMA on the same files."""
    root = tmp_path_factory.mktemp("aligned")
    sim = anchors.simulate(
        root, n_studies=3, n_variants=20_000, seed=12, flip_rate=0.0, swap_rate=0.0
    )
    gwama_inputs = []
    for index, (study, path) in enumerate(zip(sim.studies, sim.paths, strict=True)):
        sidecar = {"genome_assembly": "GRCh38", "trait_type": "quantitative"}
        (root / f"{path.name}-meta.yaml").write_text(
            yaml.safe_dump({**sidecar, "reference_aligned": True})
        )
        gwama_inputs.append(root / f"gwama{index}.txt")
        anchors.write_gwama_input(study, gwama_inputs[-1])
    run_meta(sim.paths, root / "fixed.tsv.gz", MetaOptions())
    ours = pd.read_csv(root / "fixed.tsv.gz", sep="\t")
    gwama = anchors.run_gwama(gwama_inputs, root / "gwama_fixed", random_effects=False)
    chrom, pos = _split_ids(gwama.rs_number)
    keyed = {}
    for name, frame, keys in (
        (
            "ours",
            ours,
            (ours.chromosome, ours.base_pair_location, ours.effect_allele, ours.other_allele),
        ),
        ("gwama", gwama, (chrom, pos, gwama.reference_allele, gwama.other_allele)),
    ):
        frame["truth_id"], frame["to_truth"] = anchors.truth_keys(sim.variants, *keys)
        keyed[name] = frame.set_index("truth_id")
    return {"sim": sim, "root": root, "categories": _categories(sim), **keyed}


def test_palindromic_snps_of_reference_aligned_inputs_are_kept_and_equal_gwamas(
    aligned: dict,
) -> None:
    """With the strand known, A/T and C/G SNPs at MAF 0.4-0.6 are kept (the other run drops
    them), and every variant, palindromes included, equals GWAMA's fixed effects."""
    cats = aligned["categories"]
    palindromic = cats.index[cats.palindromic & ~cats.bad]
    ours = aligned["ours"].reindex(palindromic).dropna(subset=["beta"])
    frequency = np.where(
        ours.to_truth > 0, ours.effect_allele_frequency, 1 - ours.effect_allele_frequency
    )
    near_half = (ours.n_studies > 1) & (np.abs(frequency - 0.5) <= 0.1)
    assert near_half.sum() > 30, "palindromes near MAF 0.5 seen by several inputs are kept"
    record = yaml.safe_load((aligned["root"] / "fixed.tsv.gz-meta.yaml").read_text())
    assert all(i["reference_aligned"] for i in record["inputs"])
    assert not any("palindromic" in reason for i in record["inputs"] for reason in i["dropped"])
    clean = cats.index[~cats.bad]
    ours = aligned["ours"].reindex(clean).dropna(subset=["beta"])
    gwama = aligned["gwama"].reindex(ours.index)
    assert gwama.beta.notna().all() and ours.index.isin(palindromic).sum() > 500
    sign = ours.to_truth * gwama.to_truth
    assert close(ours.beta.to_numpy(), (sign * gwama.beta).to_numpy(), 1e-6).all()
    assert close(ours.standard_error.to_numpy(), gwama.se.to_numpy(), 1e-6).all()
    assert (ours.n_studies == gwama.n_studies).all()


def test_non_aligned_inputs_still_drop_strand_flipped_palindromes_near_one_half(
    run: dict,
) -> None:
    """METAL's and GWAMA's silent case: in inputs without a reference-aligned sidecar,
    palindromic rows near MAF 0.5 seen by several inputs are dropped (and counted)."""
    record = yaml.safe_load((run["root"] / "fixed.tsv.gz-meta.yaml").read_text())
    dropped = sum(i["dropped"].get("palindromic_ambiguous", 0) for i in record["inputs"])
    assert dropped > 50 and not any(i["reference_aligned"] for i in record["inputs"])
    cats = run["categories"]
    tricky = cats.index[cats.palindromic & cats.flipped & ~cats.bad]
    kept = run["fixed"].reindex(tricky).dropna(subset=["beta"])
    kept = kept[kept.n_studies > 1]
    frequency = np.where(
        kept.to_truth > 0, kept.effect_allele_frequency, 1 - kept.effect_allele_frequency
    )
    assert (np.abs(frequency - 0.5) > 0.05).all(), "what is kept was placed by frequency"
