"""Stage progress of a node run: which stage started or ended, when, how long it took, what next.

Where it sits: the Snakemake runner (`pipeline.snakemake`) feeds every line of Snakemake's
output to a `StageProgress`; the lines it returns go to the caller's progress callback (the
node agent's output, `run-pipeline`'s console) and to the node log (`NODE_LOG` in the node's
work dir), so an admin watching a run of hours sees stages, not only a step counter. Nothing
else of Snakemake's output (nor any JVM or Spark chatter, which stays in the rules' logs)
reaches the console.

A stage is one Snakemake job: its rule, plus its analysis for per-analysis rules. Lines look
like ``[fi] 06:30:02 started qc (next: allele_frequencies)`` and
``[fi] 06:30:41 finished qc in 39.0 s; 1 of 8 steps done (next: allele_frequencies)``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

NODE_LOG = "node.log"  # in the node's work dir: one line per stage start/end, every run
RULE_START = re.compile(r"^(?:local)?rule (\w+):$")
JOB_ID = re.compile(r"^jobid: (\d+)$")
WILDCARDS = re.compile(r"^wildcards: (.*)$")
JOB_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
STEPS_DONE = re.compile(r"^(\d+) of (\d+) steps \((\d+%)\) done$")
ANALYSIS_WILDCARD = re.compile(r"\banalysis=([A-Za-z0-9_-]+)")
# The last field of a job's block in Snakemake 9 (then its shell command, then nothing until the
# job ends): the start is said here, not minutes later when the next block begins.
BLOCK_LAST_FIELD = re.compile(r"^resources: ")
UNKNOWN_NEXT = "the remaining steps"


@dataclass
class _Job:
    rule: str
    started: float
    analysis: str | None = None

    @property
    def stage(self) -> str:
        return f"{self.rule} {self.analysis}" if self.analysis else self.rule


def stage_plan(analyses: Sequence[tuple[str, str]]) -> list[str]:
    """The stages of a study's run in the order they can start, from (analysis id, type)."""
    plan = ["qc"]
    if any(kind == "allele_frequency" for _, kind in analyses):
        plan.append("allele_frequencies")
    plan += [f"gwas {analysis}" for analysis, kind in analyses if kind == "gwas"]
    plan.append("release_qc_metrics")
    plan += [
        f"release_{'gwas' if kind == 'gwas' else 'allele_frequencies'} {analysis}"
        for analysis, kind in analyses
    ]
    return plan


def clock_time(timestamp: float) -> str:
    """HH:MM:SS in UTC: nodes in several time zones log comparable times."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S")


@dataclass
class StageProgress:
    """Turns Snakemake's output into stage lines. Feed it every line; print what it returns."""

    node_id: str
    plan: list[str] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    _pending: dict[str, str] = field(default_factory=dict)  # the job block being read
    _jobs: dict[int, _Job] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def feed(self, raw: str) -> list[str]:
        """The progress lines (none, one or two) that this line of Snakemake output completes."""
        line = raw.strip()
        if (match := RULE_START.match(line)) is not None:
            lines = self._start_pending()
            self._pending = {"rule": match.group(1), "started": repr(self.clock())}
            return lines
        if self._pending and (match := JOB_ID.match(line)) is not None:
            self._pending["job"] = match.group(1)
            return []
        if self._pending and (match := WILDCARDS.match(line)) is not None:
            analysis = ANALYSIS_WILDCARD.search(match.group(1))
            if analysis:
                self._pending["analysis"] = analysis.group(1)
            return []
        if self._pending and BLOCK_LAST_FIELD.match(line):
            return self._start_pending()
        if (match := JOB_FINISHED.match(line)) is not None:
            return self._start_pending() + self._finished(int(match.group(1)), match.group(2))
        if (match := STEPS_DONE.match(line)) is not None:
            done = f"{match.group(1)} of {match.group(2)} steps ({match.group(3)}) done"
            return [*self._start_pending(), f"[{self.node_id}] {clock_time(self.clock())} {done}"]
        if line == "" or line.startswith("["):  # a job's block ends at a blank or a timestamp
            return self._start_pending()
        return []

    def _start_pending(self) -> list[str]:
        pending, self._pending = self._pending, {}
        if "job" not in pending:
            return []
        job = _Job(pending["rule"], float(pending["started"]), pending.get("analysis"))
        self._jobs[int(pending["job"])] = job
        self._seen.add(job.stage)
        if job.rule == "all":
            return []
        return [
            f"[{self.node_id}] {clock_time(job.started)} started {job.stage}"
            f" (next: {self.next_stage()})"
        ]

    def _finished(self, job_id: int, rule: str) -> list[str]:
        job = self._jobs.pop(job_id, None)
        if job is None or rule == "all":
            return []
        now = self.clock()
        return [
            f"[{self.node_id}] {clock_time(now)} finished {job.stage} in {now - job.started:.1f} s"
            f" (next: {self.next_stage()})"
        ]

    def next_stage(self) -> str:
        """The first planned stage not started yet ("the end" once all have)."""
        if not self.plan:
            return UNKNOWN_NEXT
        for stage in self.plan:
            if stage not in self._seen:
                return stage
        return "the end"


def append_node_log(work_dir: Path, line: str) -> None:
    """One progress line into the node log (created on first use; node-private)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / NODE_LOG, "a") as log:
        log.write(line + "\n")
