"""Sparse-student training runs outside the DAG: ``python -m benchmarks.train_sparse``.

For a GPU machine that has no Lucene or luigi, as ``benchmarks.train_dense`` is for the dense student: for each
setting of a grid it runs the functions the ``TrainSparse`` task runs through ``train_student`` (``student_triples``,
``corpus_idf``, ``train_sparse_student``) on a TASTriples table copied from a work dir, then encodes the corpus
through the student's document route and the queries of the given splits through its query route (the IDF lookup, no
model), quantizes both to the integer impacts the Lucene index stores
(``stillhouse.retrievers.impact_index.quantize``) and
keeps the exact top-100 of their sum of products: Lucene's impact score, without Lucene (ties may order
differently). It writes ``runs.npz`` in ``benchmarks.train_dense``'s layout, so ``python -m
benchmarks.train_dense_eval`` scores it with the pipeline's own metrics, and ``stages.json`` (wall times, terms
per document and query).

Select settings on the train split only; the test split is read once, for the chosen setting, through the DAG.
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import scipy.sparse as sp

from benchmarks.student_grid import add_grid_arguments, load_grid_inputs, timed
from stillhouse.retrievers.dense import document_text
from stillhouse.retrievers.distill_dense import student_triples
from stillhouse.retrievers.impact_index import IMPACT_SCALE, corpus_idf, encode_batched
from stillhouse.retrievers.sparse_student import (
    load_inference_free_encoder,
    masked_lm_folder,
    sparse_student_settings,
    train_sparse_student,
)


def impacts(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Integer impacts ``round(w * IMPACT_SCALE)`` of a CSR matrix, zeros dropped: ``impact_index.quantize``'s
    rounding over a whole matrix at once (what the index stores)."""
    out = matrix.tocsr(copy=True).astype(np.float64)
    out.data = np.rint(out.data * IMPACT_SCALE)
    out.eliminate_zeros()
    return out


def encode_all(model, texts: list[str], batch_size: int, route: str) -> sp.csr_matrix:
    return sp.vstack(list(encode_batched(model, texts, batch_size, route=route))).tocsr()


def top_k(queries: sp.csr_matrix, docs: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the ``k`` highest impact sums per query (exact, dense score matrix in blocks)."""
    doc_t = docs.T.tocsc()
    rows, scores = [], []
    for start in range(0, queries.shape[0], 256):
        block = (queries[start:start + 256] @ doc_t).toarray()
        part = np.argsort(-block, axis=1, kind="stable")[:, :k]
        rows.append(part.astype(np.int32))
        scores.append(np.take_along_axis(block, part, axis=1).astype(np.float32) / IMPACT_SCALE ** 2)
    return np.concatenate(rows), np.concatenate(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "TrainSparse", "sparse_student", "/tmp/train_sparse")
    args = parser.parse_args()
    grid = load_grid_inputs(args)

    from transformers import AutoTokenizer

    # The corpus IDF table once for the grid: every entry's document encoder keeps the base's tokenizer (a tied
    # MLM head is added to a copy of the base folder, tokenizer included).
    idf = corpus_idf(AutoTokenizer.from_pretrained(args.base), (document_text(d) for d in grid.corpus.values()))
    for name, table, weights, student in grid.entries(args.grid, args.max_queries):
        out = args.scratch / name
        doc_dir = masked_lm_folder(args.base, student["mlm_head"], out / "mlm-base", student["base_model"],
                                   seed=student["seed"])
        triples = student_triples(table, grid.corpus, student["negatives_per_query"], 1.0)
        settings = sparse_student_settings(student, args.margin_bins)
        stats = train_sparse_student(doc_dir, idf, triples, out / "model", out / "checkpoints", settings)
        grid.record({"stage": "train", "name": name, "settings": student, "weights": weights,
                     "seconds": round(stats["seconds"], 2), "steps": stats["steps"],
                     "pairs_per_second": round(stats["pairs_per_second"], 1), "precision": stats["precision"],
                     "train_loss": stats["train_loss"], "margin_scale": stats["margin_scale"],
                     "device": grid.device})
        model = load_inference_free_encoder(out / "model")
        with timed("encode corpus", grid.stages, model=name, docs=len(grid.doc_texts), device=grid.device):
            docs = impacts(encode_all(model, grid.doc_texts, 64, "document"))
        for split, data in grid.datasets.items():
            queries = impacts(encode_all(model, list(data.queries.values()), 256, "query"))
            grid.record({"stage": "search", "name": name, "split": split,
                         "terms_per_doc": round(docs.nnz / docs.shape[0], 1),
                         "terms_per_query": round(queries.nnz / queries.shape[0], 2)})
            grid.runs[f"{split}/{name}/rows"], grid.runs[f"{split}/{name}/scores"] = top_k(queries, docs, 100)
        shutil.rmtree(out, ignore_errors=True)
        grid.save(args.out)


if __name__ == "__main__":
    main()
