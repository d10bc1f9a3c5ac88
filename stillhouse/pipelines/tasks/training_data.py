"""Training-data tasks: training queries, candidate mining, teacher scores, the GISTEmbed guide filter,
the normalized teacher ensemble, query clusters and TAS-Balanced triples; plus the reranking study
that measures each teacher and the ensemble on BM25's top-k.

Tasks take ``training``: the ``[training]`` settings resolved by ``stillhouse.pipelines.dag.training_settings``
(model roles resolved to sources, data sets to LoadDataset parameters), narrowed to the keys a task
reads (``reads``), so changing e.g. the guide margin reruns only the guide filter and what follows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import luigi
import numpy as np

from stillhouse.pipelines.tasks.base import StageTask
from stillhouse.pipelines.tasks.data import FetchModel, LoadDataset, corpus_only_fingerprint
from stillhouse.pipelines.tasks.retrieval import BM25Index, BM25Search, CorpusTask, DenseIndex
from stillhouse.retrievers.errors import UserError

log = logging.getLogger("stillhouse")

QUERY_KEYS = ("dataset", "queries", "gen", "query_filter", "positives")
MINE_KEYS = (*QUERY_KEYS, "corpus", "base", "bm25_candidates", "dense_candidates")
GUIDE_KEYS = (*MINE_KEYS, "guide", "guide_teacher", "guide_filter", "guide_margin", "guide_margin_strategy", "study")
ENSEMBLE_KEYS = (*GUIDE_KEYS, "teachers", "weights", "normalization")
CLUSTER_KEYS = (*QUERY_KEYS, "base", "clusters", "seed")
TAS_KEYS = (*ENSEMBLE_KEYS, "clusters", "seed", "margin_bins")


def narrow(training: dict, keys: tuple[str, ...]) -> dict:
    return {key: training[key] for key in keys}


def write_table(columns: dict[str, list | np.ndarray], path: Path) -> None:
    """A Parquet table through ``datasets`` (so ``datasets.load_dataset("parquet", ...)`` reads it)."""
    from datasets import Dataset

    Dataset.from_dict({k: list(v) if isinstance(v, np.ndarray) else v for k, v in columns.items()}).to_parquet(
        str(path))


def read_table(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def read_jsonl_queries(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        return {row["_id"]: row["text"] for row in map(json.loads, handle)}


def write_jsonl_queries(queries: dict[str, str], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for query_id, text in queries.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")


class TrainTask(StageTask):
    """Base: the ``training`` settings, narrowed to ``reads``."""

    reads: tuple[str, ...] = ()
    training = luigi.DictParameter()

    def make(self, cls: type[TrainTask]) -> TrainTask:
        return cls(workdir=self.workdir, training=narrow(dict(self.training), cls.reads))

    def fingerprint_payload(self) -> dict:
        # Data set parameters (paths, flags) enter through LoadDataset's content fingerprints upstream.
        return {"training": {k: v for k, v in dict(self.training).items() if k not in ("dataset", "corpus", "gen")}}

    def corpus(self) -> dict:
        return dict(self.training["corpus"])

    def corpus_task(self) -> LoadDataset:
        return LoadDataset(workdir=self.workdir, **self.corpus())


class TrainingQueries(TrainTask):
    """The training queries and their positives: a judged split's queries, or the kept generated queries.

    Output: ``queries.jsonl``, ``positives.json`` (query id -> positive doc ids) and ``judged.json``
    (query id -> every judged-relevant doc id; equal to the positives unless ``positives = "first"``).
    """

    reads = QUERY_KEYS

    @property
    def priority(self) -> int:
        """Judged queries are checked (a positive each) before any model stage: Luigi runs a higher-priority task
        and its dependencies (here, loading the split) first, so a bad qrels file fails in seconds, not after the
        corpus indexes. Generated queries keep the default: their dependencies are the generation stages."""
        return 100 if self.training["queries"] == "split" else 0

    def source(self) -> StageTask:
        if self.training["queries"] == "split":
            return LoadDataset(workdir=self.workdir, **self.training["dataset"])
        from stillhouse.pipelines.tasks.generation import FilterQueries, spec

        return FilterQueries(workdir=self.workdir, gen=spec(FilterQueries, dict(self.training["gen"])))

    def requires(self):
        return self.source()

    def build(self, folder: Path) -> None:
        if self.training["queries"] == "split":
            queries, judged = self._split_queries()
        else:
            queries, judged = self._generated_queries()
        positives = judged if self.training["positives"] == "all" else {q: docs[:1] for q, docs in judged.items()}
        write_jsonl_queries(queries, folder / "queries.jsonl")
        (folder / "positives.json").write_text(json.dumps(positives))
        (folder / "judged.json").write_text(json.dumps(judged))
        log.info("training queries: %d, positives: %d", len(queries), sum(map(len, positives.values())))

    def _split_queries(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        task = self.source()
        data = task.load()
        judged = {q: [d for d, rel in docs.items() if rel > 0] for q, docs in data.qrels.items()}
        empty = sorted(q for q in data.queries if not judged.get(q))
        if empty:
            qrels = Path(task.data_dir) / task.dataset / "qrels" / f"{task.split}.tsv"
            raise UserError(f"{qrels}: {len(empty)} queries have no positive (relevance > 0), first {empty[0]!r}; "
                            "give each training query a relevant document or remove it")
        return dict(data.queries), judged

    def _generated_queries(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        path = self.source().out_dir / "queries.parquet"
        table = read_table(path)
        if self.training["query_filter"] == "none":  # the ablation: every generated query, duplicates aside
            usable = [bool(str(t).strip()) and not d for t, d in zip(table["text"], table["duplicate"], strict=True)]
        else:
            usable = table["kept"]
        kept = [i for i, flag in enumerate(usable) if flag]
        if not kept:
            raise UserError(f"{path}: no generated query passed the filters, so there is nothing to train on; "
                            "see the generation report and loosen roundtrip_k or the prompt settings")
        queries = {str(table["query_id"][i]): str(table["text"][i]) for i in kept}
        judged = {str(table["query_id"][i]): [str(table["doc_id"][i])] for i in kept}
        return queries, judged

    def load(self) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]:
        return (read_jsonl_queries(self.out_dir / "queries.jsonl"),
                json.loads((self.out_dir / "positives.json").read_text()),
                json.loads((self.out_dir / "judged.json").read_text()))


def base_index(task: TrainTask) -> DenseIndex:
    base = task.training["base"]
    return DenseIndex(workdir=task.workdir, dataset=task.corpus(), model=base["model"], shards=base["shards"],
                      batch_size=base["batch_size"], max_seq_length=base["max_seq_length"])


class MineCandidates(TrainTask):
    """Each query's positives plus BM25 and base-dense top-K candidates (positives excluded).

    Output ``pairs.parquet``: query_id, doc_id, positive, judged_relevant, bm25_rank, dense_rank.
    """

    uses_gpu = True

    reads = MINE_KEYS

    def requires(self):
        return [self.make(TrainingQueries), BM25Index(workdir=self.workdir, dataset=self.corpus(), multifield=True),
                base_index(self), FetchModel(workdir=self.workdir, source=self.training["base"]["model"])]

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.mining import mine_candidates

        queries, positives, judged = self.make(TrainingQueries).load()
        t, base = self.training, self.training["base"]
        dense_model = self.requires()[3].model_dir() if t["dense_candidates"] else None
        rows, stats = mine_candidates(queries, positives, judged, self.requires()[1].out_dir / "index",
                                      t["bm25_candidates"], dense_model, base_index(self).out_dir,
                                      t["dense_candidates"], base["batch_size"], base["max_seq_length"])
        write_table(rows, folder / "pairs.parquet")
        write_jsonl_queries(queries, folder / "queries.jsonl")
        (folder / "stats.json").write_text(json.dumps(stats, indent=2))
        log.info("mined %d candidates for %d queries", stats["candidates"], len(queries))


class RerankPairs(StageTask):
    """The (query, document) pairs of BM25's top-``depth`` for one split: what the teachers rerank."""

    dataset = luigi.DictParameter()
    depth = luigi.IntParameter(default=100)

    def search(self) -> BM25Search:
        return BM25Search(workdir=self.workdir, dataset=self.dataset, top_k=self.depth)

    def requires(self):
        return [LoadDataset(workdir=self.workdir, **self.dataset), self.search()]

    def fingerprint_payload(self) -> dict:
        return {"depth": self.depth, "split": self.dataset["split"]}

    def label(self) -> str:
        return f"RerankPairs({self.dataset['dataset']}/{self.dataset['split']})"

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.runs import read_trec_run

        run = read_trec_run(self.search().out_dir / "run.trec")
        rows: dict[str, list] = {"query_id": [], "doc_id": [], "bm25": []}
        for query_id, hits in run.items():
            for doc_id, score in sorted(hits.items(), key=lambda item: (-item[1], item[0])):
                rows["query_id"].append(query_id)
                rows["doc_id"].append(doc_id)
                rows["bm25"].append(score)
        write_table(rows, folder / "pairs.parquet")
        write_jsonl_queries(dict(LoadDataset(workdir=self.workdir, **self.dataset).load().queries),
                            folder / "queries.jsonl")


class SparseCorpus(CorpusTask):
    """A SPLADE model's vector of every corpus document (``vectors.npz``, SciPy CSR, + ``docids.json``)."""

    uses_gpu = True

    model = luigi.Parameter()
    batch_size = luigi.IntParameter(default=32)
    max_seq_length = luigi.IntParameter(default=0)

    def requires(self):
        return [self.dataset_task(), FetchModel(workdir=self.workdir, source=self.model)]

    def fingerprint_payload(self) -> dict:
        return {"max_seq_length": self.max_seq_length}  # the model enters through FetchModel

    def build(self, folder: Path) -> None:
        from scipy.sparse import save_npz

        from stillhouse.retrievers.dense import document_text
        from stillhouse.retrievers.teachers import encode_sparse_documents

        corpus = self.dataset_task().load().corpus
        ids = list(corpus)
        started = time.perf_counter()
        matrix = encode_sparse_documents(self.requires()[1].model_dir(), [document_text(corpus[d]) for d in ids],
                                         self.batch_size, self.max_seq_length)
        save_npz(folder / "vectors.npz", matrix)
        (folder / "docids.json").write_text(json.dumps(ids))
        (folder / "timing.json").write_text(json.dumps({"documents": len(ids),
                                                        "seconds": time.perf_counter() - started}))

    def load(self):
        from scipy.sparse import load_npz

        ids = json.loads((self.out_dir / "docids.json").read_text())
        return load_npz(self.out_dir / "vectors.npz"), {d: i for i, d in enumerate(ids)}


def pairs_task(workdir: str, pairs: dict) -> StageTask:
    """The task whose ``pairs.parquet`` and ``queries.jsonl`` a teacher scores."""
    if pairs["kind"] == "mined":
        return MineCandidates(workdir=workdir, training=narrow(dict(pairs["training"]), MINE_KEYS))
    return RerankPairs(workdir=workdir, dataset=pairs["dataset"], depth=pairs["depth"])


class TeacherScores(StageTask):
    """One teacher's score for every pair of a pair set (``scores.npy``, in ``pairs.parquet`` row order)."""

    uses_gpu = True

    pairs = luigi.DictParameter(description="{kind: mined, training} or {kind: rerank, dataset, depth}")
    corpus = luigi.DictParameter()
    teacher = luigi.DictParameter(description="resolved teacher spec: kind, model source, settings")
    name = luigi.Parameter(significant=False, default="")

    def label(self) -> str:
        return f"TeacherScores({self.name or self.teacher['kind']} on {self.pairs['kind']})"

    def source(self) -> StageTask:
        return pairs_task(self.workdir, dict(self.pairs))

    def dense_index(self) -> DenseIndex:
        return teacher_dense_index(self.workdir, dict(self.corpus), dict(self.teacher))

    def sparse_corpus(self) -> SparseCorpus:
        t = self.teacher
        return SparseCorpus(workdir=self.workdir, dataset=self.corpus, model=t["model"], batch_size=t["batch_size"],
                            max_seq_length=t["max_seq_length"])

    def requires(self):
        needed: list[StageTask] = [self.source(), LoadDataset(workdir=self.workdir, **self.corpus)]
        kind = self.teacher["kind"]
        if kind != "bm25":
            needed.append(FetchModel(workdir=self.workdir, source=self.teacher["model"]))
        if kind == "dense":
            needed.append(self.dense_index())
        if kind == "sparse":
            needed.append(self.sparse_corpus())
        if kind == "bm25":
            needed.append(BM25Index(workdir=self.workdir, dataset=self.corpus, multifield=False))
        return needed

    def upstream_fingerprint(self, task: StageTask) -> str:
        return corpus_only_fingerprint(task)

    def fingerprint_payload(self) -> dict:
        teacher = dict(self.teacher)
        if teacher["kind"] != "dense":
            teacher.pop("shards", None)
        # What the pairs are (their identity enters through the pair task's fingerprint upstream).
        source = self.pairs["dataset"] if self.pairs["kind"] == "rerank" else self.pairs["training"]["dataset"]
        split = source["split"]
        return {"teacher": teacher, "pairs": {"kind": self.pairs["kind"], "split": split}}

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.teachers import score_pairs

        source = self.source().out_dir
        table = read_table(source / "pairs.parquet")
        pairs = list(zip(table["query_id"].tolist(), table["doc_id"].tolist(), strict=True))
        run = score_pairs(self.teacher, read_jsonl_queries(source / "queries.jsonl"), pairs,
                          lambda: FetchModel(workdir=self.workdir, source=self.teacher["model"]).model_dir(),
                          teacher_documents(self))
        np.save(folder / "scores.npy", run.scores)
        (folder / "timing.json").write_text(json.dumps(run.timing()))
        log.info("%s: %d pairs in %.1fs", self.label(), len(pairs), run.seconds)

    def load(self) -> np.ndarray:
        return np.load(self.out_dir / "scores.npy")


def teacher_dense_index(workdir: str, corpus: dict, teacher: dict) -> DenseIndex:
    """The corpus index of a dense teacher (shared with a dense retriever of the same model and settings)."""
    return DenseIndex(workdir=workdir, dataset=corpus, model=teacher["model"], shards=teacher["shards"],
                      batch_size=teacher["batch_size"], max_seq_length=teacher["max_seq_length"])


def teacher_documents(task: TeacherScores) -> Callable[[], Any]:
    """What the task's teacher reads of the corpus, loaded when called (``score_pairs`` times it): the flat BM25
    index folder, the dense teacher's FAISS index folder, the sparse teacher's document vectors, or the corpus."""
    kind = task.teacher["kind"]
    if kind == "bm25":
        return lambda: BM25Index(workdir=task.workdir, dataset=task.corpus, multifield=False).out_dir / "index"
    if kind == "dense":
        return lambda: task.dense_index().out_dir
    if kind == "sparse":
        return lambda: task.sparse_corpus().load()
    return lambda: LoadDataset(workdir=task.workdir, **task.corpus).load().corpus


def teacher_scores(task: TrainTask, name: str, pairs: dict | None = None) -> TeacherScores:
    pairs = pairs or {"kind": "mined", "training": narrow(dict(task.training), MINE_KEYS)}
    return TeacherScores(workdir=task.workdir, pairs=pairs, corpus=task.corpus(),
                         teacher=task.training["teachers"][name], name=name)


class GuideFilter(TrainTask):
    """GISTEmbed's guide filter over the mined candidates, and its study against the labels.

    Output ``guide.parquet`` (every mined pair with guide score, its query's lowest positive score and
    the kept flag) and ``study.json``: for each (strategy, margin), the judged-relevant candidates removed
    (recall) and the other candidates removed (cost).
    """

    uses_gpu = True

    version = 1  # 1: a candidate exactly at the guide threshold is kept, as GISTEmbedLoss keeps it

    reads = GUIDE_KEYS

    def guide_scores(self) -> TeacherScores:
        return TeacherScores(workdir=self.workdir, pairs={"kind": "mined", "training": narrow(dict(self.training),
                                                                                              MINE_KEYS)},
                             corpus=self.corpus(), teacher=self.training["guide_teacher"], name=self.training["guide"])

    def requires(self):
        return [self.make(MineCandidates), self.guide_scores()]

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.guide import filter_mined

        table = read_table(self.make(MineCandidates).out_dir / "pairs.parquet")
        t = self.training
        filtered = filter_mined(table, self.guide_scores().load(), t["guide_margin"], t["guide_margin_strategy"],
                                t["guide_filter"], [tuple(m) for m in t["study"]])
        write_table(filtered.columns, folder / "guide.parquet")
        (folder / "study.json").write_text(json.dumps(filtered.study_records(), indent=2))
        log.info("guide filter: dropped %d of %d candidates", filtered.dropped, filtered.candidates)

    def kept_mask(self) -> np.ndarray:
        return read_table(self.out_dir / "guide.parquet")["kept"].astype(bool)


class EnsembleScores(TrainTask):
    """Raw, per-query normalized and aggregated teacher scores of the kept pairs (``ensemble.parquet``)."""

    reads = ENSEMBLE_KEYS
    version = 1  # 1: the ensemble column is the teachers' weighted mean (it was their weighted sum)

    def requires(self):
        return [self.make(MineCandidates), self.make(GuideFilter),
                *(teacher_scores(self, name) for name in self.training["teachers"])]

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.ensemble import ensemble_columns

        table = read_table(self.make(MineCandidates).out_dir / "pairs.parquet")
        raw = {name: teacher_scores(self, name).load() for name in self.training["teachers"]}
        columns = ensemble_columns(table, self.make(GuideFilter).kept_mask(), raw, self.training["normalization"],
                                   dict(self.training["weights"]))
        write_table(columns, folder / "ensemble.parquet")


class ClusterQueries(TrainTask):
    """TAS topic clusters: spherical k-means over base-model query embeddings (``clusters.json``)."""

    uses_gpu = True

    reads = CLUSTER_KEYS

    def requires(self):
        return [self.make(TrainingQueries), FetchModel(workdir=self.workdir, source=self.training["base"]["model"])]

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.dense import encode, load_sentence_encoder
        from stillhouse.retrievers.tas import cluster_queries

        queries, _, _ = self.make(TrainingQueries).load()
        model = load_sentence_encoder(self.requires()[1].model_dir(), self.training["base"]["max_seq_length"] or None)
        ids = list(queries)
        vectors = encode(model, [queries[q] for q in ids], self.training["base"]["batch_size"], desc="queries")
        labels = cluster_queries(vectors, self.training["clusters"], self.training["seed"])
        (folder / "clusters.json").write_text(json.dumps(dict(zip(ids, labels.tolist(), strict=True))))
        sizes = np.bincount(labels)
        log.info("%d queries in %d clusters (sizes %d-%d)", len(ids), len(sizes), sizes.min(), sizes.max())

    def load(self) -> dict[str, int]:
        return json.loads((self.out_dir / "clusters.json").read_text())


class TASTriples(TrainTask):
    """(query, positive, negative, ensemble margin, cluster) triples for TAS-Balanced training, and the
    sampler's balance measured against uniform random pair sampling (``balance.json``)."""

    version = 1  # 1: margins binned per query (TAS-Balanced's reference code), not globally

    reads = TAS_KEYS
    epochs_measured = 5

    def requires(self):
        return [self.make(EnsembleScores), self.make(ClusterQueries), self.make(TrainingQueries)]

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.tas import tas_triples

        table = read_table(self.make(EnsembleScores).out_dir / "ensemble.parquet")
        queries, _, _ = self.make(TrainingQueries).load()
        triples, balance = tas_triples(table, queries, self.make(ClusterQueries).load(), self.training["margin_bins"],
                                       self.training["seed"], self.epochs_measured)
        write_table(triples, folder / "triples.parquet")
        (folder / "balance.json").write_text(json.dumps(balance, indent=2))
        log.info("TAS-Balanced: KL to uniform %.3f (random sampling %.3f), %d triples",
                 balance["kl_tas"], balance["kl_random"], len(triples["query_id"]))

