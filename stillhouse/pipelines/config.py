"""The run config: one TOML file, validated by a strict schema (unknown keys are errors).

Example: ``configs/scifact.toml``. Models are named by role in ``[models]`` with a source string
(see ``stillhouse.retrievers.model_sources``); retrievers refer to a role or give a source directly.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stillhouse.eval.metrics import DEFAULT_METRICS, MEASURE_NAMES
from stillhouse.retrievers.dense import Quantize
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.hybrid import MIN_SELECTION_QUERIES
from stillhouse.retrievers.model_sources import ModelSource
from stillhouse.settings import (
    DecodeSettings,
    DenseStudentSettings,
    SoftPromptSettings,
    SparseStudentSettings,
    from_section,
)

# The library's settings defaults: the sections below take theirs from these (one default per setting).
_decode, _soft = DecodeSettings(), SoftPromptSettings()
_dense, _sparse = DenseStudentSettings(), SparseStudentSettings()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    dir: str | None = None
    datasets: list[str] = Field(min_length=1)
    split: str = "test"
    download: bool = False
    drop_unknown_qrels: bool = False
    ignore_identical_ids: list[str] | None = Field(
        None, description="data sets whose evaluation drops a retrieved document with the query's own id (queries "
                          "are corpus documents); default: BEIR's arguana and quora")


class BM25Retriever(_Strict):
    kind: Literal["bm25"]
    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)
    multifield: bool = True
    top_k: int = Field(100, ge=1)


class DenseRetriever(_Strict):
    kind: Literal["dense"]
    model: str
    batch_size: int = Field(64, ge=1)
    shards: int = Field(4, ge=1)
    max_seq_length: int = Field(0, ge=0, description="0 keeps the model's own limit")
    top_k: int = Field(100, ge=1)
    quantize: Quantize = Field(
        "none", description="int8: corpus and queries encoded on the CPU with int8 linear layers, one scale per "
                            "output channel (retrievers.dense.quantize_int8; MiniLM 1.8x faster, level on SciFact "
                            "train)")


class SpladeRetriever(_Strict):
    """A siamese SPLADE model (queries encoded by the model) through a Lucene impact index."""

    kind: Literal["splade"]
    model: str
    batch_size: int = Field(32, ge=1)
    max_seq_length: int = Field(256, ge=0, description="0 keeps the model's own limit")
    top_k: int = Field(100, ge=1)


Retriever = Annotated[BM25Retriever | DenseRetriever | SpladeRetriever, Field(discriminator="kind")]


class EvalConfig(_Strict):
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in MEASURE_NAMES]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(MEASURE_NAMES)}")
        return value


class GenerationConfig(_Strict):
    """Query generation (Promptagator hard prompts, SPTAR soft prompts) and round-trip filtering."""

    generators: list[str] = Field(min_length=1, description="model roles or sources of causal LMs")
    prompts: list[Literal["zero-shot", "promptagator", "sptar"]] = Field(default_factory=lambda: ["sptar"])
    dataset: str | None = Field(None, description="data set to generate for (default: the first in [data])")
    examples_dataset: str | None = Field(
        None, description="data set whose examples_split gives the labeled examples and SPTAR's tuning set (default: "
                          "the target data set); another data set's examples adapt a corpus with no labels at all")
    examples_split: str = "train"
    examples: str | None = Field(
        None, description="a JSONL file of your own labeled pairs instead of a judged split: each line a query and "
                          "a doc_id of the target corpus, or the document's text (title optional); in file order "
                          "the first prompt_examples are the prompt examples, the next tune_pairs and "
                          "filter_eval_pairs SPTAR's tuning and filter sets, the rest held out. A relative path is "
                          "read from the config file's folder")
    prompt_examples: int = Field(8, ge=1, le=8, description="Promptagator examples (at most 8)")
    sptar_examples: int = Field(_soft.examples_per_prompt, ge=0, le=8, description="example pairs in SPTAR prompts")
    tune_pairs: int = Field(50, ge=1)
    filter_eval_pairs: int = Field(16, ge=1)
    filter_groups: int = Field(8, ge=1)
    virtual_tokens: int = Field(_soft.virtual_tokens, ge=1)
    tune_epochs: int = Field(_soft.epochs, ge=1)
    learning_rate: float = Field(_soft.learning_rate, gt=0)
    tune_batch_size: int = Field(_soft.batch_size, ge=1)
    instruction: str = "Write a search query that the document answers."
    instructions: dict[str, str] = Field(
        default_factory=dict, description="data set -> its task description for the Promptagator prompt (default: "
                                          "instruction), e.g. { cranfield = \"Write the question an aerodynamics "
                                          "engineer would ask that this report answers.\" }")
    max_doc_tokens: int = Field(256, ge=16)
    max_example_doc_tokens: int = Field(96, ge=16)
    targets: Literal["corpus", "held-out"] = "corpus"
    max_target_docs: int = Field(0, ge=0, description="0 = every target document")
    queries_per_doc: int = Field(_decode.num_queries, ge=1)
    max_new_tokens: int = Field(_decode.max_new_tokens, ge=4)
    do_sample: bool = _decode.do_sample
    temperature: float = Field(_decode.temperature, gt=0)
    top_p: float = Field(_decode.top_p, gt=0, le=1)
    repetition_penalty: float = Field(_decode.repetition_penalty, gt=0)
    no_repeat_ngram_size: int = Field(
        _decode.no_repeat_ngram_size, ge=0, description="block repeated n-grams within the generated query only "
                                                        "(0 = off)")
    max_copy_tokens: int = Field(
        _decode.max_copy_tokens, ge=0, description="forbid copying more than this many consecutive tokens of the "
                                                   "target document while decoding (0 = off)")
    batch_size: int = Field(_decode.batch_size, ge=1)
    shards: int = Field(4, ge=1)
    roundtrip: Literal["bm25", "dense", "trained"] = Field(
        "bm25", description="round-trip retriever: BM25, the base dense model, or the base dense model fine-tuned "
                            "on the unfiltered generated queries (Promptagator's choice)")
    roundtrip_epochs: int = Field(1, ge=1, description="roundtrip = \"trained\": fine-tuning epochs")
    roundtrip_batch_size: int = Field(32, ge=2, description="roundtrip = \"trained\": in-batch negatives + 1")
    roundtrip_k: int = Field(1, ge=1, le=10)
    dense_model: str = Field("base", description="base dense model (round trip and report)")
    nll_pairs: int = Field(100, ge=1, description="held-out real pairs scored for the NLL comparison")
    seed: int = 13

    @model_validator(mode="after")
    def _consistent(self) -> GenerationConfig:
        if self.examples and self.examples_dataset:
            raise ValueError("give examples (your own pairs) or examples_dataset (a judged split), not both")
        if self.queries_per_doc > 1 and not self.do_sample:
            raise ValueError("queries_per_doc > 1 needs do_sample = true (greedy decoding gives one query)")
        if "sptar" in self.prompts and self.sptar_examples < 1:
            raise ValueError("sptar_examples must be at least 1 when prompts include \"sptar\"")
        return self


class TeacherConfig(_Strict):
    """One teacher of the ensemble (Geng et al., 2024): dense / sparse siamese, BM25, or a cross-encoder."""

    kind: Literal["dense", "sparse", "bm25", "cross"]
    model: str | None = Field(None, description="model role or source (every kind but bm25)")
    batch_size: int = Field(32, ge=1)
    shards: int = Field(4, ge=1, description="dense: shards of its corpus index (shared with a dense retriever "
                                             "of the same settings)")
    max_seq_length: int = Field(0, ge=0)
    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)

    @model_validator(mode="after")
    def _model_needed(self) -> TeacherConfig:
        if self.kind == "bm25" and self.model:
            raise ValueError("a bm25 teacher takes no model")
        if self.kind != "bm25" and not self.model:
            raise ValueError(f"a {self.kind} teacher needs a model (a role in [models] or a source)")
        return self


STUDENT_SECTIONS = ("dense_student", "sparse_student")


def _check_seeds(student: BaseModel) -> None:
    seeds = student.seeds  # type: ignore[attr-defined]
    if seeds and "seed" in student.model_fields_set:
        raise ValueError("give seed or seeds, not both")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds: a seed is listed twice")


def _check_list_size(student: BaseModel) -> None:
    negatives, size = student.negatives_per_query, student.list_size  # type: ignore[attr-defined]
    if negatives and size > negatives:
        raise ValueError(f"list_size {size} is more than negatives_per_query {negatives}: a list holds negatives "
                         "the triples keep")


WEIGHTS_RULE = "weights must be finite, non-negative and not all zero"


def usable_weights(weights: dict[str, float]) -> bool:
    """Teacher weights an ensemble can be averaged with: finite, non-negative, summing above zero."""
    return all(math.isfinite(w) and w >= 0 for w in weights.values()) and sum(weights.values()) > 0


class TrainingConfig(_Strict):
    """Training data: candidate mining, GISTEmbed guide filter, teacher ensemble, TAS-Balanced sampling."""

    dataset: str | None = Field(None, description="corpus to mine (default: the first in [data])")
    queries: Literal["split", "generated"] = "generated"
    queries_split: str = Field("train", description="queries = \"split\": the judged split used as queries")
    generator: str | None = Field(None, description="queries = \"generated\": generator role (default: first)")
    prompt: Literal["zero-shot", "promptagator", "sptar"] | None = None
    query_filter: Literal["roundtrip", "none"] = Field(
        "roundtrip", description="queries = \"generated\": keep what passed the round-trip consistency filter, or "
                                 "every generated query (the ablation)")
    positives: Literal["all", "first"] = Field(
        "all", description="first: only each query's first judged document is its positive; the others stay "
                           "candidates (how the guide filter is measured against labels it was not told)")
    base_model: str = Field("base", description="dense miner and query clustering model")
    base_shards: int = Field(4, ge=1)
    base_batch_size: int = Field(64, ge=1)
    bm25_candidates: int = Field(30, ge=0)
    dense_candidates: int = Field(30, ge=0)
    guide: str = Field(description="name of a dense teacher in [training.teachers] that guides the filter")
    guide_filter: bool = Field(True, description="false: keep every mined candidate (the ablation)")
    guide_margin: float = Field(_dense.guide_margin, ge=0)
    guide_margin_strategy: Literal["absolute", "relative"] = _dense.guide_margin_strategy
    study_margins_absolute: list[float] = Field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.2])
    study_margins_relative: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2])
    teachers: dict[str, TeacherConfig] = Field(min_length=1)
    weights: dict[str, float] = Field(default_factory=dict, description="teacher name -> weight (default 1 each)")
    normalization: Literal["minmax", "zscore"] = "minmax"
    clusters: int = Field(32, ge=1)
    margin_bins: int = Field(_dense.margin_bins, ge=2)
    rerank_splits: list[str] = Field(default_factory=lambda: ["train", "test"],
                                     description="splits whose BM25 top-k each teacher and the ensemble rerank")
    rerank_depth: int = Field(100, ge=1)
    seed: int = 13

    @field_validator("weights")
    @classmethod
    def _known_teachers(cls, weights: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        teachers = info.data.get("teachers", {})
        for name in weights:
            if name not in teachers:
                raise ValueError(f"{name!r} is not a teacher in [training.teachers] ({', '.join(teachers)})")
        if weights and not usable_weights(weights):
            raise ValueError(WEIGHTS_RULE)
        return weights

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.bm25_candidates + self.dense_candidates == 0:
            raise ValueError("bm25_candidates and dense_candidates are both 0: no candidates to mine")
        guide = self.teachers.get(self.guide)
        if guide is None or guide.kind != "dense":
            raise ValueError(f"guide: {self.guide!r} must name a dense teacher in [training.teachers]")
        return self

    def teacher_weights(self) -> dict[str, float]:
        """Every teacher's ensemble weight (1.0 where ``weights`` does not name it)."""
        return {name: self.weights.get(name, 1.0) for name in self.teachers}


# Keys renamed on 2026-11-30 because their old names said something else; an old config gets one line saying so.
RENAMED_KEYS = {
    "dense_student": {"guide": "guide_model (a model, unlike [training] guide, which names a teacher)",
                      "max_seq_length": "train_max_seq_length (training truncation; the index keeps the model's "
                                        "window)"},
    "sparse_student": {"regularizer": "query_weights (\"idf-aware\" is \"idf\", \"plain\" is \"binary\")"},
}


def _reject_renamed(section: str, data: object) -> object:
    if isinstance(data, dict):
        for old, new in RENAMED_KEYS[section].items():
            if old in data:
                raise ValueError(f"{old} is now called {new}; rename the key")
    return data


class DenseStudentConfig(_Strict):
    """The dense student distilled from the ensemble (TAS-Balanced batches, margin-MSE + GISTEmbed)."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: object) -> object:
        return _reject_renamed("dense_student", data)

    base_model: str = Field("base", description="model role or source the student starts from")
    guide_model: str | None = Field(None, description="model role or source of the GISTEmbed in-batch guide "
                                                      "(default: the model of [training]'s guide teacher)")
    epochs: int = Field(_dense.epochs, ge=1)
    batch_size: int = Field(_dense.batch_size, ge=2)
    learning_rate: float = Field(_dense.learning_rate, gt=0)
    warmup_ratio: float = Field(_dense.warmup_ratio, ge=0, lt=1)
    train_max_seq_length: int = Field(
        _dense.train_max_seq_length, ge=16, description="training truncation (student and guide); the saved student "
                                                  "keeps the base model's window")
    sampler: Literal["tas-balanced", "random"] = _dense.sampler
    negatives_per_query: int = Field(16, ge=0, description="triples kept per query, spread over its margins "
                                                           "(0 = all)")
    margin_scale: float = Field(1.0, gt=0, description="teacher margins are the ensemble's weighted mean "
                                                       "(in [-1, 1]) times this")
    teacher_weights: dict[str, float] = Field(
        default_factory=dict, description="this student's ensemble: a weight for every teacher of "
                                          "[training.teachers] (default: [training] weights)")
    margin_mse_weight: float = Field(_dense.margin_mse_weight, ge=0)
    in_batch_loss: Literal["gist", "mnrl"] = Field(
        _dense.in_batch_loss, description="gist: GISTEmbed (guide-masked in-batch negatives); mnrl: plain "
                                          "in-batch InfoNCE")
    in_batch_weight: float = Field(_dense.in_batch_weight, ge=0)
    temperature: float = Field(_dense.temperature, gt=0, description="in-batch loss temperature (GISTEmbed's default)")
    list_size: int = Field(
        _dense.list_size, ge=1, description="1: pair-wise triples; n > 1: list-wise examples, a query with its "
                                           "positive and n scored negatives, margin-MSE over the whole list")
    guide_vectors: Literal["in-loss", "index"] = Field(
        _dense.guide_vectors, description="GISTEmbed's frozen guide: in-loss runs the guide model on every batch; "
                                          "index reads documents' vectors from the guide teacher's corpus index "
                                          "and encodes each query once")
    checkpoint_steps: int = Field(_dense.checkpoint_steps, ge=1)
    encode_batch_size: int = Field(64, ge=1)
    shards: int = Field(4, ge=1, description="shards of the student's corpus index")
    seed: int = _dense.seed
    seeds: list[int] = Field(default_factory=list, description="one student per seed, each its own cached training "
                                                               "task; reports show mean +- sd (default: [seed])")

    def training_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    @model_validator(mode="after")
    def _some_loss(self) -> DenseStudentConfig:
        _check_seeds(self)
        if self.margin_mse_weight == 0 and self.in_batch_weight == 0:
            raise ValueError("margin_mse_weight and in_batch_weight are both 0: give one a positive weight")
        _check_list_size(self)
        return self


class SparseStudentConfig(_Strict):
    """The inference-free sparse student (Geng et al., 2024): an MLM document encoder, IDF-weighted queries."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: object) -> object:
        return _reject_renamed("sparse_student", data)

    base_model: str = Field("splade", description="model role or source of the document encoder")
    mlm_head: Literal["model", "tied"] = Field(
        "model", description="model: the base has its MLM head (SPLADE, BERT-MLM); tied: add one tied to the "
                             "word embeddings (e.g. all-MiniLM-L6-v2)")
    mlm_warmup_steps: int = Field(
        0, ge=0, description="masked-LM steps on the target corpus before distillation (BERT's objective, no "
                             "labels); a new \"tied\" head needs them: untrained, it predicts nothing")
    mlm_warmup_learning_rate: float = Field(1e-4, gt=0)
    idf: str = Field("corpus", description="query weights: \"corpus\" (IDF of the target corpus) or the path of "
                                            "an idf.json made for the document encoder's vocabulary")
    query_weights: Literal["idf", "binary"] = Field(
        _sparse.query_weights, description="the query route's table: \"idf\" (IDF-aware FLOPS) or \"binary\" "
                                           "(plain FLOPS, the ablation)")
    flops_weight: float = Field(_sparse.flops_weight, ge=0, description="FLOPS weight on the documents (lambda_d)")
    regularizer_warmup_ratio: float = Field(
        _sparse.regularizer_warmup_ratio, ge=0, le=1,
        description="share of the training steps over which the FLOPS weight ramps up quadratically from 0 "
                    "(sentence-transformers' default, 1/3); 0: no warm-up")
    loss: Literal["margin-mse", "kl"] = _sparse.loss
    temperature: float = Field(_sparse.temperature, gt=0, description="KL temperature (loss = \"kl\")")
    margin_scale: float = Field(_sparse.margin_scale, ge=0,
                                description="teacher margins are the ensemble's weighted mean "
                                            "(in [-1, 1]) times this; 0: fitted to the untrained "
                                            "student's margins (their spread)")
    teacher_weights: dict[str, float] = Field(
        default_factory=dict, description="this student's ensemble: a weight for every teacher of "
                                          "[training.teachers] (default: [training] weights)")
    epochs: int = Field(_sparse.epochs, ge=1)
    batch_size: int = Field(_sparse.batch_size, ge=2)
    learning_rate: float = Field(_sparse.learning_rate, gt=0)
    warmup_ratio: float = Field(_sparse.warmup_ratio, ge=0, lt=1)
    max_seq_length: int = Field(_sparse.max_seq_length, ge=16, description="document window of the index")
    train_max_seq_length: int = Field(_sparse.train_max_seq_length, ge=0,
                                      description="training truncation (0: max_seq_length)")

    @model_validator(mode="after")
    def _lengths_and_idf(self) -> SparseStudentConfig:
        _check_seeds(self)
        if 0 < self.train_max_seq_length < 16:
            raise ValueError("train_max_seq_length: 0 (= max_seq_length) or at least 16")
        if self.mlm_head == "tied" and self.mlm_warmup_steps == 0:
            raise ValueError("mlm_head = \"tied\" adds an untrained MLM head, which predicts nothing: set "
                             "mlm_warmup_steps (e.g. 200) to train it on the corpus first")
        if self.idf != "corpus" and not Path(self.idf).expanduser().is_file():
            raise ValueError(f"idf: {self.idf} is not a file; give the path of an idf.json or \"corpus\"")
        _check_list_size(self)
        return self
    sampler: Literal["tas-balanced", "random"] = _sparse.sampler
    negatives_per_query: int = Field(16, ge=0)
    list_size: int = Field(
        _sparse.list_size, ge=1, description="1: pair-wise triples; n > 1: list-wise examples, a query with its "
                                             "positive and n scored negatives, the loss over the whole list")
    checkpoint_steps: int = Field(_sparse.checkpoint_steps, ge=1)
    encode_batch_size: int = Field(32, ge=1)
    seed: int = _sparse.seed
    seeds: list[int] = Field(default_factory=list, description="one student per seed, each its own cached training "
                                                               "task; reports show mean +- sd (default: [seed])")

    def training_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]


STUDENT_RETRIEVERS = {"dense-student": "dense_student", "sparse-student": "sparse_student"}


# Settings that do not change what the task reading their section writes. This is the one place that marks them:
# they reach the task, but stay out of its fingerprint, so two configs that differ only here share their cached
# artifacts (``fingerprinted``). Index layout (a student's ``shards``, ``encode_batch_size``) is fingerprinted by
# the index tasks that read it, not by the training task.
ALWAYS_INERT: dict[str, frozenset[str]] = {
    "dense_student": frozenset({"checkpoint_steps", "encode_batch_size", "shards"}),  # resumption cadence, indexing
    "sparse_student": frozenset({"checkpoint_steps", "encode_batch_size"}),
    "generation": frozenset(),
}


def inert_settings(section: str, values: Mapping[str, object]) -> set[str]:
    """The keys of a ``section`` (a config table as a dict) that do not change its task's output, ``values``
    deciding the conditional ones (a KL temperature under margin-MSE, sampling settings under greedy decoding)."""
    inert = set(ALWAYS_INERT.get(section, frozenset()))
    if section == "generation" and not values.get("do_sample"):
        inert |= {"temperature", "top_p"}  # greedy decoding reads neither
    if section == "sparse_student":
        if values.get("loss") != "kl":
            inert.add("temperature")  # the KL temperature
        if not values.get("mlm_warmup_steps"):
            inert.add("mlm_warmup_learning_rate")
    if section == "dense_student":
        if not values.get("in_batch_weight"):
            inert |= {"in_batch_loss", "temperature", "guide_model", "guide_vectors"}  # no in-batch loss at all
        elif values.get("in_batch_loss") != "gist":
            inert |= {"guide_model", "guide_vectors"}  # only GISTEmbed runs the guide
    return inert


def fingerprinted(section: str, values: Mapping[str, object]) -> dict[str, object]:
    """``values`` without the settings that do not change the output (``inert_settings``): what a task's
    fingerprint holds of its section."""
    inert = inert_settings(section, values)
    return {key: value for key, value in values.items() if key not in inert}


# The library settings a [generation] table fills, under the config's names where they differ.
DECODE_NAMES = {"num_queries": "queries_per_doc"}
SOFT_PROMPT_NAMES = {"epochs": "tune_epochs", "batch_size": "tune_batch_size", "examples_per_prompt": "sptar_examples"}


def decode_settings(gen: Mapping) -> DecodeSettings:
    """How ``GenerateShard`` decodes, from a ``[generation]`` table."""
    return from_section(DecodeSettings, dict(gen), DECODE_NAMES)


def soft_prompt_settings(gen: Mapping) -> SoftPromptSettings:
    """How ``TrainSoftPrompt`` tunes SPTAR's soft prompt, from a ``[generation]`` table."""
    return from_section(SoftPromptSettings, dict(gen), SOFT_PROMPT_NAMES)

class HybridConfig(_Strict):
    """A fused retriever (``stillhouse.retrievers.hybrid``): its members' top-k, min-max normalized per query,
    weighted mean."""

    members: list[str] = Field(min_length=2, description="retrievers of [retrievers], or dense-student / "
                                                         "sparse-student")
    weights: str | dict[str, float] = Field(
        "equal", description="\"equal\", {member = weight, ...}, \"examples\" (chosen on the labeled pairs "
                             "[generation] already spends) or \"split:<name>\" (chosen on a judged split that is not "
                             "the evaluation split)")
    top_k: int = Field(100, ge=1, description="each member's depth, and the fused list's")
    grid_step: float = Field(0.1, gt=0, le=0.5, description="simplex grid of the weight selection")

    @field_validator("members")
    @classmethod
    def _distinct(cls, members: list[str]) -> list[str]:
        if len(set(members)) != len(members):
            raise ValueError("a retriever is named twice")
        return members

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: str | dict[str, float], info: ValidationInfo) -> str | dict[str, float]:
        members = info.data.get("members", [])
        if isinstance(weights, dict):
            odd = [m for m in weights if m not in members] or [m for m in members if m not in weights]
            if odd:
                raise ValueError(f"give a number for each member, and only for members ({odd[0]!r})")
            if not usable_weights(weights):
                raise ValueError(WEIGHTS_RULE)
        elif weights not in ("equal", "examples") and not (weights.startswith("split:") and weights[6:]):
            raise ValueError(f"{weights!r}; use \"equal\", \"examples\", \"split:<name>\" or a table of numbers")
        return weights

    @field_validator("grid_step")
    @classmethod
    def _divides_one(cls, step: float) -> float:
        from stillhouse.retrievers.hybrid import check_grid_step

        check_grid_step(step)
        return step


class RunConfig(_Strict):
    name: str = "stillhouse"
    workdir: str = "work"
    models: dict[str, str] = Field(default_factory=dict)
    data: DataConfig
    retrievers: dict[str, Retriever] = Field(min_length=1)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    generation: GenerationConfig | None = None
    training: TrainingConfig | None = None
    dense_student: DenseStudentConfig | None = None
    sparse_student: SparseStudentConfig | None = None
    hybrid: dict[str, HybridConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _models_resolve(self) -> RunConfig:
        for role, source in self.models.items():
            try:
                ModelSource.parse(source)
            except UserError as exc:
                raise ValueError(f"[models] {role}: {exc}") from None
        for name, retriever in self.retrievers.items():
            if isinstance(retriever, DenseRetriever | SpladeRetriever):
                self.model_source(retriever.model, where=f"retrievers.{name}.model")
        if self.generation is not None:
            for role in self.generation.generators:
                self.model_source(role, where="generation.generators")
            self.model_source(self.generation.dense_model, where="generation.dense_model")
            if self.generation.dataset and self.generation.dataset not in self.data.datasets:
                raise ValueError(f"generation.dataset: {self.generation.dataset!r} is not in [data] datasets")
        if self.training is not None:
            self._check_training(self.training)
        if self.dense_student is not None:
            if self.training is None:
                raise ValueError("dense_student needs a [training] section (its triples and teachers)")
            self.model_source(self.dense_student.base_model, where="dense_student.base_model")
            if self.dense_student.guide_model:
                self.model_source(self.dense_student.guide_model, where="dense_student.guide_model")
            self._check_guide_vectors(self.dense_student, self.training)
        if self.sparse_student is not None:
            if self.training is None:
                raise ValueError("sparse_student needs a [training] section (its triples and teachers)")
            self.model_source(self.sparse_student.base_model, where="sparse_student.base_model")
        for section in STUDENT_SECTIONS:
            if getattr(self, section) is not None:
                self.student_teacher_weights(section)
        self._check_hybrids()
        return self

    def _check_hybrids(self) -> None:
        for name, hybrid in self.hybrid.items():
            if name in self.retrievers or name in STUDENT_RETRIEVERS:
                raise ValueError(f"hybrid.{name}: the name is taken by a retriever; choose another")
            for member in hybrid.members:
                section = STUDENT_RETRIEVERS.get(member)
                if section is not None and getattr(self, section) is None:
                    raise ValueError(f"hybrid.{name}.members: {member!r} needs a [{section}] section")
                if section is None and member not in self.retrievers:
                    known = [*self.retrievers, *(m for m, s in STUDENT_RETRIEVERS.items() if getattr(self, s))]
                    raise ValueError(f"hybrid.{name}.members: {member!r} is not a retriever of this config "
                                     f"({', '.join(known)})")
            if hybrid.weights == "examples" and self.generation is None:
                raise ValueError(f"hybrid.{name}.weights: \"examples\" needs a [generation] section (its labeled "
                                 "examples); give \"equal\", numbers or \"split:<name>\"")
            if hybrid.weights == "examples" and self.spent_example_pairs() < MIN_SELECTION_QUERIES:
                raise ValueError(f"hybrid.{name}.weights: \"examples\" would choose on {self.spent_example_pairs()} "
                                 f"labeled pairs ({' + '.join(self.spent_example_roles())}), fewer than "
                                 f"{MIN_SELECTION_QUERIES}; raise them in [generation] or give numbers")
            seeded = [len(getattr(self, STUDENT_RETRIEVERS[m]).training_seeds()) for m in hybrid.members
                      if m in STUDENT_RETRIEVERS]
            if len({n for n in seeded if n > 1}) > 1:
                raise ValueError(f"hybrid.{name}.members: students with different numbers of seeds; give both "
                                 "students the same seeds (replica i fuses each student's i-th seed)")
            if hybrid.weights == f"split:{self.data.split}":
                raise ValueError(f"hybrid.{name}.weights: {hybrid.weights!r} is the evaluation split; weights are "
                                 "never chosen on it (use a train split or \"examples\")")

    def _check_guide_vectors(self, student: DenseStudentConfig, training: TrainingConfig) -> None:
        """``guide_vectors = "index"`` reads the guide teacher's corpus index: the in-batch guide must be its model."""
        if student.guide_vectors != "index" or student.in_batch_loss != "gist" or not student.in_batch_weight:
            return
        teacher = training.teachers[training.guide]  # a dense teacher (_check_training)
        if student.guide_model and self.model_source(student.guide_model, where="dense_student.guide_model") != \
                self.model_source(teacher.model or "", where=f"training.teachers.{training.guide}.model"):
            raise ValueError("dense_student.guide_vectors = \"index\" takes the guide teacher's vectors, but "
                             "dense_student.guide_model names another model: drop guide_model or use \"in-loss\"")

    def _check_training(self, training: TrainingConfig) -> None:
        self.model_source(training.base_model, where="training.base_model")
        for name, teacher in training.teachers.items():
            if teacher.model:
                self.model_source(teacher.model, where=f"training.teachers.{name}.model")
        if training.dataset and training.dataset not in self.data.datasets:
            raise ValueError(f"training.dataset: {training.dataset!r} is not in [data] datasets")
        if training.queries == "generated":
            if self.generation is None:
                raise ValueError("training.queries = \"generated\" needs a [generation] section")
            if training.generator and training.generator not in self.generation.generators:
                raise ValueError(f"training.generator: {training.generator!r} is not in generation.generators")
            if training.prompt and training.prompt not in self.generation.prompts:
                raise ValueError(f"training.prompt: {training.prompt!r} is not in generation.prompts")
            examples = self.generation.examples_dataset or self.generation.dataset or self.data.datasets[0]
            corpus = self.training_dataset()
            if self.generation.targets == "held-out" and examples != corpus:
                raise ValueError(f"generation.targets = \"held-out\" generates for {examples}'s documents, but the "
                                 f"students train on {corpus}'s corpus: use targets = \"corpus\"")

    def spent_example_roles(self) -> list[str]:
        """The roles of ``SelectExamples`` whose labeled pairs generation uses: the prompt examples, and SPTAR's
        tuning and filter pairs when a soft prompt is trained."""
        assert self.generation is not None
        sptar = "sptar" in self.generation.prompts
        return ["prompt", *(["tune", "filter_eval"] if sptar else [])]

    def spent_example_pairs(self) -> int:
        """How many labeled pairs those roles hold, as configured."""
        assert self.generation is not None
        sizes = {"prompt": self.generation.prompt_examples, "tune": self.generation.tune_pairs,
                 "filter_eval": self.generation.filter_eval_pairs}
        return sum(sizes[role] for role in self.spent_example_roles())

    def student_teacher_weights(self, section: str) -> dict[str, float]:
        """The ensemble a student distils: its own ``teacher_weights`` (every teacher named: a student may
        drop one at 0), else ``[training]`` weights. Raises ValueError naming the key when they do not fit."""
        student, training = getattr(self, section), self.training
        assert student is not None and training is not None
        if not student.teacher_weights:
            return training.teacher_weights()
        unknown = [name for name in student.teacher_weights if name not in training.teachers]
        missing = [name for name in training.teachers if name not in student.teacher_weights]
        if unknown or missing:
            odd = unknown or missing
            verb = "is not a teacher in [training.teachers]" if unknown else "has no weight"
            raise ValueError(f"{section}.teacher_weights: {odd[0]!r} {verb}; give a weight for each of "
                             f"{', '.join(training.teachers)}")
        if not usable_weights(student.teacher_weights):
            raise ValueError(f"{section}.teacher_weights: {WEIGHTS_RULE}")
        return {name: float(student.teacher_weights[name]) for name in training.teachers}

    def training_dataset(self) -> str:
        """The corpus the students train on: ``training.dataset``, else the generated queries' data set, else the
        first of ``[data] datasets``."""
        training, generation = self.training, self.generation
        generated = training is not None and training.queries == "generated" and generation is not None
        return (training.dataset if training else None) or (generation.dataset if generated else None) \
            or self.data.datasets[0]

    def model_source(self, role_or_source: str, where: str = "model") -> str:
        """A role from ``[models]``, or a source string given inline."""
        if role_or_source in self.models:
            return self.models[role_or_source]
        if ":" not in role_or_source:
            raise ValueError(f"{where}: {role_or_source!r} is neither a role in [models] "
                             f"({', '.join(self.models) or 'none defined'}) nor a model source")
        try:
            ModelSource.parse(role_or_source)
        except UserError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return role_or_source


def _user_path(loc: tuple, raw: dict) -> list[str]:
    """The error location as the user wrote it: pydantic inserts a tagged union's tag (``kind``)."""
    parts = [str(p) for p in loc]
    if len(parts) >= 3 and parts[0] == "retrievers":
        kind = raw.get("retrievers", {}).get(parts[1], {})
        if isinstance(kind, dict) and parts[2] == kind.get("kind"):
            del parts[2]
    return parts


def load_config(path: Path, datasets: list[str] | None = None) -> RunConfig:
    """Parse and validate a run config; every problem is one UserError line naming the file.

    ``datasets`` (``--datasets``) keeps a subset of ``[data] datasets``, validated as if the file said so: the
    students are trained for the first of them unless ``generation.dataset`` / ``training.dataset`` name one."""
    if not path.is_file():
        raise UserError(f"{path}: no such config file; see configs/ for examples")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    if datasets is not None:
        listed = raw.get("data", {}).get("datasets", []) if isinstance(raw.get("data"), dict) else []
        if not datasets:
            raise UserError("--datasets: give at least one data set name")
        unknown = [d for d in datasets if d not in listed]
        if unknown:
            raise UserError(f"--datasets: {unknown[0]!r} is not in {path} [data] datasets")
        raw["data"]["datasets"] = list(datasets)
    generation = raw.get("generation")
    if isinstance(generation, dict) and isinstance(generation.get("examples"), str):
        examples = (path.parent / Path(generation["examples"]).expanduser()).resolve()
        if not examples.is_file():
            raise UserError(f"{path}: generation.examples: {examples} is not a file; give a JSONL file of your "
                            "labeled pairs (a path relative to the config's folder, or absolute)")
        generation["examples"] = str(examples)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(_user_path(first["loc"], raw))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against configs/scifact.toml"
        elif first["type"] == "missing":
            message = "required key is missing"
        raise UserError(f"{path}: {where or 'config'}: {message}") from None
    gen = cfg.generation
    if gen is not None and gen.examples:
        lines = sum(1 for line in Path(gen.examples).read_text(encoding="utf-8").splitlines() if line.strip())
        needed = gen.prompt_examples + gen.tune_pairs + gen.filter_eval_pairs
        if lines < needed:
            raise UserError(f"{gen.examples}: {lines} examples, but [generation] of {path} needs {needed} "
                            f"({gen.prompt_examples} prompt, {gen.tune_pairs} tuning, {gen.filter_eval_pairs} "
                            "filter); add examples or lower prompt_examples, tune_pairs or filter_eval_pairs")
    return cfg
