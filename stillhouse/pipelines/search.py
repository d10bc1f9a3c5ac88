"""``stillhouse search``: answer queries with a built retriever or hybrid, models and indexes loaded once.

Each retriever of a run is searched the way its search task searched the judged queries, from the same work-dir
folders (the BM25 Lucene index, the FAISS index and its model, the impact index and its query side); a hybrid
fuses its members' lists with ``stillhouse.retrievers.hybrid.fuse_runs`` and the weights its run used. Loading happens
once (``open_searcher``), so a second query costs only encoding, search and fusion.

Example::

    searcher = open_searcher(task)                 # a BM25Search / DenseSearch / ImpactSearch / HybridSearch
    fused, parts = searcher.search({"q1": "vitamin d and infections"}, k=10)
"""

from __future__ import annotations

import json
from pathlib import Path

from stillhouse.retrievers.runs import Run

Parts = dict[str, Run]


class Bm25Searcher:
    """Pyserini's LuceneSearcher over the BM25Index folder, with the task's k1, b and fields."""

    def __init__(self, task) -> None:
        from stillhouse.retrievers.lucene_runtime import ensure_pyserini

        ensure_pyserini()
        from pyserini.search.lucene import LuceneSearcher

        self.searcher = LuceneSearcher(str(task.index_task().out_dir / "index"))
        self.searcher.set_bm25(task.k1, task.b)
        self.fields = {"contents": 1.0, "title": 1.0} if task.multifield else {}

    def search(self, queries: dict[str, str], k: int) -> tuple[Run, Parts]:
        ids = list(queries)
        hits = self.searcher.batch_search([queries[q] for q in ids], ids, k=k, threads=1, fields=self.fields)
        return {q: {h.docid: float(h.score) for h in hits.get(q, [])} for q in ids}, {}


class DenseSearcher:
    """The task's sentence-transformers model and its exact FAISS index."""

    def __init__(self, task) -> None:
        from stillhouse.retrievers import faiss_index
        from stillhouse.retrievers.dense import load_sentence_encoder

        self.model = load_sentence_encoder(task.fetch_task().model_dir(), task.max_seq_length or None)
        index_dir = task.index_task().out_dir
        self.index = faiss_index.load_index(index_dir / "index.faiss")
        self.doc_ids = json.loads((index_dir / "docids.json").read_text())

    def search(self, queries: dict[str, str], k: int) -> tuple[Run, Parts]:
        from stillhouse.retrievers import faiss_index
        from stillhouse.retrievers.dense import encode

        ids = list(queries)
        vectors = encode(self.model, [queries[q] for q in ids], 64, progress=False)
        scores, rows = faiss_index.search(self.index, vectors, k)
        return {q: {self.doc_ids[r]: float(s) for s, r in zip(scores[i], rows[i], strict=True) if r >= 0}
                for i, q in enumerate(ids)}, {}


class _QueryVectors:
    """Pyserini's query-encoder interface over the vectors of the batch being searched (keyed by query id)."""

    def __init__(self) -> None:
        self.vectors: dict[str, dict[str, int]] = {}

    def encode(self, query_id: str) -> dict[str, int]:
        return self.vectors[query_id]


class ImpactSearcher:
    """The impact index through Pyserini's LuceneImpactSearcher; queries through the model's query route (a table
    lookup for the inference-free student, the SPLADE model for a siamese one), quantized as the index stores."""

    def __init__(self, task) -> None:
        from stillhouse.retrievers.lucene_runtime import ensure_pyserini

        ensure_pyserini()
        from pyserini.search.lucene import LuceneImpactSearcher

        self.model = task.load_model()
        self.vocab = task.vocabulary(self.model)
        self.lookup = _QueryVectors()
        self.searcher = LuceneImpactSearcher(str(task.index_task().out_dir / "index"), self.lookup)

    def search(self, queries: dict[str, str], k: int) -> tuple[Run, Parts]:
        from stillhouse.retrievers.impact_index import IMPACT_SCALE, csr_row_vectors, quantize
        from stillhouse.retrievers.sparse_student import encode_batched

        ids = list(queries)
        vectors = [v for matrix in encode_batched(self.model, [queries[q] for q in ids], 256, route="query")
                   for v in csr_row_vectors(matrix, self.vocab)]
        self.lookup.vectors = {q: quantize(v) for q, v in zip(ids, vectors, strict=True)}
        hits = self.searcher.batch_search(ids, ids, k=k, threads=1)  # the "query text" is its id: see _QueryVectors
        scale = IMPACT_SCALE * IMPACT_SCALE
        return {q: {h.docid: float(h.score) / scale for h in hits.get(q, [])} for q in ids}, {}


class HybridSearcher:
    """Each member's searcher, fused with the weights the hybrid's run used."""

    def __init__(self, task) -> None:
        self.members = {name: open_searcher(member) for name, member in task.searches().items()}
        self.weights = task.member_weights()
        self.depth = task.top_k

    def search(self, queries: dict[str, str], k: int) -> tuple[Run, Parts]:
        from stillhouse.retrievers.hybrid import fuse_runs

        runs = {name: member.search(queries, self.depth)[0] for name, member in self.members.items()}
        fused, parts = fuse_runs(runs, {m: w for m, w in self.weights.items() if w > 0}, self.depth)
        top = {q: dict(list(hits.items())[:k]) for q, hits in fused.items()}
        return top, {name: {q: {d: part[q][d] for d in top[q]} for q in top} for name, part in parts.items()}


def open_searcher(task):
    """The live searcher for a built search task (BM25Search, DenseSearch, ImpactSearch or HybridSearch)."""
    searchers = {"BM25Search": Bm25Searcher, "DenseSearch": DenseSearcher, "ImpactSearch": ImpactSearcher,
                 "HybridSearch": HybridSearcher}
    return searchers[task.task_family](task)


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
