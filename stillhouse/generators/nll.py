"""Negative log-likelihood of a target (a query) given a prompt, per target token.

Used to compare prompts: the mean NLL per token of real held-out queries given their documents is
lower when a prompt makes the LM expect queries like the real ones (SPTAR, Peng et al. 2023, §4).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NLL:
    total: float = 0.0
    tokens: int = 0

    @property
    def per_token(self) -> float:
        return self.total / max(self.tokens, 1)

    def add(self, other: NLL) -> NLL:
        return NLL(self.total + other.total, self.tokens + other.tokens)


def encode_pair(tokenizer, prompt: str, target: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target and labels masking the prompt with -100 (prompt truncated from the left)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    prompt_ids = prompt_ids[-max(1, max_length - len(target_ids)):]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def target_nll(model, tokenizer, prompts: list[str], targets: list[str], max_length: int = 1024,
               share_prefix: bool = True) -> NLL:
    """Summed NLL and token count of each target given its prompt, over all pairs.

    One pair per forward pass with ``logits_to_keep`` covering only the target: no padding (so positions
    are exact, also behind a peft soft prompt) and no full-vocabulary logits for the prompt, which for a
    262k-token vocabulary (Gemma-3) would take gigabytes per sequence. The soft prompt's virtual tokens and
    the token prefix every pair shares (instruction, examples) run once; each pair continues from a copy of
    that KV cache (``stillhouse.generators.generate``), which is exact here since no pair is padded.
    """
    import copy

    import torch

    from stillhouse.generators.generate import prefix_cache_of, shared_prefix, split_soft_prompt

    # share_prefix off: whole prompts through the model as given (peft's own forward behind a soft prompt).
    lm, soft_prompt = split_soft_prompt(model) if share_prefix else (model, None)
    device = next(lm.parameters()).device
    encoded = [encode_pair(tokenizer, prompt, target, max_length) for prompt, target in zip(prompts, targets,
                                                                                           strict=True)]
    prompt_parts = [ids[: sum(label == -100 for label in labels)] for ids, labels in encoded]
    prefix_ids = shared_prefix(prompt_parts) if share_prefix and len(encoded) > 1 else []
    prefix_cache, _ = prefix_cache_of(lm, prefix_ids, soft_prompt)
    result = NLL()
    for ids, labels in encoded:
        n_target = sum(label != -100 for label in labels)
        own = torch.tensor([ids[len(prefix_ids):]], device=device)
        with torch.no_grad():
            extra = {"cache": copy.deepcopy(prefix_cache)} if prefix_cache is not None else \
                {"attention_mask": torch.ones_like(own)}
            logits = lm(input_ids=own, logits_to_keep=n_target + 1, **extra).logits
        # Position t predicts token t+1: the kept logits end one step before the last token.
        predicted = logits[0, -(n_target + 1):-1, :].float()
        target_ids = torch.tensor(ids[-n_target:], device=device)
        loss = torch.nn.functional.cross_entropy(predicted, target_ids, reduction="sum")
        result = result.add(NLL(float(loss), n_target))
    return result
