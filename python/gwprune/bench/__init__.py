"""``gwprune bench``: the pruning-pattern latency benchmark (see docs/benchmarks.md).

Layer benchmark, modules with one job each: workloads (layer shapes), masks (the four
patterns), precision (dtypes, TF32 flags, tolerances), case (data, masks and references
of one setting), providers/ (the implementations compared), correctness (the gate
before timing), timing, runner (the loop), results / report_md / plots / outputs (what
is written), environment (what is recorded), csv_io (CSV rows), cli.

Model-level benchmark (``gwprune bench --models``): model_specs (the four models and
their inputs), model_pruning (prune, convert, masked dense copy), model_case (one model
on a device), cuda_graphs (the timed call), model_measure (check, then time),
model_runner (the loop), model_results / model_report_md / model_plots / model_outputs
(what is written), model_cli (the command flow).
"""
