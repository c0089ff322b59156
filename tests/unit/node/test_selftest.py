"""`federation node selftest`: every case passes on the real gate, and a broken gate is caught."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from federation.cli import main
from federation.node.selftest import ATTACK_CASES, format_results, run_selftest
from federation.node.selftest_cases import DISCLOSURE_CASES
from federation.release import gate as release_gate
from federation.release import tables as release_tables
from federation.release.rules import Verdict, min_cohort
from federation.settings import node_from_dict


def test_every_case_passes_with_the_built_in_policy():
    results = run_selftest()
    assert {r.name for r in results} >= {name for name, _, _ in DISCLOSURE_CASES + ATTACK_CASES}
    assert all(r.passed for r in results), format_results(results)


def test_cases_follow_a_stricter_node_policy(tmp_path):
    node = node_from_dict(
        {
            "node_id": "fi",
            "genotypes": {"format": "vcf", "path": "g.vcf.bgz"},
            "phenotypes": "p.tsv",
            "work_dir": "real-work",
            "privacy_ledger": {"path": "real.sqlite", "secret_file": "real.secret"},
            "disclosure": {
                "min_cohort_gwas": 200,
                "min_mac_gwas": 30,
                "qc_count_rounding": 10,
                "min_cell_size": 15,
                "max_phenotypes_per_person": 6,
            },
        },
        tmp_path,
    )
    results = run_selftest(
        node,
        only={
            "cohort floors",
            "row floors",
            "exact N",
            "differencing guard",
            "phenotype budget",
            "four-cohort tracker",
            "N and allele counts",
        },
    )
    assert all(r.passed for r in results), format_results(results)
    assert "observed 199, limit 200" in results[0].detail
    assert "by 1 and 14 samples withheld, by 15 released" in results[3].detail
    assert results[4].detail.startswith("6 phenotypes over two perturbed cohorts released")
    # The node's own work dir and privacy ledger are never touched.
    assert not any(
        (tmp_path / name).exists() for name in ("real-work", "real.sqlite", "real.secret")
    )


def test_a_gate_that_lets_rare_rows_through_fails(monkeypatch):
    def keep_everything(rule, alt, allele_number, limit):
        return min_cohort(rule, 1, 0), np.ones(len(alt), dtype=bool)

    monkeypatch.setattr(release_tables, "min_minor_allele_count", keep_everything)
    results = run_selftest(only={"row floors", "environment override"})
    failed = {r.name: r.detail for r in results if not r.passed}
    assert set(failed) == {"row floors", "environment override"}
    assert "only MAC >= 20" in failed["row floors"]


def test_a_gate_without_the_cell_guard_fails_the_tracker_and_recovery_cases(monkeypatch):
    passing = min_cohort("min_cell_size", 1, 0)
    monkeypatch.setattr(release_gate, "min_cell_size", lambda *args: passing)
    cases = {"differencing guard", "four-cohort tracker", "N and allele counts"}
    results = {r.name: r for r in run_selftest(only=cases) if r.name in cases}
    assert not results["differencing guard"].passed
    # Without the guard, its row rule still drops every row: refused as empty, not as a cell.
    assert "refused, but for another reason" in results["differencing guard"].detail
    assert "min_rows_released" in results["differencing guard"].detail
    assert "withheld: none" in results["four-cohort tracker"].detail
    # With C released the attacker recovers the tracker's target: the case says so.
    assert "1 samples' allele counts recovered" in results["N and allele counts"].detail
    assert passing.verdict is Verdict.PASS


def test_a_gate_with_a_per_cohort_budget_fails_the_perturbed_cohort_case(monkeypatch):
    from federation.release.rules import phenotypes_per_person

    monkeypatch.setattr(
        release_gate, "phenotypes_per_person", lambda most, budget: phenotypes_per_person(0, budget)
    )
    [result] = [r for r in run_selftest(only={"phenotype budget"}) if r.name == "phenotype budget"]
    assert not result.passed and "expected it withheld" in result.detail


def test_cli_table_and_exit_codes(tmp_path, capsys, monkeypatch):
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node_id": "fi",
                "genotypes": {"format": "vcf", "path": "g"},
                "phenotypes": "p",
                "disclosure": {"min_mac_gwas": 25},
            }
        )
    )
    assert main(["node", "selftest", "--config", str(config), "--case", "exact N"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["case", "expectation", "result", "detail"]
    assert out.splitlines()[-1] == "2 of 2 cases passed" and "FAIL" not in out
    monkeypatch.setenv("FEDERATION_DISCLOSURE_MIN_MAC_GWAS", "1")
    assert main(["node", "selftest", "--config", str(config), "--case", "exact N"]) == 1
    assert "environment" in capsys.readouterr().out


@pytest.mark.parametrize("edit", [False, True])
def test_audit_verify_command(tmp_path, capsys, edit):
    from federation.audit import append_event

    log = tmp_path / "audit.jsonl"
    for index in range(4):
        append_event(log, "release_written", rows=index)
    if edit:
        lines = log.read_text().splitlines()
        lines[2] = lines[2].replace('"rows":2', '"rows":3')
        log.write_text("\n".join(lines) + "\n")
    code = main(["audit", "verify", str(log)])
    captured = capsys.readouterr()
    if edit:
        assert code == 1
        assert (
            captured.err.strip()
            == f"error: {log}: record 2: content does not match its hash (edited)"
        )
    else:
        assert code == 0 and captured.out.strip().endswith(
            "4 records, hash chain intact (head matches)"
        )
