"""Retrieval metrics through ir_measures (pytrec_eval underneath); no home-made metric code.

Names in configs and reports are BEIR's: NDCG@10, Recall@100, MRR@10.
"""

from __future__ import annotations

import ir_measures

from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.runs import Run

# Report name -> ir_measures measure string.
MEASURE_NAMES = {
    "NDCG@10": "nDCG@10",
    "Recall@100": "R@100",
    "MRR@10": "RR@10",
    "MAP@100": "AP@100",
    "Recall@10": "R@10",
    "Recall@1000": "R@1000",
    "P@10": "P@10",
}
DEFAULT_METRICS = ("NDCG@10", "Recall@100", "MRR@10")
# The BEIR sets whose queries are documents of the corpus, under the same ids: a hit on the query's own id is the
# query itself. BEIR's EvaluateRetrieval drops such hits on every data set by default; stillhouse drops them only
# here (as MTEB does per task), since elsewhere ids are numbered independently (Cranfield has a judged relevant
# pair with query id = document id) and dropping would remove relevant documents. Scores on other sets can
# therefore sit slightly above BEIR-tool numbers.
IDENTICAL_ID_DATASETS = ("arguana", "quora")


def ignores_identical_ids(dataset: str, configured: list[str] | None = None) -> bool:
    """Whether ``dataset`` drops a retrieved document whose id is the query's: the configured list
    (``[data] ignore_identical_ids``), else BEIR's sets that need it."""
    return dataset in (IDENTICAL_ID_DATASETS if configured is None else configured)


def parse_metrics(names: list[str] | tuple[str, ...]) -> dict[str, object]:
    unknown = [n for n in names if n not in MEASURE_NAMES]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(MEASURE_NAMES)}")
    return {name: ir_measures.parse_measure(MEASURE_NAMES[name]) for name in names}


def evaluate_run(qrels: dict[str, dict[str, int]], run: Run, names: list[str] | tuple[str, ...] = DEFAULT_METRICS,
                 ignore_identical_ids: bool = False) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean of each metric over the judged queries, and the per-query values.

    Judged queries absent from the run score 0 (BEIR averages over the queries it ran; stillhouse
    always runs every judged query, so the two agree). With ``ignore_identical_ids`` (BEIR's rule for ArguAna
    and Quora, ``ignores_identical_ids``), a document whose id equals the query's id is not counted as retrieved.
    """
    measures = parse_metrics(names)
    if ignore_identical_ids:
        run = {qid: {d: s for d, s in hits.items() if d != qid} for qid, hits in run.items()}
    by_measure = {measure: name for name, measure in measures.items()}
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(names, 0.0) for qid in qrels}
    for metric in ir_measures.iter_calc(list(measures.values()), qrels, run):
        if metric.query_id in per_query:
            per_query[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    mean = {name: sum(q[name] for q in per_query.values()) / max(len(per_query), 1) for name in names}
    return mean, per_query
