"""Arrowport nodes on one DuckLake: ``python -m benchmarks.lake [--quick] [--nodes 1,2,3]``.

Measures, in one run, the aggregate ingest rate of 1, 2, 3 … ``arrowport serve`` processes
sharing one DuckLake (catalog in PostgreSQL, Parquet in an S3-compatible store) for two
workloads — 1M-row HTTP binary requests all at once, and 16 clients sending 1k-row requests —
beside the single-node DuckDB-file target and DuckDB's own in-process limits, and measures what
limits the scaling: the lake's catalog commit rate, Parquet writing vs the catalog commit, and
the CPU of every process involved (nodes, PostgreSQL, the S3 server, the load generator).

The lake comes from the test services (``scripts/test_services.py start``, then
``set -a; . .services/env; set +a``). See benchmarks/README.md, "Lake: nodes on one DuckLake".

The modules, in the order a run uses them: :mod:`.run` (options, the run, the results file),
:mod:`.plan` (how much to measure), :mod:`.services` (the test services and the lake's catalog),
:mod:`.procfs` and :mod:`.meter` (CPU and commits of a workload), :mod:`.session` (DuckDB in
this process on a lake, and removing a lake), :mod:`.limits` (the in-process limits),
:mod:`.workloads` (requests sent to nodes), :mod:`.targets` (the nodes measured),
:mod:`.results`, :mod:`.projection`, :mod:`.tables` and :mod:`.report` (what is printed).
"""
