"""Per-query score normalization and weighted aggregation of a heterogeneous teacher ensemble.

Geng et al. (2024), "Towards Competitive Search Relevance For Inference-Free Learned Sparse
Retrievers", §3.2: teachers' scores live on different scales (cosine, SPLADE dot products, BM25), so
each teacher's scores over one query's candidate list are min-max normalized,
``s'(q, d) = (s(q, d) - min_d' s(q, d')) / (max_d' s(q, d') - min_d' s(q, d'))``, and the ensemble score
is their weighted mean ``S(q, d) = sum_t w_t s'_t(q, d) / sum_t w_t``: the paper's weighted sum (eq. 3-4, weights
configurable here) divided by the total weight, which keeps ``S`` in [0, 1] like each ``s'`` and its margins
``S(q, p) - S(q, n)`` in [-1, 1], the range of a cosine student's margins. The ``ensemble`` column of the
training data is this ``S``, the score the students distil (times their ``margin_scale``). The z-score variant
``(s - mean) / std`` is offered as an option.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Normalization = Literal["minmax", "zscore", "none"]


def _group_bounds(query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group index of every row and the number of groups (rows of one query need not be contiguous)."""
    _, group = np.unique(query_ids, return_inverse=True)
    return group, int(group.max()) + 1 if len(group) else 0


def normalize_per_query(scores: np.ndarray, query_ids: np.ndarray, method: Normalization) -> np.ndarray:
    """Normalize ``scores`` within each query's rows; a query whose scores are all equal maps to 0."""
    scores = np.asarray(scores, dtype=np.float64)
    if method == "none" or scores.size == 0:
        return scores.astype(np.float32)
    group, n = _group_bounds(np.asarray(query_ids))
    if method == "minmax":
        low = np.full(n, np.inf)
        high = np.full(n, -np.inf)
        np.minimum.at(low, group, scores)
        np.maximum.at(high, group, scores)
        span = high - low
        out = np.where(span[group] > 0, (scores - low[group]) / np.where(span > 0, span, 1)[group], 0.0)
    elif method == "zscore":
        count = np.bincount(group, minlength=n)
        mean = np.bincount(group, weights=scores, minlength=n) / count
        var = np.bincount(group, weights=(scores - mean[group]) ** 2, minlength=n) / count
        std = np.sqrt(var)
        out = np.where(std[group] > 0, (scores - mean[group]) / np.where(std > 0, std, 1)[group], 0.0)
    else:
        raise ValueError(f"unknown normalization {method!r}")
    return out.astype(np.float32)


def aggregate(normalized: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The weighted mean ``sum_t w_t s'_t / sum_t w_t`` over the teachers named in ``weights`` (all must have
    scores; the weights must sum above zero)."""
    missing = [name for name in weights if name not in normalized]
    if missing:
        raise ValueError(f"no scores for teacher {missing[0]!r}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("ensemble weights must sum to a positive number")
    weighted = sum(np.asarray(normalized[name], dtype=np.float64) * w for name, w in weights.items())
    return (weighted / total).astype(np.float32)


def ensemble_columns(pairs: dict[str, np.ndarray], kept: np.ndarray, raw_scores: dict[str, np.ndarray],
                     normalization: Normalization, weights: dict[str, float]) -> dict[str, np.ndarray]:
    """The kept pairs with every teacher's raw and per-query normalized score and the ensemble score.

    Geng et al. (2024, §3.2): each teacher's scores ``s_t`` over one query's kept pairs are normalized
    (``normalize_per_query``; min-max ``s'_t = (s_t - min) / (max - min)`` by default) and the ensemble score is
    ``S(q, d) = sum_t w_t s'_t(q, d) / sum_t w_t`` (``aggregate``). ``pairs`` holds the columns query_id, doc_id
    and positive of every mined pair, ``kept`` the guide filter's mask over them and ``raw_scores`` each teacher's
    score of every mined pair (teacher name -> array in row order).

    Returns the columns query_id, doc_id, positive, then ``raw_<teacher>`` and ``norm_<teacher>`` for each
    teacher in the order of ``raw_scores``, then ``ensemble``.

    Example::

        columns = ensemble_columns(pairs, kept, {"minilm": minilm_scores, "bm25": bm25_scores}, "minmax",
                                   {"minilm": 0.5, "bm25": 0.5})
        columns["ensemble"]
    """
    query_ids = pairs["query_id"][kept]
    columns = {"query_id": query_ids, "doc_id": pairs["doc_id"][kept], "positive": pairs["positive"][kept]}
    normalized = {}
    for name, scores in raw_scores.items():
        raw = scores[kept]
        normalized[name] = normalize_per_query(raw, query_ids, normalization)
        columns[f"raw_{name}"] = raw
        columns[f"norm_{name}"] = normalized[name]
    columns["ensemble"] = aggregate(normalized, weights)
    return columns
