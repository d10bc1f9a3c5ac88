"""Round-trip consistency filtering (Promptagator, Dai et al. 2022, §3.2; after Alberti et al. 2019).

A generated query is kept only if its source document is among the top-k documents a retriever returns
for it (k = 1 by default). The retriever is configurable (BM25, the base dense model, or a dense model
trained on the unfiltered queries, the paper's choice). Copies and degenerate outputs are rejected
before the round trip, since a verbatim copy round-trips trivially.
"""

from __future__ import annotations

from stillhouse.retrievers.runs import Run


def source_ranks(run: Run, source_doc: dict[str, str]) -> dict[str, int | None]:
    """1-based rank of each query's source document in the run, None if absent."""
    ranks: dict[str, int | None] = {}
    for query_id, doc_id in source_doc.items():
        ranked = sorted(run.get(query_id, {}).items(), key=lambda item: (-item[1], item[0]))
        ranks[query_id] = next((i for i, (d, _) in enumerate(ranked, start=1) if d == doc_id), None)
    return ranks


def round_trip_rate(ranks: dict[str, int | None], k: int = 1) -> float:
    """Share of queries whose source document is within the top ``k``."""
    return sum(r is not None and r <= k for r in ranks.values()) / max(len(ranks), 1)
