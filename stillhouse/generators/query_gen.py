"""Query generation for documents with one prompt setup, and the labels the filter decides on.

Prompt kinds: ``zero-shot`` (instruction only), ``promptagator`` (instruction + at most 8 examples,
Dai et al. 2022) and ``sptar`` (learned soft prompt + the example pairs chosen by SPTAR's filter,
Peng et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stillhouse.generators.generate import DecodeSettings, generate
from stillhouse.generators.nll import NLL, target_nll
from stillhouse.generators.prompts import Example, PromptBuilder, check_examples
from stillhouse.generators.quality import clean_query, copies_document, copies_example, degenerate_reason, words

PROMPT_KINDS = ("zero-shot", "promptagator", "sptar")


@dataclass
class PromptSetup:
    """What goes in front of each target document."""

    kind: str
    examples: list[Example] = field(default_factory=list)
    adapter_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"unknown prompt kind {self.kind!r}")
        if self.kind != "zero-shot":
            check_examples(self.examples, where=f"{self.kind} prompt")

    def model(self, lm):
        """The LM to run: wrapped with the soft prompt for SPTAR."""
        if self.kind == "sptar":
            from stillhouse.generators.soft_prompt import load_soft_prompt

            assert self.adapter_dir is not None
            return load_soft_prompt(lm, self.adapter_dir)
        return lm.model


def generate_rows(lm, setup: PromptSetup, builder: PromptBuilder, documents: list[tuple[str, str]],
                  settings: DecodeSettings, generator_name: str, desc: str = "generating") -> list[dict]:
    """Generated queries for ``(doc_id, text)`` documents as table rows (not yet judged)."""
    model = setup.model(lm)
    prompts = [builder.build(text, setup.examples) for _, text in documents]
    virtual = getattr(getattr(model, "active_peft_config", None), "num_virtual_tokens", 0) or 0
    max_prompt = max(16, lm.context_window - settings.max_new_tokens - virtual)
    outputs = generate(model, lm.tokenizer, prompts, settings, max_prompt, desc=desc)
    rows = []
    for (doc_id, _), generated in zip(documents, outputs, strict=True):
        for j, out in enumerate(generated):
            rows.append({"query_id": f"{generator_name}:{setup.kind}:{doc_id}:{j}", "text": clean_query(out.text),
                         "raw": out.text, "doc_id": doc_id, "generator": generator_name, "prompt_kind": setup.kind,
                         "score": out.logprob, "finished": out.finished})
    return rows


def generate_shard(lm, setup: PromptSetup, builder: PromptBuilder, documents: list[tuple[str, str]], shard: int,
                   shards: int, settings: DecodeSettings, generator_name: str,
                   desc: str = "generating") -> tuple[list[dict], dict]:
    """``generate_rows`` for one of ``shards`` contiguous slices of ``documents``, and the slice's stats.

    Shard ``i`` of ``S`` over ``n`` documents covers ``[i * n // S, (i + 1) * n // S)``, so the shards partition
    the documents and differ in size by at most one; a killed run regenerates only its unfinished shards.
    The stats are ``{"documents": the slice's size, "truncated": the builder's count of truncated target
    documents}`` (pass a fresh builder per shard).

    Example::

        lm = load_causal_lm(model_dir)
        rows, stats = generate_shard(lm, PromptSetup("zero-shot"), PromptBuilder(lm.tokenizer), documents,
                                     shard=0, shards=4, settings=DecodeSettings(), generator_name="smollm2")
    """
    lo, hi = shard * len(documents) // shards, (shard + 1) * len(documents) // shards
    rows = generate_rows(lm, setup, builder, documents[lo:hi], settings, generator_name, desc=desc)
    return rows, {"documents": hi - lo, "truncated": builder.truncated}


def judge_rows(rows: list[dict], doc_texts: dict[str, str], example_queries: list[str]) -> list[dict]:
    """Add ``degenerate``, ``copy`` and ``duplicate`` labels (round-trip ranks are added separately)."""
    seen: set[tuple[str, str]] = set()
    for row in rows:
        row["degenerate"] = degenerate_reason(row["text"], row["finished"]) or ""
        doc_copy = copies_document(row["text"], doc_texts[row["doc_id"]])
        example_copy = copies_example(row["text"], example_queries)
        row["copy"] = "document" if doc_copy else ("example" if example_copy else "")
        key = (row["doc_id"], " ".join(words(row["text"])))
        row["duplicate"] = key in seen
        seen.add(key)
    return rows


def held_out_nll(lm, setup: PromptSetup, builder: PromptBuilder, pairs: list[Example]) -> NLL:
    """Mean NLL per token of real queries given their documents under this prompt setup."""
    model = setup.model(lm)
    prompts = [builder.build(p.document, setup.examples) for p in pairs]
    return target_nll(model, lm.tokenizer, prompts, [f" {p.query}\n" for p in pairs])
