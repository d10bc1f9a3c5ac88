"""The query generation report: one row per (generator, prompt kind), plus kept and rejected examples."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = [("nll_per_token", "held-out NLL/token"), ("bm25_top1", "BM25 top-1"), ("dense_top1", "MiniLM top-1"),
           ("copy_rate", "copy"), ("degenerate_rate", "degenerate"), ("kept_rate", "kept"),
           ("kept_bm25_top1", "kept: BM25 top-1"), ("kept_dense_top1", "kept: MiniLM top-1")]
TRAINED_COLUMNS = [("trained_top1", "trained top-1"), ("kept_trained_top1", "kept: trained top-1")]


def generation_table(results: list[dict]) -> str:
    """One row per setup; the round trip under the fine-tuned retriever appears when it was run."""
    columns = COLUMNS + (TRAINED_COLUMNS if any("trained_top1" in r for r in results) else [])
    lines = ["| generator | prompt | generated | " + " | ".join(title for _, title in columns) + " |",
             "|---|---|---:|" + "---:|" * len(columns)]
    for r in results:
        cells = [f"{r[key]:.3f}" if isinstance(r.get(key), float) else str(r.get(key, "")) for key, _ in columns]
        lines.append(f"| {r['generator']} | {r['prompt']} | {r['generated']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_generation_report(results: list[dict], folder: Path) -> str:
    table = generation_table(results)
    notes = []
    for r in results:
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
