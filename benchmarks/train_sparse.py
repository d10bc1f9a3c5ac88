"""Sparse-student training runs outside the DAG: ``python -m benchmarks.train_sparse``.

For a GPU machine that has no Lucene or luigi, as ``benchmarks.train_dense`` is for the dense student: for each
setting of a grid it runs the functions the ``TrainSparse`` task runs (``student_triples``, ``corpus_idf``,
``train_sparse_student``) on a TASTriples table copied from a work dir, then encodes the corpus through the
student's document route and the queries of the given splits through its query route (the IDF lookup, no
model), quantizes both to the integer impacts the Lucene index stores (``retrievers.impact_index.quantize``) and
keeps the exact top-100 of their sum of products: Lucene's impact score, without Lucene (ties may order
differently). It writes ``runs.npz`` in ``benchmarks.train_dense``'s layout, so ``python -m
benchmarks.train_dense_eval`` scores it with the pipeline's own metrics, and ``stages.json`` (wall times, terms
per document and query).

Select settings on the train split only; the test split is read once, for the chosen setting, through the DAG.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks.train_dense import save, timed
from eval.beir_data import load_beir
from retrievers.dense import document_text
from retrievers.distill_dense import student_triples
from retrievers.impact_index import IMPACT_SCALE, corpus_idf
from retrievers.sparse_student import (
    SparseStudentSettings,
    encode_batched,
    load_inference_free_encoder,
    masked_lm_folder,
    train_sparse_student,
)


def impacts(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Integer impacts ``round(w * IMPACT_SCALE)`` of a CSR matrix, zeros dropped (what the index stores)."""
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
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("STILLHOUSE_BEIR_DIR", "../shared/beir")))
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--splits", default="train", help="query splits to search with every student")
    parser.add_argument("--triples", type=Path, nargs="+", required=True,
                        help="TASTriples folders (triples.parquet); a grid entry's 'triples' picks one by index")
    parser.add_argument("--provenance", type=Path, required=True,
                        help="a TrainSparse provenance.json: the [sparse_student] settings the grid varies")
    parser.add_argument("--base", type=Path, required=True, help="the student's base masked-LM folder")
    parser.add_argument("--grid", required=True,
                        help="JSON list of {name, triples?, weights?, ...[sparse_student] overrides}; 'weights' "
                             "are the teacher weights the chosen TASTriples table was built with")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--margin-bins", type=int, default=10, help="[training] margin_bins")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/train_sparse"))
    parser.add_argument("--max-docs", type=int, default=0, help="search only the first N documents (a smoke run)")
    parser.add_argument("--max-queries", type=int, default=0,
                        help="train on the triples of the first N queries (a smoke run)")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer

    params = json.loads(args.provenance.read_text())["params"]
    base_student, base_weights = dict(params["student"]), dict(params["weights"])
    splits = args.splits.split(",")
    datasets = {split: load_beir(args.data / args.dataset, split) for split in splits}
    corpus = datasets[splits[0]].corpus
    doc_ids = list(corpus)[: args.max_docs or None]
    doc_texts = [document_text(corpus[d]) for d in doc_ids]
    stages: list[dict] = []
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps({"device": device, "torch": torch.__version__}), flush=True)
    runs: dict[str, np.ndarray] = {"doc_ids": np.asarray(doc_ids)}
    for split in splits:
        runs[f"{split}/query_ids"] = np.asarray(list(datasets[split].queries))
    tables = [{n: c.to_numpy(zero_copy_only=False) for n, c in zip(t.column_names, t.columns, strict=True)}
              for t in (pq.read_table(folder / "triples.parquet") for folder in args.triples)]
    fields = set(SparseStudentSettings.__dataclass_fields__) - {"margin_bins"}
    for entry in json.loads(args.grid):
        entry = dict(entry)
        name, table = entry.pop("name"), tables[entry.pop("triples", 0)]
        if args.max_queries:
            keep = np.isin(table["query_id"], np.unique(table["query_id"])[: args.max_queries])
            table = {column: values[keep] for column, values in table.items()}
        weights = entry.pop("weights", base_weights)
        student = {**base_student, **entry}
        out = args.scratch / name
        doc_dir = masked_lm_folder(args.base, student["mlm_head"], out / "mlm-base", student["base_model"],
                                   seed=student["seed"])
        idf = corpus_idf(AutoTokenizer.from_pretrained(doc_dir), (document_text(d) for d in corpus.values()))
        triples = student_triples(table, corpus, dict(weights), student["negatives_per_query"], 1.0)
        settings = SparseStudentSettings(margin_bins=args.margin_bins,
                                         **{k: v for k, v in student.items() if k in fields})
        stats = train_sparse_student(doc_dir, idf, triples, out / "model", out / "checkpoints", settings)
        row = {"stage": "train", "name": name, "settings": student, "weights": weights,
               "seconds": round(stats["seconds"], 2), "steps": stats["steps"],
               "pairs_per_second": round(stats["pairs_per_second"], 1), "precision": stats["precision"],
               "train_loss": stats["train_loss"], "margin_scale": stats["margin_scale"], "device": device}
        stages.append(row)
        print(json.dumps(row), flush=True)
        model = load_inference_free_encoder(out / "model")
        with timed("encode corpus", stages, model=name, docs=len(doc_texts), device=device):
            docs = impacts(encode_all(model, doc_texts, 64, "document"))
        terms_per_doc = round(docs.nnz / docs.shape[0], 1)
        for split in splits:
            queries = impacts(encode_all(model, list(datasets[split].queries.values()), 256, "query"))
            row = {"stage": "search", "name": name, "split": split, "terms_per_doc": terms_per_doc,
                   "terms_per_query": round(queries.nnz / queries.shape[0], 2)}
            stages.append(row)
            print(json.dumps(row), flush=True)
            runs[f"{split}/{name}/rows"], runs[f"{split}/{name}/scores"] = top_k(queries, docs, 100)
        shutil.rmtree(out, ignore_errors=True)
        save(args.out, runs, stages)  # after every student: a run cut off at its time limit keeps what it finished


if __name__ == "__main__":
    main()
