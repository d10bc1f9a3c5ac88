"""Labeled pairs from a train split, split into disjoint roles.

* ``prompt``: the few-shot examples shown in hard prompts (Promptagator: at most 8) and the pool that
  SPTAR's filter draws its in-prompt groups from;
* ``tune``: the small set SPTAR's soft prompt is trained on (disjoint from the in-prompt examples);
* ``filter_eval``: held-out pairs that score SPTAR's candidate example groups;
* ``held_out``: every other pair, the ground truth the report measures generated queries against.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from stillhouse.eval.beir_data import BeirDataset
from stillhouse.generators.prompts import Example
from stillhouse.retrievers.errors import UserError


def prompt_text(doc: dict[str, str]) -> str:
    """A document as the LM's prompts show it, ``"title. text"`` (the encoders read BEIR's ``"title text"``:
    ``stillhouse.retrievers.dense.document_text``)."""
    title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
    return f"{title}. {text}" if title else text


def labeled_pairs(data: BeirDataset) -> list[Example]:
    """One (document, query) pair per judged query: its first positively judged document."""
    pairs = []
    for query_id, judged in data.qrels.items():
        positives = [doc_id for doc_id, score in judged.items() if score > 0]
        if positives:
            pairs.append(Example(positives[0], prompt_text(data.corpus[positives[0]]), data.queries[query_id]))
    return pairs


@dataclass
class ExampleSplit:
    prompt: list[Example]
    tune: list[Example]
    filter_eval: list[Example]
    held_out: list[Example]

    def to_json(self) -> dict:
        roles = ("prompt", "tune", "filter_eval", "held_out")
        return {role: [asdict(e) for e in getattr(self, role)] for role in roles}

    @classmethod
    def from_json(cls, payload: dict) -> ExampleSplit:
        return cls(**{role: [Example(**e) for e in rows] for role, rows in payload.items()})


def split_examples(pairs: list[Example], n_prompt: int, n_tune: int, n_filter_eval: int, seed: int) -> ExampleSplit:
    """Shuffle (seeded) and cut into disjoint roles; no document appears in two roles."""
    if not pairs:
        raise UserError("prompt examples: the examples split has no judged (document, query) pairs; "
                        "choose a split with qrels")
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    roles: list[list[Example]] = [[], [], []]
    sizes = [n_prompt, n_tune, n_filter_eval]
    used_docs: set[str] = set()
    rest = []
    for pair in shuffled:
        role = next((i for i in range(3) if len(roles[i]) < sizes[i]), None)
        if role is None or pair.doc_id in used_docs:
            rest.append(pair)
            continue
        roles[role].append(pair)
        used_docs.add(pair.doc_id)
    held_out = [p for p in rest if p.doc_id not in used_docs]
    return ExampleSplit(roles[0], roles[1], roles[2], held_out)
