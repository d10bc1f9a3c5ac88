"""Retrieval tasks: a Lucene BM25 index and search; sharded dense encoding, a FAISS index and search.

The sparse (impact index) tasks are in ``stillhouse.pipelines.tasks.sparse``; which search task serves a retriever
spec is decided by the DAG assembly (``stillhouse.pipelines.dag.search_task``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import ClassVar

import luigi
import numpy as np

from stillhouse.pipelines.tasks.base import StageTask, UpstreamParameter
from stillhouse.pipelines.tasks.data import FetchModel, LoadDataset, corpus_only_fingerprint
from stillhouse.retrievers import faiss_index
from stillhouse.retrievers.bm25 import bm25_search, build_bm25_index
from stillhouse.retrievers.dense import (
    QUANTIZE_CHOICES,
    dense_search,
    document_text,
    encode,
    load_sentence_encoder,
)
from stillhouse.retrievers.runs import write_trec_run

log = logging.getLogger("stillhouse")


class DatasetTask(StageTask):
    """A task over one loaded data set; ``dataset`` holds LoadDataset's parameters."""

    dataset = luigi.DictParameter()

    def dataset_task(self) -> LoadDataset:
        return LoadDataset(workdir=self.workdir, **self.dataset)

    def fingerprint_payload(self) -> dict:
        own = super().fingerprint_payload()
        own.pop("dataset", None)  # covered by LoadDataset's fingerprint upstream
        return own

    def label(self) -> str:
        return f"{self.task_family}({self.dataset['dataset']})"


class CorpusTask(DatasetTask):
    """A task that reads only the corpus: its fingerprint ignores the split, so splits share it."""

    def upstream_fingerprint(self, task: StageTask) -> str:
        return corpus_only_fingerprint(task)


class BM25Index(CorpusTask):
    """A Lucene index of the corpus (BEIR multifield: title as its own field)."""

    multifield = luigi.BoolParameter(default=True)

    def requires(self):
        return self.dataset_task()

    def build(self, folder: Path) -> None:
        collection = folder / "collection"
        collection.mkdir()
        os.link(self.dataset_task().out_dir / "corpus.jsonl", collection / "corpus.jsonl")
        build_bm25_index(collection, folder / "index", multifield=self.multifield)
        shutil.rmtree(collection)


class BM25Search(DatasetTask):
    """BM25 top-k for the split's judged queries, as a TREC run."""

    multifield = luigi.BoolParameter(default=True)
    k1 = luigi.FloatParameter(default=0.9)
    b = luigi.FloatParameter(default=0.4)
    top_k = luigi.IntParameter(default=100)

    def index_task(self) -> BM25Index:
        return BM25Index(workdir=self.workdir, dataset=self.dataset, multifield=self.multifield)

    def requires(self):
        return [self.dataset_task(), self.index_task()]

    def build(self, folder: Path) -> None:
        index = self.index_task()
        queries = self.dataset_task().load().queries
        started = time.perf_counter()
        run = bm25_search(index.out_dir / "index", queries, self.top_k, self.k1, self.b, self.multifield)
        seconds = time.perf_counter() - started
        write_trec_run(run, folder / "run.trec", "bm25")
        (folder / "timing.json").write_text(json.dumps({"queries": len(queries), "seconds": seconds}))


class ModelTask(CorpusTask):
    """Base of the tasks that run a model over a data set. The model folder comes from ``model_task`` when the DAG
    hands one (a trained student) and from ``FetchModel(model)`` otherwise; either enters the fingerprint through
    ``requires()``, so the ``model`` string itself does not."""

    uses_gpu = True

    model = luigi.Parameter(description="model source string (a name only, when ``model_task`` is given)")
    model_task = UpstreamParameter(default=None, description="what provides the model folder when it is not "
                                                             "FetchModel(model): a trained student")

    def fetch_task(self) -> StageTask:
        """What provides the model folder (``model_dir()``): the given ``model_task``, else FetchModel."""
        return self.model_task or FetchModel(workdir=self.workdir, source=self.model)

    def fingerprint_payload(self) -> dict:
        own = super().fingerprint_payload()
        own.pop("model", None)  # a fetched model enters through FetchModel's fingerprint, a student through its own
        return own


class IndexSearchTask(ModelTask):
    """Base of the tasks that search a corpus index of a model with the split's judged queries (top ``top_k``)."""

    top_k = luigi.IntParameter(default=100)

    def index_task(self) -> StageTask:
        raise NotImplementedError

    def upstream_fingerprint(self, task: StageTask) -> str:
        return task.fingerprint()  # reads the split's queries, not only the corpus

    def requires(self):
        return [self.dataset_task(), self.fetch_task(), self.index_task()]


class DenseTask(ModelTask):
    """Parameters shared by the dense-branch tasks."""

    shards = luigi.IntParameter(default=4)
    batch_size = luigi.IntParameter(default=64)
    max_seq_length = luigi.IntParameter(default=0)
    quantize = luigi.ChoiceParameter(choices=QUANTIZE_CHOICES, default="none")  # int8: CPU, int8 linear layers
    # fp32, as every index was encoded before the setting: the same fingerprints, the same cache
    unkeyed_defaults: ClassVar[dict[str, str]] = {"quantize": "none"}

    @property
    def uses_gpu(self) -> bool:  # int8 kernels run on the CPU: no GPU slot to hold
        return self.quantize != "int8"

    def ran_on(self) -> dict[str, str]:
        return {"device": "cpu", "precision": "int8"} if self.quantize == "int8" else super().ran_on()

    def encoder_kwargs(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "model_task": self.model_task, "shards": self.shards,
                "batch_size": self.batch_size, "max_seq_length": self.max_seq_length, "quantize": self.quantize}


class EncodeShard(DenseTask):
    """Embeddings of one contiguous slice of the corpus (shard ``shard`` of ``shards``)."""

    shard = luigi.IntParameter()

    def label(self) -> str:
        return f"EncodeShard({self.dataset['dataset']} {self.shard + 1}/{self.shards})"

    def requires(self):
        return [self.dataset_task(), self.fetch_task()]

    def build(self, folder: Path) -> None:
        corpus = self.dataset_task().load().corpus
        ids = list(corpus)
        lo, hi = self.shard * len(ids) // self.shards, (self.shard + 1) * len(ids) // self.shards
        model = load_sentence_encoder(self.fetch_task().model_dir(), self.max_seq_length or None,
                                      quantize=self.quantize)
        log.info("encoding shard %d/%d: %d documents", self.shard + 1, self.shards, hi - lo)
        started = time.perf_counter()
        vectors = encode(model, [document_text(corpus[i]) for i in ids[lo:hi]], self.batch_size,
                         desc=f"shard {self.shard + 1}/{self.shards}")
        seconds = time.perf_counter() - started
        np.save(folder / "embeddings.npy", vectors)
        (folder / "ids.json").write_text(json.dumps(ids[lo:hi]))
        (folder / "timing.json").write_text(json.dumps({"documents": hi - lo, "seconds": seconds,
                                                        "device": str(model.device), "quantize": self.quantize}))


class DenseIndex(DenseTask):
    """An exact inner-product FAISS index over every shard, with the row -> doc id map."""

    uses_gpu = False  # merges the shards' vectors: no model

    def requires(self):
        return [EncodeShard(workdir=self.workdir, shard=i, **self.encoder_kwargs()) for i in range(self.shards)]

    def build(self, folder: Path) -> None:
        parts = [shard.out_dir for shard in self.requires()]
        vectors = np.concatenate([np.load(p / "embeddings.npy") for p in parts])
        ids = [doc_id for p in parts for doc_id in json.loads((p / "ids.json").read_text())]
        faiss_index.save_index(faiss_index.build_flat_ip(vectors), folder / "index.faiss")
        (folder / "docids.json").write_text(json.dumps(ids))


class DenseSearch(DenseTask, IndexSearchTask):
    """Encode the judged queries and take the top-k from the FAISS index, as a TREC run."""

    def index_task(self) -> DenseIndex:
        return DenseIndex(workdir=self.workdir, **self.encoder_kwargs())

    def build(self, folder: Path) -> None:
        queries = self.dataset_task().load().queries
        started = time.perf_counter()
        run = dense_search(self.fetch_task().model_dir(), self.index_task().out_dir, queries, self.top_k,
                           self.batch_size, self.max_seq_length, quantize=self.quantize)
        seconds = time.perf_counter() - started
        write_trec_run(run, folder / "run.trec", "dense")
        (folder / "timing.json").write_text(json.dumps({"queries": len(queries), "seconds": seconds}))
