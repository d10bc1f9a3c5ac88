"""``stillhouse ablate``: the dense student with one component off at a time.

Each variant is the run config with one change; its DAG shares every task whose inputs did not change
(fingerprints), so a variant reruns only from the stage it touches: a different sampler retrains only the
student, no guide filter reruns the filter and what follows, and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.config import RunConfig
from retrievers.errors import UserError


def _set(cfg: RunConfig, section: str, **changes) -> RunConfig:
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=changes)})


def _no_consistency_filter(cfg: RunConfig) -> RunConfig:
    return _set(cfg, "training", query_filter="none")


def _no_guide(cfg: RunConfig) -> RunConfig:
    # Neither the mining filter nor the guide's in-batch mask: plain in-batch InfoNCE.
    return _set(_set(cfg, "training", guide_filter=False), "dense_student", in_batch_loss="mnrl")


def _random_batches(cfg: RunConfig) -> RunConfig:
    return _set(cfg, "dense_student", sampler="random")


def _single_teacher(cfg: RunConfig) -> RunConfig:
    training = cfg.training
    assert training is not None
    return _set(cfg, "training", weights={name: float(name == training.guide) for name in training.teachers})


def _hard_prompt(cfg: RunConfig) -> RunConfig:
    generation = cfg.generation
    assert generation is not None
    if "promptagator" not in generation.prompts:
        cfg = _set(cfg, "generation", prompts=[*generation.prompts, "promptagator"])
    return _set(cfg, "training", prompt="promptagator")


def _real_queries(cfg: RunConfig) -> RunConfig:
    """The upper bound for the generation stage: the judged train queries instead of generated ones."""
    return _set(cfg, "training", queries="split", queries_split="train", positives="all")


VARIANTS: dict[str, Callable[[RunConfig], RunConfig]] = {
    "full": lambda cfg: cfg,
    "no-consistency-filter": _no_consistency_filter,
    "no-guide-filter": _no_guide,
    "random-batches": _random_batches,
    "single-teacher": _single_teacher,
    "hard-prompt": _hard_prompt,
    "real-queries": _real_queries,
}


def why_not(cfg: RunConfig, variant: str) -> str:
    """Why a variant does not apply to this config ('' when it does)."""
    training = cfg.training
    assert training is not None
    if variant in ("no-consistency-filter", "hard-prompt", "real-queries") and training.queries != "generated":
        return "the config trains on judged queries, not generated ones"
    if variant == "hard-prompt" and training.prompt == "promptagator":
        return "the config already trains on the hard prompt's queries"
    if variant == "single-teacher" and len(training.teachers) == 1:
        return "the config has one teacher"
    return ""


def ablation_rows(cfg: RunConfig, workdir: Path, data_dir: Path,
                  variants: list[str]) -> tuple[list[dict], dict[str, str]]:
    """AblationReport rows (BM25 and the base model first, then one student per variant) and skipped variants."""
    from pipelines.dag import DENSE_STUDENT, build_report_task

    if cfg.dense_student is None or cfg.training is None:
        raise UserError("ablate: the config has no [dense_student] section; the ablation varies the student's "
                        "training (see configs/scifact.toml)")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"ablate --variants: unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    student_dataset = None
    for variant in variants:
        reason = why_not(cfg, variant)
        if reason:
            skipped[variant] = reason
            continue
        entries = build_report_task(VARIANTS[variant](cfg), workdir, data_dir).entries
        student = next(e for e in entries if e["name"] == DENSE_STUDENT)
        student_dataset = student["dataset"]
        rows.append({"name": f"student: {variant}", "dataset": student["dataset"], "retriever": student["retriever"]})
    baselines = [{"name": e["name"], "dataset": e["dataset"], "retriever": e["retriever"]}
                 for e in build_report_task(cfg, workdir, data_dir).entries
                 if e["name"] != DENSE_STUDENT and student_dataset is not None
                 and e["dataset"]["dataset"] == student_dataset["dataset"]]
    return baselines + rows, skipped
