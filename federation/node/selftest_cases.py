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

import pandas as pd

from federation import sumstats
from federation.errors import DisclosureError
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
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    @property
    def n(self) -> int:
        """A cohort comfortably above every floor and with a phenotype budget of at least 5."""
        floor = max(self.policy.min_cohort_gwas, self.policy.min_cohort_af, 100)
        return max(2 * floor, int(6 / self.policy.max_phenotype_fraction) + 1)


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


def rounded_n(s: Scratch) -> str:
    step = s.policy.n_rounding
    n = s.n + (step // 2 if step > 1 else 0) + (1 if s.n % step == 0 else 0)
    path = run_gwas(
        s, study("round"), "trait", inputs(s, "round", gwas_table(n, [n // 2]), ids(n)), "r"
    )
    stated = [sumstats.read_sidecar(path)["n"], *sumstats.read_table(path)["n"]]
    if any(value % step for value in stated) or n % step == 0:
        raise CaseFailed(f"N {n} released as {stated}; must be multiples of {step}")
    return f"N {n} released as {stated[0]}"


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
    n, limit = s.n, s.policy.min_cohort_difference
    base = ids(n)
    run_af(s, study("d0"), inputs(s, "d0", af_table(n, [n // 2]), base), "d0")
    for extra in (1, limit - 1):
        given = inputs(s, f"d{extra}", af_table(n + extra, [n // 2]), base + ids(extra, 10**5))
        spec, out = study(f"d{extra}"), f"d{extra}"
        withheld(partial(run_af, s, spec, given, out), "min_cohort_difference")
    far = inputs(s, "far", af_table(n + limit, [n // 2]), base + ids(limit, 10**5))
    run_af(s, study("far"), far, "far")
    return f"cohorts differing by 1 and {limit - 1} samples withheld, by {limit} released"


def phenotype_budget(s: Scratch) -> str:
    n = s.n
    budget = int(s.policy.max_phenotype_fraction * n + 1e-9)
    traits = tuple(f"t{i}" for i in range(budget + 1))
    spec, given = study("budget", traits), inputs(s, "budget", gwas_table(n, [n // 2]), ids(n))
    for trait in traits[:budget]:
        run_gwas(s, spec, trait, given, "budget")
    return withheld(lambda: run_gwas(s, spec, traits[-1], given, "budget"), "phenotype_budget")


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
    ("rounded N", "N rounded to n_rounding", rounded_n),
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
    ("phenotype budget", "floor(fraction * N) + 1 phenotypes withheld", phenotype_budget),
    ("identical repeat", "same request, same bytes", identical_repeat),
    ("study loosening", "refused and logged", study_loosening),
    ("environment override", "ignored and logged", environment_override),
    ("error in a check", "nothing released, reason logged", failing_check),
]
