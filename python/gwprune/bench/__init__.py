"""``gwprune bench``: the pruning-pattern latency benchmark (see docs/benchmarks.md).

Modules, one job each: workloads (layer shapes), masks (the four patterns),
precision (dtypes, TF32 flags, tolerances), case (data, masks and references of
one setting), providers/ (the implementations compared), correctness (the gate
before timing), timing, runner (the loop), results / report_md / plots / outputs
(what is written), environment (what is recorded), cli.
"""
