"""The study report: plots (matplotlib, Agg) and a self-contained HTML page (Jinja2).

`build.write_report(results/<study_id>)` is the entry point (the coordinator calls it after each
meta-analysis; `federation report RESULTS_DIR` calls it again). It reads only released
aggregates and meta-analysis outputs (`inputs`), and writes `report.html`, `report.json` and
`plots/` (PNG for the page, SVG for papers).
"""
