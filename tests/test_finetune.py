"""The round-trip retriever of Promptagator: the real MiniLM fine-tuned on (query, document) pairs with the
sentence-transformers trainer, saved as a plain folder, and a FAISS index of the corpus built with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stillhouse.eval.beir_data import load_beir
from stillhouse.generators.examples import labeled_pairs, prompt_text
from stillhouse.generators.roundtrip import source_ranks
from stillhouse.retrievers.dense import build_corpus_index, dense_search, load_sentence_encoder
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.finetune import finetune_on_pairs

pytestmark = pytest.mark.slow


def _mrr(ranks: dict[str, int | None]) -> float:
    return sum(1 / r for r in ranks.values() if r) / len(ranks)


def test_finetuned_retriever_ranks_its_training_documents_higher(slice_root: Path, minilm_dir: Path,
                                                                  tmp_path: Path) -> None:
    data = load_beir(slice_root / "scifact", "train")
    pairs = labeled_pairs(data)[:32]
    queries = {f"q{i}": p.query for i, p in enumerate(pairs)}
    sources = {f"q{i}": p.doc_id for i, p in enumerate(pairs)}

    build_corpus_index(load_sentence_encoder(minilm_dir), data.corpus, tmp_path / "base-index", batch_size=32)
    before = source_ranks(dense_search(minilm_dir, tmp_path / "base-index", queries, 10), sources)

    stats = finetune_on_pairs(minilm_dir, [(p.query, prompt_text(data.corpus[p.doc_id])) for p in pairs],
                              tmp_path / "tuned", epochs=3, batch_size=8, learning_rate=1e-4, max_seq_length=128)
    assert stats["pairs"] == 32 and stats["train_loss"] > 0
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(tmp_path / "tuned")).get_sentence_embedding_dimension() == 384

    build_corpus_index(load_sentence_encoder(tmp_path / "tuned"), data.corpus, tmp_path / "tuned-index", 32)
    assert len(json.loads((tmp_path / "tuned-index" / "docids.json").read_text())) == len(data.corpus)
    after = source_ranks(dense_search(tmp_path / "tuned", tmp_path / "tuned-index", queries, 10), sources)
    assert _mrr(after) > _mrr(before)


def test_finetuning_needs_two_pairs(minilm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="in-batch negatives need at least 2"):
        finetune_on_pairs(minilm_dir, [("a query", "a document"), ("", "empty query")], tmp_path / "never")
    assert not (tmp_path / "never").exists()
