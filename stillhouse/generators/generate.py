"""Batched query generation with a causal LM (hard or soft prompt).

Prompts are sorted by length so that each batch pads little, padded on the left of each prompt's own
tokens, and generated greedily or by sampling; generation stops at the first newline (the prompt format
ends each query with one). The prompt part every document shares (instruction, in-prompt examples, a soft
prompt) is encoded once and its KV cache reused by every batch.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

from tqdm import tqdm

from stillhouse.settings import DecodeSettings

log = logging.getLogger(__name__)


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
    token stream is exactly that of the whole prompt (for sliding-window models, only while a row fits the
    window; longer prompts are then run whole, see ``exact_with_padding_inside``).
    """
    import torch

    lm, soft_prompt = split_soft_prompt(model)
    device = next(lm.parameters()).device
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id
    whole = [tokenizer(p, add_special_tokens=True)["input_ids"][-max_prompt_tokens:] for p in prompts]
    virtual = 0 if soft_prompt is None else soft_prompt.shape[1]
    longest = virtual + max((len(ids) for ids in whole), default=0) + settings.max_new_tokens
    share = settings.share_prefix and exact_with_padding_inside(lm, longest)
    prefix_ids = shared_prefix(whole) if share else []
    encoded = [ids[len(prefix_ids):] for ids in whole]
    prefix_cache, cached = prefix_cache_of(lm, prefix_ids, soft_prompt)
    # Placeholder ids stand where the cache already holds the virtual tokens (never embedded; a token of the
    # prompt itself, so a repetition penalty sees nothing new).
    placeholder = prefix_ids[0] if prefix_ids else (tokenizer.bos_token_id or pad)
    lead = [placeholder] * (cached - len(prefix_ids)) + prefix_ids
    decoding = _generation_config(lm, prefix_cache is not None)
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
                output = lm.generate(input_ids=input_ids, attention_mask=attention, generation_config=decoding,
                                     logits_processor=_blockers(cached + width, settings,
                                                                [encoded[i] for i in rows]),
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


def exact_with_padding_inside(lm, length: int) -> bool:
    """Whether rows with padding between the cached prefix and their own tokens see exactly what whole
    left-padded prompts see: always for full attention; for sliding-window layers (Gemma-3) only while the
    whole row fits the window, since the window is counted in slots, padding included."""
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    return not (sliding and window and length > window)


def _generation_config(lm, with_cache: bool):
    """The model's generation config; a cache passed in by us replaces any cache implementation it names."""
    config = copy.deepcopy(lm.generation_config)
    if with_cache:
        config.cache_implementation = None
    return config


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


def prefix_cache_of(lm, prefix_ids: list[int], soft_prompt):
    """KV cache of ``[soft prompt; prefix]`` and its length; ``(None, 0)`` when both are empty."""
    import torch

    if not prefix_ids and soft_prompt is None:
        return None, 0
    device = next(lm.parameters()).device
    with torch.no_grad():
        embeds = lm.get_input_embeddings()(torch.tensor([prefix_ids], dtype=torch.long, device=device))
        if soft_prompt is not None:
            embeds = torch.cat([soft_prompt.to(device=device, dtype=embeds.dtype), embeds], dim=1)
        output = lm(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    return output.cache, embeds.shape[1]


def _blockers(prompt_width: int, settings: DecodeSettings, own_tokens: list[list[int]]):
    from transformers import LogitsProcessorList

    processors = []
    if settings.no_repeat_ngram_size > 0:
        processors.append(GeneratedNGramBlocker(prompt_width, settings.no_repeat_ngram_size))
    if settings.max_copy_tokens > 0:
        processors.append(DocumentSpanBlocker(prompt_width, own_tokens, settings.max_copy_tokens))
    return LogitsProcessorList(processors)


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


class DocumentSpanBlocker:
    """Forbid a token that would make the generated query copy more than ``max_tokens`` consecutive tokens
    of its own document block (each row's non-shared prompt tokens).

    A query that is mostly a verbatim span of its document (typically the title) round-trips trivially
    and teaches a retriever nothing (``stillhouse.generators.quality.copies_document`` rejects it afterwards); this
    stops the copy while decoding, so the LM has to paraphrase instead of losing the document's query.
    """

    def __init__(self, prompt_width: int, own_tokens: list[list[int]], max_tokens: int) -> None:
        self.prompt_width = prompt_width
        self.n = max_tokens
        self.next_tokens: list[dict[tuple[int, ...], set[int]]] = []
        for tokens in own_tokens:
            table: dict[tuple[int, ...], set[int]] = {}
            for i in range(len(tokens) - max_tokens):
                table.setdefault(tuple(tokens[i:i + max_tokens]), set()).add(tokens[i + max_tokens])
            self.next_tokens.append(table)

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_width < self.n:
            return scores
        for row, tail in enumerate(input_ids[:, -self.n:].tolist()):
            banned = self.next_tokens[row].get(tuple(tail))
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores
