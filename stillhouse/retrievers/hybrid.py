"""Hybrid search: several retrievers' top-k lists fused by a weighted mean of per-query normalized scores.

The idea is the convex combination of lexical and dense scores studied by Bruch et al. (2023), "An Analysis of
Fusion Functions for Hybrid Retrieval" (ACM TOIS): each member m returns its top-k for query q; its scores are
min-max normalized over that list, exactly as the teacher ensemble normalizes (``stillhouse.retrievers.ensemble``),

    s'_m(q, d) = (s_m(q, d) - min_k s_m(q, .)) / (max_k s_m(q, .) - min_k s_m(q, .)),

a document outside member m's top-k gets that member's floor (the lowest normalized score of its list: 0 for
min-max), and the fused score is the weighted mean

    S(q, d) = sum_m w_m s'_m(q, d) / sum_m w_m.

OpenSearch's ``normalization-processor`` (min_max, arithmetic_mean) and Elasticsearch's ``linear`` retriever with
the ``minmax`` normalizer compute nearly this; they differ at the edges (OpenSearch maps a list's lowest score to
0.001 and leaves a sub-query that missed a document out of that document's mean; Elasticsearch keeps the raw
score of a list whose scores are all equal), so an exported hybrid ranks close to, not exactly as, the pipeline.

The weights need no test labels: ``select_weights`` searches a coarse simplex grid (every weight a multiple of
``step``, summing to 1) for the point that maximizes a metric over a few judged queries, e.g. the few-shot
examples a run already spends. Ties go to the point nearest equal weights, the prior a user would start from.

Example::

    runs = {"dense": dense_run, "sparse": sparse_run}          # {query id: {doc id: score}}
    fused, parts = fuse_runs(runs, {"dense": 0.6, "sparse": 0.4}, depth=100)
    choice = select_weights(runs, qrels, step=0.1)              # -> WeightChoice(weights={...}, score=...)
    record = weights_record(runs, qrels, pairs, "examples", "scifact", "train")   # what weights.json holds
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from stillhouse.retrievers.ensemble import Normalization, aggregate, normalize_per_query
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.runs import Run

log = logging.getLogger(__name__)

MIN_SELECTION_QUERIES = 8  # fewer labeled queries than this choose weights by noise: refused


def check_grid_step(step: float) -> int:
    """The number of grid units in 1 (``1 / step``); ValueError unless ``step`` divides 1."""
    units = round(1 / step)
    if units < 1 or abs(units * step - 1) > 1e-9:
        raise ValueError(f"grid step {step} must divide 1 (e.g. 0.1, 0.125, 0.25)")
    return units


def normalized_member(run: Run, method: Normalization = "minmax") -> Run:
    """One member's run with every query's scores normalized over its own list (``normalize_per_query``)."""
    query_ids = np.array([q for q, hits in run.items() for _ in hits], dtype=object)
    doc_ids = [d for hits in run.values() for d in hits]
    scores = np.array([s for hits in run.values() for s in hits.values()], dtype=np.float64)
    normalized = normalize_per_query(scores, query_ids, method) if len(scores) else np.zeros(0, dtype=np.float32)
    out: Run = {q: {} for q in run}
    for q, d, s in zip(query_ids, doc_ids, normalized, strict=True):
        out[q][d] = float(s)
    return out


def fuse_runs(runs: dict[str, Run], weights: dict[str, float], depth: int = 100,
              method: Normalization = "minmax") -> tuple[Run, dict[str, Run]]:
    """The fused run (each query's top ``depth`` by ``S(q, d)``) and each member's normalized scores over the
    fused candidates (a candidate outside the member's list holds the member's floor for that query).

    ``weights`` names every member that counts; a member with weight 0 is still reported in the parts."""
    missing = [name for name in weights if name not in runs]
    if missing:
        raise ValueError(f"no run for hybrid member {missing[0]!r}")
    normalized = {name: normalized_member(run, method) for name, run in runs.items()}
    query_ids = list(dict.fromkeys(q for run in runs.values() for q in run))
    fused: Run = {}
    parts: dict[str, Run] = {name: {} for name in runs}
    for q in query_ids:
        candidates = list(dict.fromkeys(d for run in normalized.values() for d in run.get(q, {})))
        columns = {}
        for name, run in normalized.items():
            hits = run.get(q, {})
            floor = min(hits.values()) if hits else 0.0
            columns[name] = np.array([hits.get(d, floor) for d in candidates], dtype=np.float32)
        scores = aggregate(columns, weights)  # the weighted mean; refuses weights that do not sum above zero
        order = np.lexsort((np.array(candidates, dtype=object), -scores))[:depth] if candidates else []
        fused[q] = {candidates[i]: float(scores[i]) for i in order}
        for name in runs:
            parts[name][q] = {candidates[i]: float(columns[name][i]) for i in order}
    return fused, parts


def simplex_grid(members: list[str], step: float) -> list[dict[str, float]]:
    """Every weight vector over ``members`` whose entries are multiples of ``step`` and sum to 1."""
    units = check_grid_step(step)
    points = []
    for combo in itertools.product(range(units + 1), repeat=len(members)):
        if sum(combo) == units:
            points.append({m: c / units for m, c in zip(members, combo, strict=True)})
    return points


@dataclass
class WeightChoice:
    """The selected weights, their score, and every grid point's score (for the report)."""

    weights: dict[str, float]
    score: float
    metric: str
    queries: int
    grid: list[dict] = field(default_factory=list)


def select_weights(runs: dict[str, Run], qrels: dict[str, dict[str, int]], step: float = 0.1,
                   metric: str = "NDCG@10", depth: int = 100, method: Normalization = "minmax",
                   ignore_identical_ids: bool = False) -> WeightChoice:
    """The simplex-grid point that maximizes the mean ``metric`` over the queries of ``qrels`` (ties: the point
    nearest equal weights, then the first in grid order)."""
    from stillhouse.eval.metrics import evaluate_run

    members = list(runs)
    judged = {name: {q: hits for q, hits in run.items() if q in qrels} for name, run in runs.items()}
    uniform = np.full(len(members), 1 / len(members))
    grid = []
    for point in simplex_grid(members, step):
        fused, _ = fuse_runs(judged, {m: w for m, w in point.items() if w > 0}, depth, method)
        mean, _ = evaluate_run(qrels, fused, [metric], ignore_identical_ids)
        grid.append({"weights": point, "score": mean[metric]})
    best = max(grid, key=lambda g: (round(g["score"], 10),
                                    -float(np.linalg.norm(np.array(list(g["weights"].values())) - uniform))))
    return WeightChoice(dict(best["weights"]), best["score"], metric, len(qrels), grid)


def weights_record(runs: dict[str, Run], qrels: dict[str, dict[str, int]], pairs: list[dict], source: str,
                   dataset: str, split: str, step: float = 0.1, metric: str = "NDCG@10", depth: int = 100,
                   ignore_identical_ids: bool = False) -> dict:
    """``select_weights`` on the selection queries of ``qrels`` (of ``dataset``'s ``split``), logged, as the
    record a hybrid's ``weights.json`` holds: ``{weights, score, metric, queries, source, dataset, split, pairs,
    grid}``.

    ``source`` names where the labels come from (``examples``: the labeled pairs a run's generation already spends,
    listed in ``pairs`` as ``{query_id, doc_id, query, role}``; ``split``: a judged split, ``pairs`` empty). Fewer
    than ``MIN_SELECTION_QUERIES`` judged queries raise ``UserError``: weights chosen on so few are noise."""
    where = f"{dataset} {split}"
    if len(qrels) < MIN_SELECTION_QUERIES:
        raise UserError(f"hybrid weights: {source} gives {len(qrels)} labeled queries on {where}, "
                        f"fewer than {MIN_SELECTION_QUERIES}; raise [generation] prompt_examples/tune_pairs/"
                        "filter_eval_pairs, or give the weights as numbers")
    choice = select_weights(runs, qrels, step, metric, depth, ignore_identical_ids=ignore_identical_ids)
    log.info("hybrid weights from %d %s of %s: %s (%s %.4f)", len(qrels),
             "labeled example pairs" if pairs else "judged queries", where,
             ", ".join(f"{m} {w:.2f}" for m, w in choice.weights.items()), choice.metric, choice.score)
    if pairs:
        log.info("hybrid weights: the %d pairs (query id -> document id): %s", len(pairs),
                 ", ".join(f"{p['query_id']}->{p['doc_id']}" for p in pairs))
    return {"weights": choice.weights, "score": choice.score, "metric": choice.metric, "queries": choice.queries,
            "source": source, "dataset": dataset, "split": split, "pairs": pairs, "grid": choice.grid}


class HybridSearcher:
    """Live hybrid search: each member searcher's top-``depth`` fused by ``fuse_runs`` with fixed weights.

    A member is anything with ``search(queries, k) -> Run`` (``Bm25Searcher``, ``DenseSearcher``, an
    ``ImpactSearcher`` wrapped to drop its stats). ``search`` returns the fused top-``k`` and, per member, the
    normalized score each returned document got from it.

    Example::

        hybrid = HybridSearcher({"dense": dense, "sparse": sparse}, {"dense": 0.6, "sparse": 0.4}, depth=100)
        fused, parts = hybrid.search({"q1": "vitamin d and infections"}, k=10)
    """

    def __init__(self, members: dict, weights: dict[str, float], depth: int = 100) -> None:
        self.members, self.weights, self.depth = members, weights, depth

    def search(self, queries: dict[str, str], k: int) -> tuple[Run, dict[str, Run]]:
        runs = {name: member.search(queries, self.depth) for name, member in self.members.items()}
        fused, parts = fuse_runs(runs, {m: w for m, w in self.weights.items() if w > 0}, self.depth)
        top = {q: dict(list(hits.items())[:k]) for q, hits in fused.items()}
        return top, {name: {q: {d: part[q][d] for d in top[q]} for q in top} for name, part in parts.items()}

