"""Stage progress lines from Snakemake's output: start, end, elapsed time and what comes next."""

from __future__ import annotations

from pathlib import Path

from federation.pipeline.progress import NODE_LOG, StageProgress, append_node_log, stage_plan

# What Snakemake 9 prints for a run of the node pipeline (abridged to the lines that matter).
SNAKEMAKE_OUTPUT = """\
Building DAG of jobs...
[Thu Dec  3 06:30:00 2026]
rule qc:
    input: /data/g.bed
    output: /w/s/qc.mt
    jobid: 3
    reason: Missing output files: /w/s/qc.mt
    threads: 2

federation step qc --node-config node.yaml
[Thu Dec  3 06:30:40 2026]
Finished jobid: 3 (Rule: qc)
1 of 4 steps (25%) done

[Thu Dec  3 06:30:40 2026]
rule gwas:
    jobid: 5
    wildcards: analysis=quant_gwas
    threads: 2

[Thu Dec  3 06:31:10 2026]
Finished jobid: 5 (Rule: gwas)
2 of 4 steps (50%) done
"""


class FakeClock:
    def __init__(self, times: list[float]) -> None:
        self.times = times

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def _lines(plan: list[str], times: list[float]) -> list[str]:
    progress = StageProgress("fi", plan, clock=FakeClock(times))
    return [line for raw in SNAKEMAKE_OUTPUT.splitlines() for line in progress.feed(raw)]


def test_each_stage_gets_a_start_and_an_end_line_with_elapsed_time_and_what_is_next():
    plan = stage_plan([("quant_gwas", "gwas")])
    # clock readings: qc starts, qc ends, step count, gwas starts, gwas ends, step count
    lines = _lines(plan, [0.0, 40.0, 40.0, 40.5, 70.5, 70.5])
    assert lines == [
        "[fi] 00:00:00 started qc (next: gwas quant_gwas)",
        "[fi] 00:00:40 finished qc in 40.0 s (next: gwas quant_gwas)",
        "[fi] 00:00:40 1 of 4 steps (25%) done",
        "[fi] 00:00:40 started gwas quant_gwas (next: release_qc_metrics)",
        "[fi] 00:01:10 finished gwas quant_gwas in 30.0 s (next: release_qc_metrics)",
        "[fi] 00:01:10 2 of 4 steps (50%) done",
    ]


def test_a_stage_is_said_to_start_when_its_block_ends_not_when_it_finishes():
    # Snakemake 9.27: the block's last field is `resources:`, then the shell command, and no
    # blank line until the job's end.
    progress = StageProgress("fi", ["qc", "gwas q"], clock=FakeClock([5.0, 7.0, 99.0]))
    block = [
        "[Thu Dec  3 06:30:00 2026]",
        "localrule qc:",
        "    input: /data/g.vcf.bgz",
        "    jobid: 2",
        "    reason: Missing output files: /w/s/qc.mt",
        "    resources: tmpdir=/tmp, mem_mb=6000",
    ]
    said = [line for raw in block for line in progress.feed(raw)]
    assert said == ["[fi] 00:00:05 started qc (next: gwas q)"]
    assert progress.feed("Shell command: python -m federation step qc > qc.log 2>&1") == []
    assert progress.feed("[Thu Dec  3 06:31:34 2026]") == []
    finished = progress.feed("Finished jobid: 2 (Rule: qc)")
    assert finished == ["[fi] 00:00:07 finished qc in 2.0 s (next: gwas q)"]


def test_without_a_plan_the_next_stage_is_not_guessed():
    lines = _lines([], [0.0])
    assert lines[0].endswith("started qc (next: the remaining steps)")


def test_the_plan_lists_hail_stages_before_releases_in_study_order():
    plan = stage_plan([("af", "allele_frequency"), ("q", "gwas"), ("b", "gwas")])
    assert plan == [
        "qc",
        "allele_frequencies",
        "gwas q",
        "gwas b",
        "release_qc_metrics",
        "release_allele_frequencies af",
        "release_gwas q",
        "release_gwas b",
    ]


def test_jvm_and_shell_chatter_produces_no_progress_lines():
    progress = StageProgress("fi", ["qc"])
    chatter = [
        "Running on http://127.0.0.1:4040",
        "SLF4J: Class path contains multiple SLF4J bindings.",
        "    jobid: 7",  # outside a rule block: not a job
        "Finished jobid: 99 (Rule: qc)",  # a job never seen starting
    ]
    assert [line for raw in chatter for line in progress.feed(raw)] == []


def test_progress_lines_are_appended_to_the_node_log(tmp_path: Path):
    append_node_log(tmp_path / "work", "[fi] 00:00:00 started qc (next: gwas q)")
    append_node_log(tmp_path / "work", "[fi] 00:00:40 finished qc in 40.0 s (next: gwas q)")
    assert (tmp_path / "work" / NODE_LOG).read_text().splitlines()[1].startswith("[fi] 00:00:40")
