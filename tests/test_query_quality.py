"""Copy and degenerate detection, calibrated on SciFact's real train queries."""

from __future__ import annotations

from pathlib import Path

from stillhouse.eval.beir_data import load_beir
from stillhouse.generators.examples import labeled_pairs, prompt_text, split_examples
from stillhouse.generators.quality import clean_query, copies_document, copies_example, degenerate_reason


def test_real_queries_are_rarely_flagged_and_verbatim_sentences_always(beir_dir: Path) -> None:
    data = load_beir(beir_dir / "scifact", "train")
    pairs = labeled_pairs(data)
    flagged = sum(copies_document(p.query, p.document) for p in pairs)
    assert len(pairs) == 809 and flagged / len(pairs) < 0.05
    degenerate = sum(degenerate_reason(p.query, True) is not None for p in pairs)
    assert degenerate / len(pairs) < 0.05
    # The title, or the first sentence of the abstract, is what a small LM copies.
    titles = [data.corpus[p.doc_id]["title"] for p in pairs[:200]]
    firsts = [data.corpus[p.doc_id]["text"].split(". ")[0] for p in pairs[:200]]
    assert sum(copies_document(t, p.document) for t, p in zip(titles, pairs, strict=False)) >= 195
    assert sum(copies_document(f, p.document) for f, p in zip(firsts, pairs, strict=False)) >= 195


def test_examples_copy_and_degenerate_cases() -> None:
    examples = ["Aspirin lowers the risk of stroke in older adults."]
    assert copies_example("aspirin lowers the risk of stroke in adults", examples)
    assert not copies_example("Statins reduce cardiovascular mortality.", examples)
    assert degenerate_reason("1. 1. 1. 1.", True) == "repetition"
    assert degenerate_reason("", True) == "empty"
    assert degenerate_reason("a long sentence that never stopped", False) == "over-long"
    assert degenerate_reason("Vitamin D prevents fractures.", True) is None
    assert clean_query('Query: "Vitamin D prevents fractures."\nDocument: x') == "Vitamin D prevents fractures."


def test_example_roles_are_disjoint(beir_dir: Path) -> None:
    data = load_beir(beir_dir / "scifact", "train")
    split = split_examples(labeled_pairs(data), 8, 50, 16, seed=13)
    assert (len(split.prompt), len(split.tune), len(split.filter_eval)) == (8, 50, 16)
    docs = [{e.doc_id for e in role} for role in (split.prompt, split.tune, split.filter_eval, split.held_out)]
    assert all(not (a & b) for i, a in enumerate(docs) for b in docs[i + 1:])
    assert all(e.document == prompt_text(data.corpus[e.doc_id]) for e in split.prompt)


def test_ngram_blocker_only_looks_at_generated_tokens() -> None:
    import torch

    from stillhouse.generators.generate import GeneratedNGramBlocker

    blocker = GeneratedNGramBlocker(prompt_width=3, n=2)
    # prompt [5, 6, 5] then generated [6, 7, 6]: the bigram (6, 7) was generated, so 7 is banned after 6;
    # the prompt's bigram (5, 6) is not, so 5 followed by 6 stays allowed elsewhere.
    ids = torch.tensor([[5, 6, 5, 6, 7, 6], [5, 6, 5, 1, 2, 3]])
    scores = blocker(ids, torch.zeros(2, 10))
    assert scores[0, 7] == float("-inf") and torch.isfinite(scores[0, [0, 1, 2, 3, 4, 5, 6, 8, 9]]).all()
    assert torch.isfinite(scores[1]).all()
