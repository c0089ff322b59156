"""The pure parts of `federation synth`: layout, alleles, causal choice, phenotypes, input checks.

No Hail here; tests/integration/test_synth.py generates real cohorts.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import stats

from federation.cli import main
from federation.errors import SpecError
from federation.sandbox import synth


def rng(stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([7, stream])


# --- chromosome layout and alleles ------------------------------------------------------


@pytest.mark.parametrize("n_variants", [22, 23, 100, 5_000, 10_000, 123_457])
def test_variant_counts_cover_every_autosome_in_proportion_to_length(n_variants):
    counts = synth.autosome_variant_counts(n_variants)
    assert counts.sum() == n_variants
    assert (counts >= 1).all()
    share = np.array(synth.GRCH38_AUTOSOME_LENGTHS) / sum(synth.GRCH38_AUTOSOME_LENGTHS)
    assert np.abs(counts - n_variants * share).max() <= 2


def test_fewer_variants_than_autosomes_go_to_the_longest():
    counts = synth.autosome_variant_counts(5)
    assert counts.sum() == 5
    assert list(np.flatnonzero(counts) + 1) == [1, 2, 3, 4, 5]


def test_layout_positions_increase_inside_each_chromosome():
    layout = synth.variant_layout(5_000, rng())
    assert set(layout.chromosomes.tolist()) == set(range(1, 23))
    assert (np.diff(layout.chromosomes) >= 0).all()
    for number, length in enumerate(synth.GRCH38_AUTOSOME_LENGTHS, start=1):
        positions = layout.positions[layout.chromosomes == number]
        assert (np.diff(positions) > 0).all()
        assert positions.min() > synth.CHROMOSOME_END_MARGIN
        assert positions.max() <= length - synth.CHROMOSOME_END_MARGIN


def test_alleles_are_real_bases_and_ref_differs_from_alt():
    layout = synth.variant_layout(12_000, rng())
    assert set(layout.refs.tolist()) == set(layout.alts.tolist()) == {"A", "C", "G", "T"}
    assert (layout.refs != layout.alts).all()
    pairs = {(r, a) for r, a in zip(layout.refs.tolist(), layout.alts.tolist(), strict=True)}
    assert len(pairs) == 12  # all ordered pairs occur


def test_variant_ids_have_no_chr_prefix():
    layout = synth.variant_layout(30, rng())
    first = layout.variant_ids()[0]
    chromosome, position, ref, alt = first.split(":")
    assert chromosome == "1" and int(position) == layout.positions[0]
    assert (ref, alt) == (layout.refs[0], layout.alts[0])


def test_layout_is_a_function_of_the_seed():
    first, again = synth.variant_layout(500, rng(1)), synth.variant_layout(500, rng(1))
    other = synth.variant_layout(500, rng(2))
    assert first.variant_ids() == again.variant_ids()
    assert first.variant_ids() != other.variant_ids()


def test_palindromic_snps():
    refs, alts = np.array(["A", "T", "C", "G", "A", "C"]), np.array(["T", "A", "G", "C", "G", "T"])
    assert synth.is_palindromic(refs, alts).tolist() == [True] * 4 + [False] * 2


# --- nodes and samples ---------------------------------------------------------------------


def test_single_size_varies_deterministically_and_is_the_smallest():
    sizes = synth.node_sample_sizes(1000, 4)
    assert sizes == (1000, 1400, 1200, 1700)
    assert synth.node_sample_sizes(1000, 4) == sizes


def test_sizes_per_node():
    assert synth.node_sample_sizes([800, 1200], 2) == (800, 1200)
    assert synth.parse_sample_sizes("800,1200") == [800, 1200]
    assert synth.parse_sample_sizes("1000") == 1000


def test_plan_names_nodes_by_country_and_samples_uniquely():
    plan = synth.plan_cohort(3, [12, 15, 10], 100, seed=1)
    assert plan.node_ids == ("fi", "ee", "nl")
    assert plan.sample_ids[:2] == ["fi_00001", "fi_00002"]
    assert plan.sample_ids[12] == "ee_00001"
    assert len(set(plan.sample_ids)) == len(plan.sample_ids) == 37
    assert [plan.sample_ids[r][0][:2] for r in plan.node_rows()] == ["fi", "ee", "nl"]
    assert all(0.01 <= fst <= 0.05 for fst in plan.fst)


def test_low_call_rate_samples_and_variants_only_with_missingness():
    assert synth.low_call_rate_indices((300, 500), 1_000, 0.0, rng()) == ([], [])
    samples, variants = synth.low_call_rate_indices((300, 500), 1_000, 0.01, rng())
    assert sum(i < 300 for i in samples) == 2 and sum(i >= 300 for i in samples) == 2
    assert len(variants) == 5 and all(0 <= i < 1_000 for i in variants)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": 0}, "nodes=0"),
        ({"nodes": 31}, "nodes=31"),
        ({"samples_per_node": 9}, "samples_per_node=9"),
        ({"samples_per_node": [100, 5, 100]}, "samples_per_node=5"),
        ({"samples_per_node": [100, 100]}, "samples_per_node=100,100"),
        ({"variants": 4}, "variants=4"),
        ({"seed": -1}, "seed=-1"),
        ({"missing_rate": 0.5}, "missing_rate=0.5"),
        ({"missing_rate": -0.1}, "missing_rate=-0.1"),
    ],
)
def test_bad_requests_name_the_field_and_the_fix(kwargs, field):
    request = {"nodes": 3, "samples_per_node": 100, "variants": 100, "seed": 1} | kwargs
    with pytest.raises(SpecError) as error:
        synth.plan_cohort(**request)
    message = str(error.value)
    assert message.startswith(field) and "\n" not in message
    assert "; use " in message or "; give " in message  # the fix


def test_unparseable_sizes():
    with pytest.raises(SpecError, match="samples_per_node='a lot'"):
        synth.parse_sample_sizes("a lot")


# --- causal variants and effects --------------------------------------------------------


def frequencies(n_variants: int, n_nodes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    ancestral = rng(3).uniform(0.02, 0.98, n_variants)
    drift = rng(4).normal(0, 0.03, (n_variants, n_nodes))
    return ancestral, np.clip(ancestral[:, None] + drift, 0.0, 1.0)


def test_causal_variants_are_common_non_palindromic_on_distinct_chromosomes():
    layout = synth.variant_layout(3_000, rng())
    ancestral, node_af = frequencies(3_000)
    excluded = np.zeros(3_000, dtype=bool)
    excluded[::2] = True
    chosen = synth.choose_causal_variants(layout, ancestral, node_af, excluded, rng(5))
    assert len(chosen) == synth.N_CAUSAL == len(set(layout.chromosomes[chosen].tolist()))
    assert (np.diff(chosen) > 0).all()
    assert not excluded[chosen].any()
    assert not synth.is_palindromic(layout.refs[chosen], layout.alts[chosen]).any()
    assert ((ancestral[chosen] >= 0.2) & (ancestral[chosen] <= 0.5)).all()
    assert ((node_af[chosen] >= 0.2) & (node_af[chosen] <= 0.8)).all()


def test_tiny_cohorts_still_get_all_causal_variants():
    layout = synth.variant_layout(6, rng())
    ancestral, node_af = np.full(6, 0.9), np.full((6, 2), 0.95)
    chosen = synth.choose_causal_variants(layout, ancestral, node_af, np.zeros(6, bool), rng())
    assert len(chosen) == synth.N_CAUSAL


def test_effects_are_sized_for_power_and_share_their_sign():
    node_af = np.array([[0.2, 0.25], [0.5, 0.5], [0.3, 0.35], [0.45, 0.4], [0.22, 0.3]])
    beta, log_or = synth.causal_effects(node_af, rng())
    assert (np.abs(beta) >= 0.44).all() and (np.abs(beta) <= 0.56).all()
    assert (np.abs(log_or) >= 0.6).all() and (np.abs(log_or) <= 0.8).all()
    assert (np.sign(beta) == np.sign(log_or)).all()
    assert np.abs(beta[1]) < np.abs(beta[0])  # common variants need smaller effects


# --- phenotypes ------------------------------------------------------------------------


def genotypes(n: int, af: np.ndarray, seed: int = 0) -> np.ndarray:
    return rng(10 + seed).binomial(2, af, size=(n, len(af))).astype(float)


def test_phenotype_ranges_and_binary_prevalence():
    dosages = genotypes(5_000, np.array([0.2, 0.3, 0.4, 0.5, 0.35]))
    beta, log_or = np.array([0.5, -0.45, 0.45, 0.45, -0.5]), np.array([0.7, -0.65, 0.65, 0.6, -0.7])
    phenotypes = synth.simulate_phenotypes(dosages, beta, log_or, rng())
    assert phenotypes.age.min() >= 30 and phenotypes.age.max() <= 80
    assert set(phenotypes.sex.tolist()) == {0, 1} and abs(phenotypes.sex.mean() - 0.5) < 0.03
    assert set(phenotypes.binary_trait.tolist()) == {0, 1}
    assert 0.3 <= phenotypes.binary_trait.mean() <= 0.5


def test_quant_trait_recovers_planted_effects_and_covariates():
    dosages = genotypes(20_000, np.array([0.2, 0.3, 0.4, 0.5, 0.35]))
    beta = np.array([0.5, -0.45, 0.45, 0.45, -0.5])
    phenotypes = synth.simulate_phenotypes(dosages, beta, beta * 1.4, rng())
    design = np.column_stack(
        [np.ones(len(dosages)), dosages, phenotypes.age - synth.AGE_CENTRE, phenotypes.sex]
    )
    fitted, *_ = np.linalg.lstsq(design, phenotypes.quant_trait, rcond=None)
    expected = [0.0, *beta, *synth.QUANT_COVARIATE_EFFECTS.values()]
    assert np.allclose(fitted, expected, atol=0.05)


def test_each_causal_variant_reaches_genome_wide_significance_in_a_1000_sample_node():
    """The weakest planted case (AF 0.2 in every node) with the default effect size."""
    af = np.array([0.2, 0.2, 0.5, 0.3, 0.45])
    beta, log_or = synth.causal_effects(np.column_stack([af, af]), rng())
    for seed in range(10):
        dosages = genotypes(1_000, af, seed)
        phenotypes = synth.simulate_phenotypes(dosages, beta, log_or, rng(seed))
        covariates = np.column_stack([np.ones(1_000), phenotypes.age, phenotypes.sex])
        for column in dosages.T:
            design = np.column_stack([covariates, column])
            fitted, residual, *_ = np.linalg.lstsq(design, phenotypes.quant_trait, rcond=None)
            sigma2 = residual[0] / (1_000 - design.shape[1])
            se = np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[-1, -1])
            assert 2 * stats.t.sf(abs(fitted[-1] / se), 1_000 - design.shape[1]) < 5e-8


def test_phenotypes_are_a_function_of_the_seed():
    dosages = genotypes(200, np.array([0.3] * 5))
    beta = np.full(5, 0.5)
    first = synth.simulate_phenotypes(dosages, beta, beta, rng(1))
    again = synth.simulate_phenotypes(dosages, beta, beta, rng(1))
    other = synth.simulate_phenotypes(dosages, beta, beta, rng(2))
    assert np.array_equal(first.quant_trait, again.quant_trait)
    assert not np.array_equal(first.quant_trait, other.quant_trait)


def test_phenotype_table(tmp_path):
    phenotypes = synth.Phenotypes(
        np.array([30, 80]), np.array([0, 1]), np.array([0.5, -1.25]), np.array([1, 0]), 0.1
    )
    path = tmp_path / "phenotypes.tsv"
    synth.write_phenotypes(path, ["fi_00001", "fi_00002"], phenotypes, slice(1, 2))
    assert path.read_text() == (
        "sample_id\tage\tsex\tquant_trait\tbinary_trait\nfi_00002\t80\t1\t-1.250000\t0\n"
    )


# --- output directory ------------------------------------------------------------------


def test_existing_cohort_needs_force(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "truth.json").write_text("{}")
    with pytest.raises(SpecError, match="already contains a cohort; pass --force"):
        synth.staging_directory(out, force=False)
    staging = synth.staging_directory(out, force=True)
    assert staging.parent.parent == tmp_path and staging.parent.name.startswith(".cohort.partial-")


def test_other_directories_are_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SpecError, match="not empty and not a synthetic cohort"):
        synth.staging_directory(tmp_path, force=True)


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpecError, match=r"out_dir '.*': cannot write in .*choose a writable --out"):
        synth.staging_directory(blocker / "cohort", force=False)
    with pytest.raises(SpecError, match="exists and is not a directory"):
        synth.staging_directory(blocker, force=False)


def test_bad_input_writes_nothing_and_loads_no_hail(tmp_path, monkeypatch):
    # An import of the Hail side would now fail with ImportError instead of SpecError.
    monkeypatch.setitem(sys.modules, "federation.analyses.synth_genotypes", None)
    for bad in ({"samples_per_node": 5}, {"variants": 3}):
        with pytest.raises(SpecError):
            synth.synthesize(tmp_path / "cohort", nodes=2, **bad)
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "truth.json").write_text("{}")
    with pytest.raises(SpecError, match="already contains a cohort"):
        synth.synthesize(tmp_path / "cohort", nodes=2)
    assert [path.name for path in tmp_path.iterdir()] == ["cohort"]


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "c"), "--nodes", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: nodes=0:") and "\n" not in error
    assert (
        main(["synth", "--out", str(tmp_path / "c"), "--nodes", "2", "--samples-per-node", "x"])
        == 2
    )


def test_sex_chromosome_layout_puts_variants_in_both_pars_between_them_and_on_y_and_mt():
    from federation.genome import PSEUDOAUTOSOMAL_REGIONS, in_x_nonpar, in_x_par

    layout = synth.sex_chromosome_layout(200, rng())
    names = layout.chromosome_names()
    assert names.count("X") == 200
    assert names.count("Y") == names.count("MT") == synth.Y_AND_MT_VARIANTS
    x = [int(p) for p, n in zip(layout.positions, names, strict=True) if n == "X"]
    par1, par2 = (
        sum(start <= p <= end for p in x) for start, end in PSEUDOAUTOSOMAL_REGIONS["GRCh38"]
    )
    assert par1 == par2 == round(synth.PAR_SHARE * 200)
    assert sum(in_x_nonpar("GRCh38", "X", p) for p in x) == 200 - par1 - par2
    assert all(in_x_par("GRCh38", "X", p) or in_x_nonpar("GRCh38", "X", p) for p in x)
    assert (np.diff(x) > 0).all()
    assert layout.contigs()[-1] == "chrM" and "chrX" in layout.contigs()


def test_an_imputed_plan_gives_every_variant_an_accuracy_and_keeps_causal_ones_autosomal():
    plan = synth.plan_cohort(1, 50, 100, seed=3, x_variants=40, imputed=True)
    assert plan.imputation_accuracy is not None
    assert len(plan.imputation_accuracy) == len(plan.variant_ids) == 100 + 40 + 10
    low, high = synth.IMPUTATION_ACCURACY
    assert ((plan.imputation_accuracy >= low) & (plan.imputation_accuracy <= high)).all()
    assert plan.variant_ids[100].startswith("X:") and plan.variant_ids[-1].startswith("MT:")
    design = plan.genotype_design()
    assert design.contigs[100] == "chrX" and design.contigs[-1] == "chrM"
    # the autosomal layout is the one a plan without sex chromosomes has
    plain = synth.plan_cohort(1, 50, 100, seed=3)
    assert plan.variant_ids[:100] == plain.variant_ids
