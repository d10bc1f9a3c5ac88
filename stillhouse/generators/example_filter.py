"""SPTAR's soft prompt filter (Peng et al., 2023, §3.3): choose the example pairs put into the prompt.

After the soft prompt is trained, ``G`` candidate groups of ``M`` labeled (document, query) pairs are
drawn from the example pool; each group is scored by the mean NLL per token of a held-out evaluation
set's real queries given [soft prompt; group; document], and the group with the lowest loss is kept:

    E* = argmin_{E_g, g=1..G}  (1/|X_eval|) Σ_(d,q)∈X_eval  L(q | soft prompt, E_g, d)

Example::

    lm = load_causal_lm(model_dir)
    builder = PromptBuilder(lm.tokenizer)
    result = choose_examples(lm, adapter_dir, builder, split.prompt, split.filter_eval, group_size=2, groups=4)
    result.chosen                                   # the examples SPTAR puts in front of every document
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from stillhouse.generators.nll import target_nll
from stillhouse.generators.prompts import Example, PromptBuilder
from stillhouse.retrievers.errors import UserError


@dataclass
class FilterResult:
    chosen: list[Example]
    scores: list[tuple[list[str], float]]  # (doc ids of a group, its mean NLL per token)

    def to_json(self) -> dict:
        """``{"chosen": [example, ...], "groups": [[doc ids, NLL per token], ...]}``."""
        return {"chosen": [asdict(e) for e in self.chosen], "groups": self.scores}


def candidate_groups(pool: list[Example], group_size: int, groups: int, seed: int) -> list[list[Example]]:
    """``groups`` distinct random groups of ``group_size`` examples from the pool."""
    rng = random.Random(seed)
    found: dict[tuple[str, ...], list[Example]] = {}
    for _ in range(groups * 20):
        if len(found) == groups:
            break
        group = rng.sample(pool, min(group_size, len(pool)))
        found.setdefault(tuple(e.doc_id for e in group), group)
    return list(found.values())


def filter_examples(model, tokenizer, builder: PromptBuilder, pool: list[Example], eval_pairs: list[Example],
                    group_size: int, groups: int, seed: int = 13) -> FilterResult:
    """Score candidate groups on ``eval_pairs`` with the (soft-prompted) model; keep the best."""
    scores = []
    best: tuple[float, list[Example]] | None = None
    for group in candidate_groups(pool, group_size, groups, seed):
        prompts = [builder.build(pair.document, group) for pair in eval_pairs]
        nll = target_nll(model, tokenizer, prompts, [f" {p.query}\n" for p in eval_pairs])
        scores.append(([e.doc_id for e in group], nll.per_token))
        if best is None or nll.per_token < best[0]:
            best = (nll.per_token, group)
    assert best is not None
    return FilterResult(best[1], scores)


def choose_examples(lm, adapter_dir: Path, builder: PromptBuilder, pool: list[Example], eval_pairs: list[Example],
                    group_size: int, groups: int, seed: int = 13) -> FilterResult:
    """SPTAR's example filter for the soft prompt saved in ``adapter_dir``: ``groups`` random groups of
    ``group_size`` examples from ``pool``, each scored on ``eval_pairs`` with ``lm`` (a ``CausalLM``) wrapped in
    the soft prompt; the group with the lowest mean NLL per token (``E*`` above) is ``chosen``.

    Raises ``UserError`` when there are no evaluation pairs or no pool to draw from."""
    from stillhouse.generators.soft_prompt import load_soft_prompt

    if not eval_pairs or not pool:
        raise UserError("SPTAR example filter: no evaluation pairs or no example pool left after splitting the "
                        "train pairs; lower tune_pairs or use a split with more judged queries")
    model = load_soft_prompt(lm, adapter_dir)
    return filter_examples(model, lm.tokenizer, builder, pool, eval_pairs, group_size, groups, seed)
