"""Reranking evaluation: teacher scores of a first-stage candidate list turned into runs and measured."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from stillhouse.eval.metrics import evaluate_run
from stillhouse.retrievers.ensemble import aggregate
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
