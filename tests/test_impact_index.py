"""The Lucene impact index with an inference-free (IDF lookup) query side, on real SPLADE-tiny document
vectors of the SciFact slice: Lucene's top-10 must match the exact float dot products, and the benchmark's
Lucene-free impact scoring must give Lucene's scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stillhouse.eval.beir_data import load_beir
from stillhouse.retrievers.dense import document_text
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.impact_index import (
    build_impact_index,
    corpus_idf,
    idf_query_vector,
    impact_search,
    write_vector_collection,
)
from stillhouse.retrievers.model_sources import ModelSource, materialize
from stillhouse.retrievers.teachers import encode_sparse_documents, load_sparse_encoder

from .conftest import SPLADE_TINY

pytestmark = pytest.mark.slow


def test_impact_index_matches_exact_scores(slice_root: Path, tmp_path: Path) -> None:
    data = load_beir(slice_root / "scifact", "test")
    doc_ids = list(data.corpus)[:150]
    texts = [document_text(data.corpus[d]) for d in doc_ids]
    model_dir = tmp_path / "splade"
    materialize(ModelSource.parse(SPLADE_TINY), model_dir)
    tokenizer = load_sparse_encoder(model_dir).tokenizer
    with pytest.raises(UserError, match="max_seq_length 1024 is past the model's 512 positions"):
        load_sparse_encoder(model_dir, 1024)  # SPLADE-tiny's position table ends at 512
    from stillhouse.retrievers.sparse_student import SparseStudentSettings, train_sparse_student

    with pytest.raises(UserError, match="max_seq_length 1024 is past the model's 512 positions"):  # before training
        train_sparse_student(model_dir, np.ones(len(tokenizer), dtype=np.float32), {"query_id": ["1"]},
                             tmp_path / "student", tmp_path / "checkpoints",
                             SparseStudentSettings(max_seq_length=1024, train_max_seq_length=128))
    matrix = encode_sparse_documents(model_dir, texts, 16, 128)
    idf = corpus_idf(tokenizer, texts)
    assert idf[tokenizer.convert_tokens_to_ids("the")] < idf[tokenizer.convert_tokens_to_ids("lymphocyte")]
    # An empty document (Cranfield has one) counts in N and adds no term.
    with_empty = corpus_idf(tokenizer, [*texts, ""])
    assert np.all(with_empty >= idf) and with_empty[tokenizer.convert_tokens_to_ids("the")] > idf[
        tokenizer.convert_tokens_to_ids("the")]

    (tmp_path / "collection").mkdir()
    write_vector_collection(doc_ids, matrix, tokenizer, tmp_path / "collection" / "docs.jsonl")
    build_impact_index(tmp_path / "collection", tmp_path / "index")
    queries = dict(list(data.queries.items())[:10])
    vectors = {q: idf_query_vector(tokenizer, idf, text) for q, text in queries.items()}
    assert all("[CLS]" not in v and v for v in vectors.values())
    run = impact_search(tmp_path / "index", vectors, k=10)

    dense_docs = matrix.toarray()
    overlaps = []
    for q, vector in vectors.items():
        query = np.zeros(matrix.shape[1], dtype=np.float32)
        for token, weight in vector.items():
            query[tokenizer.convert_tokens_to_ids(token)] = weight
        exact = dense_docs @ query
        top = [doc_ids[i] for i in np.argsort(-exact, kind="stable")[:10] if exact[i] > 0]
        overlaps.append(len(set(top) & set(run[q])) / max(len(top), 1))
        best = doc_ids[int(np.argmax(exact))]
        assert run[q][best] == pytest.approx(float(exact.max()), rel=0.05)  # quantization error only
    assert np.mean(overlaps) >= 0.9, overlaps

    # benchmarks.train_sparse (a GPU machine has no Lucene) sums the same integer impacts: Lucene's scores.
    from scipy.sparse import csr_matrix

    from benchmarks.train_sparse import impacts, top_k

    cells = [(row, tokenizer.convert_tokens_to_ids(token), weight)
             for row, vector in enumerate(vectors.values()) for token, weight in vector.items()]
    rows, columns, weights = zip(*cells, strict=True)
    query_matrix = csr_matrix((weights, (rows, columns)), shape=(len(vectors), matrix.shape[1]))
    _, scores = top_k(impacts(query_matrix), impacts(matrix), 10)
    for i, q in enumerate(vectors):
        lucene = sorted(run[q].values(), reverse=True)
        assert list(scores[i][: len(lucene)]) == pytest.approx(lucene, abs=1e-5)

    # benchmarks.sparse_window: windows cover a long document in order, within the encoder's window, and their
    # vectors max-pool into one row per document.
    from benchmarks.sparse_window import document_windows, max_pool_rows

    long_text = " ".join(texts[:3])
    spans = document_windows(tokenizer, long_text, 64, 48)
    assert len(spans) > 2 and long_text.startswith(spans[0]) and long_text.endswith(spans[-1])
    assert all(len(tokenizer(span)["input_ids"]) <= 64 for span in spans)
    tokens = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    rebuilt = [tokenizer(span, add_special_tokens=False)["input_ids"] for span in spans]
    assert rebuilt[0] == tokens[:len(rebuilt[0])] and rebuilt[-1] == tokens[-len(rebuilt[-1]):]
    assert all(any(part == tokens[i:i + len(part)] for i in range(len(tokens))) for part in rebuilt)

    def covers_in_order(text: str, spans: list[str]) -> bool:
        """Each span starts after the previous one and no later than its end (overlap, or only spaces between)."""
        previous_start, previous_end = -1, 0
        for span in spans:
            start = text.find(span, previous_start + 1)
            if start < 0 or start <= previous_start or text[previous_end:start].strip():
                return False
            previous_start, previous_end = start, start + len(span)
        return previous_end == len(text)

    assert covers_in_order(long_text, spans) and not covers_in_order(long_text, spans[::2])
    one_word = "pneumonoultramicroscopicsilicovolcanoconiosis" * 2  # 34 word pieces (at 100+ characters: [UNK])
    pieces = document_windows(tokenizer, f"lung {one_word} dust", 8, 4)
    assert len(pieces) > 2 and covers_in_order(f"lung {one_word} dust", pieces)
    assert document_windows(tokenizer, texts[0], 4096, 1) == [texts[0]]
    with pytest.raises(ValueError, match="stride 0"):
        document_windows(tokenizer, long_text, 64, 0)
    owners = np.array([0, 1, 0, 2, 2, 2])
    pooled = max_pool_rows(matrix[:6], owners, 4).toarray()
    expected = np.zeros_like(pooled)
    for row, owner in enumerate(owners):
        expected[owner] = np.maximum(expected[owner], matrix[row].toarray()[0])
    assert np.array_equal(pooled, expected) and not pooled[3].any()
    assert max_pool_rows(csr_matrix((2, matrix.shape[1])), np.array([0, 1]), 2).nnz == 0
