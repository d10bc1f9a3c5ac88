"""Turn a validated run config into the Luigi DAG (its root is the Report task)."""

from __future__ import annotations

import logging
from pathlib import Path

from luigi.task import flatten

from stillhouse.pipelines.config import STUDENT_RETRIEVERS, DenseRetriever, RunConfig, SpladeRetriever
from stillhouse.pipelines.tasks import Report, StageTask
from stillhouse.retrievers.errors import UserError

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


DENSE_STUDENT, SPARSE_STUDENT = STUDENT_RETRIEVERS  # the report names of the students (config.STUDENT_RETRIEVERS)
STUDENTS = (DENSE_STUDENT, SPARSE_STUDENT)


def build_report_task(cfg: RunConfig, workdir: Path, data_dir: Path, eval_split: str | None = None) -> Report:
    """Every configured retriever on every data set, and the students on the corpus they were trained for.

    ``eval_split`` evaluates every entry on that split instead of ``[data] split`` and changes nothing else:
    generation and training keep their own splits, so settings are selected on train without retraining."""
    entries = [{"name": name, "dataset": dataset_params(cfg, dataset, data_dir), "retriever": retriever_spec(cfg, name)}
               for dataset in cfg.data.datasets for name in cfg.retrievers]
    # One entry per seed of a student (``seeds``): each its own training task; the report shows mean +- sd.
    if cfg.dense_student is not None:
        settings = training_settings(cfg, data_dir)
        entries += [{"name": DENSE_STUDENT, "dataset": dict(settings["corpus"]), "seed": seed,
                     "retriever": dense_student_retriever(cfg, settings, seed)}
                    for seed in cfg.dense_student.training_seeds()]
    if cfg.sparse_student is not None:
        settings = training_settings(cfg, data_dir)
        entries += [{"name": SPARSE_STUDENT, "dataset": dict(settings["corpus"]), "seed": seed,
                     "retriever": sparse_student_retriever(cfg, settings, seed)}
                    for seed in cfg.sparse_student.training_seeds()]
    if eval_split:
        entries = [{**e, "dataset": {**e["dataset"], "split": eval_split}} for e in entries]
    entries += hybrid_entries(cfg, data_dir, entries)
    from stillhouse.eval.metrics import ignores_identical_ids

    entries = [{**e, "ignore_identical_ids": ignores_identical_ids(e["dataset"]["dataset"],
                                                                   cfg.data.ignore_identical_ids)} for e in entries]
    return report_task(Report, str(workdir), entries, list(cfg.eval.metrics), baselines=baselines(cfg))


def report_task(cls: type[Report], workdir: str, entries: list[dict], metrics: list[str], **params) -> Report:
    """A Report (or AblationReport) over ``entries`` ({name, dataset, retriever[, seed, ignore_identical_ids]}):
    each entry's search task (``search_task``) scored by an Evaluate task, handed to the report in entry order.
    An entry on a corpus-only data set (no judgements) is not evaluated: the report requires its search task, so
    the retriever is still built (and ``stillhouse search`` and ``export`` serve it), and lists it as unjudged."""
    from stillhouse.eval.beir_data import is_corpus_only
    from stillhouse.pipelines.tasks.report import Evaluate

    evaluations, unjudged = [], []
    entries = [dict(e) for e in entries]
    for e in entries:
        search = search_task(workdir, dict(e["dataset"]), dict(e["retriever"]))
        if is_corpus_only(Path(e["dataset"]["data_dir"]) / e["dataset"]["dataset"]):
            unjudged.append((e["name"], search))
            e["judged"] = False
            continue
        evaluations.append((e["name"], Evaluate(workdir=workdir, dataset=e["dataset"], metrics=metrics, search=search,
                                                ignore_identical_ids=e.get("ignore_identical_ids", False))))
    return cls(workdir=workdir, entries=entries, evaluate=evaluations, metrics=metrics,
               **({"unjudged": unjudged} if unjudged else {}), **params)


def search_task(workdir: str, dataset: dict, spec: dict) -> StageTask:
    """The search task that answers ``dataset``'s judged queries for a retriever spec (a config
    ``[retrievers.X]`` table with its model resolved, a student's spec with ``trained``, or a hybrid's), with
    everything it reads handed to it: a student's training task, a hybrid's member searches and weights."""
    from stillhouse.pipelines.tasks.hybrid import HybridSearch, HybridWeights
    from stillhouse.pipelines.tasks.retrieval import BM25Search, DenseSearch
    from stillhouse.pipelines.tasks.sparse import ImpactSearch, sparse_student_task
    from stillhouse.pipelines.tasks.students import dense_student_task

    kind = spec["kind"]
    params = {k: v for k, v in spec.items() if k not in ("kind", "trained", "members")}
    trained = dict(spec.get("trained") or {})
    if kind == "bm25":
        return BM25Search(workdir=workdir, dataset=dataset, **params)
    if kind == "dense":
        return DenseSearch(workdir=workdir, dataset=dataset, **params,
                           model_task=dense_student_task(workdir, trained) if trained else None)
    if kind == "splade":
        return ImpactSearch(workdir=workdir, dataset=dataset, **params,
                            model_task=sparse_student_task(workdir, trained) if trained else None)
    if kind == "hybrid":
        def members(on: dict) -> dict[str, StageTask]:
            return {name: search_task(workdir, on, {**dict(member), "top_k": spec["top_k"]})
                    for name, member in spec["members"].items()}

        chosen = None
        if "select" in spec["weights"]:
            selection = spec["weights"]["select"]
            examples = None
            if selection["kind"] == "examples":
                from stillhouse.pipelines.tasks.generation import SelectExamples

                examples = SelectExamples(workdir=workdir, gen=selection["gen"])
            chosen = HybridWeights(workdir=workdir, members=members(dict(selection["dataset"])), selection=selection,
                                   examples=examples, top_k=spec["top_k"])
        return HybridSearch(workdir=workdir, dataset=dataset, members=members(dataset), chosen=chosen, **params)
    raise ValueError(f"unknown retriever kind {kind!r}")


def baselines(cfg: RunConfig) -> dict[str, str]:
    """The rows every report row is tested against: the first BM25 retriever and the base dense model (the dense
    retriever whose model is the dense student's base, else the first dense retriever)."""
    from stillhouse.pipelines.config import BM25Retriever

    found = {}
    bm25 = next((name for name, r in cfg.retrievers.items() if isinstance(r, BM25Retriever)), None)
    if bm25:
        found[bm25] = bm25
    dense = {name: cfg.model_source(r.model) for name, r in cfg.retrievers.items() if isinstance(r, DenseRetriever)}
    student_base = cfg.model_source(cfg.dense_student.base_model) if cfg.dense_student else None
    base = next((name for name, source in dense.items() if source == student_base), next(iter(dense), None))
    if base:
        found[base] = base
    return found


def hybrid_entries(cfg: RunConfig, data_dir: Path, entries: list[dict]) -> list[dict]:
    """One entry per (``[hybrid.NAME]``, data set where every member has an entry): the members' specs come from
    ``entries`` (so a student is fused where it is evaluated), the weights fixed or selected (``hybrid_weights``)."""
    found = []
    for name, hybrid in cfg.hybrid.items():
        skipped: list[str] = []
        for dataset in dict.fromkeys(e["dataset"]["dataset"] for e in entries):
            specs: dict[str, list[dict]] = {}
            for e in entries:
                if e["dataset"]["dataset"] == dataset:
                    specs.setdefault(e["name"], []).append(e)
            if not all(member in specs for member in hybrid.members):
                continue
            dataset_spec = specs[hybrid.members[0]][0]["dataset"]
            try:
                weights = hybrid_weights(cfg, name, data_dir, dataset_spec)
            except _NoSelectionSplit as reason:  # split:X on a data set without X (or evaluated on X): no row
                log.warning("hybrid %s: no row on %s: %s", name, dataset, reason)
                skipped.append(str(reason))
                continue
            # Students trained with several seeds: replica i fuses each member's i-th seed (a one-seed member
            # serves every replica), so the hybrid row is a mean over seeds too.
            replicas = max(len(specs[member]) for member in hybrid.members)
            for i in range(replicas):
                chosen = {member: specs[member][i % len(specs[member])] for member in hybrid.members}
                members = {member: {**e["retriever"], "top_k": hybrid.top_k} for member, e in chosen.items()}
                retriever = {"kind": "hybrid", "members": members, "top_k": hybrid.top_k, "weights": weights}
                seed = next((e["seed"] for e in chosen.values() if "seed" in e), None) if replicas > 1 else None
                found.append({"name": name, "dataset": dict(dataset_spec), "retriever": retriever,
                              **({"seed": seed} if seed is not None else {})})
        if skipped and not any(e["name"] == name for e in found):
            raise UserError(f"hybrid.{name}.weights: {skipped[0]}")
    return found


class _NoSelectionSplit(Exception):
    """``split:X`` weights cannot be chosen for one data set (it has no judged X, or X is the evaluated split)."""


def hybrid_weights(cfg: RunConfig, name: str, data_dir: Path, evaluated: dict) -> dict:
    """``{fixed: weights}`` or ``{select: selection}`` for ``HybridSearch``. The selection never reads the evaluated
    split: ``examples`` reads the labeled pairs generation spends, ``split:X`` the judged split X of the same data set
    (refused when X is the evaluated split)."""
    from stillhouse.pipelines.tasks.generation import SelectExamples, spec

    hybrid = cfg.hybrid[name]
    if isinstance(hybrid.weights, dict) or hybrid.weights == "equal":
        # Fixed weights are stored summing to 1: {a = 1, b = 1} and "equal" are the same task.
        given = hybrid.weights if isinstance(hybrid.weights, dict) else dict.fromkeys(hybrid.members, 1.0)
        total = sum(given.values())
        return {"fixed": {m: float(given[m]) / total for m in hybrid.members}}
    from stillhouse.eval.metrics import ignores_identical_ids

    def common_for(dataset: str) -> dict:
        return {"step": hybrid.grid_step, "metric": "NDCG@10",
                "ignore_identical_ids": ignores_identical_ids(dataset, cfg.data.ignore_identical_ids)}

    if hybrid.weights == "examples":
        entry = generation_entries(cfg, data_dir)[0]
        if {k: entry["examples_dataset"][k] for k in ("dataset", "split")} == \
                {k: evaluated[k] for k in ("dataset", "split")}:
            log.warning("hybrid %s: evaluated on %s %s, the split its weights' %d example pairs come from: its score "
                        "there is optimistic", name, evaluated["dataset"], evaluated["split"],
                        cfg.spent_example_pairs())
        return {"select": {"kind": "examples", "dataset": entry["examples_dataset"], "gen": spec(SelectExamples, entry),
                           "roles": cfg.spent_example_roles(), **common_for(entry["examples_dataset"]["dataset"])}}
    split = hybrid.weights.removeprefix("split:")
    if split == evaluated["split"]:
        raise _NoSelectionSplit(f"{hybrid.weights!r} is the evaluation split of {evaluated['dataset']}; weights are "
                                "never chosen on it (use another split or \"examples\")")
    if not (data_dir / evaluated["dataset"] / "qrels" / f"{split}.tsv").is_file() \
            and (data_dir / evaluated["dataset"]).is_dir():
        raise _NoSelectionSplit(f"{evaluated['dataset']} has no judged {split!r} split "
                                f"({data_dir / evaluated['dataset'] / 'qrels'}); use \"examples\" or numbers")
    return {"select": {"kind": "split", "dataset": {**evaluated, "split": split}, **common_for(evaluated["dataset"])}}


def student_training(cfg: RunConfig, settings: dict, keys: tuple[str, ...], section: str) -> dict:
    """The training settings a student's tasks read, with its own ensemble weights: a student with
    ``teacher_weights`` gets its own EnsembleScores and TASTriples; everything before them is shared."""
    return {**{k: settings[k] for k in keys}, "weights": cfg.student_teacher_weights(section)}


def dense_student_retriever(cfg: RunConfig, settings: dict, seed: int | None = None) -> dict:
    """The dense student (of ``seed``; default the config's ``seed``) as a dense retriever spec: its model comes
    from TrainDense (``trained``)."""
    from stillhouse.pipelines.tasks.students import STUDENT_KEYS

    student = cfg.dense_student
    assert student is not None and cfg.training is not None
    spec = student.model_dump(exclude={"teacher_weights", "seeds"})  # weights reach TrainDense as its training's
    spec["seed"] = student.seed if seed is None else seed
    spec["base_model"] = cfg.model_source(student.base_model, where="dense_student.base_model")
    spec["guide_model"] = cfg.model_source(student.guide_model, where="dense_student.guide_model") \
        if student.guide_model else settings["guide_teacher"]["model"]
    return {"kind": "dense", "model": DENSE_STUDENT,
            "trained": {"training": student_training(cfg, settings, STUDENT_KEYS, "dense_student"), "student": spec},
            "batch_size": student.encode_batch_size, "shards": student.shards,
            "max_seq_length": 0, "top_k": 100}  # the student's own window (the base model's)


def sparse_student_retriever(cfg: RunConfig, settings: dict, seed: int | None = None) -> dict:
    """The sparse student (of ``seed``; default the config's ``seed``) as an impact-index retriever spec: its model
    comes from TrainSparse (``trained``)."""
    from stillhouse.pipelines.tasks.sparse import SPARSE_KEYS

    student = cfg.sparse_student
    assert student is not None
    spec = student.model_dump(exclude={"teacher_weights", "seeds"})  # weights reach TrainSparse as its training's
    spec["seed"] = student.seed if seed is None else seed
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
    base = gen_cfg.model_dump(exclude={"generators", "prompts", "dataset", "examples_dataset", "examples_split",
                                       "examples", "instructions"})
    base["instruction"] = gen_cfg.instructions.get(dataset, gen_cfg.instruction)
    if gen_cfg.examples:  # the user's own pairs over the target corpus, as its split "examples"
        base["examples_dataset"] = {**dataset_params(cfg, dataset, data_dir), "split": "examples",
                                    "examples_file": gen_cfg.examples}
    else:
        base["examples_dataset"] = {**dataset_params(cfg, examples_dataset, data_dir),
                                    "split": gen_cfg.examples_split}
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
        return [] if folder.is_dir() else list(wanted)  # a corpus-only folder judges nothing
    present = [split for split in wanted if (qrels / f"{split}.tsv").is_file()]
    for split in wanted:
        if split not in present:
            log.info("rerank study: %s has no %s split; studying %s", folder.name, split, ", ".join(present) or "none")
    return present


def only_retrievers(report: Report, names: list[str]) -> Report:
    """The report restricted to the rows of ``names`` (and so the DAG to what they need)."""
    known = list(dict.fromkeys(e["name"] for e in report.entries))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"--retrievers: {unknown[0]!r} is not a retriever of the config ({', '.join(known)})")
    return report_task(Report, report.workdir, [e for e in report.entries if e["name"] in names],
                       list(report.metrics), baselines=report.baselines)


def build_roots(cfg: RunConfig, workdir: Path, data_dir: Path, eval_split: str | None = None,
                only: list[str] | None = None) -> list[StageTask]:
    """The DAG's roots: the evaluation report, and the generation and training-data reports when configured.
    ``only`` keeps the report's rows of those retrievers and drops the other roots."""
    from stillhouse.pipelines.tasks.generation import QueryGenReport
    from stillhouse.pipelines.tasks.training_report import REPORT_KEYS, TrainingDataReport

    report = build_report_task(cfg, workdir, data_dir, eval_split)
    if only:
        return [only_retrievers(report, only)]
    roots: list[StageTask] = [report]
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


def family_graph(roots: list[StageTask]) -> list[tuple[str, str]]:
    """The DAG's edges between task families (upstream, downstream), read from ``requires()``: the shape of the
    pipeline whatever the data sets, seeds and shard counts."""
    edges = {(child.task_family, task.task_family) for root in roots for task in walk(root)
             for child in flatten(task.requires())}
    return sorted(edges)


def mermaid(edges: list[tuple[str, str]]) -> str:
    """A Mermaid flowchart of ``family_graph`` edges (``stillhouse status CONFIG --graph`` prints it)."""
    return "\n".join(["flowchart LR", *(f"    {upstream} --> {downstream}" for upstream, downstream in edges)])


def built_indexes(cfg: RunConfig, report: Report):
    """What ``stillhouse export`` reads from a finished run: the dense student's FAISS index (else the first
    dense retriever's on the students' data set), the sparse student's impact index, and the first judged query
    of that data set (for the example query bodies)."""
    from stillhouse.retrievers.export import BuiltIndexes

    by_name: dict[str, dict] = {}
    for e in report.entries:
        by_name.setdefault(e["name"], e)  # a student trained with several seeds: its first seed's indexes
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
        dense_quantize=dense_task.quantize if dense_task else "none",
        sparse_index=sparse_task.index_task().out_dir if sparse_task else None,
        sparse_model=sparse_task.fetch_task().model_dir() if sparse_task else None,
        idf=sparse_task.fetch_task().out_dir / "idf.json" if sparse_task else None,
        hybrid=students_hybrid(cfg, report, dataset_name))
    query = first_query(dataset.out_dir / "queries.jsonl")
    if not query and cfg.generation is not None and cfg.generation.examples:  # a corpus without queries
        query = first_query(Path(cfg.generation.examples), field="query")
    return built, query


def students_hybrid(cfg: RunConfig, report: Report, dataset: str) -> dict | None:
    """The config's fusion of the two students (the first ``[hybrid]`` whose members are exactly the dense and the
    sparse student), with the weights its run used: ``{name, weights: {dense, sparse}, depth}``."""
    name = next((n for n, h in cfg.hybrid.items() if sorted(h.members) == sorted(STUDENTS)), None)
    entry = next((e for e in report.entries if e["name"] == name and e["dataset"]["dataset"] == dataset), None)
    if entry is None:
        return None
    task = search_task(report.workdir, dict(entry["dataset"]), dict(entry["retriever"]))
    if not task.complete():
        log.warning("export: the hybrid %s is not built yet (run `stillhouse run` first); exporting without it", name)
        return None
    weights = task.member_weights()
    total = weights[DENSE_STUDENT] + weights[SPARSE_STUDENT]  # Milvus's WeightedRanker takes weights in [0, 1]
    return {"name": name, "weights": {"dense": weights[DENSE_STUDENT] / total,
                                      "sparse": weights[SPARSE_STUDENT] / total}, "depth": task.top_k}


def first_query(path: Path, field: str = "text") -> str:
    """The first query of a BEIR ``queries.jsonl`` (read alone, not the whole data set), or of an examples file
    (``field="query"``); "" when there is none (a corpus-only data set has no ``queries.jsonl``)."""
    import json

    if not path.is_file():
        return ""
    with open(path, encoding="utf-8") as handle:
        line = next((line for line in handle if line.strip()), "")
    return json.loads(line)[field] if line else ""
