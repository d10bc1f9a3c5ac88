"""Dense-student training runs outside the DAG: ``python -m benchmarks.train_dense``.

For a GPU machine that has no Lucene or luigi: it runs the functions the ``TrainDense`` task runs
(``student_triples``, ``student_settings``, ``train_dense_student``) on a TASTriples table copied from a work
dir, for each setting of a grid, then encodes the corpus and the queries of the given splits with each student
and keeps the exact top-100 (inner product, on the GPU when there is one). It prints one JSON line per stage
and writes ``runs.npz`` (top-100 rows and scores per student and split) and ``stages.json``;
``python -m benchmarks.train_dense_eval`` scores them with the pipeline's own metrics.

Select settings on the train split only; the test split is read once, for the chosen setting.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from benchmarks.student_grid import add_grid_arguments, load_grid_inputs, timed
from stillhouse.retrievers.dense import encode, load_sentence_encoder
from stillhouse.retrievers.distill_dense import student_settings, student_triples, train_dense_student
from stillhouse.retrievers.guide_lookup import guide_vectors


def exact_top_k(doc_vectors: np.ndarray, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the ``k`` highest inner products per query (the FAISS flat index's answer)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    docs = torch.from_numpy(doc_vectors).to(device)
    queries = torch.from_numpy(query_vectors).to(device)
    scores, rows = torch.topk(queries @ docs.T, min(k, len(doc_vectors)), dim=1)
    return rows.int().cpu().numpy(), scores.float().cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "TrainDense", "dense_student", "/tmp/train_dense")
    parser.add_argument("--guide", type=Path, help="the GISTEmbed guide model folder")
    parser.add_argument("--teachers", type=Path, nargs="*", default=[], help="dense models to time over the corpus")
    parser.add_argument("--guide-index", type=Path,
                        help="the guide's corpus index folder (index.faiss, docids.json: a DenseIndex output), read "
                             "by entries with guide_vectors = \"index\"")
    parser.add_argument("--guide-margin", type=float, default=0.0, help="[training] guide_margin")
    parser.add_argument("--encode-batch-size", type=int, default=256)
    args = parser.parse_args()
    grid = load_grid_inputs(args)

    def search_all(model, name: str) -> None:
        with timed("encode corpus", grid.stages, model=name, docs=len(grid.doc_texts), device=grid.device):
            doc_vectors = encode(model, grid.doc_texts, args.encode_batch_size, progress=False)
        for split, data in grid.datasets.items():
            query_vectors = encode(model, list(data.queries.values()), args.encode_batch_size, progress=False)
            grid.runs[f"{split}/{name}/rows"], grid.runs[f"{split}/{name}/scores"] = exact_top_k(
                doc_vectors, query_vectors, 100)

    for teacher in args.teachers:
        search_all(load_sentence_encoder(teacher), teacher.name)
    for name, table, _weights, student in grid.entries(args.grid, args.max_queries):
        triples = student_triples(table, grid.corpus, student["negatives_per_query"],
                                  student["margin_scale"])
        settings = student_settings(student, args.guide_margin, args.margin_bins)
        guide = args.guide if student["in_batch_loss"] == "gist" and student["in_batch_weight"] > 0 else None
        out = args.scratch / name
        vectors = None
        if guide and settings.guide_vectors == "index":
            if args.guide_index is None:
                parser.error(f"grid entry {name}: guide_vectors = \"index\" needs --guide-index")
            with timed("guide vectors", grid.stages, name=name, device=grid.device):
                vectors = guide_vectors(guide, args.guide_index, triples)
        stats = train_dense_student(args.base, guide, triples, out / "model", out / "checkpoints", settings, vectors)
        grid.record({"stage": "train", "name": name, "settings": student, "seconds": round(stats["seconds"], 2),
                     "steps": stats["steps"], "pairs_per_second": round(stats["pairs_per_second"], 1),
                     "precision": stats["precision"], "train_loss": stats["train_loss"], "device": grid.device})
        search_all(load_sentence_encoder(out / "model"), name)
        shutil.rmtree(out, ignore_errors=True)
        grid.save(args.out)


if __name__ == "__main__":
    main()
