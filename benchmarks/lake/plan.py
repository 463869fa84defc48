"""How much one run measures: request sizes and counts, rounds and repeats. ``--quick`` and the
full run differ only in which :class:`Plan` they use, so the two stay the same benchmark at two
sizes; the plan is also written into the results so the report can name what it measured."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to measure; ``--quick`` and the full run differ only here."""

    bulk_rows: int  # rows per bulk request
    bulk_per_node: int  # bulk requests in flight per node, all sent at once
    bulk_rounds: int  # timed rounds of the bulk workload (the median round is reported)
    clients: int
    requests_per_client: int
    small_rows: int  # rows per small request
    limit_repeats: int  # timed in-process bulk inserts per limit
    sequential_inserts: int  # in-process small insert+commit, one after another
    catalog_commits: int  # in-process catalog-only lake commits


FULL = Plan(
    bulk_rows=1_000_000,
    bulk_per_node=3,
    bulk_rounds=3,
    clients=16,
    requests_per_client=100,
    small_rows=1_000,
    limit_repeats=5,
    sequential_inserts=200,
    catalog_commits=200,
)
QUICK = Plan(
    bulk_rows=100_000,
    bulk_per_node=3,
    bulk_rounds=1,
    clients=16,
    requests_per_client=20,
    small_rows=1_000,
    limit_repeats=3,
    sequential_inserts=50,
    catalog_commits=50,
)
