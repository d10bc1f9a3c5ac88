"""Round-trip consistency filtering (Promptagator, Dai et al. 2022, §3.2; after Alberti et al. 2019).

The idea: a generated query is worth training on only if a retriever, given the query, finds the document the
query was generated from. For a query ``q`` generated from document ``d_q``, with ``rank_R(d_q | q)`` the rank of
``d_q`` in retriever ``R``'s list for ``q`` (0 when absent from the top ``RANK_DEPTH``),

    keep(q) = 1[not copy(q)] * 1[not degenerate(q)] * 1[not duplicate(q)] * 1[0 < rank_R(d_q | q) <= k]

with ``k = 1`` by default. ``R`` is configurable: BM25, the base dense model, or the base dense model fine-tuned on
the unfiltered generated queries (``stillhouse.retrievers.finetune.finetune_on_pairs``, the paper's choice).
Copies of the document or of a prompt example and degenerate outputs are judged before the round trip
(``stillhouse.generators.query_gen.judge_rows``), since a verbatim copy round-trips trivially. Every rank is
recorded (BM25's, the dense model's and the fine-tuned one's when built), whichever ``R`` decides.

Example::

    summary = filter_generated(rows, corpus, example_queries, Path("bm25/index"), Path("dense/index"),
                               Path("minilm"), roundtrip="bm25", k=1, out_path=Path("labeled.parquet"))
    summary["kept_rate"], summary["bm25_top1"]
"""

from __future__ import annotations

import logging
from pathlib import Path

from stillhouse.generators.examples import prompt_text
from stillhouse.generators.query_gen import judge_rows
from stillhouse.retrievers.dense import dense_search
from stillhouse.retrievers.runs import Run

log = logging.getLogger(__name__)
RANK_DEPTH = 10


def filter_generated(rows: list[dict], corpus: dict[str, dict[str, str]], example_queries: list[str],
                     bm25_index: Path, dense_index: Path, dense_model: Path, roundtrip: str, k: int,
                     out_path: Path, trained: Path | None = None) -> dict:
    """Label ``rows`` in place, write them as Parquet, and return the summary counts. ``trained`` is a
    ``RoundTripRetriever`` folder (``model/`` + ``index/``), needed when ``roundtrip`` is ``"trained"``."""
    from datasets import Dataset

    from stillhouse.retrievers.bm25 import bm25_search

    judge_rows(rows, {r["doc_id"]: prompt_text(corpus[r["doc_id"]]) for r in rows}, example_queries)
    usable = {r["query_id"]: r["text"] for r in rows if r["text"].strip()}
    sources = {r["query_id"]: r["doc_id"] for r in rows if r["query_id"] in usable}
    bm25_ranks = source_ranks(bm25_search(bm25_index, usable, RANK_DEPTH) if usable else {}, sources)
    dense_ranks = source_ranks(dense_search(dense_model, dense_index, usable, RANK_DEPTH) if usable else {}, sources)
    if roundtrip == "trained" and trained is None:
        raise ValueError("roundtrip = 'trained' needs the RoundTripRetriever folder")
    trained_ranks: dict = {}
    if trained is not None:
        run = dense_search(trained / "model", trained / "index", usable, RANK_DEPTH) if usable else {}
        trained_ranks = source_ranks(run, sources)
    for row in rows:
        row["bm25_rank"] = bm25_ranks.get(row["query_id"]) or 0
        row["dense_rank"] = dense_ranks.get(row["query_id"]) or 0
        if trained is not None:
            row["trained_rank"] = trained_ranks.get(row["query_id"]) or 0
        rank = row["trained_rank"] if roundtrip == "trained" else row[f"{roundtrip}_rank"]
        row["kept"] = bool(not row["degenerate"] and not row["copy"] and not row["duplicate"] and 0 < rank <= k)
    Dataset.from_list(rows).to_parquet(str(out_path))
    summary = summarize(rows, bm25_ranks, dense_ranks)
    if trained is not None:
        ids = [r["query_id"] for r in rows]
        summary["trained_top1"] = round_trip_rate({q: trained_ranks.get(q) for q in ids}, 1)
        summary["kept_trained_top1"] = round_trip_rate({r["query_id"]: trained_ranks.get(r["query_id"])
                                                        for r in rows if r["kept"]}, 1)
    log.info("%d generated, %d kept (%.1f%%)", summary["generated"], summary["kept"], 100 * summary["kept_rate"])
    return summary


def summarize(rows: list[dict], bm25_ranks: dict, dense_ranks: dict) -> dict:
    n = max(len(rows), 1)
    kept = [r for r in rows if r["kept"]]
    kept_ids = {r["query_id"] for r in kept}
    return {
        "generated": len(rows), "kept": len(kept), "kept_rate": len(kept) / n,
        "bm25_top1": round_trip_rate({q: bm25_ranks.get(q) for q in (r["query_id"] for r in rows)}, 1),
        "dense_top1": round_trip_rate({q: dense_ranks.get(q) for q in (r["query_id"] for r in rows)}, 1),
        "kept_bm25_top1": round_trip_rate({q: bm25_ranks.get(q) for q in kept_ids}, 1) if kept else 0.0,
        "kept_dense_top1": round_trip_rate({q: dense_ranks.get(q) for q in kept_ids}, 1) if kept else 0.0,
        "copy_rate": sum(bool(r["copy"]) for r in rows) / n,
        "copy_document_rate": sum(r["copy"] == "document" for r in rows) / n,
        "copy_example_rate": sum(r["copy"] == "example" for r in rows) / n,
        "degenerate_rate": sum(bool(r["degenerate"]) for r in rows) / n,
        "duplicate_rate": sum(r["duplicate"] for r in rows) / n,
        "examples": [{"doc_id": r["doc_id"], "query": r["text"]} for r in kept[:5]],
        "rejected_examples": [{"doc_id": r["doc_id"], "query": r["text"], "why": r["copy"] or r["degenerate"]
                               or ("duplicate" if r["duplicate"] else "round trip")}
                              for r in rows if not r["kept"]][:5],
    }


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
