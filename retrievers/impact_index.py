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

from retrievers.runs import Run

log = logging.getLogger(__name__)
IMPACT_SCALE = 100  # float weight w becomes round(w * IMPACT_SCALE)


def corpus_idf(tokenizer, texts: Iterable[str]) -> np.ndarray:
    """BM25's IDF of every vocabulary entry, ``log(1 + (N - df + 0.5) / (df + 0.5))``, from document texts."""
    df = np.zeros(len(tokenizer), dtype=np.int64)
    n = 0
    for text in texts:
        n += 1
        ids = np.unique(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])
        df[ids] += 1
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


def idf_query_vector(tokenizer, idf: np.ndarray, query: str) -> dict[str, float]:
    """The inference-free query: each distinct token of the query, weighted by its IDF (a table lookup)."""
    ids = set(tokenizer(query, add_special_tokens=False, truncation=False)["input_ids"])
    return {tokenizer.convert_ids_to_tokens(i): float(idf[i]) for i in sorted(ids)}


def quantize(weights: dict[str, float], scale: int = IMPACT_SCALE) -> dict[str, int]:
    """Integer impacts; weights that round to 0 are dropped."""
    out = {token: round(w * scale) for token, w in weights.items()}
    return {token: v for token, v in out.items() if v > 0}


def write_vector_collection(doc_ids: list[str], matrix, tokenizer, path: Path, scale: int = IMPACT_SCALE) -> None:
    """Stream CSR rows (documents x vocabulary) to a JsonVectorCollection file, one document per line."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(matrix.shape[1])))
    with open(path, "w", encoding="utf-8") as out:
        for row, doc_id in enumerate(doc_ids):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            weights = {vocab[c]: float(v) for c, v in zip(matrix.indices[start:end], matrix.data[start:end],
                                                          strict=True)}
            out.write(json.dumps({"id": doc_id, "contents": "", "vector": quantize(weights, scale)}) + "\n")


def build_impact_index(collection_dir: Path, index_dir: Path, threads: int = 2) -> None:
    """Lucene impact index of a folder of JsonVectorCollection files."""
    from retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()
    from jnius import autoclass

    autoclass("io.anserini.index.IndexCollection").main([
        "-collection", "JsonVectorCollection", "-input", str(collection_dir), "-index", str(index_dir),
        "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized", "-threads", str(threads),
        "-quiet"])


def impact_search(index_dir: Path, query_vectors: dict[str, dict[str, float]], k: int,
                  scale: int = IMPACT_SCALE, threads: int = 2) -> Run:
    """Top-``k`` documents per query for already-built query vectors (token -> weight)."""
    from retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()
    from pyserini.search.lucene import LuceneImpactSearcher

    vectors = {q: quantize(v, scale) for q, v in query_vectors.items()}
    searcher = LuceneImpactSearcher(str(index_dir), _Lookup(vectors))
    ids = list(vectors)
    hits = searcher.batch_search(ids, ids, k=k, threads=threads)  # the "query text" is its id: see _Lookup
    searcher.close()
    return {q: {h.docid: float(h.score) / (scale * scale) for h in hits.get(q, [])} for q in ids}


class _Lookup:
    """Pyserini's query-encoder interface over precomputed vectors (keyed by query id)."""

    def __init__(self, vectors: dict[str, dict[str, int]]) -> None:
        self.vectors = vectors

    def encode(self, query_id: str) -> dict[str, int]:
        return self.vectors[query_id]


def mean_nonzero(vectors: Iterable[dict]) -> float:
    sizes = [len(v) for v in vectors]
    return sum(sizes) / len(sizes) if sizes else math.nan
