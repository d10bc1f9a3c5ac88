"""The query generation report: one row per (generator, prompt kind), plus kept and rejected examples.

Beside the filter's rates (round trip, copy, degenerate, kept), each row measures how well its prompt predicts
real queries: the mean negative log-likelihood per token of held-out (document, query) pairs the prompt never saw,

    NLL = - (1 / sum_i |q_i|) sum_i sum_t log p(q_i,t | q_i,<t, [prompt; d_i]),

the loss SPTAR (Peng et al., 2023) trains its soft prompt on and ranks example groups by. For SPTAR it is also
measured for the hard Promptagator prompt with the same examples, which shows what the soft prompt adds.

Example::

    setup = ReportSetup("smollm2", "smollm2", lambda: model_dir, PromptSetup("promptagator", examples),
                        PromptBuilder, held_out, summary)
    results = report_generation([setup], folder)             # generation.md, generation.json
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from stillhouse.eval.report import table_lines
from stillhouse.generators.lm import load_causal_lm
from stillhouse.generators.prompts import Example, PromptBuilder
from stillhouse.generators.query_gen import PromptSetup, held_out_nll

COLUMNS = [("nll_per_token", "held-out NLL/token"), ("bm25_top1", "BM25 top-1"), ("dense_top1", "MiniLM top-1"),
           ("copy_rate", "copy"), ("degenerate_rate", "degenerate"), ("kept_rate", "kept"),
           ("kept_bm25_top1", "kept: BM25 top-1"), ("kept_dense_top1", "kept: MiniLM top-1")]
TRAINED_COLUMNS = [("trained_top1", "trained top-1"), ("kept_trained_top1", "kept: trained top-1")]


def generation_table(results: list[dict]) -> str:
    """One row per setup; the round trip under the fine-tuned retriever appears when it was run."""
    columns = COLUMNS + (TRAINED_COLUMNS if any("trained_top1" in r for r in results) else [])
    rows = [[f"{r['generator']}", f"{r['prompt']}", f"{r['generated']}",
             *(f"{r[key]:.3f}" if isinstance(r.get(key), float) else "-" if r.get(key) is None else str(r[key])
               for key, _ in columns)]
            for r in results]
    return "\n".join(table_lines(["generator", "prompt", "generated", *(title for _, title in columns)],
                                 "llr" + "r" * len(columns), rows))


def write_generation_report(results: list[dict], folder: Path) -> str:
    table = generation_table(results)
    notes = []
    for r in results:
        if r.get("nll_per_token") is None:
            notes.append(f"- {r['generator']} {r['prompt']}: held-out NLL not measured, every labeled pair has a role "
                         "(prompt, tuning or filter); pairs beyond those roles are held out and measured.")
        if r.get("hard_prompt_nll_per_token") is not None:
            notes.append(f"- {r['generator']} SPTAR soft prompt: held-out NLL/token {r['nll_per_token']:.3f} vs "
                         f"{r['hard_prompt_nll_per_token']:.3f} for the hard prompt with the same examples.")
        for example in r.get("examples", [])[:3]:
            notes.append(f"- kept ({r['generator']}, {r['prompt']}), doc {example['doc_id']}: {example['query']}")
        for example in r.get("rejected_examples", [])[:2]:
            notes.append(f"- rejected: {example['why']} ({r['generator']}, {r['prompt']}): {example['query']}")
    text = "# Query generation\n\n" + table + "\n\n" + "\n".join(notes) + "\n"
    (folder / "generation.md").write_text(text)
    (folder / "generation.json").write_text(json.dumps(results, indent=2))
    return table


@dataclass
class ReportSetup:
    """One (generator, prompt kind) of the report: what its filter measured and what its NLL is measured with."""

    generator: str  # the generator's name in the table
    source: Hashable  # which LM: consecutive setups with the same source share one loaded copy
    model_dir: Callable[[], Path]  # where that LM is; asked only when the LM is loaded
    setup: PromptSetup
    builder: Callable[[object], PromptBuilder]  # a prompt builder for the LM's tokenizer
    held_out: list[Example]  # labeled pairs no prompt has seen
    summary: dict  # the filter's summary: generated, round-trip, copy, degenerate and kept rates, examples


def measure_generation(setups: list[ReportSetup]) -> list[dict]:
    """One report row per setup: its held-out NLL per token (and, for SPTAR, the hard prompt's with the same
    examples) followed by its filter ``summary``. One LM is loaded at a time, reused while the setups in a row
    share its source. A setup without held-out pairs (a file of exactly the examples its roles need) has no NLL:
    ``None``."""
    results = []
    loaded: dict[Hashable, object] = {}  # one copy of each generator LM, reused across prompt kinds
    for entry in setups:
        nll = hard_nll = None
        if entry.held_out:
            if entry.source not in loaded:
                loaded.clear()
                loaded[entry.source] = load_causal_lm(entry.model_dir())
            lm = loaded[entry.source]
            nll = held_out_nll(lm, entry.setup, entry.builder(lm.tokenizer), entry.held_out).per_token
            if entry.setup.kind == "sptar":  # the hard prompt the soft prompt started from, same examples
                hard = PromptSetup("promptagator", entry.setup.examples)
                hard_nll = held_out_nll(lm, hard, entry.builder(lm.tokenizer), entry.held_out).per_token
        results.append({"generator": entry.generator, "prompt": entry.setup.kind, "nll_per_token": nll,
                        "nll_pairs": len(entry.held_out), "hard_prompt_nll_per_token": hard_nll, **entry.summary})
    return results


def report_generation(setups: list[ReportSetup], folder: Path) -> list[dict]:
    """``measure_generation`` written as ``generation.md`` and ``generation.json`` into ``folder``; returns the
    rows."""
    results = measure_generation(setups)
    write_generation_report(results, folder)
    return results
