"""The release step with the privacy ledger: differencing, phenotype budget, repeats, refusals,
fail-closed errors, and what a singleton carrier's data can and cannot reveal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from federation import sumstats
from federation.errors import DisclosureError
from federation.release.tables import RELEASED_QC_FIELDS, ReleaseWithheld
from tests.unit.cohorts import (
    make_node,
    make_study,
    random_cohort,
    read_private,
    release_af_of,
    release_gwas_of,
    write_inputs,
    write_private,
)

COMMON = [0.3, 0.25, 0.4, 0.2]


def _audit(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture()
def base(tmp_path):
    rng = np.random.default_rng(7)
    cohort = random_cohort(rng, 220, COMMON, binary=False)
    return cohort, make_node(tmp_path), tmp_path / "audit.jsonl"


@pytest.mark.parametrize(("extra", "refused"), [(0, False), (1, True), (9, True), (10, False)])
def test_second_study_on_a_cohort_differing_by_n_samples(tmp_path, base, extra, refused):
    cohort, node, audit = base
    first = cohort.subset(np.arange(220) < 200)
    inputs = write_inputs(first, tmp_path / "s1", binary=False)
    release_gwas_of(node, make_study("s1"), inputs, "trait", tmp_path / "out1", audit)
    second = cohort.subset(np.arange(220) < 200 + extra)
    inputs = write_inputs(second, tmp_path / "s2", binary=False)
    if refused:
        with pytest.raises(ReleaseWithheld, match=f"min_cell_size: observed {extra}, limit 10"):
            release_gwas_of(node, make_study("s2"), inputs, "trait", tmp_path / "out2", audit)
        assert not (tmp_path / "out2" / "gwas_trait.tsv.gz").exists()
        assert _audit(audit)[-1]["event"] == "release_withheld"
    else:
        out = release_gwas_of(node, make_study("s2"), inputs, "trait", tmp_path / "out2", audit)
        assert out.exists()


def test_phenotype_budget_per_person_at_limit_and_one_more(tmp_path):
    rng = np.random.default_rng(3)
    cohort = random_cohort(rng, 120, COMMON, binary=False)
    traits = tuple(f"t{i}" for i in range(7))
    study = make_study("s", traits, max_phenotypes_per_person=6)
    node, audit = make_node(tmp_path), tmp_path / "audit.jsonl"
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    smaller = write_inputs(cohort.subset(np.arange(120) >= 10), tmp_path / "in2", binary=False)
    for index, trait in enumerate(traits[:6]):  # the whole cohort and one 10 smaller, in turn
        given = smaller if index % 2 else inputs
        assert release_gwas_of(node, study, given, trait, tmp_path / "out", audit).exists()
    with pytest.raises(ReleaseWithheld, match="max_phenotypes_per_person: observed 7, limit 6"):
        release_gwas_of(node, study, inputs, "t6", tmp_path / "out", audit)
    assert _audit(audit)[-1]["category"] == "phenotype_budget_spent"
    # A trait already released does not spend the budget again.
    again = make_study("s-again", ("t0",))
    assert release_gwas_of(node, again, inputs, "t0", tmp_path / "out3", audit).exists()


def test_identical_request_returns_the_stored_bytes(tmp_path, base):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    study = make_study("s1")
    first = release_gwas_of(node, study, inputs, "trait", tmp_path / "a", audit)
    first_bytes = first.read_bytes(), sumstats.sidecar_path(first).read_bytes()
    # The private table changes (a re-run with other numbers): the repeat is not recomputed.
    table = read_private(inputs.gwas)
    write_private(table.assign(beta=table["beta"] * 2), inputs.gwas)
    second = release_gwas_of(node, study, inputs, "trait", tmp_path / "b", audit)
    assert (second.read_bytes(), sumstats.sidecar_path(second).read_bytes()) == first_bytes
    assert _audit(audit)[-1]["event"] == "release_repeated"
    # A tightened policy is another request: recomputed, not the stored bytes.
    stricter = make_study("s1", min_mac_gwas=25)
    third = release_gwas_of(node, stricter, inputs, "trait", tmp_path / "c", audit)
    assert third.read_bytes() != first_bytes[0]


def test_environment_cannot_loosen_and_attempt_is_logged(tmp_path, base, monkeypatch):
    cohort, node, audit = base
    rare = random_cohort(np.random.default_rng(1), 220, [0.3, 0.02], binary=False)  # MAC ~9
    inputs = write_inputs(rare, tmp_path / "in", binary=False)
    monkeypatch.setenv("FEDERATION_DISCLOSURE_MIN_MAC_GWAS", "1")
    monkeypatch.setenv("FEDERATION_DISCLOSURE_N_ROUNDING", "1")
    out = release_gwas_of(node, make_study("s1"), inputs, "trait", tmp_path / "out", audit)
    released = sumstats.read_table(out)
    mac = read_private(inputs.gwas)["gate.alt_allele_count"]
    assert len(released) == int((mac >= 20).sum()) < 2
    assert sumstats.read_sidecar(out)["disclosure_policy"]["min_mac_gwas"] == 20
    refused = [r for r in _audit(audit) if r["event"] == "disclosure_override_refused"]
    assert refused[0]["variables"] == [
        "FEDERATION_DISCLOSURE_MIN_MAC_GWAS",
        "FEDERATION_DISCLOSURE_N_ROUNDING",
    ]
    assert "1" not in json.dumps(refused[0]["variables"])  # names only


def test_study_loosening_is_refused_and_logged(tmp_path, base):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    with pytest.raises(ReleaseWithheld, match="would loosen"):
        release_gwas_of(
            node,
            make_study("s1", min_cell_size=2),
            inputs,
            "trait",
            tmp_path / "out",
            audit,
        )
    assert _audit(audit)[-1]["event"] == "disclosure_loosening_refused"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("column", "value"),
    [("sample_id", "S00001"), ("sum_x", 12.0), ("y_transpose_x", 3.5), ("comment", "see file")],
)
def test_extra_private_columns_stop_the_whole_release(tmp_path, base, column, value):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    table = read_private(inputs.gwas)
    write_private(table.assign(**{column: value}), inputs.gwas)
    with pytest.raises(ReleaseWithheld, match=f"private_column_allow_list: observed {column}"):
        release_gwas_of(node, make_study("s1"), inputs, "trait", tmp_path / "out", audit)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize(
    ("alt", "problem"),
    [("G" * 300, "variant_id: length 310 > 256"), ("see notes", "alt: 1 cells")],
)
def test_over_long_ids_and_free_text_cells_stop_the_whole_release(tmp_path, base, alt, problem):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    table = read_private(inputs.af)
    table.loc[0, "alt"] = alt
    write_private(table, inputs.af)
    with pytest.raises(ReleaseWithheld, match="cell_values"):
        release_af_of(node, make_study("s1"), inputs, tmp_path / "out", audit)
    assert problem in json.dumps(_audit(audit)[-1])
    assert not (tmp_path / "out" / "af.tsv.gz").exists()


def test_error_inside_a_check_releases_nothing_and_says_why(tmp_path, base):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=True)
    table = read_private(inputs.gwas)
    table["gate.alt_carriers_cases"] = table["gate.alt_carriers_cases"].astype(str) + "x"
    write_private(table, inputs.gwas)
    study = make_study("s1", binary=True)
    with pytest.raises(ReleaseWithheld, match="min_carriers_per_group: observed error: TypeError"):
        release_gwas_of(node, study, inputs, "trait", tmp_path / "out", audit)
    record = _audit(audit)[-1]
    assert record["event"] == "release_withheld" and not record["released"]


def test_error_outside_the_rules_releases_nothing_and_is_logged(tmp_path, base):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    inputs.design.write_text(json.dumps({"n_parameters": 3}))  # n_samples missing
    with pytest.raises(DisclosureError, match="could not complete \\(KeyError\\)"):
        release_gwas_of(node, make_study("s1"), inputs, "trait", tmp_path / "out", audit)
    record = _audit(audit)[-1]
    assert record["event"] == "release_failed" and "KeyError" in record["reason"]
    assert not (tmp_path / "out" / "gwas_trait.tsv.gz").exists()


def test_cohort_list_must_match_the_analysed_cohort(tmp_path, base):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    inputs.samples.write_text("".join(s + "\n" for s in cohort.sample_ids[:-1]))
    with pytest.raises(ReleaseWithheld, match="cohort_list_matches: observed 219, limit 220"):
        release_gwas_of(node, make_study("s1"), inputs, "trait", tmp_path / "out", audit)


# ---------------------------------------------------------------- the singleton carrier


def test_singleton_carrier_cannot_be_recovered(tmp_path):
    rng = np.random.default_rng(11)
    cohort = random_cohort(rng, 200, [0.3, 0.0, 0.25, 0.35], binary=True)
    carrier = 42
    cohort.genotypes[:, 1] = 0.0
    cohort.genotypes[carrier, 1] = 1.0  # the only carrier of variant 1
    cohort.phenotype[carrier] = 1.0  # and a case
    singleton = f"1:{cohort.positions[1]}:A:G"
    node, audit = make_node(tmp_path), tmp_path / "audit.jsonl"
    study = make_study("s1", ("trait",), binary=True)
    inputs = write_inputs(cohort, tmp_path / "with", binary=True)
    released = [
        release_af_of(node, study, inputs, tmp_path / "r1", audit),
        release_gwas_of(node, study, inputs, "trait", tmp_path / "r1", audit),
    ]
    for path in released:
        table = sumstats.read_table(path)
        assert singleton not in set(table["variant_id"])
        assert cohort.positions[1] not in set(table["base_pair_location"])
        assert len(table) == 3  # the common variants are there
        assert singleton not in path.read_bytes().decode(errors="ignore")
        assert singleton not in sumstats.sidecar_path(path).read_text()
    # The same analyses of the cohort without the carrier: the pair would give the carrier's
    # genotype and phenotype by subtraction; the differencing guard refuses the second.
    without = cohort.subset(np.arange(200) != carrier)
    inputs = write_inputs(without, tmp_path / "without", binary=True)
    other = make_study("s2", ("trait",), binary=True)
    with pytest.raises(ReleaseWithheld, match="min_cell_size: observed 1, limit 10"):
        release_af_of(node, other, inputs, tmp_path / "r2", audit)
    with pytest.raises(ReleaseWithheld, match="min_cell_size: observed 1, limit 10"):
        release_gwas_of(node, other, inputs, "trait", tmp_path / "r2", audit)
    assert not (tmp_path / "r2").exists() or not any((tmp_path / "r2").glob("*.gz"))


def test_suppressed_rows_look_exactly_like_qc_failed_rows(tmp_path):
    rng = np.random.default_rng(5)
    cohort = random_cohort(rng, 200, [0.3, 0.25, 0.4], binary=False)
    cohort.genotypes[:, 1] = 0.0
    cohort.genotypes[:5, 1] = 1.0  # MAC 5: the gate suppresses it
    outputs = {}
    for case in ("suppressed", "qc_failed"):
        node = make_node(tmp_path / case)
        inputs = write_inputs(cohort, tmp_path / case / "in", binary=False)
        if case == "qc_failed":  # QC removed the variant before the gate saw it
            for path in (inputs.gwas, inputs.af):
                table = read_private(path)
                write_private(table[table["base_pair_location"] != cohort.positions[1]], path)
        study = make_study("s1")
        audit = tmp_path / case / "audit.jsonl"
        outputs[case] = [
            release_gwas_of(node, study, inputs, "trait", tmp_path / case / "out", audit),
            release_af_of(node, study, inputs, tmp_path / case / "out", audit),
        ]
    for suppressed, qc_failed in zip(outputs["suppressed"], outputs["qc_failed"], strict=True):
        assert suppressed.read_bytes() == qc_failed.read_bytes()
        assert (
            sumstats.sidecar_path(suppressed).read_bytes()
            == sumstats.sidecar_path(qc_failed).read_bytes()
        )
        sidecar = sumstats.read_sidecar(suppressed)
        assert set(sidecar["qc"]) <= set(RELEASED_QC_FIELDS)
        text = json.dumps(sidecar)
        for word in (
            "suppress",
            "rows_in",
            "low_maf",
            "hwe",
            "monomorphic",
            "passed_gwas",
            "reason",
        ):
            assert word not in text
    # The node audit log does know the difference (it stays on the node).
    written = [r for r in _audit(tmp_path / "suppressed" / "audit.jsonl") if "rules" in r]
    rules = written[0]["rules"]
    assert next(r for r in rules if r["rule"] == "min_mac_gwas")["rows_suppressed"] == 1


# ---------------------------------------------------------------- nothing private in any log


def _encodings(secret: bytes) -> list[str]:
    import base64

    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b32encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        repr(secret)[2:-1],
        str(list(secret)),
    ]


def test_no_sample_id_secret_or_per_sample_value_in_any_log_at_debug(tmp_path, caplog, capfd):
    import logging

    caplog.set_level(logging.DEBUG)
    rng = np.random.default_rng(2)
    cohort = random_cohort(rng, 230, COMMON + [0.004], binary=True, prefix="PATIENT-7f3a-")
    cohort.phenotype[:] = (rng.random(230) < 0.4).astype(float)
    node, audit = make_node(tmp_path), tmp_path / "audit.jsonl"
    study = make_study("s1", ("trait",), binary=True)
    inputs = write_inputs(cohort, tmp_path / "in", binary=True)
    release_af_of(node, study, inputs, tmp_path / "out", audit)
    release_gwas_of(node, study, inputs, "trait", tmp_path / "out", audit)
    release_gwas_of(node, study, inputs, "trait", tmp_path / "again", audit)  # a repeat
    smaller = write_inputs(cohort.subset(np.arange(230) > 2), tmp_path / "small", binary=True)
    with pytest.raises(DisclosureError):  # differencing guard
        release_gwas_of(
            node, make_study("s2", binary=True), smaller, "trait", tmp_path / "x", audit
        )
    # An error whose message quotes a sample ID: the audit log gets the reason, not the ID.
    design = json.loads(inputs.design.read_text())
    inputs.design.write_text(json.dumps({**design, "n_samples": cohort.sample_ids[7]}))
    with pytest.raises(DisclosureError) as error:
        release_gwas_of(node, make_study("s3", binary=True), inputs, "trait", tmp_path / "y", audit)
    assert cohort.sample_ids[7] not in str(error.value)
    failed = _audit(audit)[-1]
    assert failed["event"] == "release_failed" and "<id>" in failed["reason"]

    out, err = capfd.readouterr()
    records = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.args!r} {r.exc_text or ''}"
        for r in caplog.records
    )
    logs = "\n".join(
        [
            caplog.text,
            records,
            out,
            err,
            audit.read_text(),
            (tmp_path / "audit.jsonl.head").read_text(),
        ]
    )
    assert any(
        r.levelno == logging.DEBUG and r.name.startswith("federation") for r in caplog.records
    )
    for sample in cohort.sample_ids:
        assert sample not in logs
    assert "PATIENT" not in logs
    secret = (node.work_dir / "privacy-ledger.secret").read_bytes()
    for form in _encodings(secret):
        assert form not in logs
    for value in cohort.covariates[:, 0][:20]:
        assert f"{value:.6f}" not in logs and repr(float(value)) not in logs
    # Nor does the ledger itself hold an ID in clear.
    ledger_bytes = (node.work_dir / "privacy-ledger.sqlite").read_bytes()
    assert b"PATIENT" not in ledger_bytes


def test_a_sample_list_inside_the_release_folder_is_refused(tmp_path, base):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "out", binary=False)  # samples.txt in out/
    with pytest.raises(DisclosureError, match="inside the release folder"):
        release_af_of(node, make_study("s1"), inputs, tmp_path / "out", audit)
    assert _audit(audit)[-1]["event"] == "release_failed"


def test_configured_ledger_location_is_used(tmp_path):
    from federation.settings import node_from_dict

    document = {
        "node_id": "fi",
        "genotypes": {"format": "vcf", "path": "g.vcf.bgz"},
        "phenotypes": "p.tsv",
        "privacy_ledger": {"path": "state/ledger.sqlite", "secret_file": "secrets/ledger.key"},
    }
    node = node_from_dict(document, tmp_path)
    cohort = random_cohort(np.random.default_rng(4), 120, COMMON, binary=False)
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    release_af_of(node, make_study("s1"), inputs, tmp_path / "out", tmp_path / "audit.jsonl")
    assert (tmp_path / "state" / "ledger.sqlite").is_file()
    assert (tmp_path / "secrets" / "ledger.key").stat().st_mode & 0o777 == 0o600
    assert not (node.work_dir / "privacy-ledger.sqlite").exists()


# ------------------------------------------- missing phenotypes: counted, refused when empty


def test_an_analysis_without_usable_samples_is_withheld_as_no_usable_data(tmp_path, base):
    from federation.outcomes import RefusalCategory, read_outcomes

    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    inputs.design.write_text(
        json.dumps(
            {
                "n_samples": 0,
                "n_parameters": 0,
                "samples_qc": 220,
                "samples_dropped": 220,
                "samples_missing_covariates": 220,
            }
        )
    )
    inputs.samples.write_text("")  # the GWAS step analysed nobody
    with pytest.raises(ReleaseWithheld, match="min_usable_samples: observed 0, limit 1") as e:
        release_gwas_of(node, make_study("s1"), inputs, "trait", tmp_path / "out", audit)
    assert e.value.category is RefusalCategory.NO_USABLE_DATA
    decided = read_outcomes(node.work_dir, "s1")["gwas_trait"]
    assert not decided.released and decided.category is RefusalCategory.NO_USABLE_DATA
    events = [record["event"] for record in _audit(audit)]
    assert events[-2:] == ["analysis_samples", "release_withheld"]
    assert _audit(audit)[-2]["samples_dropped"] == 220
    assert not (tmp_path / "out" / "gwas_trait.tsv.gz").exists()


def test_a_release_left_with_no_rows_is_withheld_as_no_usable_data(tmp_path, base):
    from federation.outcomes import RefusalCategory

    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    study = make_study("s1", min_mac_gwas=10_000)  # no variant has that many minor alleles
    with pytest.raises(ReleaseWithheld, match="min_rows_released: observed 0, limit 1") as e:
        release_gwas_of(node, study, inputs, "trait", tmp_path / "out", audit)
    assert e.value.category is RefusalCategory.NO_USABLE_DATA
    assert not (tmp_path / "out" / "gwas_trait.tsv.gz").exists()


@pytest.mark.parametrize(("dropped", "rounded"), [(12, 10), (13, 15), (2, 0)])
def test_samples_dropped_for_missing_phenotypes_are_audited_exactly_and_released_rounded(
    tmp_path, base, dropped, rounded
):
    cohort, node, audit = base
    inputs = write_inputs(cohort, tmp_path / "in", binary=False)
    design = json.loads(inputs.design.read_text())
    counts = {
        "samples_qc": 220 + dropped,
        "samples_missing_trait": 0,
        "samples_missing_covariates": dropped,
        "samples_dropped": dropped,
        "samples_covariates_imputed": 0,
    }
    inputs.design.write_text(json.dumps({**design, **counts}))
    out = release_gwas_of(node, make_study("s1"), inputs, "trait", tmp_path / "out", audit)
    sidecar = sumstats.read_sidecar(out)
    assert sidecar["samples_excluded"]["samples_dropped"] == rounded
    assert sidecar["samples_excluded"]["samples_missing_covariates"] == rounded
    assert sidecar["missing_genotypes"] == "mean"
    [record] = [r for r in _audit(audit) if r["event"] == "analysis_samples"]
    assert record["samples_dropped"] == dropped and record["samples_analysed"] == 220


# ------------------------- a GWAS that leaves a few QC samples out, after the AF release


def _left_out_release(tmp_path, left_out, uncalled_together, profiles=True):
    """AF on 300 samples with 6% missing calls (its worst row misses ~25), then a GWAS on all
    but `left_out` of them (a missing covariate); `uncalled_together` of the left-out miss the
    same variant, the others have every call. The GWAS step's profiles come with it or not."""
    rng = np.random.default_rng(99)
    cohort = random_cohort(rng, 300, COMMON, binary=False, missing=0.06)
    cohort.genotypes[:left_out] = rng.binomial(2, 0.3, size=(left_out, len(COMMON)))
    cohort.genotypes[:uncalled_together, 1] = np.nan
    node, audit = make_node(tmp_path), tmp_path / "audit.jsonl"
    study = make_study("s1")
    af = write_inputs(cohort, tmp_path / "af", binary=False)
    release_af_of(node, study, af, tmp_path / "out", audit)
    analysed = cohort.subset(np.arange(300) >= left_out)
    gwas = write_inputs(analysed, tmp_path / "gwas", binary=False)
    if profiles:
        no_calls = {
            sample: [int(j) for j in np.flatnonzero(np.isnan(cohort.genotypes[i]))]
            for i, sample in enumerate(cohort.sample_ids[:left_out])
        }
        profile = gwas.samples.with_suffix(".nocalls.json")
        profile.write_text(json.dumps({"samples": no_calls}))
    worst_af_row = int((np.isnan(cohort.genotypes)).sum(axis=0).max())
    return lambda: release_gwas_of(
        node, study, gwas, "trait", tmp_path / "out", audit
    ), worst_af_row


@pytest.mark.parametrize(
    ("left_out", "uncalled_together", "smallest"),
    [(12, 0, 12), (12, 2, 10), (12, 3, 9), (9, 0, 9), (10, 1, 9), (11, 1, 10)],
)
def test_left_out_samples_are_a_cell_of_their_own_called_members(
    tmp_path, left_out, uncalled_together, smallest
):
    """The attacker's difference of the AF and GWAS releases is the left-out cell; it is
    released when its members called at every variant number min_cell_size (10) or more."""
    release, worst = _left_out_release(tmp_path, left_out, uncalled_together)
    assert worst - uncalled_together > left_out - 10  # inheriting `worst` would refuse all
    if smallest >= 10:
        assert release().exists()
    else:
        with pytest.raises(ReleaseWithheld, match=f"min_cell_size: observed {smallest}, limit 10"):
            release()


def test_without_the_profiles_left_out_samples_inherit_the_cohort_no_calls(tmp_path):
    release, worst = _left_out_release(tmp_path, 12, 0, profiles=False)
    with pytest.raises(ReleaseWithheld, match=f"min_cell_size: observed {12 - worst}, limit"):
        release()
