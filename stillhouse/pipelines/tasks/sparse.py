"""Sparse retrieval tasks: the inference-free sparse student, and Lucene impact indexes and search.

``TrainSparse`` trains the student (``stillhouse.retrievers.sparse_student``). ``ImpactIndex`` encodes the corpus with a
sparse model's document route, streams the vectors as integer impacts into a Pyserini JsonVectorCollection
and indexes it with Lucene (``-impact -pretokenized``). ``ImpactSearch`` builds the query vectors (the
student: its static IDF table, no model; a siamese SPLADE model: its query encoder) and answers them with
Pyserini's impact searcher. Both take a sparse model either as a fetched source (``model``) or as a trained
student (``trained``, like the dense tasks).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import luigi

from stillhouse.pipelines.tasks.base import StageTask, UpstreamParameter
from stillhouse.pipelines.tasks.data import FetchModel
from stillhouse.pipelines.tasks.retrieval import CorpusTask
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
        return f"TrainSparse({self.student['regularizer']}, {self.student['loss']})"

    def requires(self):
        return [self.triples_task(), self.corpus_task(), self.base_task()]

    def fingerprint_payload(self) -> dict:
        student = {k: v for k, v in dict(self.student).items() if k != "encode_batch_size"}
        if not student.get("mlm_warmup_steps"):  # added later: off, it leaves existing fingerprints as they were
            student.pop("mlm_warmup_steps", None)
            student.pop("mlm_warmup_learning_rate", None)
        if student["idf"] != "corpus":  # a file: its content, not its path
            from stillhouse.pipelines.fingerprint import file_digest

            if not Path(student["idf"]).is_file():
                raise UserError(f"sparse_student.idf: {student['idf']} is not a file; give an idf.json path or "
                                "\"corpus\"")
            student["idf"] = file_digest(Path(student["idf"]))
        return {"student": student, "weights": dict(self.training["weights"])}

    def build(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        from stillhouse.retrievers.dense import document_text
        from stillhouse.retrievers.distill_dense import student_triples
        from stillhouse.retrievers.impact_index import corpus_idf
        from stillhouse.retrievers.sparse_student import (
            masked_lm_folder,
            query_weights,
            read_idf_json,
            sparse_student_settings,
            train_sparse_student,
            write_idf_json,
        )

        s = dict(self.student)
        corpus = self.corpus_task().load().corpus
        texts = [document_text(doc) for doc in corpus.values()]
        doc_dir = masked_lm_folder(self.base_task().model_dir(), s["mlm_head"], folder / "mlm-base", s["base_model"],
                                   seed=s["seed"])
        warmup = None
        if s.get("mlm_warmup_steps"):
            doc_dir, warmup = self._warm_up(doc_dir, texts, folder)
        tokenizer = AutoTokenizer.from_pretrained(doc_dir)
        if s["idf"] == "corpus":
            idf = corpus_idf(tokenizer, texts)
        else:
            idf = read_idf_json(Path(s["idf"]), tokenizer)
        table = read_table(self.triples_task().out_dir / "triples.parquet")
        triples = student_triples(table, corpus, dict(self.training["weights"]), s["negatives_per_query"], 1.0)
        settings = sparse_student_settings(s, self.training["margin_bins"])
        log.info("sparse student: %d triples of %d queries (%s FLOPS, %s)", len(triples["query_id"]),
                 len(set(triples["query_id"])), s["regularizer"], s["loss"])
        stats = train_sparse_student(doc_dir, idf, triples, folder / "model", self.checkpoint_dir(), settings)
        # The query table the model searches with (ones for the plain-FLOPS ablation), for exports and serving.
        write_idf_json(tokenizer, query_weights(idf, s["regularizer"]), folder / "idf.json")
        shutil.rmtree(folder / "mlm-base", ignore_errors=True)
        (folder / "training.json").write_text(json.dumps({**stats, "mlm_warmup": warmup}, indent=2))

    def _warm_up(self, doc_dir: Path, texts: list[str], folder: Path) -> tuple[Path, dict | None]:
        """Masked-LM steps on the corpus (``stillhouse.retrievers.mlm_warmup``) into a copy of the starting checkpoint
        (the folder returned); skipped when distillation resumes from a checkpoint, which holds the warmed-up weights
        already."""
        from stillhouse.retrievers.distill_dense import last_complete_checkpoint
        from stillhouse.retrievers.mlm_warmup import warm_up_mlm

        record = self.checkpoint_dir() / "mlm_warmup.json"
        if last_complete_checkpoint(self.checkpoint_dir()) and record.is_file():
            log.info("sparse student: resuming distillation; the masked-LM warm-up is in its checkpoint")
            return doc_dir, json.loads(record.read_text())
        target = folder / "mlm-base"
        if doc_dir != target:  # the fetched model itself: never train it in place
            shutil.copytree(doc_dir, target, dirs_exist_ok=True)
        s = dict(self.student)
        stats = warm_up_mlm(target, texts, s["mlm_warmup_steps"],
                            max_length=s["train_max_seq_length"] or s["max_seq_length"],
                            learning_rate=s["mlm_warmup_learning_rate"], seed=s["seed"])
        self.checkpoint_dir().mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(stats))
        return target, stats


def sparse_student_task(workdir: str, trained: dict) -> TrainSparse:
    """The TrainSparse task a sparse student's retriever spec names (``trained``: {training, student})."""
    return TrainSparse(workdir=workdir, training=narrow(dict(trained["training"]), SPARSE_KEYS),
                       student=trained["student"])


class SparseTask(CorpusTask):
    """Parameters shared by the impact-index tasks."""

    model = luigi.Parameter(description="model source string (a name only, when ``model_task`` is given)")
    model_task = UpstreamParameter(default=None, description="what provides the model folder when it is not "
                                                             "FetchModel(model): a trained student (TrainSparse)")
    batch_size = luigi.IntParameter(default=32)
    max_seq_length = luigi.IntParameter(default=256)

    def fetch_task(self) -> StageTask:
        """What provides the model folder (``model_dir()``): the given ``model_task``, else FetchModel."""
        return self.model_task or FetchModel(workdir=self.workdir, source=self.model)

    def fingerprint_payload(self) -> dict:
        own = super().fingerprint_payload()
        own.pop("model", None)  # a fetched model enters through FetchModel's fingerprint, a student through its own
        return own

    def load_model(self):
        """The sparse model (a student's routes, or a siamese SPLADE checkpoint) on the best device."""
        from stillhouse.retrievers.impact_index import load_sparse_model

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


class ImpactSearch(SparseTask):
    """Top-k of the split's judged queries from the impact index, as a TREC run, with ``stats.json`` (mean
    non-zero query terms, search seconds)."""

    retriever_kind = "splade"  # the config's ``kind`` of the retrievers this task searches for

    top_k = luigi.IntParameter(default=100)

    def index_task(self) -> ImpactIndex:
        return ImpactIndex(workdir=self.workdir, **self.sparse_kwargs())

    def upstream_fingerprint(self, task: StageTask) -> str:
        return task.fingerprint()  # reads the split's queries, not only the corpus

    def requires(self):
        return [self.dataset_task(), self.fetch_task(), self.index_task()]

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.impact_index import ImpactSearcher

        queries = self.dataset_task().load().queries
        searcher = ImpactSearcher(self.index_task().out_dir / "index", self.load_model())
        run, stats = searcher.search(queries, self.top_k, threads=2)
        write_trec_run(run, folder / "run.trec", "impact")
        seconds = stats["query_encode_seconds"] + stats["search_seconds"]
        (folder / "timing.json").write_text(json.dumps({"queries": len(queries), "seconds": seconds}))
        (folder / "stats.json").write_text(json.dumps(stats, indent=2))
