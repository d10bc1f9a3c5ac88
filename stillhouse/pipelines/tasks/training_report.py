"""The training-data report: the guide filter against labels, each teacher and the ensemble as rerankers
of BM25's top-k, TAS-Balanced's margin balance, and teacher throughput (``training_data.md``).

Both tasks are wiring: ``RerankStudy`` calls ``stillhouse.eval.rerank.rerank_study``, ``TrainingDataReport`` calls
``stillhouse.eval.report.write_training_data_report``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi

from stillhouse.eval.metrics import ignores_identical_ids
from stillhouse.pipelines.tasks.base import StageTask, read_json
from stillhouse.pipelines.tasks.data import LoadDataset
from stillhouse.pipelines.tasks.training_data import (
    EnsembleScores,
    GuideFilter,
    RerankPairs,
    TASTriples,
    TeacherScores,
    TrainTask,
    read_table,
    write_table,
)

log = logging.getLogger("stillhouse")
REPORT_KEYS = (*TASTriples.reads, "rerank", "metrics")


class RerankStudy(StageTask):
    """Each teacher alone and the normalized ensemble reranking BM25's top-``depth`` of one split.

    Output ``rerank.json`` (metrics per reranker, and the ensemble under a grid of weights) and
    ``rerank.parquet`` (every pair's raw and normalized teacher scores, for re-weighting later).
    """

    version = 1  # 1: the ensemble column is the teachers' weighted mean (it was their weighted sum)

    dataset = luigi.DictParameter()
    depth = luigi.IntParameter(default=100)
    teachers = luigi.DictParameter()
    weights = luigi.DictParameter()
    normalization = luigi.Parameter(default="minmax")
    metrics = luigi.ListParameter()

    def label(self) -> str:
        return f"RerankStudy({self.dataset['dataset']}/{self.dataset['split']})"

    def pairs(self) -> dict:
        return {"kind": "rerank", "dataset": dict(self.dataset), "depth": self.depth}

    def corpus(self) -> dict:
        return dict(self.dataset)

    def scores(self, name: str) -> TeacherScores:
        return TeacherScores(workdir=self.workdir, pairs=self.pairs(), corpus=self.corpus(),
                             teacher=self.teachers[name], name=name)

    def requires(self):
        return [LoadDataset(workdir=self.workdir, **self.dataset),
                RerankPairs(workdir=self.workdir, dataset=self.dataset, depth=self.depth),
                *(self.scores(name) for name in self.teachers)]

    def fingerprint_payload(self) -> dict:
        return {"depth": self.depth, "weights": dict(self.weights), "normalization": self.normalization,
                "metrics": list(self.metrics), "teachers": sorted(self.teachers),
                "identical_ids": "ignored" if ignores_identical_ids(self.dataset["dataset"]) else "kept"}

    def build(self, folder: Path) -> None:
        from stillhouse.eval.rerank import rerank_study

        qrels = LoadDataset(workdir=self.workdir, **self.dataset).load().qrels
        pairs = read_table(RerankPairs(workdir=self.workdir, dataset=self.dataset, depth=self.depth).out_dir
                           / "pairs.parquet")
        columns, record = rerank_study(qrels, pairs, {name: self.scores(name).load() for name in self.teachers},
                                       {name: teacher["kind"] for name, teacher in self.teachers.items()},
                                       dict(self.weights), list(self.metrics), self.depth, self.normalization,
                                       ignores_identical_ids(self.dataset["dataset"]))
        write_table(columns, folder / "rerank.parquet")
        (folder / "rerank.json").write_text(json.dumps(
            {"dataset": self.dataset["dataset"], "split": self.dataset["split"], **record}, indent=2))

    def evaluate_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """The ensemble's metrics on this split under other weights (read back from ``rerank.parquet``)."""
        from stillhouse.eval.metrics import evaluate_run, ignores_identical_ids
        from stillhouse.eval.rerank import run_from_scores
        from stillhouse.retrievers.ensemble import aggregate

        table = read_table(self.out_dir / "rerank.parquet")
        normalized = {name: table[f"norm_{name}"] for name in self.teachers}
        qrels = LoadDataset(workdir=self.workdir, **self.dataset).load().qrels
        run = run_from_scores(table["query_id"], table["doc_id"], aggregate(normalized, weights))
        return evaluate_run(qrels, run, list(self.metrics), ignores_identical_ids(self.dataset["dataset"]))[0]


class TrainingDataReport(TrainTask):
    """``training_data.md`` / ``.json`` and plots over the training-data stages."""

    reads = REPORT_KEYS
    publish_as = ("training-data", "training_data.md")

    def studies(self) -> list[RerankStudy]:
        t = self.training
        return [RerankStudy(workdir=self.workdir, dataset=split, depth=t["rerank"]["depth"], teachers=t["teachers"],
                            weights=t["weights"], normalization=t["normalization"], metrics=t["metrics"])
                for split in t["rerank"]["splits"]]

    def requires(self):
        return [self.make(GuideFilter), self.make(EnsembleScores), self.make(TASTriples), *self.studies(),
                *self.implied_requirements()]

    def implied_requirements(self) -> list[StageTask]:
        # The mined candidates and each teacher's scores: both already in the ensemble's fingerprint.
        return [self.make(EnsembleScores).requires()[0],
                *(_teacher_task(self, name) for name in self.training["teachers"])]

    def build(self, folder: Path) -> None:
        from stillhouse.eval.report import write_training_data_report

        guide, studies, settings = self.make(GuideFilter).out_dir, self.studies(), self.training
        write_training_data_report(
            folder, study=read_json(guide / "study.json"),
            balance=read_json(self.make(TASTriples).out_dir / "balance.json"),
            mined=read_json(self.make(EnsembleScores).requires()[0].out_dir / "stats.json"),
            kept=read_table(guide / "guide.parquet"), margin=settings["guide_margin"],
            strategy=settings["guide_margin_strategy"],
            throughput={name: read_json(_teacher_task(self, name).out_dir / "timing.json")
                        for name in settings["teachers"]},
            reranks=[read_json(s.out_dir / "rerank.json") for s in studies],
            reweigh=[s.evaluate_weights for s in studies], metrics=list(settings["metrics"]))


def _teacher_task(task: TrainTask, name: str) -> TeacherScores:
    from stillhouse.pipelines.tasks.training_data import teacher_scores

    return teacher_scores(task, name)
