"""Hard-negative candidate mining: top-K from a lexical and a dense retriever, positives excluded.

Mixing BM25 and dense candidates follows the practice of TAS-Balanced (Hofstätter et al., 2021, §4)
and GISTEmbed (Solatorio, 2024): lexical candidates share terms with the query, dense ones share
meaning, and each supplies negatives the other misses.
"""

from __future__ import annotations

from dataclasses import dataclass

from stillhouse.retrievers.runs import Run


@dataclass(frozen=True)
class Candidate:
    query_id: str
    doc_id: str
    bm25_rank: int  # 1-based rank in the BM25 list, 0 when the document is not in it
    dense_rank: int  # likewise for the dense list


def top_ids(hits: dict[str, float], k: int) -> list[str]:
    """The ``k`` best document ids of one query's hits (ties broken by id, as in TREC run files)."""
    return [doc for doc, _ in sorted(hits.items(), key=lambda item: (-item[1], item[0]))[:k]]


def merge_candidates(bm25: Run, dense: Run, positives: dict[str, set[str]], bm25_k: int,
                     dense_k: int) -> list[Candidate]:
    """The union of each query's BM25 top-``bm25_k`` and dense top-``dense_k``, its positives removed.

    Order per query: BM25 candidates by rank, then dense-only candidates by rank, so the output is
    deterministic for the same inputs.
    """
    out: list[Candidate] = []
    for query_id in positives:
        bm25_ids = [d for d in top_ids(bm25.get(query_id, {}), bm25_k + len(positives[query_id]))
                    if d not in positives[query_id]][:bm25_k]
        dense_ids = [d for d in top_ids(dense.get(query_id, {}), dense_k + len(positives[query_id]))
                     if d not in positives[query_id]][:dense_k]
        bm25_rank = {d: r for r, d in enumerate(bm25_ids, start=1)}
        dense_rank = {d: r for r, d in enumerate(dense_ids, start=1)}
        for doc_id in [*bm25_ids, *(d for d in dense_ids if d not in bm25_rank)]:
            out.append(Candidate(query_id, doc_id, bm25_rank.get(doc_id, 0), dense_rank.get(doc_id, 0)))
    return out
