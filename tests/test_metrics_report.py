"""Metrics come from ir_measures/pytrec_eval; the report writes a table, JSON and real PNGs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from stillhouse.eval.metrics import evaluate_run
from stillhouse.eval.report import ResultRow, write_report
from stillhouse.retrievers.errors import UserError


def test_metric_values_match_their_definitions() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d9": 1, "d8": 1}}
    run = {"q1": {"d0": 3.0, "d1": 2.0}, "q2": {"d9": 5.0, "d7": 4.0}}
    mean, per_query = evaluate_run(qrels, run, ["NDCG@10", "Recall@100", "MRR@10"])
    assert per_query["q1"]["NDCG@10"] == pytest.approx(1 / math.log2(3))
    assert per_query["q1"]["MRR@10"] == pytest.approx(0.5)
    assert per_query["q2"]["Recall@100"] == pytest.approx(0.5)
    assert per_query["q2"]["NDCG@10"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert mean["MRR@10"] == pytest.approx(0.75)


def test_unjudged_run_queries_are_ignored_and_missing_ones_score_zero() -> None:
    mean, per_query = evaluate_run({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}, "zz": {"d1": 1.0}},
                                   ["NDCG@10"])
    assert set(per_query) == {"q1", "q2"} and mean["NDCG@10"] == pytest.approx(0.5)


def test_unknown_metric() -> None:
    with pytest.raises(UserError, match="unknown metric 'NDCG@11'"):
        evaluate_run({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["NDCG@11"])


def test_report_files(tmp_path: Path) -> None:
    rows = [ResultRow("scifact", "test", "bm25", {"NDCG@10": 0.66, "Recall@100": 0.9}, 300),
            ResultRow("scifact", "test", "dense", {"NDCG@10": 0.64, "Recall@100": 0.93}, 300)]
    table = write_report(rows, ["NDCG@10", "Recall@100"], tmp_path)
    assert "| bm25 | **0.6600** | 0.9000 |" in table and "| dense | 0.6400 | **0.9300** |" in table
    assert json.loads((tmp_path / "results.json").read_text())["results"][1]["retriever"] == "dense"
    with Image.open(tmp_path / "ndcg_at_10.png") as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_graded_ndcg_and_the_identical_id_rule_against_hand_computed_values() -> None:
    """Cranfield-style grades (gain = grade, trec_eval's nDCG) with a judged document whose id is the query's."""
    from stillhouse.eval.metrics import ignores_identical_ids

    qrels = {"1": {"1": 4, "d2": 1}}
    run = {"1": {"d2": 3.0, "1": 2.0, "d3": 1.0}}
    ideal = 4 + 1 / math.log2(3)
    kept, _ = evaluate_run(qrels, run, ["NDCG@10", "MRR@10"])
    assert kept["NDCG@10"] == pytest.approx((1 + 4 / math.log2(3)) / ideal)
    dropped, _ = evaluate_run(qrels, run, ["NDCG@10", "MRR@10"], ignore_identical_ids=True)
    assert dropped["NDCG@10"] == pytest.approx(1 / ideal)  # the grade-4 document no longer counts as retrieved
    assert kept["MRR@10"] == dropped["MRR@10"] == 1.0
    assert ignores_identical_ids("quora") and ignores_identical_ids("arguana")
    assert not ignores_identical_ids("cranfield") and not ignores_identical_ids("scifact")
    assert ignores_identical_ids("cranfield", ["cranfield"]) and not ignores_identical_ids("quora", [])


def test_report_evidence_is_scipys_paired_t_test_and_t_interval(tmp_path: Path) -> None:
    from scipy import stats

    from stillhouse.eval.report import add_evidence, merge_seeds

    per_query = {
        "bm25": {"q1": 0.2, "q2": 0.5, "q3": 0.9, "q4": 0.4, "q5": 0.0},
        "base": {"q1": 0.3, "q2": 0.5, "q3": 0.7, "q4": 0.6, "q5": 0.1},
        "student": {"q1": 0.9, "q2": 0.8, "q3": 1.0, "q4": 0.7, "q5": 0.6},
    }
    rows = [ResultRow("scifact", "test", name, {"NDCG@10": sum(v.values()) / 5}, 5, dict(v))
            for name, v in per_query.items()]
    add_evidence(rows, {"bm25": "bm25", "base": "base"}, "NDCG@10")
    order = sorted(per_query["bm25"])
    student = [per_query["student"][q] for q in order]
    for baseline in ("bm25", "base"):
        other = [per_query[baseline][q] for q in order]
        test = rows[2].evidence["tests"][baseline]
        assert test["p"] == pytest.approx(stats.ttest_rel(student, other).pvalue)
        assert test["diff"] == pytest.approx(sum(student) / 5 - sum(other) / 5)
    low, high = stats.t.interval(0.95, 4, loc=sum(student) / 5, scale=stats.sem(student))
    assert rows[2].evidence["ci"] == pytest.approx([low, high])
    assert "bm25" not in rows[0].evidence["tests"]  # a row is not tested against itself
    table = write_report(rows, ["NDCG@10"], tmp_path)
    base_test = rows[1].evidence["tests"]["bm25"]
    assert not base_test["significant"] and f"{base_test['diff']:+.4f}, p {base_test['p']:.2g} (n.s.)" in table
    assert "| student | **0.8000** |" in table and "NDCG@10 95% CI" in table
    # Seeds: one row, mean +- sd across seeds, tests on the per-query mean.
    seeds = [ResultRow("scifact", "test", "student", {"NDCG@10": v}, 2, {"q1": v, "q2": v / 2}, seeds=[s])
             for s, v in ((13, 0.6), (7, 0.8))]
    merged = merge_seeds(seeds)
    assert merged.metrics["NDCG@10"] == pytest.approx(0.7) and merged.seeds == [13, 7]
    assert merged.sd["NDCG@10"] == pytest.approx(stats.tstd([0.6, 0.8]))
    assert merged.per_query == pytest.approx({"q1": 0.7, "q2": 0.35})
