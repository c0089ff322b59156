"""Canonical disclosive outputs for `federation node selftest`: each case feeds the installed
release gate a private table that must not leave as it is, and says what must happen.

Cases build their inputs from the node's effective policy (built-in defaults tightened by the
node config), so a node with stricter thresholds is tested at its own limits. Every case runs
in a scratch node of its own (work dir, privacy ledger, audit log): the real ones are untouched.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation import sumstats
from federation.errors import DisclosureError
from federation.jsonio import parse_json_strictly
from federation.release.rules import DisclosurePolicy
from federation.release.tables import release_allele_frequencies, release_gwas
from federation.settings import NodeSettings
from federation.spec import StudySpec, study_from_dict

SAMPLE_PREFIX = "SELFTEST-"  # synthetic IDs: no real sample is ever involved


class CaseFailed(AssertionError):
    """A conformance case did not get the behaviour it requires."""


@dataclass(frozen=True)
class Scratch:
    """A throwaway copy of the node: the operator's policy, a private work dir of its own."""

    root: Path
    node: NodeSettings
    policy: DisclosurePolicy

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    def audit_events(self) -> list[dict[str, Any]]:
        return [parse_json_strictly(line) for line in self.audit.read_bytes().splitlines()]

    @property
    def n(self) -> int:
        """A cohort comfortably above every floor, with room for cells of min_cell_size."""
        floor = max(self.policy.min_cohort_gwas, self.policy.min_cohort_af, 100)
        return max(2 * floor, 20 * self.policy.min_cell_size)


def study(
    study_id: str, traits: tuple[str, ...] = ("trait",), binary: bool = False, **disclosure: Any
) -> StudySpec:
    analyses: list[dict[str, Any]] = [{"id": "af", "type": "allele_frequency"}]
    analyses += [
        {
            "id": trait,
            "type": "gwas",
            "trait": trait,
            "covariates": ["age"],
            "trait_type": "binary" if binary else "quantitative",
        }
        for trait in traits
    ]
    return study_from_dict({"study_id": study_id, "analyses": analyses, "disclosure": disclosure})


def gwas_table(n: int, alt_counts: list[int], binary: bool = False) -> pd.DataFrame:
    rows = len(alt_counts)
    frame = pd.DataFrame(
        {
            "chromosome": ["1"] * rows,
            "base_pair_location": [10_000 + 1000 * i for i in range(rows)],
            "ref": ["A"] * rows,
            "alt": ["G"] * rows,
            "gate.n_called": n,
            "gate.alt_allele_count": alt_counts,
            "gate.allele_number": 2 * n,
            "beta": 0.01,
            "standard_error": 0.05,
            "statistic": 0.2,
            "p_value": 0.84,
            "n": n,
            "converged": "true",
        }
    )
    if binary:  # plenty of carriers unless a case says otherwise
        for column in (
            "alt_carriers_cases",
            "ref_carriers_cases",
            "alt_carriers_controls",
            "ref_carriers_controls",
        ):
            frame[f"gate.{column}"] = n // 4
    return frame


def af_table(
    n: int, alt_counts: list[int], allele_numbers: list[int] | None = None
) -> pd.DataFrame:
    rows = len(alt_counts)
    numbers = allele_numbers or [2 * n] * rows
    return pd.DataFrame(
        {
            "chromosome": ["1"] * rows,
            "base_pair_location": [10_000 + 1000 * i for i in range(rows)],
            "ref": ["A"] * rows,
            "alt": ["G"] * rows,
            "allele_count": alt_counts,
            "allele_number": numbers,
            "homozygote_count": 0,
            "homozygote_ref_count": 0,
            "n_samples": [a // 2 for a in numbers],
            "allele_frequency": [c / a for c, a in zip(alt_counts, numbers, strict=True)],
        }
    )


@dataclass(frozen=True)
class Inputs:
    private: Path
    design: Path
    qc_counts: Path
    samples: Path


def inputs(
    scratch: Scratch,
    name: str,
    table: pd.DataFrame,
    samples: list[str],
    n_parameters: int = 3,
    n_cases: int | None = None,
) -> Inputs:
    folder = scratch.root / "private" / name
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "table.tsv.bgz", "wt") as handle:
        table.to_csv(handle, sep="\t", index=False, na_rep="NA")
    n = len(samples)
    design = {
        "n_samples": n,
        "n_parameters": n_parameters,
        "n_cases": n_cases,
        "n_controls": None if n_cases is None else n - n_cases,
    }
    (folder / "design.json").write_text(json.dumps(design))
    counts = {
        "samples_genotyped": n,
        "samples_with_phenotypes": n,
        "samples_passed": n,
        "variants_input": len(table),
        "sex_check": "done",
    }
    (folder / "qc_counts.json").write_text(json.dumps(counts))
    (folder / "samples.txt").write_text("".join(f"{sample}\n" for sample in samples))
    return Inputs(
        folder / "table.tsv.bgz",
        folder / "design.json",
        folder / "qc_counts.json",
        folder / "samples.txt",
    )


def ids(count: int, start: int = 0) -> list[str]:
    return [f"{SAMPLE_PREFIX}{i:06d}" for i in range(start, start + count)]


def run_gwas(scratch: Scratch, spec: StudySpec, trait: str, given: Inputs, out: str) -> Path:
    target = scratch.root / "release" / out / f"{trait}.tsv.gz"
    return release_gwas(
        scratch.node,
        spec,
        spec.gwas_analysis(trait),
        given.private,
        given.design,
        given.qc_counts,
        target,
        scratch.audit,
        samples_path=given.samples,
    )


def run_af(scratch: Scratch, spec: StudySpec, given: Inputs, out: str) -> Path:
    target = scratch.root / "release" / out / "af.tsv.gz"
    return release_allele_frequencies(
        scratch.node,
        spec,
        "af",
        given.private,
        given.qc_counts,
        target,
        scratch.audit,
        samples_path=given.samples,
    )


def withheld(action: Callable[[], Path], match: str) -> str:
    """Run `action`; it must refuse with `match` in its one-line reason and leave no file."""
    try:
        path = action()
    except DisclosureError as error:
        if match not in str(error):
            raise CaseFailed(f"refused, but for another reason: {error}") from None
        reason = str(error).split(": ", 2)[-1].removesuffix("; result withheld (node policy)")
        return f"withheld: {reason[:90]}"
    raise CaseFailed(f"released {path.name}; expected it withheld ({match})")


def positions(path: Path) -> list[int]:
    return [int(p) for p in sumstats.read_table(path)["base_pair_location"]]


# ---------------------------------------------------------------- the cases


def cohort_floors(s: Scratch) -> str:
    p = s.policy
    small = inputs(
        s,
        "small",
        gwas_table(p.min_cohort_gwas - 1, [p.min_cohort_gwas // 2]),
        ids(p.min_cohort_gwas - 1),
    )
    detail = withheld(
        lambda: run_gwas(s, study("small"), "trait", small, "small"), "min_cohort_gwas"
    )
    af_small = inputs(
        s,
        "af-small",
        af_table(p.min_cohort_af - 1, [p.min_cohort_af // 2]),
        ids(p.min_cohort_af - 1, 5000),
    )
    withheld(lambda: run_af(s, study("af-small"), af_small, "af-small"), "min_cohort_af")
    at = inputs(
        s,
        "at",
        gwas_table(p.min_cohort_gwas, [p.min_cohort_gwas // 2]),
        ids(p.min_cohort_gwas, 9000),
    )
    run_gwas(s, study("at"), "trait", at, "at")  # at the floor: released
    return f"N-1 {detail}; N at the floor released"


def row_floors(s: Scratch) -> str:
    p, n = s.policy, s.n
    gwas = gwas_table(n, [p.min_mac_gwas - 1, p.min_mac_gwas, 2 * n - (p.min_mac_gwas - 1)])
    released = positions(run_gwas(s, study("mac"), "trait", inputs(s, "mac", gwas, ids(n)), "mac"))
    if released != [11_000]:
        raise CaseFailed(
            f"GWAS rows released at positions {released}; only MAC >= {p.min_mac_gwas}"
        )
    af = af_table(n, [p.min_mac_af - 1, p.min_mac_af, 50], [2 * n, 2 * n, p.min_an_af - 1])
    got = positions(run_af(s, study("mac"), inputs(s, "af", af, ids(n)), "mac"))
    if got != [11_000]:
        raise CaseFailed(
            f"AF rows released at positions {got}; MAC {p.min_mac_af - 1} and AN {p.min_an_af - 1} must be absent"
        )
    return "MAC and AN below their floors absent, at the floor present; no reason code"


def carrier_floor(s: Scratch) -> str:
    limit, n = s.policy.min_carriers_per_group, s.n
    table = gwas_table(n, [n // 2] * 3, binary=True)
    table["gate.alt_carriers_cases"] = [limit - 1, limit, n]
    table["gate.alt_carriers_controls"] = [n, limit, limit - 1]
    spec = study("carriers", binary=True)
    given = inputs(s, "carriers", table, ids(n), n_cases=n // 2)
    got = positions(run_gwas(s, spec, "trait", given, "carriers"))
    if got != [11_000]:
        raise CaseFailed(
            f"rows {got} released; fewer than {limit} carriers in cases or controls must be absent"
        )
    return f"{limit - 1} carriers among cases or controls: absent"


def saturated_model(s: Scratch) -> str:
    n = s.n
    too_many = int(s.policy.max_parameter_fraction * n) + 1
    given = inputs(s, "saturated", gwas_table(n, [n // 2]), ids(n), n_parameters=too_many)
    return withheld(
        lambda: run_gwas(s, study("sat"), "trait", given, "sat"), "max_parameter_fraction"
    )


def exact_n(s: Scratch) -> str:
    """Released N is the analysed cohort's exact size, in the table and the sidecar, as the
    privacy model documents (counts: exact; the cell guard is what stops differencing)."""
    n = s.n + 3
    path = run_gwas(
        s, study("exact"), "trait", inputs(s, "exact", gwas_table(n, [n // 2]), ids(n)), "x"
    )
    stated = {sumstats.read_sidecar(path)["n"], *sumstats.read_table(path)["n"]}
    if stated != {n}:
        raise CaseFailed(f"N {n} released as {sorted(stated)}; the privacy model says exact")
    return f"N {n} released as {n} (exact, documented)"


def forbidden_column(column: str, value: Any) -> Callable[[Scratch], str]:
    def case(s: Scratch) -> str:
        table = gwas_table(s.n, [s.n // 2]).assign(**{column: value})
        given = inputs(s, column, table, ids(s.n))
        return withheld(lambda: run_gwas(s, study(column), "trait", given, column), column)

    return case


def bad_cell(column: str, value: str, match: str) -> Callable[[Scratch], str]:
    def case(s: Scratch) -> str:
        table = af_table(s.n, [s.n // 2])
        table[column] = [value]
        given = inputs(s, "cell", table, ids(s.n))
        return withheld(lambda: run_af(s, study("cell"), given, "cell"), match)

    return case


def differencing(s: Scratch) -> str:
    n, limit = s.n, s.policy.min_cell_size
    base = ids(n)
    run_af(s, study("d0"), inputs(s, "d0", af_table(n, [n // 2]), base), "d0")
    for extra in (1, limit - 1):
        given = inputs(s, f"d{extra}", af_table(n + extra, [n // 2]), base + ids(extra, 10**5))
        spec, out = study(f"d{extra}"), f"d{extra}"
        withheld(partial(run_af, s, spec, given, out), "min_cell_size")
    far = inputs(s, "far", af_table(n + limit, [n // 2]), base + ids(limit, 10**5))
    run_af(s, study("far"), far, "far")
    return f"cohorts differing by 1 and {limit - 1} samples withheld, by {limit} released"


def phenotype_budget(s: Scratch) -> str:
    """Per person, not per cohort: alternating the whole cohort and one without its first
    min_cell_size samples (a fresh cohort each other time) does not reset the budget."""
    n, budget, k = s.n, s.policy.max_phenotypes_per_person, s.policy.min_cell_size
    traits = tuple(f"t{i}" for i in range(budget + 1))
    spec = study("budget", traits)
    cohorts = [ids(n), ids(n - k, k)]
    given = [
        inputs(s, f"budget{j}", gwas_table(len(c), [len(c) // 2]), c) for j, c in enumerate(cohorts)
    ]
    for i, trait in enumerate(traits[:budget]):
        run_gwas(s, spec, trait, given[i % 2], f"budget{i}")
    last = given[budget % 2]
    detail = withheld(
        lambda: run_gwas(s, spec, traits[-1], last, "budget-last"), "max_phenotypes_per_person"
    )
    return f"{budget} phenotypes over two perturbed cohorts released, one more {detail}"


@dataclass(frozen=True)
class Tracker:
    """The issue's four cohorts: a lenient and a strict call-rate threshold, each with and
    without a covariate that `k + 5` samples lack; `k + 2` samples fail the strict threshold,
    one of them among those lacking the covariate. A - B - C + D is that one person."""

    cohorts: dict[str, list[int]]  # name -> member indices, in release order
    target: int
    genotypes: np.ndarray  # samples x variants, 0/1/2

    @classmethod
    def build(cls, n: int, k: int, variants: int = 40) -> Tracker:
        everyone = list(range(n))
        lacks = set(range(k + 5))
        low_call = set(range(k + 4, 2 * k + 6))  # overlaps `lacks` in sample k + 4 only
        cohorts = {
            "A": everyone,
            "B": [i for i in everyone if i not in lacks],
            "C": [i for i in everyone if i not in low_call],
            "D": [i for i in everyone if i not in lacks and i not in low_call],
        }
        rng = np.random.default_rng(12)
        genotypes = rng.binomial(2, 0.3, size=(n, variants))
        return cls(cohorts, k + 4, genotypes)

    def table(self, members: list[int]) -> pd.DataFrame:
        counts = self.genotypes[members].sum(axis=0)
        return af_table(len(members), counts.tolist())

    def release_all(self, s: Scratch) -> dict[str, Path | str]:
        """Release A, B, C, D in turn: name -> released file, or the refusal."""
        outcome: dict[str, Path | str] = {}
        for name, members in self.cohorts.items():
            given = inputs(s, f"track-{name}", self.table(members), ids_of(members))
            try:
                outcome[name] = run_af(s, study(f"track-{name}"), given, f"track-{name}")
            except DisclosureError as error:
                outcome[name] = str(error)
        return outcome


def ids_of(members: list[int]) -> list[str]:
    return [f"{SAMPLE_PREFIX}{i:06d}" for i in members]


def recovered_samples(membership: np.ndarray, sums: np.ndarray, truth: np.ndarray) -> list[int]:
    """The least-squares attacker: knowing exactly who is in each released cohort and the
    released sums (cohorts x variants), solve for everyone's genotypes. A sample's genotypes
    are recovered when the cohorts pin them down (its unit vector lies in the row space of
    the membership matrix) and the minimum-norm solution gives them exactly."""
    solution = np.linalg.pinv(membership) @ sums
    projection = np.linalg.pinv(membership) @ membership
    determined = np.isclose(np.diag(projection), 1.0, atol=1e-6)
    exact = np.all(np.abs(solution - truth) < 0.5, axis=1)
    return [int(i) for i in np.flatnonzero(determined & exact)]


def four_cohort_tracker(s: Scratch) -> str:
    tracker = Tracker.build(s.n, s.policy.min_cell_size)
    outcome = tracker.release_all(s)
    refused = [name for name, result in outcome.items() if isinstance(result, str)]
    if refused != ["C"] or "min_cell_size" not in str(outcome["C"]):
        raise CaseFailed(
            f"expected only C withheld by min_cell_size; withheld: {refused or 'none'}"
        )
    return "A, B released; C withheld (a cell of 1); D released (its cells hold >= k)"


def allele_count_recovery(s: Scratch) -> str:
    """N is released exactly (docs/privacy-model.md); with every released file an attacker
    still pins down no one's allele counts. The same attacker, given C's sums as well (what
    the guard withheld), recovers the tracker's target: the attack is real."""
    tracker = Tracker.build(s.n, s.policy.min_cell_size)
    outcome = tracker.release_all(s)
    released = {name: path for name, path in outcome.items() if isinstance(path, Path)}
    rows, sums = [], []
    for name, path in released.items():
        stated_n = sumstats.read_sidecar(path)["n"]
        if stated_n != len(tracker.cohorts[name]):
            raise CaseFailed(
                f"cohort {name}: N {len(tracker.cohorts[name])} released as {stated_n}"
            )
        table = sumstats.read_table(path).sort_values("base_pair_location")
        if not (table["allele_number"] == 2 * stated_n).all():
            raise CaseFailed(f"cohort {name}: allele numbers do not give N exactly")
        row = np.zeros(s.n)
        row[tracker.cohorts[name]] = 1
        rows.append(row)
        sums.append(table["allele_count"].to_numpy(dtype=float))
    if len(sums[0]) != tracker.genotypes.shape[1]:
        raise CaseFailed("the released tables lost rows; the attack would be untested")
    found = recovered_samples(np.array(rows), np.array(sums), tracker.genotypes)
    if found:
        raise CaseFailed(f"{len(found)} samples' allele counts recovered from {sorted(released)}")
    control_rows = np.array([*rows, np.isin(np.arange(s.n), tracker.cohorts["C"]).astype(float)])
    control_sums = np.array([*sums, tracker.genotypes[tracker.cohorts["C"]].sum(axis=0)])
    control = recovered_samples(control_rows, control_sums, tracker.genotypes)
    if control != [tracker.target]:
        raise CaseFailed(f"the attacker does not work even without the guard (found {control})")
    return f"N exact in {sorted(released)}; 0 of {s.n} recovered (1 if C had been released)"


def ledger_deleted(s: Scratch) -> str:
    given = inputs(s, "lost", af_table(s.n, [s.n // 2]), ids(s.n))
    run_af(s, study("lost1"), given, "lost1")
    ledger = s.node.work_dir / "privacy-ledger.sqlite"
    ledger.unlink()
    try:
        path = run_af(s, study("lost2"), given, "lost2")
    except DisclosureError as error:
        if "privacy-ledger reinit" not in str(error):
            raise CaseFailed(f"refused, but for another reason: {error}") from None
        if list((s.root / "release" / "lost2").glob("*.gz")):
            raise CaseFailed("refused, but a file was left in the release folder") from None
        if ledger.exists():
            raise CaseFailed("the lost ledger was silently re-created") from None
        if s.audit_events()[-1]["event"] != "release_failed":
            raise CaseFailed("the refusal is not in the audit log") from None
        return "release refused until `federation node privacy-ledger reinit` (audited)"
    raise CaseFailed(f"released {path.name} with the ledger's history gone")


def identical_repeat(s: Scratch) -> str:
    given = inputs(s, "repeat", gwas_table(s.n, [s.n // 2, s.n // 3]), ids(s.n))
    first = run_gwas(s, study("rep"), "trait", given, "one").read_bytes()
    second = run_gwas(s, study("rep"), "trait", given, "two").read_bytes()
    if first != second or s.audit_events()[-1]["event"] != "release_repeated":
        raise CaseFailed(
            "an identical request was recomputed instead of returning the stored bytes"
        )
    return "identical request: stored bytes returned"


def study_loosening(s: Scratch) -> str:
    given = inputs(s, "loose", gwas_table(s.n, [s.n // 2]), ids(s.n))
    spec = study("loose", min_mac_gwas=max(s.policy.min_mac_gwas - 1, 0))
    detail = withheld(lambda: run_gwas(s, spec, "trait", given, "loose"), "would loosen")
    if s.audit_events()[-1]["event"] != "disclosure_loosening_refused":
        raise CaseFailed("the loosening attempt is not in the audit log")
    return detail


def environment_override(s: Scratch) -> str:
    name = "FEDERATION_DISCLOSURE_MIN_MAC_GWAS"
    previous = os.environ.get(name)
    os.environ[name] = "1"
    try:
        limit = s.policy.min_mac_gwas
        given = inputs(s, "env", gwas_table(s.n, [limit - 1, s.n // 2]), ids(s.n))
        got = positions(run_gwas(s, study("env"), "trait", given, "env"))
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
    logged = any(e["event"] == "disclosure_override_refused" for e in s.audit_events())
    if got != [11_000] or not logged:
        raise CaseFailed(f"with {name}=1: rows {got} released, attempt logged: {logged}")
    return f"{name}=1 ignored and logged"


def failing_check(s: Scratch) -> str:
    table = gwas_table(s.n, [s.n // 2] * 2).astype({"gate.alt_allele_count": object})
    table.loc[1, "gate.alt_allele_count"] = "four hundred"
    given = inputs(s, "error", table, ids(s.n))
    detail = withheld(lambda: run_gwas(s, study("err"), "trait", given, "err"), "error")
    if "error" not in json.dumps(s.audit_events()[-1]):
        raise CaseFailed("the audit log does not say which check failed")
    return detail


DISCLOSURE_CASES: list[tuple[str, str, Callable[[Scratch], str]]] = [
    ("cohort floors", "N below min_cohort_gwas / min_cohort_af withheld", cohort_floors),
    ("row floors", "rows below MAC / AN floors absent", row_floors),
    ("carrier floor", "binary: rows with too few carriers absent", carrier_floor),
    ("parameters", "parameters > fraction * N withheld", saturated_model),
    ("exact N", "N released exactly, as documented", exact_n),
    ("sample_id column", "extra column stops the release", forbidden_column("sample_id", "S1")),
    ("sum_x column", "extra column stops the release", forbidden_column("sum_x", 1.5)),
    (
        "y_transpose_x column",
        "extra column stops the release",
        forbidden_column("y_transpose_x", 2.5),
    ),
    ("residuals column", "extra column stops the release", forbidden_column("residuals", 0.1)),
    ("free text column", "extra column stops the release", forbidden_column("note", "free text")),
    (
        "free text cell",
        "text in an allele cell stops the release",
        bad_cell("alt", "see notes", "cell_values"),
    ),
    (
        "over-long variant ID",
        "over-long ID stops the release",
        bad_cell("alt", "G" * 400, "variant_id: length"),
    ),
    ("differencing guard", "cohorts closer than the limit withheld", differencing),
    ("phenotype budget", "budget + 1 phenotypes per person withheld", phenotype_budget),
    ("four-cohort tracker", "refused at the release making a cell of 1", four_cohort_tracker),
    (
        "N and allele counts",
        "no one's allele count recoverable from all released files",
        allele_count_recovery,
    ),
    ("privacy ledger deleted", "every release stops until an audited reinit", ledger_deleted),
    ("identical repeat", "same request, same bytes", identical_repeat),
    ("study loosening", "refused and logged", study_loosening),
    ("environment override", "ignored and logged", environment_override),
    ("error in a check", "nothing released, reason logged", failing_check),
]
