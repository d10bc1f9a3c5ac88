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
from pathlib import Path

from stillhouse.eval.beir_data import BeirDataset, iter_jsonl
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


@dataclass
class ExamplesFile:
    """A user's labeled pairs read from JSONL, in file order: query ids and judgements over the corpus, and the
    documents given as text (which join the examples split's corpus under ids ``example-doc-<line>``)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    extra_docs: dict[str, dict[str, str]]


def read_examples_file(path: Path, corpus: dict[str, dict[str, str]], dataset: str) -> ExamplesFile:
    """Read ``path``: one JSON object per line, ``{"query": ..., "doc_id": ...}`` (a document of ``corpus``) or
    ``{"query": ..., "text": ..., "title": ...}`` (the document itself); ``query_id`` is optional. Every problem is
    one ``UserError`` naming the file and line. Each example needs its own query and document (the roles that
    ``ordered_split`` assigns may not share a document).

    Example::

        examples = read_examples_file(Path("examples.jsonl"), corpus, "my-corpus")
    """
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    extra: dict[str, dict[str, str]] = {}
    seen_query: dict[str, int] = {}
    seen_doc: dict[str, int] = {}
    shape = 'each line is {"query": "...", "doc_id": "..."} or {"query": "...", "text": "...", "title": "..."}'
    for lineno, row in iter_jsonl(path, ("query",)):  # malformed lines: one error naming file and line
        query = str(row["query"]).strip()
        if not query:
            raise UserError(f"{path}:{lineno}: empty query; {shape}")
        if "doc_id" in row:
            doc_id = str(row["doc_id"])
            if doc_id not in corpus:
                raise UserError(f"{path}:{lineno}: doc_id {doc_id!r} is not in the {dataset} corpus; give an id "
                                "of that corpus or the document's text")
        elif str(row.get("text", "")).strip():
            doc_id = f"example-doc-{lineno}"
            extra[doc_id] = {"title": str(row.get("title", "")), "text": str(row["text"])}
        else:
            raise UserError(f"{path}:{lineno}: no document; {shape}")
        key = " ".join(query.lower().split())
        if key in seen_query:
            raise UserError(f"{path}:{lineno}: the query of line {seen_query[key]} again; each example needs its "
                            "own query")
        if doc_id in seen_doc:
            raise UserError(f"{path}:{lineno}: document {doc_id!r} is already the example of line "
                            f"{seen_doc[doc_id]}; each example needs its own document")
        seen_query[key], seen_doc[doc_id] = lineno, lineno
        query_id = str(row.get("query_id") or f"example-{lineno}")
        if query_id in queries:
            raise UserError(f"{path}:{lineno}: query_id {query_id!r} is used twice")
        queries[query_id] = query
        qrels[query_id] = {doc_id: 1}
    if not queries:
        raise UserError(f"{path}: no examples; {shape}")
    return ExamplesFile(queries, qrels, extra)


def ordered_split(pairs: list[Example], n_prompt: int, n_tune: int, n_filter_eval: int, where: str) -> ExampleSplit:
    """A user's examples cut into roles in their own order: the first ``n_prompt`` are the prompt examples, the
    next ``n_tune`` SPTAR's tuning set, the next ``n_filter_eval`` its filter set, the rest held out (the file
    order is the user's choice, so nothing is shuffled). Too few pairs for the roles is a ``UserError``."""
    needed = n_prompt + n_tune + n_filter_eval
    if len(pairs) < needed:
        raise UserError(f"{where}: {len(pairs)} examples, but the roles need {needed} ({n_prompt} prompt, {n_tune} "
                        f"tuning, {n_filter_eval} filter); add examples or lower prompt_examples, tune_pairs or "
                        "filter_eval_pairs in [generation]")
    cut = (n_prompt, n_prompt + n_tune, needed)
    return ExampleSplit(pairs[:cut[0]], pairs[cut[0]:cut[1]], pairs[cut[1]:cut[2]], pairs[cut[2]:])
