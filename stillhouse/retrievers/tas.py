"""TAS-Balanced: topic-aware, margin-balanced batch sampling (Hofstätter et al., 2021, "Efficiently
Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling", §3).

1. Topic clusters: the training queries are clustered once (k-means on base-model query embeddings,
   here FAISS spherical k-means); every batch draws its queries from one cluster, so in-batch
   negatives come from the same topic.
2. Balanced margins: for each query, its (positive, negative) pairs are binned by teacher margin
   ``M(q, p) - M(q, n)``; the sampler first picks a bin uniformly among the query's non-empty bins,
   then a pair within it, so easy (high-margin) pairs no longer dominate.

sentence-transformers has no such sampler; ``TASBalancedBatchSampler`` subclasses its
``DefaultBatchSampler`` and plugs into ``SentenceTransformerTrainingArguments(batch_sampler=...)``
through ``tas_balanced_sampler``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from sentence_transformers.base.sampler import DefaultBatchSampler


def cluster_queries(embeddings: np.ndarray, k: int, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """Cluster label of every query (spherical FAISS k-means; ``k`` is capped at the number of queries)."""
    import faiss

    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    k = max(1, min(k, len(vectors)))
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=iterations, seed=seed, spherical=True,
                          min_points_per_centroid=1, verbose=False)
    kmeans.train(vectors)
    _, labels = kmeans.index.search(vectors, 1)
    return labels.ravel().astype(np.int64)


def margin_bin_edges(margins: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` equal-width bins over the observed margin range (``bins + 1`` edges)."""
    margins = np.asarray(margins, dtype=np.float64)
    low, high = (float(margins.min()), float(margins.max())) if margins.size else (0.0, 1.0)
    if high <= low:
        high = low + 1e-6
    return np.linspace(low, high, bins + 1)


def assign_bins(margins: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin number (0 .. len(edges) - 2) of every margin; the top edge belongs to the last bin."""
    return np.clip(np.searchsorted(edges, margins, side="right") - 1, 0, len(edges) - 2)


def histogram_kl_to_uniform(margins: np.ndarray, edges: np.ndarray) -> float:
    """KL(p || uniform) of the margin histogram over ``edges``: 0 when perfectly flat."""
    counts = np.bincount(assign_bins(np.asarray(margins), edges), minlength=len(edges) - 1).astype(np.float64)
    p = counts / counts.sum()
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log(p[nonzero] * len(p))))


class TASBalancedBatchSampler(DefaultBatchSampler):
    """Batches of dataset rows (one (query, positive, negative) triple each) for TAS-Balanced training.

    Per epoch, every query appears once: the queries of each cluster are shuffled and cut into batches
    of ``batch_size`` queries (every batch from one cluster), and each query contributes one row chosen
    margin-balanced (uniform bin, then uniform row in it). Batch order is shuffled across clusters.
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator=None, seed: int = 0, *, row_queries: Sequence[str], query_clusters: dict[str, int],
                 row_margins: Sequence[float], bins: int = 10) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if len(row_queries) != len(dataset) or len(row_margins) != len(dataset):
            raise ValueError(f"sampler metadata covers {len(row_queries)} rows, the dataset has {len(dataset)}")
        missing = {q for q in row_queries if q not in query_clusters}
        if missing:
            raise ValueError(f"{len(missing)} queries have no cluster (first: {sorted(missing)[0]})")
        self.edges = margin_bin_edges(np.asarray(row_margins), bins)
        row_bins = assign_bins(np.asarray(row_margins, dtype=np.float64), self.edges)
        self.rows_by_query_bin: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for row, (query, bin_id) in enumerate(zip(row_queries, row_bins, strict=True)):
            self.rows_by_query_bin[query][int(bin_id)].append(row)
        self.queries_by_cluster: dict[int, list[str]] = defaultdict(list)
        for query in self.rows_by_query_bin:  # insertion order: deterministic
            self.queries_by_cluster[int(query_clusters[query])].append(query)

    def _cluster_batches(self) -> list[list[str]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        batches = []
        for cluster in sorted(self.queries_by_cluster):
            queries = list(self.queries_by_cluster[cluster])
            rng.shuffle(queries)
            for start in range(0, len(queries), self.batch_size):
                chunk = queries[start:start + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch, 1))
        for batch in self._cluster_batches():
            rows = []
            for query in batch:
                by_bin = self.rows_by_query_bin[query]
                candidates = by_bin[sorted(by_bin)[rng.integers(len(by_bin))]]
                rows.append(candidates[rng.integers(len(candidates))])
            yield rows

    def __len__(self) -> int:
        full, remainder = 0, 0
        for queries in self.queries_by_cluster.values():
            full += len(queries) // self.batch_size
            remainder += int(len(queries) % self.batch_size > 0)
        return full + (0 if self.drop_last else remainder)


class TASBalancedSamplerFactory:
    """What ``SentenceTransformerTrainingArguments(batch_sampler=...)`` calls with the dataset; a module-level
    class (not a closure) because the trainer pickles its arguments into every checkpoint."""

    def __init__(self, row_queries: Sequence[str], query_clusters: dict[str, int], row_margins: Sequence[float],
                 bins: int = 10) -> None:
        self.row_queries = list(row_queries)
        self.query_clusters = dict(query_clusters)
        self.row_margins = list(row_margins)
        self.bins = bins

    def __call__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None,
                 seed=0) -> TASBalancedBatchSampler:
        return TASBalancedBatchSampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed,
                                       row_queries=self.row_queries, query_clusters=self.query_clusters,
                                       row_margins=self.row_margins, bins=self.bins)


def tas_balanced_sampler(row_queries: Sequence[str], query_clusters: dict[str, int], row_margins: Sequence[float],
                         bins: int = 10) -> Callable[..., TASBalancedBatchSampler]:
    """The batch-sampler factory for the sentence-transformers trainer."""
    return TASBalancedSamplerFactory(row_queries, query_clusters, row_margins, bins)


def random_pair_sample(row_queries: Sequence[str], seed: int = 0) -> list[int]:
    """Baseline for the balance statistic: one uniformly random row per query (what plain sampling does)."""
    rng = np.random.default_rng(seed)
    by_query: dict[str, list[int]] = defaultdict(list)
    for row, query in enumerate(row_queries):
        by_query[query].append(row)
    return [rows[rng.integers(len(rows))] for rows in by_query.values()]
