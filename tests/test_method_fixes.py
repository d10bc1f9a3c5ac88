"""Method details checked against their sources on small, real inputs (fast: no DAG run).

* the dense student's GISTEmbed loss gets the configured guide margin strategy, not only the margin;
* TAS-Balanced bins each query's margins over that query's own range (Hofstätter et al., 2021; matchmaker's
  ``TASBalancedDatasetLoader``), not over one global range;
* the sparse student's FLOPS weight warm-up is an explicit, configured ``SpladeRegularizerWeightSchedulerCallback``;
* the mining guide filter and sentence-transformers' ``GISTEmbedLoss`` decide a tie the same way (``>``: kept).
"""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, SPLADE_TINY

# ---------------------------------------------------------------------------------------------------------------
# (a) the guide margin strategy reaches the in-batch loss


def test_dense_losses_carry_the_configured_guide_margin_strategy(minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss, MarginMSELoss

    from stillhouse.retrievers.distill_dense import DenseStudentSettings, dense_losses, student_settings

    settings = student_settings({"in_batch_loss": "gist", "temperature": 0.05}, guide_margin=0.1, margin_bins=10,
                                guide_margin_strategy="relative")
    assert settings.guide_margin_strategy == "relative" and settings.guide_margin == 0.1
    assert DenseStudentSettings().guide_margin_strategy == "absolute"  # [training]'s default
    student = SentenceTransformer(str(minilm_dir), device="cpu")
    guide = SentenceTransformer(str(minilm_dir), device="cpu")
    losses = dense_losses(student, guide, settings, guide_name="minilm")
    gist, weight = losses["gist"]
    assert isinstance(gist, GISTEmbedLoss) and weight == 1.0
    assert (gist.margin_strategy, gist.margin, gist.temperature) == ("relative", 0.1, 0.05)
    assert isinstance(losses["margin_mse"][0], MarginMSELoss)


# ---------------------------------------------------------------------------------------------------------------
# (b) TAS-Balanced: per-query, equal-width margin bins

QUERIES = ["q1"] * 5 + ["q2"] * 5 + ["q3"] * 2 + ["q4"]
MARGINS = [0.0, 0.1, 0.6, 0.9, 1.0,  # q1: margins over [0, 1]
           10.0, 10.13, 10.22, 10.37, 10.4,  # q2: a narrow range far above q1's (no margin on a bin edge)
           0.3, 0.3,  # q3: all margins equal
           -2.0]  # q4: one pair


def test_tas_bins_each_querys_margins_over_its_own_range() -> None:
    from stillhouse.retrievers import tas

    sampler = tas.TASBalancedBatchSampler(list(range(len(QUERIES))), 2, False, row_queries=QUERIES,
                                          query_clusters=dict.fromkeys(QUERIES, 0), row_margins=MARGINS, bins=4)
    # Global edges over [-2, 10.4] put all of q2 in one bin and all of q1 in another; per query, each query's
    # pairs spread over its own 4 bins (matchmaker: np.digitize over arange(min, max, (max - min) / bins)).
    assert dict(sampler.rows_by_query_bin["q2"]) == {0: [5], 1: [6], 2: [7], 3: [8, 9]}
    assert dict(sampler.rows_by_query_bin["q1"]) == {0: [0, 1], 2: [2], 3: [3, 4]}
    assert dict(sampler.rows_by_query_bin["q3"]) == {0: [10, 11]}
    assert dict(sampler.rows_by_query_bin["q4"]) == {0: [12]}
    expected = [0, 0, 2, 3, 3, 0, 1, 2, 3, 3, 0, 0, 0]
    per_query_margin_bins = tas.per_query_margin_bins
    assert per_query_margin_bins(QUERIES, MARGINS, 4).tolist() == expected
    # Shifting or stretching one query's margins leaves every bin as it was.
    moved = [m * 100 - 7 if q == "q2" else m for q, m in zip(QUERIES, MARGINS, strict=True)]
    assert per_query_margin_bins(QUERIES, moved, 4).tolist() == expected

    # Sampling: q2's draws spread evenly over its 4 bins (uniform bin, then a pair inside it).
    drawn = []
    for epoch in range(400):
        sampler.set_epoch(epoch)
        drawn += [r for batch in sampler for r in batch if QUERIES[r] == "q2"]
    counts = np.bincount(per_query_margin_bins(QUERIES, MARGINS, 4)[drawn], minlength=4)
    assert counts.sum() == 400 and counts.min() > 70, counts


def test_tas_balance_report_measures_the_per_query_bins() -> None:
    from stillhouse.retrievers.tas import measure_balance, tas_balanced_sampler

    rng = np.random.default_rng(0)
    queries, margins = [], []
    for q in range(40):  # skewed within every query: many easy (high-margin) pairs, few hard ones
        low = rng.uniform(-5, 5)
        values = low + rng.beta(5, 1, size=20) * rng.uniform(0.5, 3)
        queries += [f"q{q}"] * 20
        margins += values.tolist()
    triples = {"query_id": queries, "margin": margins, "cluster": [int(q[1:]) % 4 for q in queries]}
    sampler = tas_balanced_sampler(queries, {q: int(q[1:]) % 4 for q in queries}, margins, 5)(
        list(range(len(queries))), batch_size=8, drop_last=False, seed=3)
    balance = measure_balance(sampler, triples, 10, 3)
    assert balance["edges"] == pytest.approx(np.linspace(0, 1, 6).tolist())  # positions within each query's range
    assert sum(balance["hist_tas"]) == sum(balance["hist_random"]) == 400
    assert balance["kl_tas"] < 0.5 * balance["kl_random"], balance


# ---------------------------------------------------------------------------------------------------------------
# (c) the FLOPS weight warm-up is an explicit setting


@pytest.fixture(scope="module")
def splade_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stillhouse.retrievers.model_sources import ModelSource, materialize

    folder = tmp_path_factory.mktemp("splade-tiny") / "model"
    materialize(ModelSource.parse(SPLADE_TINY), folder)
    return folder


def test_regularizer_warmup_default_is_sentence_transformers_implicit_one() -> None:
    from sentence_transformers.sparse_encoder.callbacks.splade_callbacks import (
        SpladeRegularizerWeightSchedulerCallback,
    )

    from stillhouse.pipelines.config import SparseStudentConfig
    from stillhouse.retrievers.sparse_student import SparseStudentSettings, sparse_student_settings

    implicit = inspect.signature(SpladeRegularizerWeightSchedulerCallback).parameters["warmup_ratio"].default
    assert SparseStudentConfig().regularizer_warmup_ratio == SparseStudentSettings().regularizer_warmup_ratio \
        == implicit
    section = SparseStudentConfig(regularizer_warmup_ratio=0.0).model_dump()
    assert sparse_student_settings(section, 10).regularizer_warmup_ratio == 0.0
    with pytest.raises(ValueError, match="regularizer_warmup_ratio"):
        SparseStudentConfig(regularizer_warmup_ratio=1.5)


def test_regularizer_warmup_ratio_is_in_the_sparse_students_fingerprint(tmp_path: Path) -> None:
    from stillhouse.pipelines.config import load_config
    from stillhouse.pipelines.dag import build_report_task, walk
    from stillhouse.pipelines.tasks.sparse import TrainSparse
    from stillhouse.pipelines.tasks.students import TrainDense

    shipped = (REPO / "configs" / "scifact.toml").read_text()

    def fingerprints(extra: str) -> dict[type, set[str]]:
        path = tmp_path / "run.toml"
        path.write_text(shipped.replace("[sparse_student]\n", f"[sparse_student]\n{extra}"))
        found: dict[type, set[str]] = {}
        for task in walk(build_report_task(load_config(path), tmp_path, tmp_path)):
            if isinstance(task, TrainSparse | TrainDense):
                found.setdefault(type(task), set()).add(task.fingerprint())
        return found

    plain = fingerprints("")
    assert fingerprints("regularizer_warmup_ratio = 0.3333333333333333\n") == plain  # the default, spelled out
    none = fingerprints("regularizer_warmup_ratio = 0.0\n")
    assert none[TrainSparse] != plain[TrainSparse] and none[TrainDense] == plain[TrainDense]
    (task,) = [t for t in walk(build_report_task(load_config(tmp_path / "run.toml"), tmp_path, tmp_path))
               if isinstance(t, TrainSparse)]
    assert task.student["regularizer_warmup_ratio"] == 0.0  # what TrainSparse hands sparse_student_settings


@pytest.mark.parametrize(("ratio", "expected"), [(0.5, [0.0, 0.25, 1.0, 1.0]), (0.0, [1.0, 1.0, 1.0, 1.0])])
def test_sparse_trainer_schedules_the_flops_weight_as_configured(splade_tiny_dir: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture, ratio: float,
                                                                  expected: list[float]) -> None:
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.callbacks.splade_callbacks import (
        SpladeRegularizerWeightSchedulerCallback,
    )
    from transformers import AutoTokenizer, TrainerCallback

    from stillhouse.retrievers.sparse_student import (
        SparseStudentSettings,
        build_inference_free_encoder,
        sparse_trainer,
    )

    flops = 0.2
    settings = SparseStudentSettings(flops_weight=flops, regularizer_warmup_ratio=ratio, batch_size=2)
    vocab = len(AutoTokenizer.from_pretrained(splade_tiny_dir))
    model = build_inference_free_encoder(splade_tiny_dir, np.ones(vocab, dtype=np.float32), 32, device="cpu")
    data = Dataset.from_dict({"anchor": ["lung cancer", "stem cells"] * 4,
                              "positive": ["smoking causes lung cancer", "EZH2 regulates stem cells"] * 4,
                              "negative": ["the weather is mild", "a recipe for bread"] * 4,
                              "label": [1.0, 0.5] * 4})
    args = SparseEncoderTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=4, learning_rate=1e-5,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        router_mapping={"anchor": "query", "positive": "document", "negative": "document"})
    with caplog.at_level(logging.WARNING):
        trainer = sparse_trainer(model, args, data, settings)
    assert not [r for r in caplog.records if "without SpladeRegularizerWeightSchedulerCallback" in r.getMessage()]
    (callback,) = [c for c in trainer.callback_handler.callbacks
                   if isinstance(c, SpladeRegularizerWeightSchedulerCallback)]
    assert callback.loss is trainer.loss and callback.warmup_ratio == ratio

    class WeightUsed(TrainerCallback):
        """Records the FLOPS weight each optimizer step trained with."""

        def __init__(self) -> None:
            self.weights: list[float] = []

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.weights.append(trainer.loss.document_regularizer_weight)

    used = WeightUsed()
    trainer.add_callback(used)
    trainer.train()
    # T_w = int(4 * ratio) steps of lambda * (t / T_w)^2, then lambda; with ratio 0, lambda throughout.
    assert used.weights == pytest.approx([flops * e for e in expected])
    assert trainer.loss.document_regularizer_weight == pytest.approx(flops)


# ---------------------------------------------------------------------------------------------------------------
# (d) mining and the loss decide a tie the same way


def test_guide_filter_keeps_a_candidate_exactly_at_the_threshold() -> None:
    from stillhouse.retrievers.guide import guide_keep, guide_threshold

    # Binary-exact numbers: the threshold is hit exactly. sentence-transformers' GISTEmbedLoss masks a candidate
    # when guide score > threshold (gist_embed.py, mask_false_negatives), so a candidate at it stays a negative.
    assert guide_threshold(np.array([0.75]), 0.25, "absolute")[0] == 0.5
    assert guide_keep(np.array([0.5, 0.5 + 2 ** -20, 0.5 - 2 ** -20]), np.full(3, 0.75), 0.25,
                      "absolute").tolist() == [True, False, True]
    assert guide_threshold(np.array([0.5]), 0.5, "relative")[0] == 0.25
    assert guide_keep(np.array([0.25, 0.25 + 2 ** -20]), np.full(2, 0.5), 0.5, "relative").tolist() == [True, False]
    assert guide_keep(np.array([-0.75]), np.array([-0.5]), 0.5, "relative").tolist() == [True]  # -0.5 - 0.25


@pytest.mark.parametrize("strategy", ["absolute", "relative"])
def test_mining_and_gist_loss_agree_at_the_threshold(minilm_dir: Path, strategy: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from stillhouse.retrievers.guide import gist_loss, guide_keep

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    query, positive = "does smoking cause lung cancer", "Smoking is the leading cause of lung cancer."
    loss = gist_loss(model, model, margin=0.0, strategy=strategy)  # the guide is the student: scores tie exactly
    with torch.no_grad():
        g = model.encode([query, positive], convert_to_tensor=True)
        guide_positive = float(model.similarity(g[:1], g[1:])[0, 0])

    def loss_keeps(negative: str) -> bool:
        """Whether GISTEmbedLoss leaves the (query, negative) logit in: one query, its positive and one negative;
        the only other logits are the query and positive against themselves, which the guide always masks."""
        features = [model.preprocess([text]) for text in (query, positive, negative)]
        with torch.no_grad():
            value = float(loss(features, torch.tensor([0.0])))
        # Kept, the negative scores like the positive (same text, same model): log 2. Masked: log 1 = 0.
        assert value == pytest.approx(math.log(2), abs=1e-4) or value == pytest.approx(0.0, abs=1e-6), value
        return value > 0.1

    # A negative with the positive's text: guide score exactly at the margin-0 threshold.
    tie = bool(guide_keep(np.array([guide_positive]), np.array([guide_positive]), 0.0, strategy)[0])
    assert tie == loss_keeps(positive) is True
    # A negative the guide scores above the positive (the query itself): both drop it.
    with torch.no_grad():
        above = float(model.similarity(g[:1], g[:1])[0, 0])
    assert bool(guide_keep(np.array([above]), np.array([guide_positive]), 0.0, strategy)[0]) is False
    assert loss_keeps(query) is False


def test_the_ensemble_column_is_the_weighted_mean_the_students_distil() -> None:
    """The ``ensemble`` score is ``sum_t w_t s'_t / sum_t w_t`` (in [0, 1], margins in [-1, 1]), and a student's
    margin is the table's margin times its ``margin_scale``, nothing else."""
    from stillhouse.retrievers.distill_dense import student_triples
    from stillhouse.retrievers.ensemble import aggregate

    normalized = {"a": np.array([0.0, 1.0, 0.5]), "b": np.array([1.0, 0.0, 0.5])}
    assert np.allclose(aggregate(normalized, {"a": 1.0, "b": 3.0}), [0.75, 0.25, 0.5])
    assert np.allclose(aggregate(normalized, {"a": 2.0, "b": 0.0}), normalized["a"])
    table = {"query_id": np.array(["q1", "q1"]), "query": np.array(["x", "x"]),
             "positive_id": np.array(["d1", "d1"]), "negative_id": np.array(["d2", "d3"]),
             "margin": np.array([0.5, -0.25]), "cluster": np.array([0, 0])}
    corpus = {d: {"title": d, "text": "t"} for d in ("d1", "d2", "d3")}
    assert student_triples(table, corpus, per_query=0, margin_scale=2.0)["margin"] == [1.0, -0.5]


def test_torch_exact_top_k_equals_the_faiss_flat_index() -> None:
    """The GPU fallback (torch matrix product + topk) answers as FAISS's flat inner-product index; run here on
    CPU tensors."""
    from stillhouse.retrievers import faiss_index

    rng = np.random.default_rng(3)
    docs = rng.normal(size=(500, 32)).astype(np.float32)
    queries = rng.normal(size=(37, 32)).astype(np.float32)
    index = faiss_index.build_flat_ip(docs)
    faiss_scores, faiss_rows = faiss_index.search(index, queries, 10, use_gpu=False)
    placed = faiss_index.ExactSearcher(index, device="cpu")  # the rows held as a tensor, as on a GPU
    for batch in (16, 1024):
        torch_scores, torch_rows = faiss_index.torch_top_k(placed.docs, queries, 10, batch=batch)
        assert np.array_equal(torch_rows, faiss_rows)
        assert np.allclose(torch_scores, faiss_scores, atol=1e-5)
    placed_scores, placed_rows = placed.search(queries, 600)
    assert np.all(np.diff(placed_scores, axis=1) <= 0)  # ranked, best first  # k above the row count: every row, ranked
    assert placed_rows.shape == (37, 500) and np.array_equal(placed_rows[:, :10], faiss_rows)
