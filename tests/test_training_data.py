"""Training data on a slice of real SciFact: mining, the GISTEmbed guide filter, the teacher ensemble
(MiniLM, SPLADE-tiny, BM25), TAS-Balanced sampling in the sentence-transformers trainer, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stillhouse.pipelines.tasks.training_data import read_table
from stillhouse.retrievers.errors import UserError

from .conftest import MINILM, SPLADE_TINY, run_cli, write_config

pytestmark = pytest.mark.slow

TRAINING = f"""
[training]
queries = "split"
queries_split = "train"
positives = "first"
guide = "minilm"
bm25_candidates = 10
dense_candidates = 10
clusters = 4
margin_bins = 8
rerank_splits = ["train", "test"]
rerank_depth = 50
[training.teachers.minilm]
kind = "dense"
model = "base"
batch_size = 16
[training.teachers.splade]
kind = "sparse"
model = "{SPLADE_TINY}"
max_seq_length = 128
[training.teachers.bm25]
kind = "bm25"
"""


def only_output(workdir: Path, family: str, **match) -> Path:
    """The one output folder of ``family`` whose provenance params contain ``match``."""
    found = []
    for provenance in (workdir / family).glob("*/provenance.json"):
        params = json.loads(provenance.read_text())["params"]
        if all(_lookup(params, key) == value for key, value in match.items()):
            found.append(provenance.parent)
    assert len(found) == 1, f"{family} {match}: {found}"
    return found[0]


def one_error_line(result) -> str:
    """The CLI's single ``error:`` line (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def _lookup(params: dict, dotted: str):
    for part in dotted.split("__"):
        params = params[part]
    return params


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory, slice_root: Path) -> Path:
    base = tmp_path_factory.mktemp("training")
    config = write_config(base / "run.toml", base / "work", slice_root, shards=2, extra=TRAINING)
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "## GISTEmbed guide filter" in result.stdout
    return base / "work"


def test_guide_study_is_monotone_and_labels_are_never_negatives(training_run: Path) -> None:
    payload = json.loads((training_run / "training-data" / "training_data.json").read_text())
    study = payload["guide"]["study"]
    for strategy in ("absolute", "relative"):
        rows = sorted((r for r in study if r["strategy"] == strategy), key=lambda r: r["margin"])
        removed = [r["false_negatives_removed"] + r["others_removed"] for r in rows]
        assert removed == sorted(removed) and removed[-1] > removed[0]  # a wider margin removes more
    assert payload["mined"]["judged_relevant_candidates"] == study[0]["false_negatives"] > 0
    guide = read_table(only_output(training_run, "GuideFilter") / "guide.parquet")
    candidate = ~guide["positive"].astype(bool)
    # A judged-relevant candidate is never kept as a negative; the rest follow the guide rule at margin 0.
    assert not (guide["kept"] & guide["judged_relevant"] & candidate).any()
    expected = candidate & ~guide["judged_relevant"] & (guide["guide_score"] < guide["positive_score"])
    assert np.array_equal(guide["kept"] & candidate, expected)


def test_ensemble_is_normalized_per_query_and_loadable_with_datasets(training_run: Path) -> None:
    from datasets import load_dataset

    folder = only_output(training_run, "EnsembleScores")
    table = load_dataset("parquet", data_files=str(folder / "ensemble.parquet"), split="train")
    assert {"raw_minilm", "norm_splade", "raw_bm25", "ensemble"} <= set(table.column_names)
    frame = table.to_pandas()
    for name in ("minilm", "splade", "bm25"):
        per_query = frame.groupby("query_id")[f"norm_{name}"]
        assert np.allclose(per_query.min(), 0) and np.allclose(per_query.max(), 1)
    mean = frame[["norm_minilm", "norm_splade", "norm_bm25"]].mean(axis=1)
    assert np.allclose(frame["ensemble"], mean, atol=1e-5)  # default weights, 1 each: the plain mean


def test_teacher_scores_match_the_models_themselves(training_run: Path, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from stillhouse.retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()
    from pyserini.search.lucene import LuceneSearcher

    rerank = only_output(training_run, "RerankPairs", split="test")
    table = read_table(rerank / "pairs.parquet")
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in open(rerank / "queries.jsonl")}
    dense = np.load(only_output(training_run, "TeacherScores", teacher__kind="dense",
                                pairs__kind="rerank", pairs__split="test") / "scores.npy")
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in
              open(only_output(training_run, "LoadDataset", split="test") / "corpus.jsonl")}
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    for i in (0, 7, 42):
        q, d = table["query_id"][i], table["doc_id"][i]
        doc = f"{corpus[d]['title']} {corpus[d]['text']}".strip()
        expected = float(model.similarity(model.encode([queries[q]]), model.encode([doc]))[0, 0])
        assert dense[i] == pytest.approx(expected, abs=1e-4)
    # BM25 teacher: Lucene's score of the named document equals its flat BM25 search score (4 decimals there).
    bm25 = np.load(only_output(training_run, "TeacherScores", teacher__kind="bm25", pairs__kind="rerank",
                                pairs__split="test")
                   / "scores.npy")
    searcher = LuceneSearcher(str(only_output(training_run, "BM25Index", multifield="False") / "index"))
    q = table["query_id"][0]
    hits = {h.docid: h.score for h in searcher.search(queries[q], k=400)}
    rows = [i for i in range(len(table["query_id"])) if table["query_id"][i] == q]
    assert all(bm25[i] == pytest.approx(hits.get(table["doc_id"][i], 0.0), abs=1e-4) for i in rows)


def test_tas_balanced_batches_come_from_one_cluster_and_flatten_margins(training_run: Path) -> None:
    from stillhouse.retrievers.tas import TASBalancedBatchSampler, histogram_kl_to_uniform, random_pair_sample

    folder = only_output(training_run, "TASTriples")
    balance = json.loads((folder / "balance.json").read_text())
    assert balance["single_cluster_batches"] == balance["batches"] > 0
    triples = read_table(folder / "triples.parquet")
    clusters = dict(zip(triples["query_id"], triples["cluster"], strict=True))
    sampler = TASBalancedBatchSampler(list(range(len(triples["margin"]))), 4, False, row_queries=triples["query_id"],
                                      query_clusters=clusters, row_margins=triples["margin"], bins=8)
    tas_rows, random_rows = [], []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len({triples["cluster"][r] for r in batch}) == 1 and len(batch) <= 4
            assert len({triples["query_id"][r] for r in batch}) == len(batch)
            tas_rows += batch
        random_rows += random_pair_sample(triples["query_id"], seed=epoch)
    # Bins are per query: the histogram is over each margin's place in its own query's range.
    kl_tas = histogram_kl_to_uniform(sampler.row_positions[tas_rows], sampler.edges)
    kl_random = histogram_kl_to_uniform(sampler.row_positions[random_rows], sampler.edges)
    assert kl_tas < 0.8 * kl_random, (kl_tas, kl_random)


def test_tas_sampler_and_gist_loss_train_in_the_sentence_transformers_trainer(training_run: Path, minilm_dir: Path,
                                                                               tmp_path: Path) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from stillhouse.retrievers.guide import gist_loss
    from stillhouse.retrievers.tas import TASBalancedBatchSampler, tas_balanced_sampler

    folder = only_output(training_run, "TASTriples")
    triples = read_table(folder / "triples.parquet")
    corpus_dir = only_output(training_run, "LoadDataset", split="test")
    corpus = {r["_id"]: f"{r['title']} {r['text']}" for r in map(json.loads, open(corpus_dir / "corpus.jsonl"))}
    data = Dataset.from_dict({"anchor": list(triples["query"]),
                              "positive": [corpus[d] for d in triples["positive_id"]],
                              "negative": [corpus[d] for d in triples["negative_id"]]})
    clusters = dict(zip(triples["query_id"], triples["cluster"], strict=True))
    student = SentenceTransformer(str(minilm_dir), device="cpu")
    student.max_seq_length = 64
    guide = SentenceTransformer(str(minilm_dir), device="cpu")
    guide.max_seq_length = 64
    before = [p.detach().clone() for p in student.parameters()][:4]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-4,
        use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        batch_sampler=tas_balanced_sampler(triples["query_id"], clusters, triples["margin"], bins=8))
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=data,
                                         loss=gist_loss(student, guide, margin=0.0))
    loader = trainer.get_train_dataloader()
    assert isinstance(loader.batch_sampler, TASBalancedBatchSampler)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(np.isfinite(losses))
    assert any(not torch.equal(a, b) for a, b in zip(before, list(student.parameters())[:4], strict=True))


def test_unknown_teacher_weight_is_one_line(tmp_path: Path, slice_root: Path) -> None:
    config = write_config(tmp_path / "run.toml", tmp_path / "work", slice_root,
                          extra=TRAINING + "\n[training.weights]\nminilm = 1.0\ncolbert = 0.5\n")
    result = run_cli("run", str(config))
    assert one_error_line(result) == (
        f"error: {config}: training.weights: 'colbert' is not a teacher in [training.teachers] "
        "(minilm, splade, bm25)")


def test_training_queries_without_a_positive_are_one_line(tmp_path: Path, slice_root: Path) -> None:
    import shutil

    root = tmp_path / "beir"
    shutil.copytree(slice_root, root)
    qrels = root / "scifact" / "qrels" / "train.tsv"
    lines = qrels.read_text().splitlines()
    first_query = lines[1].split("\t")[0]
    rewritten = [lines[0]]
    for line in lines[1:]:
        query_id, doc_id, _ = line.split("\t")
        rewritten.append(f"{query_id}\t{doc_id}\t0" if query_id == first_query else line)
    qrels.write_text("\n".join(rewritten) + "\n")
    extra = TRAINING.replace("rerank_splits = [\"train\", \"test\"]", "rerank_splits = []")
    config = write_config(tmp_path / "run.toml", tmp_path / "work", root, extra=extra)
    result = run_cli("run", str(config))
    assert one_error_line(result) == (
        f"error: {qrels}: 1 queries have no positive (relevance > 0), first {first_query!r}; "
        "give each training query a relevant document or remove it")
    # Judged queries are checked first and a user error stops the run: no corpus was encoded before the error.
    assert not list((tmp_path / "work").glob("EncodeShard/*/provenance.json"))


def test_guide_with_another_tokenizer_and_a_shorter_window_is_one_line(minilm_dir: Path, smollm2_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from stillhouse.retrievers.guide import gist_loss

    student = SentenceTransformer(str(minilm_dir), device="cpu")
    guide = SentenceTransformer(str(smollm2_dir), device="cpu")
    guide.max_seq_length = 128
    with pytest.raises(UserError, match=r"^guide .*: its tokenizer differs from the student's .* its window \(128 "
                                        r"tokens\) is shorter than the student's \(256\)"):
        gist_loss(student, guide, student_name=MINILM, guide_name="smollm2")
    guide.max_seq_length = 512  # a longer window re-reads the student's decoded text: accepted
    assert gist_loss(student, guide, student_name=MINILM, guide_name="smollm2").guide is guide
    cached = gist_loss(student, guide, cached=True, mini_batch_size=8, student_name=MINILM, guide_name="smollm2")
    assert type(cached).__name__ == "CachedGISTEmbedLoss" and cached.mini_batch_size == 8


def test_sparse_teacher_without_an_mlm_head_is_one_line(minilm_dir: Path) -> None:
    from stillhouse.retrievers.teachers import load_sparse_encoder

    with pytest.raises(UserError, match=r"not a masked-LM checkpoint \(BertModel\); a sparse model needs an MLM head"):
        load_sparse_encoder(minilm_dir)
