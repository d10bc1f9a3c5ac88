"""Student tasks: the dense bi-encoder distilled from the teacher ensemble.

``TrainDense`` exposes ``model_dir()`` like ``FetchModel``, so the dense retrieval tasks (``EncodeShard``,
``DenseIndex``, ``DenseSearch``) index and search with the trained student exactly as with a fetched
model: they take it through their ``trained`` parameter, and its fingerprint is the student's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi

from stillhouse.pipelines.config import fingerprinted
from stillhouse.pipelines.tasks.base import StageTask
from stillhouse.pipelines.tasks.data import FetchModel, corpus_only_fingerprint
from stillhouse.pipelines.tasks.retrieval import DenseIndex
from stillhouse.pipelines.tasks.training_data import (
    TAS_KEYS,
    TASTriples,
    TrainTask,
    narrow,
    read_table,
    teacher_dense_index,
)

log = logging.getLogger("stillhouse")

STUDENT_KEYS = TAS_KEYS


class StudentTask(TrainTask):
    """Base of the students' training tasks: the TAS-Balanced triples and a base model in, ``model/`` out.

    Checkpoints live beside the output folder (``<fingerprint>.checkpoints``) while training runs, so a
    killed run resumes from the last one; they are removed once the model is in place.
    """

    uses_gpu = True

    reads = STUDENT_KEYS
    student = luigi.DictParameter(description="the student's config section with model roles resolved to sources")

    def triples_task(self) -> TASTriples:
        return self.make(TASTriples)

    def base_task(self) -> FetchModel:
        return FetchModel(workdir=self.workdir, source=self.student["base_model"])

    def upstream_fingerprint(self, task: StageTask) -> str:
        return corpus_only_fingerprint(task)

    def checkpoint_dir(self) -> Path:
        return self.out_dir.with_name(self.out_dir.name + ".checkpoints")

    def model_dir(self) -> Path:
        return self.out_dir / "model"


class TrainDense(StudentTask):
    """The dense student (``model/``, a plain sentence-transformers folder) and ``training.json``."""

    version = 1  # 1: guide_margin_strategy reaches the GISTEmbed loss

    def label(self) -> str:
        return f"TrainDense({self.student['sampler']}, {self.student['in_batch_loss']})"

    def guide_task(self) -> FetchModel | None:
        if self.student["in_batch_loss"] != "gist" or self.student["in_batch_weight"] == 0:
            return None
        return FetchModel(workdir=self.workdir, source=self.student["guide_model"])

    def guide_index(self) -> DenseIndex | None:
        """The guide teacher's corpus index, when the guide's vectors are read from it (``guide_vectors``)."""
        if self.guide_task() is None or self.student.get("guide_vectors", "in-loss") != "index":
            return None
        return teacher_dense_index(self.workdir, self.corpus(), dict(self.training["guide_teacher"]))

    def guide_vectors(self, triples: dict[str, list]) -> dict | None:
        """The guide's vectors of the training texts, read from its corpus index (``guide_vectors = "index"``)."""
        from stillhouse.retrievers.guide_lookup import guide_vectors

        guide, index = self.guide_task(), self.guide_index()
        if guide is None or index is None:
            return None
        return guide_vectors(guide.model_dir(), index.out_dir, triples,
                             max_seq_length=self.training["guide_teacher"]["max_seq_length"])

    def requires(self):
        upstream = [self.guide_task(), self.guide_index()]
        return [self.triples_task(), self.corpus_task(), self.base_task(), *(t for t in upstream if t)]

    def fingerprint_payload(self) -> dict:
        # The triples' inputs (the ensemble weights among them) enter through TASTriples upstream; what is read
        # here is the student's settings.
        return {"student": fingerprinted("dense_student", dict(self.student))}

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.distill_dense import student_settings, student_triples, train_dense_student
        s = dict(self.student)
        table = read_table(self.triples_task().out_dir / "triples.parquet")
        triples = student_triples(table, self.corpus_task().load().corpus,
                                  s["negatives_per_query"], s["margin_scale"])
        settings = student_settings(s, self.training["guide_margin"], self.training["margin_bins"],
                                    self.training["guide_margin_strategy"])
        guide = self.guide_task()
        stats = train_dense_student(self.base_task().model_dir(), guide.model_dir() if guide else None, triples,
                                    folder / "model", self.checkpoint_dir(), settings, self.guide_vectors(triples))
        (folder / "training.json").write_text(json.dumps(stats, indent=2))


def dense_student_task(workdir: str, trained: dict) -> TrainDense:
    """The TrainDense task a dense student's retriever spec names (``trained``: {training, student})."""
    return TrainDense(workdir=workdir, training=narrow(dict(trained["training"]), STUDENT_KEYS),
                      student=trained["student"])
