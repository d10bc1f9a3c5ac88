"""Sparse retrieval tasks: the inference-free sparse student, and Lucene impact indexes and search.

``TrainSparse`` trains the student (``stillhouse.retrievers.sparse_student.train_student``). ``ImpactIndex``
encodes the corpus with a sparse model's document route, streams the vectors as integer impacts into a Pyserini
JsonVectorCollection and indexes it with Lucene (``-impact -pretokenized``). ``ImpactSearch`` builds the query
vectors (the student: its static IDF table, no model; a siamese SPLADE model: its query encoder) and answers them
with Pyserini's impact searcher. Both take a sparse model either as a fetched source (``model``) or as a trained
student (``trained``, like the dense tasks).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi

from stillhouse.pipelines.config import fingerprinted
from stillhouse.pipelines.tasks.retrieval import IndexSearchTask, ModelTask
from stillhouse.pipelines.tasks.students import StudentTask
from stillhouse.pipelines.tasks.training_data import TAS_KEYS, narrow, read_table
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.runs import write_trec_run

log = logging.getLogger("stillhouse")

SPARSE_KEYS = TAS_KEYS


class TrainSparse(StudentTask):
    """The inference-free sparse student: ``model/`` (a SparseEncoder folder, query and document routes),
    ``idf.json`` (its query weight table) and ``training.json``."""

    def label(self) -> str:
        return f"TrainSparse({self.student['query_weights']}, {self.student['loss']})"

    def requires(self):
        return [self.triples_task(), self.corpus_task(), self.base_task()]

    def fingerprint_payload(self) -> dict:
        student = fingerprinted("sparse_student", dict(self.student))
        if student["idf"] != "corpus":  # a file: its content, not its path
            from stillhouse.artifacts import file_digest

            if not Path(student["idf"]).is_file():
                raise UserError(f"sparse_student.idf: {student['idf']} is not a file; give an idf.json path or "
                                "\"corpus\"")
            student["idf"] = file_digest(Path(student["idf"]))
        return {"student": student}  # the ensemble weights enter through TASTriples upstream

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.sparse_student import train_student

        corpus = self.corpus_task().load().corpus
        table = read_table(self.triples_task().out_dir / "triples.parquet")
        stats = train_student(self.base_task().model_dir(), corpus, table, dict(self.student),
                              self.training["margin_bins"], folder, self.checkpoint_dir())
        (folder / "training.json").write_text(json.dumps(stats, indent=2))


def sparse_student_task(workdir: str, trained: dict) -> TrainSparse:
    """The TrainSparse task a sparse student's retriever spec names (``trained``: {training, student})."""
    return TrainSparse(workdir=workdir, training=narrow(dict(trained["training"]), SPARSE_KEYS),
                       student=trained["student"])


class SparseTask(ModelTask):
    """Parameters shared by the impact-index tasks."""

    batch_size = luigi.IntParameter(default=32)
    max_seq_length = luigi.IntParameter(default=256)

    def load_model(self):
        """The sparse model (a student's routes, or a siamese SPLADE checkpoint) on the best device."""
        from stillhouse.retrievers.sparse_student import load_sparse_model

        return load_sparse_model(self.fetch_task().model_dir(), inference_free=isinstance(self.model_task, TrainSparse),
                                 max_seq_length=self.max_seq_length)

    def sparse_kwargs(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "model_task": self.model_task,
                "batch_size": self.batch_size, "max_seq_length": self.max_seq_length}


class ImpactIndex(SparseTask):
    """``index/`` (Lucene impact index), ``vectors.jsonl`` (the JsonVectorCollection it was built from, kept for
    export) and ``stats.json`` (documents, mean non-zero terms per document, seconds)."""

    def requires(self):
        return [self.dataset_task(), self.fetch_task()]

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.impact_index import index_corpus

        stats = index_corpus(self.load_model(), self.dataset_task().load().corpus, folder, self.batch_size)
        (folder / "stats.json").write_text(json.dumps(stats, indent=2))


class ImpactSearch(SparseTask, IndexSearchTask):
    """Top-k of the split's judged queries from the impact index, as a TREC run, with ``stats.json`` (mean
    non-zero query terms, search seconds)."""

    def index_task(self) -> ImpactIndex:
        return ImpactIndex(workdir=self.workdir, **self.sparse_kwargs())

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.impact_index import ImpactSearcher

        queries = self.dataset_task().load().queries
        searcher = ImpactSearcher(self.index_task().out_dir / "index", self.load_model())
        run = searcher.search(queries, self.top_k, threads=2)
        stats = searcher.last_stats
        write_trec_run(run, folder / "run.trec", "impact")
        seconds = stats["query_encode_seconds"] + stats["search_seconds"]
        (folder / "timing.json").write_text(json.dumps({"queries": len(queries), "seconds": seconds}))
        (folder / "stats.json").write_text(json.dumps(stats, indent=2))
