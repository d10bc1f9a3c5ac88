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
from collections.abc import Iterable
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
