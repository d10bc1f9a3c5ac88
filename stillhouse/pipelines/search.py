"""``stillhouse search``: answer queries with a built retriever or hybrid, models and indexes loaded once.

Each retriever of a run is searched by the library searcher its search task uses on the judged queries
(``Bm25Searcher``, ``DenseSearcher``, ``ImpactSearcher``), opened on the same work-dir folders; a hybrid fuses its
members' lists with ``stillhouse.retrievers.hybrid.HybridSearcher`` and the weights its run used. Loading happens
once (``open_searcher``), so a second query costs only encoding, search and fusion.

Example::

    searcher = open_searcher(task)                 # a BM25Search / DenseSearch / ImpactSearch / HybridSearch
    fused, parts = searcher.search({"q1": "vitamin d and infections"}, k=10)
"""

from __future__ import annotations

import json
from pathlib import Path

from stillhouse.retrievers.runs import Run


def member_searcher(task):
    """The library searcher over a built BM25Search, DenseSearch or ImpactSearch task's indexes and model."""
    if task.task_family == "BM25Search":
        from stillhouse.retrievers.bm25 import Bm25Searcher

        return Bm25Searcher(task.index_task().out_dir / "index", task.k1, task.b, task.multifield)
    if task.task_family == "DenseSearch":
        from stillhouse.retrievers.dense import DenseSearcher

        return DenseSearcher(task.fetch_task().model_dir(), task.index_task().out_dir, task.max_seq_length,
                             task.quantize)
    from stillhouse.retrievers.impact_index import ImpactSearcher

    return ImpactSearcher(task.index_task().out_dir / "index", task.load_model())


def open_searcher(task):
    """The live searcher for a built search task: ``search(queries, k) -> (run, parts)``, where ``parts`` holds each
    hybrid member's normalized scores of the returned documents (empty for a single retriever)."""
    from stillhouse.retrievers.hybrid import HybridSearcher

    if task.task_family == "HybridSearch":
        members = {name: member_searcher(member) for name, member in task.searches().items()}
        return HybridSearcher(members, task.member_weights(), task.top_k)
    return _Single(member_searcher(task))


class _Single:
    """One retriever's searcher with the hybrid searcher's ``(run, parts)`` answer."""

    def __init__(self, searcher) -> None:
        self.searcher = searcher

    def search(self, queries: dict[str, str], k: int) -> tuple[Run, dict[str, Run]]:
        return self.searcher.search(queries, k), {}


def read_queries(path: Path) -> dict[str, str]:
    """Queries from a TSV (``id<TAB>text``) or JSONL (BEIR's ``{"_id", "text"}``) file."""
    from stillhouse.retrievers.errors import UserError

    queries: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the queries ({exc.__class__.__name__}); give a UTF-8 TSV or JSONL "
                        "file") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                queries[str(row["_id"])] = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{number}: not a JSON object with \"_id\" and \"text\"") from None
        else:
            query_id, tab, text = line.rstrip("\n").partition("\t")
            if not tab or not text.strip():
                raise UserError(f"{path}:{number}: expected \"id<TAB>query text\" (or give a .jsonl file)")
            queries[query_id] = text
    if not queries:
        raise UserError(f"{path}: no queries")
    return queries


def titles(corpus: Path) -> dict[str, str]:
    """Every document's title (or the start of its text), read once from a BEIR ``corpus.jsonl``."""
    found: dict[str, str] = {}
    with open(corpus, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                doc = json.loads(line)
                found[doc["_id"]] = doc.get("title") or doc.get("text", "")[:80]
    return found
