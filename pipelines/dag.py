"""Turn a validated run config into the Luigi DAG (its root is the Report task)."""

from __future__ import annotations

import logging
from pathlib import Path

from luigi.task import flatten

from pipelines.config import DenseRetriever, RunConfig, SpladeRetriever
from pipelines.tasks import Report, StageTask
from retrievers.errors import UserError

log = logging.getLogger("stillhouse")


def dataset_params(cfg: RunConfig, name: str, data_dir: Path) -> dict:
    return {"dataset": name, "data_dir": str(data_dir), "split": cfg.data.split,
            "download": cfg.data.download, "drop_unknown_qrels": cfg.data.drop_unknown_qrels}


def retriever_spec(cfg: RunConfig, name: str) -> dict:
    """The retriever's config table as task parameters, with its model role resolved to a source."""
    retriever = cfg.retrievers[name]
    spec = retriever.model_dump()
    if isinstance(retriever, DenseRetriever | SpladeRetriever):
        spec["model"] = cfg.model_source(retriever.model, where=f"retrievers.{name}.model")
    return spec


DENSE_STUDENT = "dense-student"
SPARSE_STUDENT = "sparse-student"
STUDENTS = (DENSE_STUDENT, SPARSE_STUDENT)


def build_report_task(cfg: RunConfig, workdir: Path, data_dir: Path, eval_split: str | None = None) -> Report:
    """Every configured retriever on every data set, and the students on the corpus they were trained for.

    ``eval_split`` evaluates every entry on that split instead of ``[data] split`` and changes nothing else:
    generation and training keep their own splits, so settings are selected on train without retraining."""
    entries = [{"name": name, "dataset": dataset_params(cfg, dataset, data_dir), "retriever": retriever_spec(cfg, name)}
               for dataset in cfg.data.datasets for name in cfg.retrievers]
    if cfg.dense_student is not None:
        settings = training_settings(cfg, data_dir)
        entries.append({"name": DENSE_STUDENT, "dataset": dict(settings["corpus"]),
                        "retriever": dense_student_retriever(cfg, settings)})
    if cfg.sparse_student is not None:
        settings = training_settings(cfg, data_dir)
        entries.append({"name": SPARSE_STUDENT, "dataset": dict(settings["corpus"]),
                        "retriever": sparse_student_retriever(cfg, settings)})
    if eval_split:
        entries = [{**e, "dataset": {**e["dataset"], "split": eval_split}} for e in entries]
    return Report(workdir=str(workdir), entries=entries, metrics=list(cfg.eval.metrics))


def student_training(cfg: RunConfig, settings: dict, keys: tuple[str, ...], section: str) -> dict:
    """The training settings a student's tasks read, with its own ensemble weights: a student with
    ``teacher_weights`` gets its own EnsembleScores and TASTriples; everything before them is shared."""
    return {**{k: settings[k] for k in keys}, "weights": cfg.student_teacher_weights(section)}


def dense_student_retriever(cfg: RunConfig, settings: dict) -> dict:
    """The dense student as a dense retriever spec: its model comes from TrainDense (``trained``)."""
    from pipelines.tasks.students import STUDENT_KEYS

    student = cfg.dense_student
    assert student is not None and cfg.training is not None
    spec = student.model_dump(exclude={"teacher_weights"})  # they reach TrainDense as its training weights
    spec["base_model"] = cfg.model_source(student.base_model, where="dense_student.base_model")
    spec["guide"] = cfg.model_source(student.guide, where="dense_student.guide") if student.guide \
        else settings["guide_teacher"]["model"]
    return {"kind": "dense", "model": DENSE_STUDENT,
            "trained": {"training": student_training(cfg, settings, STUDENT_KEYS, "dense_student"), "student": spec},
            "batch_size": student.encode_batch_size, "shards": student.shards,
            "max_seq_length": 0, "top_k": 100}  # the student's own window (the base model's)


def sparse_student_retriever(cfg: RunConfig, settings: dict) -> dict:
    """The sparse student as an impact-index retriever spec: its model comes from TrainSparse (``trained``)."""
    from pipelines.tasks.sparse import SPARSE_KEYS

    student = cfg.sparse_student
    assert student is not None
    spec = student.model_dump(exclude={"teacher_weights"})  # they reach TrainSparse as its training weights
    spec["base_model"] = cfg.model_source(student.base_model, where="sparse_student.base_model")
    return {"kind": "splade", "model": SPARSE_STUDENT,
            "trained": {"training": student_training(cfg, settings, SPARSE_KEYS, "sparse_student"), "student": spec},
            "batch_size": student.encode_batch_size, "max_seq_length": student.max_seq_length, "top_k": 100}


def generation_entries(cfg: RunConfig, data_dir: Path) -> list[dict]:
    """One ``gen`` dict per (generator, prompt kind) of ``[generation]``."""
    gen_cfg = cfg.generation
    assert gen_cfg is not None
    dataset = gen_cfg.dataset or cfg.data.datasets[0]
    examples_dataset = gen_cfg.examples_dataset or dataset
    base = gen_cfg.model_dump(exclude={"generators", "prompts", "dataset", "examples_dataset", "examples_split"})
    base["examples_dataset"] = {**dataset_params(cfg, examples_dataset, data_dir), "split": gen_cfg.examples_split}
    base["target_dataset"] = (base["examples_dataset"] if gen_cfg.targets == "held-out"
                              else dataset_params(cfg, dataset, data_dir))
    base["dense_model"] = cfg.model_source(gen_cfg.dense_model)
    return [{**base, "generator": cfg.model_source(role), "generator_name": role, "prompt": prompt}
            for role in gen_cfg.generators for prompt in gen_cfg.prompts]


def training_settings(cfg: RunConfig, data_dir: Path) -> dict:
    """``[training]`` resolved for the training-data tasks: model roles to sources, data sets to
    LoadDataset parameters, the generated-query source to its generation entry."""
    t = cfg.training
    assert t is not None
    dataset = cfg.training_dataset()
    teachers = {}
    for name, teacher in t.teachers.items():
        spec = teacher.model_dump()
        spec["model"] = cfg.model_source(teacher.model, where=f"training.teachers.{name}.model") if teacher.model \
            else ""
        teachers[name] = spec
    gen = None
    if t.queries == "generated":
        entries = generation_entries(cfg, data_dir)
        wanted_generator = cfg.model_source(t.generator) if t.generator else entries[0]["generator"]
        wanted_prompt = t.prompt or entries[0]["prompt"]
        gen = next(e for e in entries if e["generator"] == wanted_generator and e["prompt"] == wanted_prompt)
    rerank_splits = [{**dataset_params(cfg, dataset, data_dir), "split": split}
                     for split in judged_splits(data_dir / dataset, t.rerank_splits)]
    return {
        "dataset": {**dataset_params(cfg, dataset, data_dir), "split": t.queries_split},
        "corpus": dataset_params(cfg, dataset, data_dir),
        "queries": t.queries, "gen": gen, "query_filter": t.query_filter, "positives": t.positives,
        "base": {"model": cfg.model_source(t.base_model, where="training.base_model"), "shards": t.base_shards,
                 "batch_size": t.base_batch_size, "max_seq_length": 0},
        "bm25_candidates": t.bm25_candidates, "dense_candidates": t.dense_candidates,
        "guide": t.guide, "guide_teacher": teachers[t.guide], "guide_filter": t.guide_filter,
        "guide_margin": t.guide_margin,
        "guide_margin_strategy": t.guide_margin_strategy,
        "study": [["absolute", m] for m in t.study_margins_absolute]
        + [["relative", m] for m in t.study_margins_relative],
        "teachers": teachers, "weights": t.teacher_weights(), "normalization": t.normalization,
        "clusters": t.clusters, "margin_bins": t.margin_bins, "seed": t.seed,
        "rerank": {"splits": rerank_splits, "depth": t.rerank_depth}, "metrics": list(cfg.eval.metrics),
    }


def judged_splits(folder: Path, wanted: list[str]) -> list[str]:
    """The ``wanted`` splits that ``folder`` has qrels for (all of them while the folder is not there yet).

    The rerank study is a report on whatever is judged: run on a corpus without a train split (Cranfield,
    Vaswani) the same config studies the test split alone instead of failing."""
    qrels = folder / "qrels"
    if not qrels.is_dir():
        return list(wanted)
    present = [split for split in wanted if (qrels / f"{split}.tsv").is_file()]
    for split in wanted:
        if split not in present:
            log.info("rerank study: %s has no %s split; studying %s", folder.name, split, ", ".join(present) or "none")
    return present


def build_roots(cfg: RunConfig, workdir: Path, data_dir: Path, eval_split: str | None = None) -> list[StageTask]:
    """The DAG's roots: the evaluation report, and the generation and training-data reports when configured."""
    from pipelines.tasks.generation import QueryGenReport
    from pipelines.tasks.training_report import REPORT_KEYS, TrainingDataReport

    roots: list[StageTask] = [build_report_task(cfg, workdir, data_dir, eval_split)]
    if cfg.generation is not None:
        roots.append(QueryGenReport(workdir=str(workdir), entries=generation_entries(cfg, data_dir)))
    if cfg.training is not None:
        settings = training_settings(cfg, data_dir)
        roots.append(TrainingDataReport(workdir=str(workdir), training={k: settings[k] for k in REPORT_KEYS}))
    return roots


def walk(root: StageTask) -> list[StageTask]:
    """Every task of the DAG below ``root`` (root included), dependencies first, each once."""
    seen: dict[str, StageTask] = {}

    def visit(task: StageTask) -> None:
        if task.task_id in seen:
            return
        for child in flatten(task.requires()):
            visit(child)
        seen[task.task_id] = task

    visit(root)
    return list(seen.values())


def built_indexes(cfg: RunConfig, report: Report):
    """What ``stillhouse export`` reads from a finished run: the dense student's FAISS index (else the first
    dense retriever's on the students' data set), the sparse student's impact index, and the first judged query
    of that data set (for the example query bodies)."""
    from pipelines.export import BuiltIndexes
    from pipelines.tasks.retrieval import search_task

    by_name = {e["name"]: e for e in report.entries}
    # Only the inference-free student's index is served without a model: a siamese SPLADE's queries need one.
    sparse = by_name.get(SPARSE_STUDENT)
    student = by_name.get(DENSE_STUDENT) or sparse
    dataset_name = (student or report.entries[0])["dataset"]["dataset"]
    dense = by_name.get(DENSE_STUDENT) or next(
        (e for e in report.entries if e["retriever"]["kind"] == "dense" and e["dataset"]["dataset"] == dataset_name),
        None)
    if dense is None and sparse is None:
        raise UserError("export: the config has no dense retriever and no [sparse_student] to export")
    searches = [search_task(report.workdir, dict(e["dataset"]), dict(e["retriever"])) for e in (dense, sparse) if e]
    missing = [t for t in searches if not (t.index_task().complete() and t.fetch_task().complete())]
    if missing:
        raise UserError(f"export: {missing[0].index_task().label()} is not built yet; run "
                        "`stillhouse run` with the same config first")
    dense_task = searches[0] if dense else None
    sparse_task = searches[-1] if sparse else None
    dataset = searches[0].dataset_task()
    built = BuiltIndexes(
        corpus=dataset.out_dir / "corpus.jsonl",
        dense_index=dense_task.index_task().out_dir if dense_task else None,
        dense_model=dense_task.fetch_task().model_dir() if dense_task else None,
        sparse_index=sparse_task.index_task().out_dir if sparse_task else None,
        sparse_model=sparse_task.fetch_task().model_dir() if sparse_task else None,
        idf=sparse_task.fetch_task().out_dir / "idf.json" if sparse_task else None)
    return built, first_query(dataset.out_dir / "queries.jsonl")


def first_query(path: Path) -> str:
    """The first query of a BEIR ``queries.jsonl`` (read alone, not the whole data set)."""
    import json

    with open(path, encoding="utf-8") as handle:
        line = next((line for line in handle if line.strip()), "")
    return json.loads(line)["text"] if line else ""
