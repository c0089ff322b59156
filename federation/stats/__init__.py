"""Pure statistics over arrays: meta-analysis formulas, log-space tails, allele harmonisation.

No I/O (no files, no paths) and no pandas: numpy, scipy.special and pyarrow arrays only, so
every function here can be tested against its formula and reused by the node and the
coordinator alike.
"""
