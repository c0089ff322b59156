"""Provenance for reproducibility reviewers: code identity, the study's RO-Crate, verify, reproduce.

`identity` names the exact code that ran (package version, SHA-256 of the bundle and of each
workflow file, the git commit of a checkout) for every sidecar and crate. `snakemake` keeps a
Snakemake run's provenance on the node, like cwltool's CWLProv record. `crate` writes the
coordinator's study crate (RO-Crate 1.2, Workflow Run and Provenance Run Crate profiles, one
nested crate per node built from what the node released and signed) and signs its digests.
`verify` checks a crate; `reproduce` re-runs the coordinator's side (and, for synthetic
cohorts, the nodes') and compares. The coordinator may use this package; it never imports the
node, so a node can use `identity` and `snakemake` too.
"""
