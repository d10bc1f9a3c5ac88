"""TAS-Balanced: topic-aware, margin-balanced batch sampling (Hofstätter et al., 2021, "Efficiently
Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling", §3).

1. Topic clusters: the training queries are clustered once (k-means on base-model query embeddings,
   here FAISS spherical k-means); every batch draws its queries from one cluster, so in-batch
   negatives come from the same topic.
2. Balanced margins: for each query, its (positive, negative) pairs are binned by teacher margin
   ``m = M(q, p) - M(q, n)``; the sampler first picks a bin uniformly among the query's non-empty bins,
   then a pair within it, so easy (high-margin) pairs no longer dominate.

   The bins are per query: ``h`` equal-width bins (``margin_bins``; 10 in the reference code) over that query's
   own margin range. Pair ``i`` of query ``q`` falls in bin ``floor(h * (m_i - min_q) / (max_q - min_q))``,
   the query's largest margin in the last bin. This is the authors' reference implementation
   (github.com/sebastian-hofstaetter/matchmaker, ``matchmaker/dataloaders/tas_balanced_training_loader.py``,
   ``TASBalancedDatasetLoader.load_data``): for each query with at least two pairs,
   ``np.digitize(margins, np.arange(min, max, (max - min) / 10))`` over that query's margins, then at
   sampling time a uniformly random bin, redrawn while empty, and a uniformly random pair in it. A query
   whose margins are all equal, or that has a single pair, has one bin here (the reference code drops
   single-pair queries and cannot bin equal margins). Bins over one global range would put a query whose
   margins span a narrow band into one or two bins, which balances nothing for it.

sentence-transformers has no such sampler; ``TASBalancedBatchSampler`` subclasses its
``DefaultBatchSampler`` and plugs into ``SentenceTransformerTrainingArguments(batch_sampler=...)``
through ``tas_balanced_sampler``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from sentence_transformers.base.sampler import DefaultBatchSampler

from stillhouse.retrievers.errors import UserError


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
    """``bins`` equal-width bins over the range of ``margins`` (``bins + 1`` edges). Given one query's margins,
    these are its TAS-Balanced bins; ``per_query_margin_bins`` bins every query at once."""
    margins = np.asarray(margins, dtype=np.float64)
    low, high = (float(margins.min()), float(margins.max())) if margins.size else (0.0, 1.0)
    if high <= low:
        high = low + 1e-6
    return np.linspace(low, high, bins + 1)


def assign_bins(margins: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin number (0 .. len(edges) - 2) of every margin; the top edge belongs to the last bin."""
    return np.clip(np.searchsorted(edges, margins, side="right") - 1, 0, len(edges) - 2)


def query_margin_positions(row_queries: Sequence[str], row_margins: Sequence[float]) -> np.ndarray:
    """Every row's margin min-max scaled within its query, ``(m - min_q) / (max_q - min_q)`` in [0, 1]
    (0 for a query whose margins are all equal): equal-width bins of this position over [0, 1] are
    equal-width bins over each query's own margin range."""
    margins = np.asarray(row_margins, dtype=np.float64)
    _, query_index = np.unique(np.asarray(row_queries, dtype=object).astype(str), return_inverse=True)
    low = np.full(query_index.max(initial=-1) + 1, np.inf)
    high = np.full_like(low, -np.inf)
    np.minimum.at(low, query_index, margins)
    np.maximum.at(high, query_index, margins)
    span = (high - low)[query_index]
    return np.where(span > 0, (margins - low[query_index]) / np.where(span > 0, span, 1.0), 0.0)


def per_query_margin_bins(row_queries: Sequence[str], row_margins: Sequence[float], bins: int) -> np.ndarray:
    """TAS-Balanced's bin (0 .. ``bins`` - 1) of every row: ``bins`` equal-width bins over its own query's
    margin range, the query's largest margin in the last bin (Hofstätter et al., 2021; see the module docstring)."""
    return assign_bins(query_margin_positions(row_queries, row_margins), position_bin_edges(bins))


def position_bin_edges(bins: int) -> np.ndarray:
    """The ``bins + 1`` edges of equal-width bins over a query's scaled margin range [0, 1]."""
    return np.linspace(0.0, 1.0, bins + 1)


def histogram_kl_to_uniform(margins: np.ndarray, edges: np.ndarray) -> float:
    """KL(p || uniform) of the histogram of ``margins`` (or of margins scaled within their query, as the sampler's
    ``row_positions``) over ``edges``: 0 when perfectly flat."""
    counts = np.bincount(assign_bins(np.asarray(margins), edges), minlength=len(edges) - 1).astype(np.float64)
    p = counts / counts.sum()
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log(p[nonzero] * len(p))))


class TASBalancedBatchSampler(DefaultBatchSampler):
    """Batches of dataset rows (one (query, positive, negative) triple each) for TAS-Balanced training.

    Per epoch, every query appears once: the queries of each cluster are shuffled and cut into batches
    of ``batch_size`` queries (every batch from one cluster), and each query contributes one row chosen
    margin-balanced (uniform among its non-empty bins, then uniform row in it). Batch order is shuffled
    across clusters.

    Bins are per query (``per_query_margin_bins``). ``row_positions`` holds every row's margin scaled to
    [0, 1] within its query and ``edges`` the bin edges on that scale, so a histogram of sampled rows'
    positions over ``edges`` counts exactly the bins the sampler balances.
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
        self.edges = position_bin_edges(bins)
        self.row_positions = query_margin_positions(row_queries, row_margins)
        row_bins = assign_bins(self.row_positions, self.edges)
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


def build_triples(table: dict[str, np.ndarray]) -> dict[str, list]:
    """Every (positive, kept negative) pair of each query with its ensemble margin ``S(q,p) - S(q,n)``."""
    out: dict[str, list] = {"query_id": [], "positive_id": [], "negative_id": [], "margin": []}
    by_query: dict[str, tuple[list, list]] = {}
    for q, d, pos, score in zip(table["query_id"], table["doc_id"], table["positive"], table["ensemble"],
                                strict=True):
        by_query.setdefault(q, ([], []))[0 if pos else 1].append((d, float(score)))
    for q, (positives, negatives) in by_query.items():
        for p, p_score in positives:
            for n, n_score in negatives:
                out["query_id"].append(q)
                out["positive_id"].append(p)
                out["negative_id"].append(n)
                out["margin"].append(p_score - n_score)
    return out


def measure_balance(sampler, triples: dict[str, list], epochs: int, seed: int) -> dict:
    """KL to uniform of the sampled margins' histogram, TAS-Balanced vs one random pair per query."""
    margins = sampler.row_positions  # each margin scaled within its query's range: the scale the bins cut
    tas_rows, random_rows, single_cluster = [], [], 0
    batches = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in sampler:
            tas_rows += batch
            batches += 1
            single_cluster += len({triples["cluster"][r] for r in batch}) == 1
        random_rows += random_pair_sample(triples["query_id"], seed + epoch)
    edges = sampler.edges
    bins = len(edges) - 1
    return {"kl_tas": histogram_kl_to_uniform(margins[tas_rows], edges),
            "kl_random": histogram_kl_to_uniform(margins[random_rows], edges),
            "hist_tas": np.bincount(assign_bins(margins[tas_rows], edges), minlength=bins).tolist(),
            "hist_random": np.bincount(assign_bins(margins[random_rows], edges), minlength=bins).tolist(),
            "edges": edges.tolist(), "batches": batches, "single_cluster_batches": single_cluster,
            "epochs": epochs, "triples": len(margins)}


def tas_triples(table: dict[str, np.ndarray], queries: dict[str, str], clusters: dict[str, int], bins: int = 10,
                seed: int = 0, epochs: int = 5) -> tuple[dict[str, list], dict]:
    """TAS-Balanced training triples from the ensemble-scored pairs, and how balanced the sampler makes them.

    Every (positive ``p``, kept negative ``n``) pair of a query becomes a triple with the ensemble margin
    ``m = S(q, p) - S(q, n)`` (``build_triples``), its query text and its query's topic cluster. The sampler
    (Hofstätter et al., 2021, §3; ``tas_balanced_sampler`` with ``bins`` per-query margin bins, batches of 32
    queries, ``seed``) is then run for ``epochs`` epochs and its margins' histogram compared with one random pair
    per query (``measure_balance``): ``KL(p || uniform)`` of each, and how many batches come from a single cluster.

    ``table`` holds the columns query_id, doc_id, positive and ensemble of the kept pairs
    (``stillhouse.retrievers.ensemble.ensemble_columns``); ``clusters`` maps each query id to its cluster
    (``cluster_queries``). Raises ``UserError`` when no query has both a positive and a kept negative.

    Returns the triples' columns (query_id, positive_id, negative_id, margin, query, cluster) and the balance
    record (kl_tas, kl_random, the two histograms, edges, batch counts, epochs, triples).

    Example::

        triples, balance = tas_triples(ensemble_table, {"q1": "vitamin d"}, {"q1": 0}, bins=10, seed=13)
        balance["kl_tas"] < balance["kl_random"]
    """
    triples = build_triples(table)
    if not triples["query_id"]:
        raise UserError("training data: no (positive, negative) pair survived mining and the guide filter; "
                        "raise bm25_candidates / dense_candidates or the guide margin")
    triples["query"] = [queries[q] for q in triples["query_id"]]
    triples["cluster"] = [clusters[q] for q in triples["query_id"]]
    sampler = tas_balanced_sampler(triples["query_id"], clusters, triples["margin"], bins)(
        list(range(len(triples["query_id"]))), batch_size=32, drop_last=False, seed=seed)
    return triples, measure_balance(sampler, triples, epochs, seed)
