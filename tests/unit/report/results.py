"""A small study results directory without Hail: node releases written here, meta outputs by the
real meta-analysis (`run_meta`, `pool_frequency_files`), laid out as the coordinator lays them.

Three nodes x 3 chromosomes; two planted loci (one on chromosome 1 with a neighbour 100 kb away
that must join it, one on chromosome 2) and one allele-frequency difference between nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from federation import sumstats
from federation.meta.frequencies import pool_frequency_files
from federation.meta.runner import MetaOptions, run_meta

STUDY_ID = "unit-study"
NODES = {"ee": 1400, "fi": 1000, "nl": 1200}
VARIANTS_PER_CHROMOSOME = 400
SPACING_BP = 50_000
PLANTED = ((1, 5_000_000), (2, 8_000_000))  # (chromosome, position) of strong effects
NEIGHBOUR = (1, 5_100_000)  # a weaker hit 100 kb from the first lead: same locus
DIFFERENTIATED = (3, 2_000_000)  # its frequency differs between nodes
ANALYSIS = "trait_gwas"


@dataclass(frozen=True)
class UnitStudy:
    directory: Path
    node_files: dict[str, Path]


def variants() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    bases = np.array(["A", "C", "G", "T"])
    for chromosome in (1, 2, 3):
        for index in range(VARIANTS_PER_CHROMOSOME):
            ref, alt = rng.choice(bases, size=2, replace=False)
            if {ref, alt} in ({"A", "T"}, {"C", "G"}):  # keep the fixture free of palindromes
                alt = {"A": "G", "C": "A", "G": "T", "T": "C"}[ref]
            rows.append((chromosome, 1_000_000 + index * SPACING_BP, ref, alt))
    frame = pd.DataFrame(rows, columns=["chromosome", "position", "ref", "alt"])
    frame["frequency"] = rng.uniform(0.05, 0.5, len(frame))
    return frame


def build(directory: Path) -> UnitStudy:
    """Write results/<study>/nodes/<node>/ and results/<study>/meta/ under `directory`."""
    study_dir = directory / STUDY_ID
    layout = variants()
    rng = np.random.default_rng(7)
    node_files, af_files = {}, []
    for index, (node, n) in enumerate(NODES.items()):
        folder = study_dir / "nodes" / node
        folder.mkdir(parents=True)
        frequency = layout["frequency"].to_numpy().copy()
        at = lambda place: (  # noqa: E731
            (layout.chromosome == place[0]) & (layout.position == place[1])
        ).to_numpy()
        frequency[at(DIFFERENTIATED)] = (0.1, 0.5, 0.9)[index]
        se = 1 / np.sqrt(2 * n * frequency * (1 - frequency))
        beta = rng.normal(0, se)
        for place, effect in ((PLANTED[0], 0.35), (PLANTED[1], -0.3), (NEIGHBOUR, 0.2)):
            beta[at(place)] = effect * (0.8 + 0.2 * index)  # some heterogeneity between nodes
        p = 2 * stats.norm.sf(np.abs(beta / se))
        swap = index == 1  # one node reports the other allele as effect allele
        table = pd.DataFrame(
            {
                "chromosome": layout.chromosome.astype(str),
                "base_pair_location": layout.position,
                "effect_allele": layout.ref if swap else layout.alt,
                "other_allele": layout.alt if swap else layout.ref,
                "beta": -beta if swap else beta,
                "standard_error": se,
                "effect_allele_frequency": 1 - frequency if swap else frequency,
                "p_value": p,
                "n": n,
                "variant_id": [
                    f"{c}_{q}_{r}_{a}"
                    for c, q, r, a in zip(
                        layout.chromosome, layout.position, layout.ref, layout.alt, strict=True
                    )
                ],
            }
        )
        node_files[node] = sumstats.write_table(
            table,
            folder / f"{ANALYSIS}.tsv.gz",
            {
                "study_id": STUDY_ID,
                "node_id": node,
                "analysis": ANALYSIS,
                "n": n,
                # What every node sidecar declares, and the meta-analysis requires to agree.
                "genome_assembly": "GRCh38",
                "trait_type": "quantitative",
                "reference_aligned": True,
            },
        )
        an = 2 * n
        ac = np.round(frequency * an).astype(int)
        af = pd.DataFrame(
            {
                "chromosome": layout.chromosome.astype(str),
                "base_pair_location": layout.position,
                "ref": layout.ref,
                "alt": layout.alt,
                "variant_id": [
                    f"{c}:{q}" for c, q in zip(layout.chromosome, layout.position, strict=True)
                ],
                "allele_count": ac,
                "allele_number": an,
                "allele_frequency": ac / an,
                "n_samples": n,
                "node_id": node,
            }
        )
        af_files.append(sumstats.write_table(af, folder / "allele_frequencies.tsv.gz", {"n": n}))
        (folder / "qc_metrics.json").write_text(
            json.dumps(
                {
                    "study_id": STUDY_ID,
                    "node_id": node,
                    "counts": {"samples_passed": n, "variants_input": len(layout)},
                    "software_versions": {"federation": "0.1.0", "hail": "0.2.139"},
                }
            )
        )
    meta = study_dir / "meta"
    run_meta(list(node_files.values()), meta / f"{ANALYSIS}.tsv.gz", MetaOptions())
    pool_frequency_files(af_files, meta / "allele_frequencies.tsv.gz")
    return UnitStudy(study_dir, node_files)
