"""Batched query generation with a causal LM (hard or soft prompt).

Prompts are sorted by length so that each batch pads little, left-padded, and generated greedily or by
sampling; generation stops at the first newline (the prompt format ends each query with one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode: ``num_queries`` per prompt, greedy when ``do_sample`` is false."""

    num_queries: int = 1
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    batch_size: int = 16
    no_repeat_ngram_size: int = 0  # n-grams may not repeat within the generated query (0 = off)


@dataclass
class Generated:
    """One decoded continuation: raw text, whether it ended (newline or EOS) within budget, and its mean
    token log-probability under the model."""

    text: str
    finished: bool
    logprob: float


def generate(model, tokenizer, prompts: list[str], settings: DecodeSettings, max_prompt_tokens: int,
             desc: str = "generating") -> list[list[Generated]]:
    """``settings.num_queries`` continuations for every prompt, in the prompts' order."""
    import torch

    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"][-max_prompt_tokens:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[list[Generated]] = [[] for _ in prompts]
    pad = tokenizer.pad_token_id
    sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
        if settings.do_sample else {"do_sample": False}
    with tqdm(total=len(prompts), desc=desc, unit="doc") as progress:
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in batch], device=device)
            attention = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch],
                                     device=device)
            processors = _ngram_blockers(width, settings.no_repeat_ngram_size)
            with torch.no_grad():
                output = model.generate(logits_processor=processors, input_ids=input_ids, attention_mask=attention,
                                        max_new_tokens=settings.max_new_tokens,
                                        num_return_sequences=settings.num_queries, stop_strings=["\n"],
                                        tokenizer=tokenizer, pad_token_id=pad,
                                        repetition_penalty=settings.repetition_penalty,
                                        return_dict_in_generate=True, output_logits=True, **sampling)
            new_tokens = output.sequences[:, width:]
            step_logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in output.logits], dim=1)
            chosen = step_logprobs.gather(-1, new_tokens[:, : step_logprobs.shape[1], None]).squeeze(-1)
            for row, tokens in enumerate(new_tokens.tolist()):
                live = [k for k, t in enumerate(tokens) if t != pad] or [0]
                ended = tokenizer.eos_token_id in tokens or pad in tokens
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                logprob = float(chosen[row, live].mean())
                results[batch[row // settings.num_queries]].append(Generated(text, ended or "\n" in text, logprob))
            progress.update(len(batch))
    return results


def _ngram_blockers(prompt_width: int, n: int):
    from transformers import LogitsProcessorList

    return LogitsProcessorList([GeneratedNGramBlocker(prompt_width, n)] if n > 0 else [])


class GeneratedNGramBlocker:
    """Forbid a token that would repeat an ``n``-gram of the tokens generated so far.

    transformers' ``no_repeat_ngram_size`` and ``repetition_penalty`` also look at the prompt, so they
    forbid or penalize every phrase of the document and the examples; a query must be free to reuse the
    document's terms, and only its own loops ("of the effect of the effect of") are blocked here.
    """

    def __init__(self, prompt_width: int, n: int) -> None:
        self.prompt_width = prompt_width
        self.n = n

    def __call__(self, input_ids, scores):
        generated = input_ids[:, self.prompt_width:].tolist()
        for row, tokens in enumerate(generated):
            if len(tokens) < self.n:
                continue
            prefix = tuple(tokens[len(tokens) - self.n + 1:])
            banned = {tuple(tokens[i:i + self.n - 1]) == prefix and tokens[i + self.n - 1]
                      for i in range(len(tokens) - self.n + 1)}
            banned.discard(False)
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores
