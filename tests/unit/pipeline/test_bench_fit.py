"""The node bench's fit of fixed and per-genotype cost, its size list, and its stage lines."""

from __future__ import annotations

import argparse
import re
import sys

import pytest

from bench.node_pipeline import fit_fixed_and_per_genotype, parse_sizes, run_stage


def test_the_fit_recovers_a_planted_fixed_and_per_genotype_cost():
    genotypes = [1e7, 1e8, 5e7, 5e8]
    walls = [28.2 + 0.105 * g / 1e6 for g in genotypes]
    fixed, slope = fit_fixed_and_per_genotype(genotypes, walls)
    assert fixed == pytest.approx(28.2) and slope == pytest.approx(0.105)


def test_sizes_are_read_as_samples_by_variants_and_a_bad_one_is_named():
    assert parse_sizes("1000x10000, 5000x100000") == ((1000, 10_000), (5000, 100_000))
    with pytest.raises(argparse.ArgumentTypeError, match="'5k x 100k' is not SAMPLESxVARIANTS"):
        parse_sizes("5k x 100k")


STAGE_LINE = re.compile(r"^\d\d:\d\d:\d\d bench: ")


def test_a_stage_says_with_the_time_when_it_starts_and_after_how_long_it_ended(capsys):
    run = run_stage("node run", [sys.executable, "-c", "pass"])
    lines = capsys.readouterr().err.splitlines()
    assert run.returncode == 0 and len(lines) == 2
    assert all(STAGE_LINE.match(line) for line in lines)
    assert lines[0].endswith("bench: node run started")
    assert re.search(r"bench: node run ended after \d+\.\d s$", lines[1])


def test_a_failed_stage_names_its_exit_code(capsys):
    run = run_stage("plink2", [sys.executable, "-c", "raise SystemExit(3)"])
    assert run.returncode == 3
    assert re.search(r"bench: plink2 failed \(exit 3\) after", capsys.readouterr().err)
