"""Hard-negative candidate mining: top-K from a lexical and a dense retriever, positives excluded.

Mixing BM25 and dense candidates follows the practice of TAS-Balanced (Hofstätter et al., 2021, §4)
and GISTEmbed (Solatorio, 2024): lexical candidates share terms with the query, dense ones share
meaning, and each supplies negatives the other misses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


PAIR_COLUMNS = ("query_id", "doc_id", "positive", "judged_relevant", "bm25_rank", "dense_rank")


def mine_candidates(queries: dict[str, str], positives: dict[str, list[str]], judged: dict[str, list[str]],
                    bm25_index: Path, bm25_k: int, dense_model: Path | None, dense_index: Path | None, dense_k: int,
                    batch_size: int = 64, max_seq_length: int = 0) -> tuple[dict[str, list], dict[str, int]]:
    """The mined training pairs: every query's positives, then its BM25 and dense hard-negative candidates.

    Each query is searched with BM25 (Lucene, ``bm25_index``) for its top ``bm25_k + P`` and with the base dense
    model (``dense_model`` over the FAISS folder ``dense_index``) for its top ``dense_k + P``, ``P`` the largest
    number of positives of any query, so that ``bm25_k`` and ``dense_k`` candidates remain once the positives are
    taken out (``merge_candidates``). Mixing lexical and dense candidates follows TAS-Balanced (Hofstätter et al.,
    2021, §4) and GISTEmbed (Solatorio, 2024). A retriever whose ``k`` is 0 is not searched; its model and index
    may then be None.

    ``judged_relevant`` marks the rows the labels call relevant (``judged``: query id -> every judged-relevant
    doc id): every positive, and a candidate that is a judged-relevant document left out of the positives (with
    ``positives = "first"``). The guide filter's study measures its removals against these labels.

    Returns the columns of ``PAIR_COLUMNS`` (positives first, with ranks 0; then each query's candidates, BM25
    ones by rank and dense-only ones by rank) and the counts: queries, positives, candidates,
    judged_relevant_candidates.

    Example::

        rows, stats = mine_candidates({"q1": "vitamin d and infections"}, {"q1": ["d7"]}, {"q1": ["d7"]},
                                      Path("work/BM25Index/<fp>/index"), 10, Path("work/FetchModel/<fp>/model"),
                                      Path("work/DenseIndex/<fp>"), 10)
        rows["doc_id"][:3], stats["candidates"]
    """
    from stillhouse.retrievers.bm25 import bm25_search
    from stillhouse.retrievers.dense import dense_search

    extra = max(map(len, positives.values()))
    bm25_run = bm25_search(bm25_index, queries, bm25_k + extra) if bm25_k else {}
    dense_run = (dense_search(dense_model, dense_index, queries, dense_k + extra, batch_size, max_seq_length)
                 if dense_k else {})
    candidates = merge_candidates(bm25_run, dense_run, {q: set(p) for q, p in positives.items()}, bm25_k, dense_k)
    rows: dict[str, list] = {k: [] for k in PAIR_COLUMNS}
    for query_id, docs in positives.items():
        for doc_id in docs:
            for key, value in zip(rows, (query_id, doc_id, True, True, 0, 0), strict=True):
                rows[key].append(value)
    for c in candidates:
        relevant = c.doc_id in set(judged.get(c.query_id, ()))
        for key, value in zip(rows, (c.query_id, c.doc_id, False, relevant, c.bm25_rank, c.dense_rank), strict=True):
            rows[key].append(value)
    stats = {"queries": len(queries), "positives": sum(map(len, positives.values())),
             "candidates": len(candidates), "judged_relevant_candidates": int(sum(rows["judged_relevant"])
                                                                              - sum(rows["positive"]))}
    return rows, stats
