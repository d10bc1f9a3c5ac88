"""Batched query generation with a causal LM (hard or soft prompt).

Prompts are sorted by length so that each batch pads little, left-padded, and generated greedily or by
sampling; generation stops at the first newline (the prompt format ends each query with one). The prompt
part every document shares (instruction, in-prompt examples, a soft prompt) is encoded once and its KV cache
reused by every batch.
"""

from __future__ import annotations

import copy
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
    share_prefix: bool = True  # encode the prompts' common prefix once (off only to measure what it saves)


@dataclass
class Generated:
    """One decoded continuation: raw text, whether it ended (newline or EOS) within budget, and its mean
    token log-probability under the model."""

    text: str
    finished: bool
    logprob: float


def generate(model, tokenizer, prompts: list[str], settings: DecodeSettings, max_prompt_tokens: int,
             desc: str = "generating") -> list[list[Generated]]:
    """``settings.num_queries`` continuations for every prompt, in the prompts' order.

    The tokens every prompt starts with (the instruction and in-prompt examples) and, for a peft soft prompt,
    its virtual tokens run through the LM once; every batch starts from a copy of that KV cache, so a document
    pays only for its own tokens. The rows of a batch are ``[shared prefix | left padding | own tokens]``;
    positions come from the attention mask, so the padding in the middle is invisible to the model and the
    token stream is exactly that of the whole prompt.
    """
    import torch

    lm, soft_prompt = split_soft_prompt(model)
    device = next(lm.parameters()).device
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id
    whole = [tokenizer(p, add_special_tokens=True)["input_ids"][-max_prompt_tokens:] for p in prompts]
    prefix_ids = shared_prefix(whole) if settings.share_prefix else []
    encoded = [ids[len(prefix_ids):] for ids in whole]
    prefix_cache, cached = _prefix_cache(lm, prefix_ids, soft_prompt)
    lead = [pad] * (cached - len(prefix_ids)) + prefix_ids  # placeholders for the virtual tokens, then the prefix
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[list[Generated]] = [[] for _ in prompts]
    sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
        if settings.do_sample else {"do_sample": False}
    with tqdm(total=len(prompts), desc=desc, unit="doc") as progress:
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            rows = [i for i in batch for _ in range(settings.num_queries)]
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.tensor([lead + [pad] * (width - len(encoded[i])) + encoded[i] for i in rows],
                                     device=device)
            attention = torch.tensor([[1] * cached + [0] * (width - len(encoded[i])) + [1] * len(encoded[i])
                                      for i in rows], device=device)
            extra = {}
            if prefix_cache is not None:
                extra["cache"] = copy.deepcopy(prefix_cache)
                extra["cache"].batch_repeat_interleave(len(rows))
            with torch.no_grad():
                output = lm.generate(input_ids=input_ids, attention_mask=attention,
                                     logits_processor=_ngram_blockers(cached + width, settings.no_repeat_ngram_size),
                                     max_new_tokens=settings.max_new_tokens, stop_strings=["\n"],
                                     tokenizer=tokenizer, pad_token_id=pad,
                                     repetition_penalty=settings.repetition_penalty,
                                     return_dict_in_generate=True, output_logits=True, **sampling, **extra)
            new_tokens = output.sequences[:, cached + width:]
            step_logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in output.logits], dim=1)
            chosen = step_logprobs.gather(-1, new_tokens[:, : step_logprobs.shape[1], None]).squeeze(-1)
            for row, tokens in enumerate(new_tokens.tolist()):
                live = [k for k, t in enumerate(tokens) if t != pad] or [0]
                ended = tokenizer.eos_token_id in tokens or pad in tokens
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                logprob = float(chosen[row, live].mean())
                results[rows[row]].append(Generated(text, ended or "\n" in text, logprob))
            progress.update(len(batch))
    return results


def shared_prefix(token_lists: list[list[int]]) -> list[int]:
    """The longest token prefix common to every list, leaving each list at least one token of its own."""
    if not token_lists:
        return []
    first = token_lists[0]
    length = min(len(ids) for ids in token_lists) - 1
    for ids in token_lists[1:]:
        length = next((k for k in range(max(length, 0)) if ids[k] != first[k]), length)
    return first[:max(length, 0)]


def split_soft_prompt(model):
    """``(causal LM, soft prompt [1, virtual tokens, hidden] or None)`` for a plain LM or a peft PromptTuning
    wrapper; the soft prompt goes in front of everything, as peft puts it."""
    config = getattr(model, "active_peft_config", None)
    if config is None:
        return model, None
    if config.peft_type != "PROMPT_TUNING":
        raise ValueError(f"generation handles prompt-tuning adapters only, not {config.peft_type}")
    return model.get_base_model(), model.get_prompt(batch_size=1)


def _prefix_cache(lm, prefix_ids: list[int], soft_prompt):
    """KV cache of ``[soft prompt; prefix]`` and its length; ``(None, 0)`` when both are empty."""
    import torch

    if not prefix_ids and soft_prompt is None:
        return None, 0
    device = next(lm.parameters()).device
    embeds = lm.get_input_embeddings()(torch.tensor([prefix_ids], dtype=torch.long, device=device))
    if soft_prompt is not None:
        embeds = torch.cat([soft_prompt.to(device=device, dtype=embeds.dtype), embeds], dim=1)
    with torch.no_grad():
        output = lm(inputs_embeds=embeds, use_cache=True)
    return output.cache, embeds.shape[1]


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
