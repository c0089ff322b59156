"""Running a study's node pipeline: input checks before any JVM, then Snakemake or cwltool.

`run.run_pipeline` is the one engine switch; `snakemake` and `cwl` are the runners, `runs`
what they share (staged publish, failure reading); `preflight` and `phenotypes` check a node's
inputs against a study in a second, before Hail starts.
"""
