"""federation.report: thinning, each figure as a valid PNG and SVG, the forest data, the page.

The study is `results.build`: node releases written here, meta outputs by the real
meta-analysis. No Hail, no browser (the integration tier renders the demo's report in Chromium).
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from federation.cli import main
from federation.report import plots
from federation.report.build import render, write_report
from federation.report.forest import Lead, orientation
from federation.report.inputs import find_sidecar, study_files
from federation.report.thinning import thin_indices
from tests.unit.report import results
from tests.unit.report.checks import assert_forest_matches

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_NAMESPACE = "{http://www.w3.org/2000/svg}svg"


def assert_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width > 100 and image.height > 100, (path, image.size)
        return image.size


def assert_svg(path: Path) -> None:
    root = ElementTree.parse(path).getroot()
    assert root.tag == SVG_NAMESPACE, (path, root.tag)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> results.UnitStudy:
    return results.build(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def report(study: results.UnitStudy):
    return write_report(study.directory)


# ------------------------------------------------------------------ thinning


def test_thinning_keeps_every_significant_point_and_bounds_the_rest() -> None:
    rng = np.random.default_rng(1)
    n = 1_000_000
    x = rng.uniform(0, 3e9, n)
    y = -np.log10(rng.uniform(size=n))
    y[:50] = rng.uniform(8, 30, 50)  # genome-wide hits
    kept = thin_indices(x, y, width=300, height=100)
    strong = np.flatnonzero(y >= 3)
    assert set(strong.tolist()) <= set(kept.tolist())
    assert kept.size <= 300 * 100 + strong.size
    assert kept.size < n / 10
    assert np.all(np.diff(kept) > 0)


def test_thinning_leaves_one_point_per_occupied_pixel() -> None:
    x = np.array([0.0, 0.001, 10.0, 10.0])
    y = np.array([0.5, 0.5, 0.5, 2.0])
    kept = thin_indices(x, y, width=10, height=10)
    assert kept.tolist() in ([0, 2, 3], [1, 2, 3])  # the two points in one pixel become one


def test_thinning_drops_points_that_cannot_be_drawn() -> None:
    kept = thin_indices(np.array([1.0, np.nan, 2.0]), np.array([np.inf, 1.0, 5.0]))
    assert kept.tolist() == [2]


# ------------------------------------------------------------------ figures


def test_every_plot_writer_makes_a_valid_png_and_svg(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    chromosome = np.repeat([1, 2, 23], 500)
    position = np.tile(np.arange(500) * 10_000 + 1, 3)
    nlp = -np.log10(rng.uniform(size=1500))
    nlp[10] = 12.0
    maf = rng.uniform(0, 0.5, 1500)
    bins = plots.MafBinLambda(0.0, 0.5, 1500, 1.01)
    rows = [plots.ForestRow("a", 0.2, 0.05, 900), plots.ForestRow("pooled", 0.2, 0.03, None, True)]
    written = [
        plots.manhattan(chromosome, position, nlp, tmp_path / "m", "m", [10]),
        plots.qq(nlp, maf, 1.01, [bins], tmp_path / "q", "q"),
        plots.forest(rows, tmp_path / "f", "f"),
        plots.regional(position[:500], nlp[:500], 100_001, tmp_path / "r", "r"),
        plots.frequency_scatter(maf, {"a": maf + 0.01}, maf > 0.49, tmp_path / "s", "s"),
    ]
    for files in written:
        assert_png(files.png)
        assert_svg(files.svg)
    assert assert_png(written[0].png) == (1800, 600)  # one pixel per thinning cell


def test_the_regional_plot_says_why_it_has_no_ld_colours(tmp_path: Path) -> None:
    files = plots.regional(np.array([1, 2]), np.array([1.0, 9.0]), 2, tmp_path / "r", "r")
    assert plots.NO_LD_NOTE in files.svg.read_text()


def test_the_manhattan_svg_stays_small_for_many_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 300_000
    chromosome = rng.integers(1, 23, n)
    files = plots.manhattan(
        chromosome, rng.integers(1, 2e8, n), -np.log10(rng.uniform(size=n)), tmp_path / "m", "m"
    )
    assert files.svg.stat().st_size < 2_000_000  # the thinned bulk is one embedded raster


# ------------------------------------------------------------------ the study report


def test_the_report_finds_both_loci_with_the_neighbour_inside_the_first(report) -> None:
    leads = report.leads[results.ANALYSIS]
    found = [(lead["chromosome"], lead["position"]) for lead in leads]
    assert sorted(found) == sorted(results.PLANTED)
    first = next(
        lead for lead in leads if (lead["chromosome"], lead["position"]) == results.PLANTED[0]
    )
    assert first["locus_variants"] == 2 and first["locus_end"] == results.NEIGHBOUR[1]
    assert first["direction"] == "+++" and first["n"] == sum(results.NODES.values())


def test_every_figure_of_the_report_is_a_valid_png_or_svg(report) -> None:
    assert len(report.plots) == 2 * (2 + 2 * len(results.PLANTED) + 1)
    for path in report.plots:
        if path.suffix == ".png":
            assert_png(path)
        else:
            assert_svg(path)


def test_the_forest_data_are_the_node_files_on_the_meta_effect_allele(
    study: results.UnitStudy, report
) -> None:
    meta = study.directory / "meta" / f"{results.ANALYSIS}.tsv.gz"
    for lead in report.leads[results.ANALYSIS]:
        assert_forest_matches(lead, study.node_files, meta)


def test_the_per_node_panel_shows_released_counts_and_harmonisation(report) -> None:
    data = json.loads(report.data.read_text())
    panel = {node["node_id"]: node for node in data["nodes"]}
    assert sorted(panel) == sorted(results.NODES)
    for node, n in results.NODES.items():
        gwas = next(a for a in panel[node]["analyses"] if a["analysis"] == results.ANALYSIS)
        assert gwas["n"] == n
        assert gwas["variants_union"] == 3 * results.VARIANTS_PER_CHROMOSOME
        assert panel[node]["qc"]["samples_passed"] == n
        frequencies = next(a for a in panel[node]["analyses"] if a["analysis"] != results.ANALYSIS)
        assert frequencies["variants_union"] == 3 * results.VARIANTS_PER_CHROMOSOME
    swaps = {
        node: next(a for a in panel[node]["analyses"] if a["analysis"] == results.ANALYSIS)[
            "allele_swaps"
        ]
        for node in panel
    }
    assert sorted(swaps.values()) == [0, 0, 3 * results.VARIANTS_PER_CHROMOSOME]


def test_the_differentiated_variant_is_flagged(report) -> None:
    data = json.loads(report.data.read_text())
    flagged = data["frequencies"]["flagged"]
    assert len(flagged) == 1
    chromosome, position = flagged[0]["variant_id"].split("_")[:2]
    assert (int(chromosome), int(position)) == results.DIFFERENTIATED
    assert flagged[0]["nodes"]["ee"] == pytest.approx(0.1, abs=0.001)


def test_the_page_links_every_figure_and_fetches_nothing(study: results.UnitStudy, report) -> None:
    page = report.html.read_text()
    assert '<meta name="viewport"' in page
    for path in report.plots:
        assert f"plots/{path.name}" in page
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page and "<script" not in page


def test_the_page_renders_without_a_crate_or_allele_frequencies(
    study: results.UnitStudy, tmp_path: Path
) -> None:
    copy = shutil.copytree(study.directory, tmp_path / results.STUDY_ID)
    (copy / "meta" / "allele_frequencies.tsv.gz").unlink()
    written = write_report(copy)
    page = written.html.read_text()
    assert "No pooled allele-frequency table" in page
    assert "not written for this study" in page
    assert not list((copy / "plots").glob("allele_frequencies.*"))  # the old figure is gone
    (copy / "ro-crate-metadata.json").write_text("{}")
    assert '<a href="ro-crate-metadata.json">' in write_report(copy).html.read_text()


def test_a_sidecar_is_found_under_either_name(tmp_path: Path) -> None:
    table = tmp_path / "x.tsv.gz"
    table.write_bytes(b"")
    assert find_sidecar(table) is None
    (tmp_path / "x.tsv.gz.yaml").write_text("a: 1\n")
    assert find_sidecar(table) == tmp_path / "x.tsv.gz.yaml"
    (tmp_path / "x.tsv.gz.yaml").unlink()
    (tmp_path / "x.tsv.gz-meta.yaml").write_text("a: 1\n")
    assert find_sidecar(table) == tmp_path / "x.tsv.gz-meta.yaml"


def test_orientation_follows_swaps_strand_flips_and_frequency_for_palindromes() -> None:
    lead = Lead(1, 100, "A", "G", 0.2)
    assert orientation(lead, "A", "G", np.nan) == 1
    assert orientation(lead, "G", "A", np.nan) == -1
    assert orientation(lead, "T", "C", np.nan) == 1  # the other strand
    assert orientation(lead, "C", "T", np.nan) == -1
    assert orientation(lead, "A", "C", np.nan) == 0  # another variant at the position
    palindrome = Lead(1, 100, "A", "T", 0.2)
    assert orientation(palindrome, "A", "T", 0.21) == 1
    assert orientation(palindrome, "A", "T", 0.79) == -1  # the frequency says: other strand


def test_render_escapes_what_the_files_say() -> None:
    context = json.loads(json.dumps(_minimal_context()))
    context["study_id"] = "<script>x</script>"
    page = render(context)
    assert "<script>x" not in page and "&lt;script&gt;" in page


def test_cli_report_rewrites_the_report_and_keeps_the_recorded_provenance(
    study: results.UnitStudy, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = shutil.copytree(study.directory, tmp_path / results.STUDY_ID)
    recorded = {"provenance": {"coordinator": {"quorum": 2, "workflow_digest": "ab" * 32}}}
    (copy / "report.json").write_text(json.dumps(recorded))
    assert main(["report", str(copy)]) == 0
    assert capsys.readouterr().out.strip() == str(copy / "report.html")
    page = (copy / "report.html").read_text()
    assert "ab" * 32 in page
    assert (
        json.loads((copy / "report.json").read_text())["provenance"]["coordinator"]["quorum"] == 2
    )


def test_cli_report_of_a_directory_without_meta_outputs_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "RESULTS_DIR" in message and "meta/" in message


def test_study_files_classify_the_meta_outputs(study: results.UnitStudy) -> None:
    files = study_files(study.directory)
    assert [result.analysis for result in files.gwas] == [results.ANALYSIS]
    assert files.frequencies is not None and files.frequencies.name == "allele_frequencies.tsv.gz"
    assert files.study_id == results.STUDY_ID
    assert {entry.node_id for entry in files.gwas[0].inputs} == set(results.NODES)


def _minimal_context() -> dict:
    return {
        "study_id": "s",
        "generated_at": "now",
        "analyses": [],
        "frequencies": None,
        "nodes": [],
        "provenance": {
            "coordinator": {
                "nodes": [],
                "quorum": None,
                "workflow_digest": None,
                "submitted_at": None,
                "node_states": {},
            },
            "nodes_released": [],
            "meta_software_versions": {},
            "report_software_versions": {},
            "node_software_versions": {},
            "crate": None,
        },
        "clumping_rule": "rule",
        "no_ld_note": plots.NO_LD_NOTE,
    }
