"""Reranking evaluation: teacher scores of a first-stage candidate list turned into runs and measured.

``rerank_study`` measures each teacher alone and their ensemble as rerankers of BM25's top-k: the check that
the heterogeneous teacher ensemble of Geng et al. (2024), "Towards Competitive Search Relevance For
Inference-Free Learned Sparse Retrievers" (§3.2), ranks better than its members. Each teacher's scores are
normalized per query (``stillhouse.retrievers.ensemble.normalize_per_query``) and combined as the weighted mean
(``stillhouse.retrievers.ensemble.aggregate``; the paper's weighted sum over the total weight, the same ranking)

    S(q, d) = sum_t w_t s'_t(q, d) / sum_t w_t,

and a grid of weightings (``weight_grid``: each teacher 0, 0.5, 1 or 2, up to scale) is swept, best first.

Example::

    columns, record = rerank_study(qrels, pairs, {"minilm": minilm_scores, "bm25": pairs["bm25"]},
                                   {"minilm": "dense", "bm25": "bm25"}, {"minilm": 1.0, "bm25": 0.5},
                                   ["NDCG@10"], depth=100)
    record["rows"][0]        # {"reranker": "BM25 top-100 (first stage)", "metrics": {"NDCG@10": ...}}
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from stillhouse.eval.metrics import evaluate_run
from stillhouse.retrievers.ensemble import Normalization, aggregate, normalize_per_query
from stillhouse.retrievers.runs import Run


def run_from_scores(query_ids: Sequence[str], doc_ids: Sequence[str], scores: Sequence[float]) -> Run:
    run: Run = {}
    for query_id, doc_id, score in zip(query_ids, doc_ids, scores, strict=True):
        run.setdefault(str(query_id), {})[str(doc_id)] = float(score)
    return run


def weight_grid(names: Sequence[str], values: Sequence[float] = (0.0, 0.5, 1.0, 2.0)) -> list[dict[str, float]]:
    """Every weighting of ``names`` over ``values``, up to scale (proportional vectors are listed once)."""
    seen, grid = set(), []
    for combo in itertools.product(values, repeat=len(names)):
        total = sum(combo)
        if total <= 0:
            continue
        key = tuple(round(v / total, 6) for v in combo)
        if key not in seen:
            seen.add(key)
            grid.append(dict(zip(names, combo, strict=True)))
    return grid


def sweep_weights(qrels: dict[str, dict[str, int]], query_ids: np.ndarray, doc_ids: np.ndarray,
                  normalized: dict[str, np.ndarray], metric: str,
                  grid: list[dict[str, float]], ignore_identical_ids: bool = False
                  ) -> list[tuple[dict[str, float], float]]:
    """``metric`` of the ensemble under every weighting in ``grid``, best first."""
    results = []
    for weights in grid:
        mean, _ = evaluate_run(qrels, run_from_scores(query_ids, doc_ids, aggregate(normalized, weights)), [metric],
                              ignore_identical_ids)
        results.append((weights, mean[metric]))
    return sorted(results, key=lambda item: -item[1])


def weights_label(weights: Mapping[str, float]) -> str:
    """``"minilm=1, bm25=0.5"``: a weighting as the reports print it."""
    return ", ".join(f"{k}={v:g}" for k, v in weights.items())


def weights_chosen_on_train(records: list[dict]) -> dict[str, float]:
    """The best weighting of the first train split's ``rerank_study`` record with a grid ({} when none)."""
    train = [r for r in records if r["split"] == "train" and r["grid"]]
    return dict(train[0]["grid"][0]["weights"]) if train else {}


def rerank_study(qrels: dict[str, dict[str, int]], pairs: Mapping[str, np.ndarray], raw: dict[str, np.ndarray],
                 kinds: Mapping[str, str], weights: dict[str, float], metrics: list[str], depth: int,
                 normalization: Normalization = "minmax", ignore_identical_ids: bool = False
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """BM25's top-``depth`` (``pairs``: ``query_id``, ``doc_id`` and ``bm25`` per candidate pair), each teacher's
    ``raw`` scores of the same pairs and their normalized ensemble under ``weights``, measured as rerankers.

    Returns the per-pair table (``query_id``, ``doc_id``, ``raw_<teacher>``, ``norm_<teacher>``, ``ensemble``, for
    re-weighting later) and the record ``{queries, rows: [{reranker, metrics}], grid_metric, grid: [{weights,
    value}]}``: one row for BM25, one per teacher (labeled with its ``kinds`` entry) and one for the ensemble, and
    the ensemble's first metric under every weighting of ``weight_grid``, best first."""
    query_ids, doc_ids = pairs["query_id"], pairs["doc_id"]

    def evaluate(scores) -> dict[str, float]:
        return evaluate_run(qrels, run_from_scores(query_ids, doc_ids, scores), metrics, ignore_identical_ids)[0]

    rows = [{"reranker": f"BM25 top-{depth} (first stage)", "metrics": evaluate(pairs["bm25"])}]
    columns: dict = {"query_id": query_ids, "doc_id": doc_ids}
    normalized = {}
    for name, scores in raw.items():
        normalized[name] = normalize_per_query(scores, query_ids, normalization)
        columns[f"raw_{name}"], columns[f"norm_{name}"] = scores, normalized[name]
        rows.append({"reranker": f"{name} ({kinds[name]})", "metrics": evaluate(scores)})
    ensemble = aggregate(normalized, weights)
    columns["ensemble"] = ensemble
    rows.append({"reranker": "ensemble " + weights_label(weights), "metrics": evaluate(ensemble)})
    grid = sweep_weights(qrels, query_ids, doc_ids, normalized, metrics[0], weight_grid(list(raw)),
                         ignore_identical_ids)
    return columns, {"queries": len(qrels), "rows": rows, "grid_metric": metrics[0],
                     "grid": [{"weights": w, "value": v} for w, v in grid]}
