"""Distill the teacher ensemble into a dense bi-encoder with the sentence-transformers trainer.

Two losses on the same (query, positive, negative) batches, weights configurable:

* Margin-MSE (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture
  Knowledge Distillation", Eq. 1): ``L = (M_s(q, p) - M_s(q, n) - (M_t(q, p) - M_t(q, n)))^2`` with the
  student's dot products ``M_s`` and the aggregated, per-query normalized ensemble ``M_t`` (Geng et al.,
  2024, §3.2); sentence-transformers' ``MarginMSELoss``.
* GISTEmbed (Solatorio, 2024, Eq. 2-3): InfoNCE over in-batch positives and negatives where every
  in-batch candidate the guide scores above the query's positive, less the guide margin, is masked out;
  sentence-transformers' ``GISTEmbedLoss`` with the ``[training]`` guide margin and its strategy
  (absolute: ``G(q, c) > G(q, p) - margin``; relative: ``G(q, c) > G(q, p) - |G(q, p)| * margin``), the
  same rule the mining filter applied (``stillhouse.retrievers.guide``).

List-wise (``list_size = n > 1``, Hofstätter et al.'s margin-MSE summed over a list, as in their TAS-Balanced
training of several negatives per query): an example is a query, its positive and n mined negatives spread over
its margin ranking; the loss is ``mean_i (M_s(q, p) - M_s(q, n_i) - (M_t(q, p) - M_t(q, n_i)))^2`` over the list
(``MarginMSELoss`` with n negative columns), and GISTEmbed reads the hardest negative of the list.

Batches come from the TAS-Balanced sampler (``stillhouse.retrievers.tas``): one topic cluster per batch,
negatives drawn uniformly over teacher-margin bins; ``sampler = "random"`` is the ablation (one
uniformly random triple per query, batches across all clusters). Checkpoints go to a folder that
survives a killed run; the next run resumes from the last one.

sentence-transformers combines losses only across data sets (one loss per data set); the weighted sum
over one batch, which the TAS sampler needs, is ``WeightedLossSum`` below.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from stillhouse.retrievers.errors import UserError
from stillhouse.settings import DenseStudentSettings, MarginStrategy, from_section

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


class WeightedLossSum(nn.Module):
    """``sum_i w_i L_i(batch)`` over sentence-transformers losses that read the same batch; ``columns`` caps the
    columns a loss reads (GISTEmbed takes anchor, positive and one negative of a list-wise example)."""

    def __init__(self, model, losses: dict[str, tuple[nn.Module, float]],
                 columns: dict[str, int] | None = None) -> None:
        super().__init__()
        self.model = model
        self.parts = nn.ModuleDict({name: loss for name, (loss, _) in losses.items()})
        self.weights = {name: weight for name, (_, weight) in losses.items()}
        self.columns = dict(columns or {})

    def forward(self, sentence_features, labels):
        features = list(sentence_features)
        total = None
        for name, loss in self.parts.items():
            # Each loss gets its own shallow copies: models write their outputs into the dicts they are given.
            read = features[:self.columns[name]] if name in self.columns else features
            value = self.weights[name] * loss([dict(f) for f in read], labels)
            total = value if total is None else total + value
        return total


def select_rows(query_ids: np.ndarray, margins: np.ndarray, per_query: int) -> np.ndarray:
    """At most ``per_query`` rows per query, spread evenly over its margin ranking (so every margin bin
    the query has stays represented); all rows of queries with fewer."""
    keep: list[int] = []
    order = np.lexsort((margins, query_ids))
    boundaries = np.flatnonzero(np.r_[True, query_ids[order][1:] != query_ids[order][:-1], True])
    for start, end in itertools.pairwise(boundaries):
        rows = order[start:end]
        if per_query and len(rows) > per_query:
            rows = rows[np.linspace(0, len(rows) - 1, per_query).round().astype(int)]
        keep.extend(rows.tolist())
    return np.sort(np.asarray(keep, dtype=np.int64))


def student_triples(table: dict[str, np.ndarray], corpus: dict[str, dict[str, str]], per_query: int,
                    margin_scale: float) -> dict[str, list]:
    """The training columns ``train_dense_student`` reads, from a TASTriples table (ids, query text, ensemble
    margin, cluster): at most ``per_query`` rows per query (``select_rows``), document texts filled in, and
    margins times ``margin_scale``.

    The ensemble is the weighted mean of [0, 1]-normalized scores (``stillhouse.retrievers.ensemble.aggregate``),
    so its margins are in [-1, 1], the range of the student's cosine margins; ``margin_scale`` stretches them
    from there.
    """
    from stillhouse.retrievers.dense import document_text

    rows = select_rows(table["query_id"], table["margin"], per_query)
    return {"query_id": table["query_id"][rows].tolist(), "query": table["query"][rows].tolist(),
            "positive_id": table["positive_id"][rows].tolist(), "negative_id": table["negative_id"][rows].tolist(),
            "positive": [document_text(corpus[d]) for d in table["positive_id"][rows]],
            "negative": [document_text(corpus[d]) for d in table["negative_id"][rows]],
            "margin": (table["margin"][rows] * margin_scale).tolist(),
            "cluster": table["cluster"][rows].tolist()}


def list_examples(triples: dict[str, list], list_size: int) -> dict[str, list]:
    """One list-wise example per query from ``student_triples`` rows: its query, its first row's positive, and
    ``list_size`` negatives spread evenly over its margin ranking (``select_rows``; the hardest first), cycled when
    the query has fewer; ``margins`` holds each negative's ensemble margin ``S(q, p) - S(q, n_i)`` and ``margin``
    their mean (what the TAS-Balanced sampler bins).

    Columns: query_id, query, positive, negative_1 .. negative_<list_size>, margins, margin, cluster.
    """
    query_ids = np.asarray(triples["query_id"])
    margins = np.asarray(triples["margin"], dtype=np.float64)
    rows_by_query: dict[str, list[int]] = {}
    for row in select_rows(query_ids, margins, list_size):
        rows_by_query.setdefault(str(query_ids[row]), []).append(int(row))
    out: dict[str, list] = {"query_id": [], "query": [], "positive": [], "margins": [], "margin": [], "cluster": [],
                            **{f"negative_{i + 1}": [] for i in range(list_size)}}
    for query, rows in rows_by_query.items():
        rows = sorted(rows, key=lambda r: margins[r])
        picked = [rows[i % len(rows)] for i in range(list_size)]
        first = rows[0]
        out["query_id"].append(query)
        out["query"].append(triples["query"][first])
        out["positive"].append(triples["positive"][first])
        out["cluster"].append(triples["cluster"][first])
        for i, row in enumerate(picked):
            out[f"negative_{i + 1}"].append(triples["negative"][row])
        out["margins"].append([float(margins[r]) for r in picked])
        out["margin"].append(float(np.mean(out["margins"][-1])))
    return out


def student_settings(student: dict, guide_margin: float, margin_bins: int,
                     guide_margin_strategy: MarginStrategy = "absolute") -> DenseStudentSettings:
    """``DenseStudentSettings`` from a config's ``[dense_student]`` table and ``[training]``'s guide margin, guide
    margin strategy and margin bins (keys that are not training settings, such as ``base_model``, are not read)."""
    return from_section(DenseStudentSettings, student, guide_margin=guide_margin, margin_bins=margin_bins,
                        guide_margin_strategy=guide_margin_strategy)


def dense_losses(model: SentenceTransformer, guide: SentenceTransformer | None, settings: DenseStudentSettings,
                 guide_name: str = "guide") -> dict[str, tuple[nn.Module, float]]:
    """The weighted losses ``train_dense_student`` sums (``WeightedLossSum``): Margin-MSE and the in-batch loss,
    each left out at weight 0.

    The in-batch loss is GISTEmbed (``guide`` required) with the configured guide margin *and* margin strategy,
    or, for ``in_batch_loss = "mnrl"``, plain InfoNCE with scale ``1 / temperature``.
    """
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss

    from stillhouse.retrievers.guide import gist_loss

    losses: dict[str, tuple[nn.Module, float]] = {}
    if settings.margin_mse_weight > 0:
        losses["margin_mse"] = (MarginMSELoss(model), settings.margin_mse_weight)
    if settings.in_batch_weight > 0 and settings.in_batch_loss == "gist":
        if guide is None:
            raise UserError("dense student: in_batch_loss = \"gist\" needs a guide model")
        losses["gist"] = (gist_loss(model, guide, margin=settings.guide_margin,
                                    strategy=settings.guide_margin_strategy, temperature=settings.temperature,
                                    guide_name=guide_name), settings.in_batch_weight)
    elif settings.in_batch_weight > 0:
        losses["mnrl"] = (MultipleNegativesRankingLoss(model, scale=1 / settings.temperature),
                          settings.in_batch_weight)
    if not losses:
        raise UserError("dense student: margin_mse_weight and in_batch_weight are both 0; give one a positive weight")
    return losses


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def checkpoint_step(path: Path) -> int:
    """The global step a trainer checkpoint folder (``checkpoint-N``) was saved at."""
    return int(path.name.rsplit("-", 1)[-1])


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder the trainer finished writing; any newer, partial one (a kill during
    a save) is removed so the trainer's own rotation never picks it."""
    found = sorted((checkpoint_step(p), p) for p in checkpoint_dir.glob("checkpoint-*")
                   if p.name.rsplit("-", 1)[-1].isdigit())
    for _, path in reversed(found):
        if all((path / name).is_file() for name in CHECKPOINT_FILES):
            return str(path)
        log.warning("removing incomplete checkpoint %s", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def training_columns(triples: dict[str, list], list_size: int) -> tuple[dict[str, list], dict[str, list]]:
    """The examples (query_id, cluster, margin per example, for the sampler) and the trainer's dataset columns:
    pair-wise (``list_size`` 1) one (anchor, positive, negative) row per triple with its margin as the label;
    list-wise (``list_examples``) anchor, positive, negative_1 .. negative_n with the n margins as the label, which
    sentence-transformers' ``MarginMSELoss`` reads as one margin per negative column."""
    if list_size <= 1:
        return triples, {"anchor": triples["query"], "positive": triples["positive"], "negative": triples["negative"],
                         "label": np.asarray(triples["margin"], dtype=np.float32).tolist()}
    examples = list_examples(triples, list_size)
    negatives = {f"negative_{i + 1}": examples[f"negative_{i + 1}"] for i in range(list_size)}
    return examples, {"anchor": examples["query"], "positive": examples["positive"], **negatives,
                      "label": np.asarray(examples["margins"], dtype=np.float32).tolist()}


def train_dense_student(base_dir: Path, guide_dir: Path | None, triples: dict[str, list], out_dir: Path,
                        checkpoint_dir: Path, settings: DenseStudentSettings,
                        guide_vectors: Mapping[str, np.ndarray] | None = None) -> dict:
    """Train a copy of ``base_dir`` on ``triples`` (columns query_id, query, positive, negative, margin,
    cluster) and save it to ``out_dir`` as a plain sentence-transformers folder; return training stats.

    ``checkpoint_dir`` holds the trainer's checkpoints; when it has one, training resumes from it.
    ``guide_vectors`` (the guide's vector of every training text, ``guide_lookup.guide_vectors``) replaces the
    guide model in the GISTEmbed loss (``guide_lookup.GuideLookup``): the frozen guide then runs once, not per batch.
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from stillhouse.retrievers.dense import load_sentence_encoder
    from stillhouse.retrievers.tas import tas_balanced_sampler

    if not triples["query_id"]:
        raise UserError("dense student: no training triples; see the training-data report")
    log.info("dense student: %d triples of %d queries (%s batches)", len(triples["query_id"]),
             len(set(triples["query_id"])), settings.sampler)
    torch.manual_seed(settings.seed)
    model = load_sentence_encoder(base_dir, half=False)  # fp32 weights, bf16 autocast on GPU
    # Train on truncated texts (the cost is in the sequence length) but save the base model's own window, which
    # the student's corpus index then uses.
    saved_max_seq_length = model.max_seq_length
    model.max_seq_length = settings.train_max_seq_length
    on_gpu = model.device.type == "cuda"
    guide = None
    if settings.in_batch_weight > 0 and settings.in_batch_loss == "gist" and settings.guide_vectors == "index" \
            and guide_vectors is None:
        raise UserError("dense student: guide_vectors = \"index\" needs the guide's precomputed vectors "
                        "(guide_lookup.guide_vectors)")
    if settings.in_batch_weight > 0 and settings.in_batch_loss == "gist" and guide_vectors is not None:
        from stillhouse.retrievers.guide_lookup import GuideLookup

        guide = GuideLookup(model, guide_vectors)
    elif settings.in_batch_weight > 0 and settings.in_batch_loss == "gist" and guide_dir is not None:
        guide = load_sentence_encoder(guide_dir, settings.train_max_seq_length, half=on_gpu)
        guide.eval()
    losses = dense_losses(model, guide, settings, guide_name=guide_dir.name if guide_dir else "guide")
    rows, columns = training_columns(triples, settings.list_size)
    data = Dataset.from_dict(columns)
    if settings.sampler == "tas-balanced":
        clusters = {q: int(c) for q, c in zip(rows["query_id"], rows["cluster"], strict=True)}
        bins = settings.margin_bins
    else:  # one cluster and one bin: a uniformly random example per query, batches across every topic
        clusters, bins = dict.fromkeys(rows["query_id"], 0), 1
    sampler = tas_balanced_sampler(list(rows["query_id"]), clusters, rows["margin"], bins)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    resume_from = last_complete_checkpoint(checkpoint_dir)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio, batch_sampler=sampler, save_strategy="steps",
        save_steps=settings.checkpoint_steps, save_total_limit=2, logging_steps=10, report_to=[],
        seed=settings.seed, bf16=on_gpu and torch.cuda.is_bf16_supported(), use_cpu=not on_gpu,
        disable_tqdm=False, dataloader_drop_last=False)
    # GISTEmbedLoss reads (anchor, positive, negative): a list-wise example gives it its hardest negative.
    in_batch_columns = {"gist": 3} if settings.list_size > 1 else {}
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=WeightedLossSum(model, losses, in_batch_columns))
    if resume_from:
        log.info("resuming dense student training from %s", resume_from)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    model.max_seq_length = saved_max_seq_length
    model.save(str(out_dir))
    steps_resumed = checkpoint_step(Path(resume_from)) if resume_from else 0
    steps_run = trainer.state.global_step - steps_resumed
    pairs = steps_run * settings.batch_size
    stats = {"triples": len(triples["query_id"]), "queries": len(set(triples["query_id"])),
             "examples": len(rows["query_id"]), "list_size": settings.list_size,
             "steps": trainer.state.global_step, "resumed_from_step": steps_resumed,
             "train_loss": float(result.training_loss), "seconds": seconds,
             "pairs_per_second": pairs / max(seconds, 1e-9), "device": str(model.device),
             "precision": "bf16" if args.bf16 else "fp32", "losses": {k: w for k, (_, w) in losses.items()},
             "guide": None if guide is None else "precomputed" if guide_vectors is not None else "in-loss",
             "loss_log": [e for e in trainer.state.log_history if "loss" in e],
             "margins": {"mean": float(np.mean(triples["margin"])), "std": float(np.std(triples["margin"]))}}
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("dense student: %d steps in %.0fs (%.1f triples/s, loss %.4f)", stats["steps"], seconds,
             stats["pairs_per_second"], stats["train_loss"])
    return stats
