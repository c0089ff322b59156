"""A Snakemake run's provenance record, read from the log Snakemake writes."""

from __future__ import annotations

import json
from pathlib import Path

from federation.files import sha256_file
from federation.provenance.snakemake import parse_snakemake_log, write_snakemake_provenance

LOG = """\
Building DAG of jobs...
Select jobs to execute...

[Thu Dec  3 06:22:40 2026]
localrule a:
    output: a.txt
    log: a.log
    jobid: 2
    reason: Missing output files: a.txt
    resources: tmpdir=/tmp
Shell command: echo hi > a.txt 2> a.log
[Thu Dec  3 06:22:41 2026]
Finished jobid: 2 (Rule: a)
1 of 3 steps (33%) done

[Thu Dec  3 06:22:41 2026]
rule b:
    input: a.txt, c.txt
    output: b.txt
    jobid: 1
    wildcards: analysis=quant
    resources: tmpdir=/tmp
Shell command: cat a.txt
    c.txt > b.txt
[Thu Dec  3 06:22:44 2026]
Finished jobid: 1 (Rule: b)

[Thu Dec  3 06:22:44 2026]
localrule all:
    input: b.txt
    jobid: 0
Shell command: None
[Thu Dec  3 06:22:44 2026]
Finished jobid: 0 (Rule: all)
"""


def test_each_job_has_its_rule_command_files_and_times() -> None:
    jobs = parse_snakemake_log(LOG.splitlines())
    assert [job.rule for job in jobs] == ["a", "b", "all"]
    a, b, done = jobs
    assert a.command == ["echo hi > a.txt 2> a.log"] and a.fields["log"] == "a.log"
    assert b.command == ["cat a.txt", "    c.txt > b.txt"]
    assert b.fields["wildcards"] == "analysis=quant"
    assert b.start is not None and b.end is not None and b.start < b.end
    assert done.command == []


def test_the_record_digests_inputs_and_outputs_and_the_environments(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name, text in {"a.txt": "hi\n", "c.txt": "c\n", "b.txt": "hi\nc\n"}.items():
        (work / name).write_text(text)
    pipeline = tmp_path / "pipeline"
    (pipeline / "envs").mkdir(parents=True)
    (pipeline / "envs" / "federation.yaml").write_text("dependencies: [python=3.11]\n")
    log = tmp_path / "snakemake.log"
    log.write_text(LOG)
    path, digest = write_snakemake_provenance(log, work, pipeline, tmp_path / "provenance")
    assert digest == sha256_file(path)
    record = json.loads(path.read_text())
    b = record["jobs"][1]
    assert b["inputs"] == [
        {"path": "a.txt", "sha256": sha256_file(work / "a.txt")},
        {"path": "c.txt", "sha256": sha256_file(work / "c.txt")},
    ]
    assert b["outputs"] == [{"path": "b.txt", "sha256": sha256_file(work / "b.txt")}]
    assert record["software"]["environments"] == {
        "envs/federation.yaml": sha256_file(pipeline / "envs" / "federation.yaml")
    }
    assert record["start"] <= record["end"]
