"""Planted relatives are found and removed, and removing them brings λGC back to ~1.

From the 'nl' node of the shared synthetic federation (unrelated samples) this test builds a
cohort a biobank would have: 200 samples enrolled twice (same genotypes, same phenotypes,
new IDs) and 50 children of two cohort members (one allele from each parent, per variant).
The node pipeline runs twice on it, with and without the kinship step: with it, exactly one
of each duplicate pair and each child go (a maximal independent set: 250 samples) and the
null variants' λGC is ~1; without it, the duplicates inflate it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import node_pipeline as anchor
from federation.analyses.relatedness import PLINK_BED_MAGIC
from federation.sandbox.synth import SynthResult
from federation.stats.kinship import bed_codes, kinship_matrix
from tests.integration.node_runs import NodeRun, lambda_gc, run_node

pytestmark = [pytest.mark.integration]

N_DUPLICATES, N_CHILDREN = 200, 50
LAMBDA_RANGE = (0.9, 1.1)
MIN_INFLATED_LAMBDA = 1.15  # 200 duplicated of 1,000: about (1000 + 3*200) / 1200 = 1.33


def _bed_codes(prefix: Path, n_samples: int) -> np.ndarray:
    """(variants, samples) 2-bit .bed codes: 0 hom A1, 1 missing, 2 het, 3 hom A2."""
    raw = np.fromfile(f"{prefix}.bed", dtype=np.uint8)
    assert raw[:3].tobytes() == PLINK_BED_MAGIC, "not a variant-major PLINK 1 .bed"
    return bed_codes(raw[3:].reshape(-1, (n_samples + 3) // 4), n_samples)


def _write_bed(prefix: Path, codes: np.ndarray) -> None:
    n_variants, n_samples = codes.shape
    padded = np.zeros((n_variants, -(-n_samples // 4) * 4), dtype=np.uint8)
    padded[:, :n_samples] = codes
    quads = padded.reshape(n_variants, -1, 4)
    packed = quads[:, :, 0] | quads[:, :, 1] << 2 | quads[:, :, 2] << 4 | quads[:, :, 3] << 6
    Path(f"{prefix}.bed").write_bytes(bytes([0x6C, 0x1B, 0x01]) + packed.astype(np.uint8).tobytes())


def _child(mother: np.ndarray, father: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Codes of a child: per variant one A1-or-A2 allele from each parent (Mendel)."""
    copies = {0: 2, 2: 1, 3: 0}  # A1 copies per code (no missing calls in this cohort)

    def transmitted(parent: np.ndarray) -> np.ndarray:
        a1 = np.vectorize(copies.get)(parent)
        return np.where(a1 == 1, rng.random(parent.shape) < 0.5, a1 == 2).astype(int)

    a1 = transmitted(mother) + transmitted(father)
    return np.select([a1 == 2, a1 == 1], [0, 2], 3).astype(np.uint8)


def _related_cohort(source: Path, phenotypes: Path, out: Path) -> dict[str, list[list[str]]]:
    """Write the cohort with planted relatives under `out`; return the planted pairs."""
    # As text, "NA" included: the .fam's phenotype column must be written back as it was read.
    fam = pd.read_csv(f"{source}.fam", sep=r"\s+", header=None, dtype=str, keep_default_na=False)
    table = pd.read_csv(phenotypes, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    codes = _bed_codes(source, len(fam))
    rng = np.random.default_rng(2016)
    chosen = rng.permutation(len(fam))
    twins = chosen[:N_DUPLICATES]
    parents = chosen[N_DUPLICATES : N_DUPLICATES + 2 * N_CHILDREN].reshape(-1, 2)
    ids = list(fam[1])
    new_ids, new_codes, new_rows = [], [], []
    pairs: dict[str, list[list[str]]] = {"duplicate": [], "parent_child": []}
    for index in twins:
        twin = f"{ids[index]}_again"
        new_ids.append(twin)
        new_codes.append(codes[:, index])
        new_rows.append(table.loc[ids[index]].rename(twin))
        pairs["duplicate"].append([ids[index], twin])
    for number, (mother, father) in enumerate(parents):
        child = f"CHILD{number:03d}"
        new_ids.append(child)
        new_codes.append(_child(codes[:, mother], codes[:, father], rng))
        row = table.sample(1, random_state=number).iloc[0].rename(child)
        new_rows.append(row)
        pairs["parent_child"] += [[ids[mother], child], [ids[father], child]]
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_bed(out, np.column_stack([codes, *new_codes]))
    Path(f"{out}.bim").write_bytes(Path(f"{source}.bim").read_bytes())
    extra = pd.DataFrame({0: new_ids, 1: new_ids, 2: "0", 3: "0", 4: "0", 5: "-9"})
    pd.concat([fam, extra]).to_csv(f"{out}.fam", sep=" ", header=False, index=False)
    full = pd.concat([table, pd.DataFrame(new_rows)])
    full.rename_axis("sample_id").reset_index().to_csv(
        out.parent / "phenotypes.tsv", sep="\t", index=False
    )
    return pairs


@pytest.fixture(scope="module")
def related_cohort(
    synthetic_federation: SynthResult, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, list[list[str]]]]:
    """The PLINK prefix of the cohort with planted relatives, and the planted pairs."""
    cohort = synthetic_federation.nodes[2]
    prefix = tmp_path_factory.mktemp("related") / "cohort" / "genotypes"
    return prefix, _related_cohort(cohort.plink_prefix, cohort.phenotypes, prefix)


@pytest.fixture(scope="module")
def related(
    synthetic_federation: SynthResult,
    related_cohort: tuple[Path, dict[str, list[list[str]]]],
) -> tuple[dict[str, list[list[str]]], dict[bool, NodeRun], set[str]]:
    cohort = synthetic_federation.nodes[2]
    prefix, pairs = related_cohort
    root = prefix.parent.parent
    runs = {}
    for removal in (True, False):
        study = {
            "study_id": f"related-{removal}".lower(),
            "qc": {"relatedness": removal},
            "analyses": [
                {
                    "id": "quant",
                    "type": "gwas",
                    "trait": anchor.QUANT_TRAIT,
                    "trait_type": "quantitative",
                    "covariates": list(anchor.COVARIATES),
                }
            ],
        }
        genotypes = {"format": "plink", "path": str(prefix)}
        runs[removal] = run_node(
            root / f"removal-{removal}",
            cohort.node_id,
            genotypes,
            prefix.parent / "phenotypes.tsv",
            study,
        )
    truth = json.loads(synthetic_federation.truth.read_text())
    causal = {variant["variant_id"] for variant in truth["causal_variants"]}
    return pairs, runs, causal


def test_every_planted_related_pair_is_broken_by_removing_one_sample_each(related):
    pairs, runs, _ = related
    run = runs[True]
    assert run.exit_code == 0
    kept = set(run.qc_samples())
    for kind, planted in pairs.items():
        together = [pair for pair in planted if set(pair) <= kept]
        assert not together, f"{len(together)} {kind} pairs still both in the cohort"
    counts = run.qc_counts()
    assert counts["relatedness"] == "done"  # enough variants for 1,450 samples
    assert counts["kinship_variants"] >= counts["min_kinship_variants"]
    # A maximal independent set: one of each duplicate pair, and each child (not its parents).
    assert counts["samples_related"] == N_DUPLICATES + N_CHILDREN
    assert counts["relatedness_method"] == "king_robust" and counts["kinship_max"] == 0.0884
    sidecar = run.sidecar("quant")
    assert sidecar["qc"]["samples_related"] == N_DUPLICATES + N_CHILDREN  # rounded to 5: exact
    assert sidecar["qc"]["relatedness_method"] == "king_robust"
    assert runs[False].qc_counts()["samples_related"] == 0
    assert runs[False].qc_counts()["relatedness_method"] == "none"
    assert runs[False].qc_counts()["relatedness"] == "disabled by study"


def test_removing_relatives_brings_lambda_gc_back_to_one(related):
    _, runs, causal = related
    with_removal = lambda_gc(runs[True].table("quant"), causal)
    without = lambda_gc(runs[False].table("quant"), causal)
    print(f"\nλGC of null variants: {without:.3f} with relatives, {with_removal:.3f} without")
    assert without > MIN_INFLATED_LAMBDA
    assert LAMBDA_RANGE[0] <= with_removal <= LAMBDA_RANGE[1]


def test_kinship_on_the_host_is_hails_king_to_the_last_bit_and_finds_the_same_pairs(
    related_cohort, tmp_path
):
    """The node computes KING's products with NumPy up to LOCAL_KINSHIP_MAX_SAMPLES samples and
    with Hail's block matrices above: both must give every pair the same double."""
    import hail as hl

    from federation.analyses.relatedness import (
        host_king_counts,
        king_pairs_above,
        kinship_block_size,
        kinship_variant_budget,
        kinship_variants,
        related_pairs,
    )
    from federation.analyses.session import HailSettings, hail_session
    from federation.settings import SECOND_DEGREE_KINSHIP

    prefix, planted = related_cohort
    with hail_session(HailSettings(tmp_dir=str(tmp_path)), stop_at_end=True):
        mt = hl.import_plink(f"{prefix}.bed", f"{prefix}.bim", f"{prefix}.fam")
        n_samples = mt.count_cols()
        variants, _ = kinship_variants(mt, kinship_variant_budget(0))
        genotypes = variants.select_entries("GT").checkpoint(str(tmp_path / "kinship.mt"))
        sample_ids, counts = host_king_counts(genotypes)
        on_host = kinship_matrix(counts)
        king = hl.king(genotypes.GT, block_size=kinship_block_size(n_samples))
        # hl.king sorts its rows by sample ID and keeps the columns in the cohort's order.
        assert king.s_1.collect() == sorted(sample_ids) and king.s.collect() == sample_ids
        in_hail = hl.linalg.BlockMatrix.from_entry_expr(king.phi).to_numpy()
        by_id = sorted(range(n_samples), key=sample_ids.__getitem__)
        assert np.array_equal(on_host[by_id], in_hail, equal_nan=True)
        host_pairs = related_pairs(genotypes, SECOND_DEGREE_KINSHIP, n_samples).collect()
        hail_pairs = king_pairs_above(king, SECOND_DEGREE_KINSHIP).collect()
    assert (
        host_pairs == hail_pairs
    )  # the same pairs in the same order (the independent set's input)
    found = {(pair.i, pair.j) for pair in host_pairs}
    every_planted = {tuple(sorted(pair)) for pairs in planted.values() for pair in pairs}
    assert every_planted <= found  # duplicates and parent-child pairs, nothing missed
