"""``stillhouse ablate``: a student (dense or sparse) with one component off at a time.

Each variant is the run config with one change; its DAG shares every task whose inputs did not change
(fingerprints), so a variant reruns only from the stage it touches: a different sampler retrains only the
student, no guide filter reruns the filter and what follows, and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stillhouse.pipelines.config import STUDENT_SECTIONS, DenseStudentConfig, RunConfig, SparseStudentConfig
from stillhouse.retrievers.errors import UserError

TIED_HEAD_WARMUP_STEPS = 200  # 16 documents a step: about 3,200 documents, most of SciFact once


def _set(cfg: RunConfig, section: str, **changes) -> RunConfig:
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=changes)})


def _each_student(cfg: RunConfig,
                  changes: Callable[[DenseStudentConfig | SparseStudentConfig], dict]) -> RunConfig:
    """The config with ``changes(student)`` applied to each configured student section."""
    for section in STUDENT_SECTIONS:
        student = getattr(cfg, section)
        if student is not None:
            cfg = _set(cfg, section, **changes(student))
    return cfg


def _no_consistency_filter(cfg: RunConfig) -> RunConfig:
    return _set(cfg, "training", query_filter="none")


def _no_guide(cfg: RunConfig) -> RunConfig:
    # Neither the mining filter nor the guide's in-batch mask: plain in-batch InfoNCE.
    return _set(_set(cfg, "training", guide_filter=False), "dense_student", in_batch_loss="mnrl")


def _random_batches(cfg: RunConfig) -> RunConfig:
    return _each_student(cfg, lambda student: {"sampler": "random"})


def _single_teacher(cfg: RunConfig) -> RunConfig:
    """The guide teacher alone, for the shared ensemble and for a student with its own teacher_weights."""
    training = cfg.training
    assert training is not None
    alone = {name: float(name == training.guide) for name in training.teachers}
    for section in STUDENT_SECTIONS:
        student = getattr(cfg, section)
        if student is not None and student.teacher_weights:
            cfg = _set(cfg, section, teacher_weights=alone)
    return _set(cfg, "training", weights=alone)


def _ensemble(cfg: RunConfig) -> RunConfig:
    """The [training] ensemble instead of a student's own teacher_weights."""
    return _each_student(cfg, lambda student: {"teacher_weights": {}})


def _hard_prompt(cfg: RunConfig) -> RunConfig:
    generation = cfg.generation
    assert generation is not None
    if "promptagator" not in generation.prompts:
        cfg = _set(cfg, "generation", prompts=[*generation.prompts, "promptagator"])
    return _set(cfg, "training", prompt="promptagator")


def _plain_flops(cfg: RunConfig) -> RunConfig:
    """The sparse student's FLOPS without IDF awareness: binary query weights in training and search."""
    return _set(cfg, "sparse_student", query_weights="binary")


def _minilm_mlm(cfg: RunConfig) -> RunConfig:
    """The sparse student's document encoder from all-MiniLM-L6-v2 with a new MLM head tied to its word
    embeddings (trained first with masked-LM steps on the corpus: untrained, it predicts nothing), instead of
    SPLADE-tiny."""
    student = cfg.sparse_student
    assert student is not None
    return _set(cfg, "sparse_student", base_model="base", mlm_head="tied",
                mlm_warmup_steps=student.mlm_warmup_steps or TIED_HEAD_WARMUP_STEPS)


LIST_SIZE = 7  # the list-wise variant's negatives per example (fewer when the triples keep fewer per query)


def _list_wise(cfg: RunConfig) -> RunConfig:
    """The students list-wise: a query, its positive and ``LIST_SIZE`` negatives an example, the loss over the
    list, instead of one (query, positive, negative) triple a row."""
    return _each_student(cfg, lambda student: {
        "list_size": min(LIST_SIZE, student.negatives_per_query or LIST_SIZE)})


def _pair_wise(cfg: RunConfig) -> RunConfig:
    """The students pair-wise: one (query, positive, negative) triple a row."""
    return _each_student(cfg, lambda student: {"list_size": 1})


def _real_queries(cfg: RunConfig) -> RunConfig:
    """The upper bound for the generation stage: the judged train queries instead of generated ones."""
    return _set(cfg, "training", queries="split", queries_split="train", positives="all")


VARIANTS: dict[str, Callable[[RunConfig], RunConfig]] = {
    "full": lambda cfg: cfg,
    "no-consistency-filter": _no_consistency_filter,
    "no-guide-filter": _no_guide,
    "random-batches": _random_batches,
    "single-teacher": _single_teacher,
    "ensemble": _ensemble,
    "hard-prompt": _hard_prompt,
    "real-queries": _real_queries,
    "list-wise": _list_wise,
    "pair-wise": _pair_wise,
    "plain-flops": _plain_flops,
    "minilm-mlm": _minilm_mlm,
}
SPARSE_ONLY = ("plain-flops", "minilm-mlm")
# no-guide-filter: its second half (plain InfoNCE instead of GISTEmbed) is the dense loss.
DENSE_ONLY = ("no-guide-filter",)


def why_not(cfg: RunConfig, variant: str, student: str = "dense", data_dir: Path | None = None) -> str:
    """Why a variant does not apply to this config, student and data ('' when it does)."""
    from stillhouse.pipelines.dag import judged_splits

    training = cfg.training
    assert training is not None
    corpus = cfg.training_dataset()
    if variant == "real-queries" and data_dir is not None and \
            not judged_splits(data_dir / corpus, [training.queries_split]):
        return f"{corpus} has no judged {training.queries_split} split to train on"
    if variant in SPARSE_ONLY and student != "sparse":
        return "it changes the sparse student only (--student sparse)"
    if variant in DENSE_ONLY and student != "dense":
        return "it changes the dense student's training only"
    ablated = getattr(cfg, f"{student}_student")
    if variant in ("list-wise", "pair-wise") and ablated is not None and \
            (ablated.list_size > 1) == (variant == "list-wise"):
        return f"the config's {student} student is already {variant}"
    if variant in ("no-consistency-filter", "hard-prompt", "real-queries") and training.queries != "generated":
        return "the config trains on judged queries, not generated ones"
    if variant == "hard-prompt" and training.prompt == "promptagator":
        return "the config already trains on the hard prompt's queries"
    section = f"{student}_student"
    own_weights = getattr(cfg, section) is not None and bool(getattr(cfg, section).teacher_weights)
    distilled = cfg.student_teacher_weights(section) if own_weights else training.teacher_weights()
    if variant == "single-teacher":
        if len(training.teachers) == 1:
            return "the config has one teacher"
        if {name for name, weight in distilled.items() if weight > 0} == {training.guide}:
            return f"the {student} student already distils the guide teacher ({training.guide}) alone"
    if variant == "ensemble":
        if not own_weights:
            return f"the {student} student already distils the [training] ensemble (it has no teacher_weights)"
        if distilled == training.teacher_weights():
            return f"the {student} student's teacher_weights are the [training] ensemble's"
    return ""


def default_variants(cfg: RunConfig) -> list[str]:
    """Every variant, ``ensemble`` only where a student has its own ``teacher_weights`` (else it is ``full``)."""
    own = any(getattr(cfg, section) is not None and getattr(cfg, section).teacher_weights
              for section in STUDENT_SECTIONS)
    return [variant for variant in VARIANTS if variant != "ensemble" or own]


def ablation_rows(cfg: RunConfig, workdir: Path, data_dir: Path, variants: list[str], student: str = "dense",
                  eval_split: str | None = None) -> tuple[list[dict], dict[str, str]]:
    """AblationReport rows (the configured retrievers first, then one student per variant) and skipped
    variants."""
    from stillhouse.pipelines.dag import DENSE_STUDENT, SPARSE_STUDENT, STUDENTS, build_report_task

    section = f"{student}_student"
    if getattr(cfg, section) is None or cfg.training is None:
        raise UserError(f"ablate: the config has no [{section}] section; the ablation varies the student's "
                        "training (see configs/scifact.toml)")
    name = DENSE_STUDENT if student == "dense" else SPARSE_STUDENT
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"ablate --variants: unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    student_dataset = None
    for variant in variants:
        reason = why_not(cfg, variant, student, data_dir)
        if reason:
            skipped[variant] = reason
            continue
        entries = build_report_task(VARIANTS[variant](cfg), workdir, data_dir, eval_split).entries
        for entry in (e for e in entries if e["name"] == name):  # one per seed of the student
            student_dataset = entry["dataset"]
            rows.append({"name": f"{student} student: {variant}", "dataset": entry["dataset"],
                         "retriever": entry["retriever"], "ignore_identical_ids": entry["ignore_identical_ids"],
                         **({"seed": entry["seed"]} if "seed" in entry else {})})
    baselines = [{"name": e["name"], "dataset": e["dataset"], "retriever": e["retriever"],
                  "ignore_identical_ids": e["ignore_identical_ids"]}
                 for e in build_report_task(cfg, workdir, data_dir, eval_split).entries
                 if e["name"] not in STUDENTS and e["retriever"]["kind"] != "hybrid" and student_dataset is not None
                 and e["dataset"]["dataset"] == student_dataset["dataset"]]
    return baselines + rows, skipped
