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
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from eval.beir_data import load_beir
from retrievers.dense import document_text, encode, load_sentence_encoder
from retrievers.distill_dense import student_settings, student_triples, train_dense_student


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def exact_top_k(doc_vectors: np.ndarray, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the ``k`` highest inner products per query (the FAISS flat index's answer)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    docs = torch.from_numpy(doc_vectors).to(device)
    queries = torch.from_numpy(query_vectors).to(device)
    scores, rows = torch.topk(queries @ docs.T, min(k, len(doc_vectors)), dim=1)
    return rows.int().cpu().numpy(), scores.float().cpu().numpy()


def timed(stage: str, stages: list[dict], **facts):
    """Context manager appending ``{stage, seconds, **facts}`` to ``stages`` and printing it."""

    class _Timer:
        def __enter__(self):
            synchronize()
            self.started = time.perf_counter()
            return self

        def __exit__(self, *exc):
            synchronize()
            row = {"stage": stage, "seconds": round(time.perf_counter() - self.started, 2), **facts}
            stages.append(row)
            print(json.dumps(row), flush=True)

    return _Timer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("STILLHOUSE_BEIR_DIR", "../shared/beir")))
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--splits", default="train,test", help="query splits to search with every student")
    parser.add_argument("--triples", type=Path, nargs="+", required=True,
                        help="TASTriples folders (triples.parquet); a grid entry's 'triples' picks one by index")
    parser.add_argument("--provenance", type=Path, required=True,
                        help="a TrainDense provenance.json: the student settings and ensemble weights the grid varies")
    parser.add_argument("--base", type=Path, required=True, help="the student's base model folder")
    parser.add_argument("--guide", type=Path, help="the GISTEmbed guide model folder")
    parser.add_argument("--teachers", type=Path, nargs="*", default=[], help="dense models to time over the corpus")
    parser.add_argument("--grid", required=True, help="JSON list of {name, triples?, ...[dense_student] overrides}")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--guide-margin", type=float, default=0.0, help="[training] guide_margin")
    parser.add_argument("--margin-bins", type=int, default=10, help="[training] margin_bins")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/train_dense"))
    parser.add_argument("--encode-batch-size", type=int, default=256)
    parser.add_argument("--max-queries", type=int, default=0,
                        help="train on the triples of the first N queries (a smoke run)")
    parser.add_argument("--max-docs", type=int, default=0, help="search only the first N documents (a smoke run)")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch

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

    def search_all(model, name: str) -> None:
        with timed("encode corpus", stages, model=name, docs=len(doc_texts), device=device):
            doc_vectors = encode(model, doc_texts, args.encode_batch_size, progress=False)
        for split in splits:
            queries = datasets[split].queries
            query_vectors = encode(model, list(queries.values()), args.encode_batch_size, progress=False)
            runs[f"{split}/{name}/rows"], runs[f"{split}/{name}/scores"] = exact_top_k(doc_vectors, query_vectors, 100)

    for teacher in args.teachers:
        search_all(load_sentence_encoder(teacher), teacher.name)
    tables = [{n: c.to_numpy(zero_copy_only=False) for n, c in zip(t.column_names, t.columns, strict=True)}
              for t in (pq.read_table(folder / "triples.parquet") for folder in args.triples)]
    for entry in json.loads(args.grid):
        entry = dict(entry)
        name, table = entry.pop("name"), tables[entry.pop("triples", 0)]
        if args.max_queries:
            keep = np.isin(table["query_id"], np.unique(table["query_id"])[: args.max_queries])
            table = {column: values[keep] for column, values in table.items()}
        weights = entry.pop("weights", base_weights)
        student = {**base_student, **entry}
        triples = student_triples(table, corpus, dict(weights), student["negatives_per_query"],
                                  student["margin_scale"])
        settings = student_settings(student, args.guide_margin, args.margin_bins)
        guide = args.guide if student["in_batch_loss"] == "gist" and student["in_batch_weight"] > 0 else None
        out = args.scratch / name
        stats = train_dense_student(args.base, guide, triples, out / "model", out / "checkpoints", settings)
        row = {"stage": "train", "name": name, "settings": student, "seconds": round(stats["seconds"], 2),
               "steps": stats["steps"], "pairs_per_second": round(stats["pairs_per_second"], 1),
               "precision": stats["precision"], "train_loss": stats["train_loss"], "device": device}
        stages.append(row)
        print(json.dumps(row), flush=True)
        search_all(load_sentence_encoder(out / "model"), name)
        shutil.rmtree(out, ignore_errors=True)
        save(args.out, runs, stages)  # after every student: a run cut off at its time limit keeps what it finished


def save(out: Path, runs: dict[str, np.ndarray], stages: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "runs.tmp.npz", **runs)
    (out / "runs.tmp.npz").replace(out / "runs.npz")
    (out / "stages.json").write_text(json.dumps(stages, indent=2))


if __name__ == "__main__":
    main()
