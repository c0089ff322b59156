"""The coordinator's meta-analysis engine: read GWAS-SSF inputs, align, combine, write.

`runner` orders the work; `inputs` and `spill` read the inputs once in parallel blocks;
`bins` aligns, combines and formats one position bin (in a worker process per core for large
runs); `format` writes the rows (C++ kernels in `kernels/`, built as `federation._tsv`);
`record` writes the sidecar; `frequencies` pools per-node allele-frequency tables; `options`
holds the run's choices. The formulas themselves are in `federation.stats`.
"""
