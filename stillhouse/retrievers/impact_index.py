"""Inference-free sparse retrieval through a Lucene impact index (Pyserini).

Documents are SPLADE-style vectors over the tokenizer's vocabulary, quantized to integer impacts and
indexed as a Pyserini ``JsonVectorCollection`` with ``-impact -pretokenized``. Queries run no model:
the query vector is the query's tokens weighted by IDF computed from the corpus (Geng et al., 2024,
"Towards Competitive Search Relevance For Inference-Free Learned Sparse Retrievers", §3.1), also
quantized, and answered by Pyserini's impact searcher (a sum of products of integer impacts).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from stillhouse.retrievers.runs import Run

log = logging.getLogger(__name__)
IMPACT_SCALE = 100  # float weight w becomes round(w * IMPACT_SCALE)


def corpus_idf(tokenizer, texts: Iterable[str]) -> np.ndarray:
    """BM25's IDF of every vocabulary entry, ``log(1 + (N - df + 0.5) / (df + 0.5))``, from document texts."""
    df = np.zeros(len(tokenizer), dtype=np.int64)
    n = 0
    for text in texts:
        n += 1
        ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        df[np.unique(np.asarray(ids, dtype=np.int64))] += 1  # an empty document (Cranfield has one) counts in N
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


def idf_query_vector(tokenizer, idf: np.ndarray, query: str) -> dict[str, float]:
    """The inference-free query: each distinct token of the query, weighted by its IDF (a table lookup; no
    special tokens, as sentence-transformers' ``SparseStaticEmbedding`` tokenizes)."""
    ids = set(tokenizer(query, add_special_tokens=False, truncation=False)["input_ids"])
    return {tokenizer.convert_ids_to_tokens(i): float(idf[i]) for i in sorted(ids) if idf[i] > 0}


def csr_row_vectors(matrix, vocab: list[str]) -> list[dict[str, float]]:
    """``{token: weight}`` of every row of a CSR matrix over ``vocab``."""
    return [{vocab[c]: float(v) for c, v in zip(matrix.indices[matrix.indptr[r]:matrix.indptr[r + 1]],
                                                matrix.data[matrix.indptr[r]:matrix.indptr[r + 1]], strict=True)}
            for r in range(matrix.shape[0])]


def quantize(weights: dict[str, float], scale: int = IMPACT_SCALE) -> dict[str, int]:
    """Integer impacts; weights that round to 0 are dropped."""
    out = {token: round(w * scale) for token, w in weights.items()}
    return {token: v for token, v in out.items() if v > 0}


def write_vector_collection(doc_ids: list[str], matrix, tokenizer, path: Path, scale: int = IMPACT_SCALE) -> None:
    """CSR rows (documents x vocabulary) as a JsonVectorCollection file, one document per line."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(matrix.shape[1])))
    with open(path, "w", encoding="utf-8") as out:
        append_vector_collection(out, doc_ids, csr_row_vectors(matrix, vocab), scale)


def append_vector_collection(out, doc_ids: list[str], vectors: list[dict[str, float]],
                             scale: int = IMPACT_SCALE) -> int:
    """Write documents as JsonVectorCollection lines (integer impacts) to an open file; return the number of
    non-zero impacts written."""
    written = 0
    for doc_id, weights in zip(doc_ids, vectors, strict=True):
        impacts = quantize(weights, scale)
        written += len(impacts)
        out.write(json.dumps({"id": doc_id, "contents": "", "vector": impacts}) + "\n")
    return written


def build_impact_index(collection_dir: Path, index_dir: Path, threads: int = 2) -> None:
    """Lucene impact index of a folder of JsonVectorCollection files."""
    from stillhouse.retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()
    from jnius import autoclass

    autoclass("io.anserini.index.IndexCollection").main([
        "-collection", "JsonVectorCollection", "-input", str(collection_dir), "-index", str(index_dir),
        "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized", "-threads", str(threads),
        "-quiet"])


def impact_search(index_dir: Path, query_vectors: dict[str, dict[str, float]], k: int,
                  scale: int = IMPACT_SCALE, threads: int = 2) -> Run:
    """Top-``k`` documents per query for already-built query vectors (token -> weight)."""
    from stillhouse.retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()
    from pyserini.search.lucene import LuceneImpactSearcher

    vectors = {q: quantize(v, scale) for q, v in query_vectors.items()}
    searcher = LuceneImpactSearcher(str(index_dir), _Lookup(vectors))
    ids = list(vectors)
    hits = searcher.batch_search(ids, ids, k=k, threads=threads)  # the "query text" is its id: see _Lookup
    searcher.close()
    return {q: {h.docid: float(h.score) / (scale * scale) for h in hits.get(q, [])} for q in ids}


def encode_batched(model, texts: list[str], batch_size: int, route: str = "document") -> Iterator:
    """CSR matrices of ``texts`` through the model's query or document route, ``batch_size`` texts at a time
    (only one batch in memory)."""
    from stillhouse.retrievers.teachers import to_csr

    encode = model.encode_document if route == "document" else model.encode_query
    for start in range(0, len(texts), batch_size):
        yield to_csr(encode(texts[start:start + batch_size], batch_size=batch_size, convert_to_sparse_tensor=True,
                            show_progress_bar=False))


def vocabulary(model) -> list[str]:
    """The model's tokens by id: the term names of its sparse vectors (and of the index's pretokenized terms)."""
    return model.tokenizer.convert_ids_to_tokens(list(range(len(model.tokenizer))))


def sparse_vectors(model, texts: list[str], batch_size: int, route: str = "document",
                   vocab: list[str] | None = None) -> Iterator[list[dict]]:
    """Token -> weight maps of ``texts`` through the model's ``document`` or ``query`` route, one list per batch of
    ``batch_size`` texts (only one batch in memory). ``vocab``: the model's ``vocabulary``, when the caller holds it
    (a searcher answering query after query builds it once)."""
    vocab = vocab or vocabulary(model)
    for matrix in encode_batched(model, texts, batch_size, route=route):
        yield csr_row_vectors(matrix, vocab)


def index_corpus(model, corpus: dict[str, dict[str, str]], folder: Path, batch_size: int = 32,
                 threads: int = 2) -> dict:
    """Encode every document (title + text) through the model's document route and index the integer impacts.

    Writes ``folder/index`` (Lucene, ``-impact -pretokenized``) and ``folder/vectors.jsonl`` (the
    JsonVectorCollection it was built from, kept for export); returns ``{documents, mean_doc_terms,
    encode_seconds, index_seconds, device}``.

    Example::

        from stillhouse.retrievers.sparse_student import load_sparse_model

        model = load_sparse_model(Path("work/TrainSparse/<fp>/model"), inference_free=True)
        stats = index_corpus(model, corpus, Path("out"))
        run = ImpactSearcher(Path("out/index"), model).search({"q1": "vitamin d"}, k=10)
    """
    from tqdm import tqdm

    from stillhouse.retrievers.dense import document_text

    doc_ids = list(corpus)
    collection = folder / "collection"
    collection.mkdir(parents=True)
    started = time.perf_counter()
    nonzero = 0
    with open(collection / "vectors.jsonl", "w", encoding="utf-8") as out, \
            tqdm(total=len(doc_ids), desc="impact vectors", unit="doc") as bar:
        texts = [document_text(corpus[d]) for d in doc_ids]
        for start, vectors in zip(range(0, len(doc_ids), batch_size), sparse_vectors(model, texts, batch_size),
                                  strict=True):
            batch_ids = doc_ids[start:start + batch_size]
            nonzero += append_vector_collection(out, batch_ids, vectors)
            bar.update(len(batch_ids))
    encode_seconds = time.perf_counter() - started
    build_impact_index(collection, folder / "index", threads)
    (collection / "vectors.jsonl").rename(folder / "vectors.jsonl")
    collection.rmdir()
    stats = {"documents": len(doc_ids), "mean_doc_terms": nonzero / max(len(doc_ids), 1),
             "encode_seconds": encode_seconds, "index_seconds": time.perf_counter() - started - encode_seconds,
             "device": str(model.device)}
    log.info("impact index: %d documents, %.1f non-zero terms per document", len(doc_ids), stats["mean_doc_terms"])
    return stats


class ImpactSearcher:
    """A Lucene impact index opened once (Pyserini's ``LuceneImpactSearcher``), queried through the model's query
    route: a table lookup for the inference-free student, the SPLADE model for a siamese one.

    ``score(q, d) = sum_t round(w_q(t) * S) * round(w_d(t) * S) / S^2`` with ``S = IMPACT_SCALE``: the query's
    weights are quantized as the index stores the documents'.

    Example::

        searcher = ImpactSearcher(Path("work/ImpactIndex/<fp>/index"), model)
        run = searcher.search({"q1": "vitamin d and infections"}, k=10)
        searcher.last_stats["mean_query_terms"]
    """

    def __init__(self, index_dir: Path, model, scale: int = IMPACT_SCALE) -> None:
        from stillhouse.retrievers.lucene_runtime import ensure_pyserini

        ensure_pyserini()
        from pyserini.search.lucene import LuceneImpactSearcher

        self.model, self.scale = model, scale
        self.vocab = vocabulary(model)  # once: every search's query vectors name their terms with it
        self.lookup = _Lookup({})
        self.searcher = LuceneImpactSearcher(str(index_dir), self.lookup)
        self.last_stats: dict = {}

    def search(self, queries: dict[str, str], k: int, threads: int = 1) -> Run:
        """Top-``k`` documents of every query (query id -> text); ``last_stats`` then holds ``{queries,
        mean_query_terms, query_encode_seconds, search_seconds}`` of this search."""
        started = time.perf_counter()
        query_ids = list(queries)
        vectors = [v for batch in sparse_vectors(self.model, [queries[q] for q in query_ids], 256, "query",
                                                   self.vocab)
                   for v in batch]
        encoded = time.perf_counter()
        self.lookup.vectors = {q: quantize(v, self.scale) for q, v in zip(query_ids, vectors, strict=True)}
        hits = self.searcher.batch_search(query_ids, query_ids, k=k, threads=threads)  # text = its id: _Lookup
        run = {q: {h.docid: float(h.score) / (self.scale * self.scale) for h in hits.get(q, [])} for q in query_ids}
        self.last_stats = {"queries": len(query_ids),
                           "mean_query_terms": sum(map(len, vectors)) / max(len(vectors), 1),
                           "query_encode_seconds": encoded - started, "search_seconds": time.perf_counter() - encoded}
        return run


class IdfQueryEncoder:
    """Pyserini's query-encoder interface for an inference-free model: text -> integer impacts of its distinct
    tokens weighted by the static table (no model runs)."""

    def __init__(self, tokenizer, weights: np.ndarray, scale: int = IMPACT_SCALE) -> None:
        self.tokenizer, self.weights, self.scale = tokenizer, weights, scale

    def encode(self, text: str) -> dict[str, int]:
        return quantize(idf_query_vector(self.tokenizer, self.weights, text), self.scale)


class _Lookup:
    """Pyserini's query-encoder interface over precomputed vectors (keyed by query id)."""

    def __init__(self, vectors: dict[str, dict[str, int]]) -> None:
        self.vectors = vectors

    def encode(self, query_id: str) -> dict[str, int]:
        return self.vectors[query_id]


def mean_nonzero(vectors: Iterable[dict]) -> float:
    sizes = [len(v) for v in vectors]
    return sum(sizes) / len(sizes) if sizes else math.nan
