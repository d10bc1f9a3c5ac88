"""Query cost: the wall time one user query takes, query encoding + search (+ fusion for a hybrid).

Each query is searched alone, as a user's query would be, after one warm-up pass over the same queries (models,
indexes and caches loaded); the cost of a retriever is the mean of its per-query times, and the report compares
it with BM25's, ``cost(r) / cost(bm25)``, measured in the same process conditions (one CPU thread when the caller
sets it, e.g. ``OMP_NUM_THREADS=1``).

Example::

    from stillhouse.eval.query_cost import timed_searches

    ms = timed_searches(lambda text: searcher.search({"q": text}, 100), ["vitamin d", "statins"], repeats=2)
    print(sum(ms) / len(ms), "ms per query")
"""

from __future__ import annotations

import time
from collections.abc import Callable


def timed_searches(search: Callable[[str], object], queries: list[str], repeats: int) -> list[float]:
    """Milliseconds of each ``search(query)`` call, over ``repeats`` passes after one warm-up pass."""
    for query in queries:
        search(query)
    times = []
    for _ in range(repeats):
        for query in queries:
            started = time.perf_counter()
            search(query)
            times.append((time.perf_counter() - started) * 1000)
    return times
