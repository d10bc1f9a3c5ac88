"""Hybrid search: fusion against a hand computation, weight selection, config errors, and (on the smoke DAG) the
fused students evaluated, searched from the CLI and exported to Milvus Lite's native hybrid search."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from stillhouse.retrievers.hybrid import fuse_runs, select_weights, simplex_grid
from stillhouse.retrievers.runs import read_trec_run

from .conftest import SMOKE, report_results, run_cli, write_config
from .test_training_data import one_error_line


def hand_fused(runs: dict[str, dict[str, dict[str, float]]], weights: dict[str, float]) -> dict[str, dict[str, float]]:
    """Min-max per query and member (absent: 0), weighted mean: written out with plain Python."""
    fused: dict[str, dict[str, float]] = {}
    for qid in {q for run in runs.values() for q in run}:
        normalized = {}
        for name, run in runs.items():
            hits = run.get(qid, {})
            low, high = min(hits.values(), default=0.0), max(hits.values(), default=0.0)
            normalized[name] = {d: (s - low) / (high - low) if high > low else 0.0 for d, s in hits.items()}
        docs = {d for hits in normalized.values() for d in hits}
        fused[qid] = {d: sum(w * normalized[m].get(d, 0.0) for m, w in weights.items()) / sum(weights.values())
                      for d in docs}
    return fused


def test_fusion_is_min_max_per_member_and_a_weighted_mean() -> None:
    runs = {"dense": {"q1": {"a": 0.9, "b": 0.7, "c": 0.5}, "q2": {"a": 0.2, "d": 0.1}},
            "sparse": {"q1": {"c": 12.0, "d": 3.0, "a": 6.0}, "q2": {"d": 4.0}}}
    weights = {"dense": 0.7, "sparse": 0.3}
    fused, parts = fuse_runs(runs, weights, depth=10)
    expected = hand_fused(runs, weights)
    for qid, hits in expected.items():
        assert fused[qid] == pytest.approx(hits)
    # q1: a = 0.7 * 1 + 0.3 * (6 - 3) / 9; d is missing from the dense list and gets its floor, 0.
    assert fused["q1"]["a"] == pytest.approx(0.7 + 0.3 / 3)
    assert parts["dense"]["q1"]["d"] == 0.0 and parts["sparse"]["q1"]["b"] == 0.0
    assert list(fused["q1"]) == sorted(fused["q1"], key=lambda d: -fused["q1"][d])
    # A query one member answers with a single score: that member adds 0 (equal scores normalize to 0).
    assert fused["q2"]["d"] == pytest.approx(0.7 * 0.0 + 0.3 * 0.0)
    top, _ = fuse_runs(runs, weights, depth=2)
    assert list(top["q1"]) == list(fused["q1"])[:2]


def test_simplex_grid_and_selection() -> None:
    grid = simplex_grid(["a", "b", "c"], 0.1)
    assert len(grid) == math.comb(12, 2) and all(sum(p.values()) == pytest.approx(1) for p in grid)
    with pytest.raises(ValueError, match="divide 1"):
        simplex_grid(["a", "b"], 0.3)
    # Member "good" ranks the relevant document first for every query, "bad" last: the selection must find it.
    good = {f"q{i}": {f"rel{i}": 2.0, "x": 1.0, "y": 0.5} for i in range(8)}
    bad = {f"q{i}": {f"rel{i}": 0.1, "x": 5.0, "y": 4.0} for i in range(8)}
    qrels = {f"q{i}": {f"rel{i}": 1} for i in range(8)}
    choice = select_weights({"good": good, "bad": bad}, qrels, step=0.25)
    assert choice.score == pytest.approx(1.0) and choice.queries == 8 and len(choice.grid) == 5
    # Several points reach 1.0 (all "good" and 0.75 "good"); the tie goes to the one nearest equal weights.
    best = [g["weights"] for g in choice.grid if g["score"] == pytest.approx(1.0)]
    assert {"good": 1.0, "bad": 0.0} in best and {"good": 0.75, "bad": 0.25} in best
    assert choice.weights == {"good": 0.75, "bad": 0.25}


@pytest.mark.parametrize(("hybrid", "message"), [
    ('members = ["bm25", "nope"]', "hybrid.h.members: 'nope' is not a retriever of this config (bm25, minilm)"),
    ('members = ["bm25", "dense-student"]', "hybrid.h.members: 'dense-student' needs a [dense_student] section"),
    ('members = ["bm25", "minilm"]\nweights = { bm25 = 0.0, minilm = 0.0 }',
     "hybrid.h.weights: weights must be finite, non-negative and not all zero"),
    ('members = ["bm25", "minilm"]\nweights = { bm25 = 1.0 }', "hybrid.h.weights: give a number for each member"),
    ('members = ["bm25", "minilm"]\nweights = "examples"', "hybrid.h.weights: \"examples\" needs a [generation]"),
    ('members = ["bm25", "minilm"]\nweights = "split:test"', "hybrid.h.weights: 'split:test' is the evaluation split"),
    ('members = ["bm25", "minilm"]\nweights = "best"', "hybrid.h.weights: 'best'; use \"equal\""),
])
def test_bad_hybrid_config_is_one_error_line(tmp_path: Path, slice_root: Path, hybrid: str, message: str) -> None:
    config = write_config(tmp_path / "run.toml", tmp_path / "work", slice_root, extra=f"[hybrid.h]\n{hybrid}\n")
    result = run_cli("run", str(config))
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith(f"error: {config}: ") and message in line


def test_examples_weights_with_fewer_than_eight_spent_pairs_is_one_error_line(tmp_path: Path, slice_root: Path) -> None:
    from .conftest import SMOLLM2

    extra = (f'[generation]\ngenerators = ["{SMOLLM2}"]\nprompts = ["promptagator"]\nprompt_examples = 6\n'
             '[hybrid.h]\nmembers = ["bm25", "minilm"]\nweights = "examples"\n')
    config = write_config(tmp_path / "run.toml", tmp_path / "work", slice_root, extra=extra)
    result = run_cli("run", str(config))
    assert result.returncode == 2
    assert "hybrid.h.weights: \"examples\" would choose on 6 labeled pairs (prompt), fewer than 8" in \
        one_error_line(result)


def test_split_weights_on_a_data_set_without_that_split_is_one_error_line(tmp_path: Path, slice_root: Path) -> None:
    extra = '[hybrid.h]\nmembers = ["bm25", "minilm"]\nweights = "split:dev"\n'
    config = write_config(tmp_path / "run.toml", tmp_path / "work", slice_root, extra=extra)
    result = run_cli("run", str(config))
    assert result.returncode == 2
    assert one_error_line(result).startswith("error: hybrid.h.weights: scifact has no judged 'dev' split")


# ---- the smoke DAG's hybrids -------------------------------------------------------------------------------------


def hybrid_task(workdir: Path, data_dir: Path, name: str, dataset: str = "scifact"):
    from stillhouse.pipelines.config import load_config
    from stillhouse.pipelines.dag import build_report_task, search_task

    report = build_report_task(load_config(SMOKE), workdir, data_dir)
    entry = next(e for e in report.entries if e["name"] == name and e["dataset"]["dataset"] == dataset)
    return search_task(str(workdir), dict(entry["dataset"]), dict(entry["retriever"]))


@pytest.mark.slow
def test_smoke_hybrids_are_evaluated_and_fuse_their_members_runs(smoke_run: Path, slice_root: Path) -> None:
    results = report_results(smoke_run)
    assert {"fused-students", "base-bm25"} <= set(results)
    for name in ("fused-students", "base-bm25"):
        task = hybrid_task(smoke_run, slice_root, name)
        assert task.complete()
        runs = {member: read_trec_run(search.out_dir / "run.trec") for member, search in task.searches().items()}
        weights = json.loads((task.out_dir / "hybrid.json").read_text())["weights"]
        assert sorted(weights) == sorted(runs)
        expected = hand_fused(runs, {m: w for m, w in weights.items() if w > 0})
        fused = read_trec_run(task.out_dir / "run.trec")
        assert set(fused) == set(expected)
        for qid, hits in fused.items():
            top = sorted(expected[qid].values(), reverse=True)[:len(hits)]
            assert sorted(hits.values(), reverse=True) == pytest.approx(top, abs=2e-6)
            for doc, score in hits.items():
                assert score == pytest.approx(expected[qid][doc], abs=2e-6)
    assert json.loads((hybrid_task(smoke_run, slice_root, "base-bm25").out_dir / "hybrid.json").read_text()) \
        ["weights"] == {"all-MiniLM-L6-v2": 0.5, "bm25": 0.5}  # "equal", stored summing to 1


@pytest.mark.slow
def test_examples_weights_read_only_the_labeled_pairs_never_the_evaluation_split(smoke_run: Path, slice_root: Path,
                                                                                 tmp_path: Path) -> None:
    task = hybrid_task(smoke_run, slice_root, "fused-students")
    chosen = task.weights_task()
    assert chosen is not None and chosen.complete()
    payload = json.loads((chosen.out_dir / "weights.json").read_text())
    assert payload["source"] == "examples" and payload["split"] == "train"
    # configs/smoke.toml spends 8 prompt + 8 tuning + 4 filter pairs; each is a judged train pair.
    assert payload["queries"] == len(payload["pairs"]) == 20
    train = chosen.dataset_task().load()
    for pair in payload["pairs"]:
        assert train.queries[pair["query_id"]] == pair["query"] and train.qrels[pair["query_id"]][pair["doc_id"]] > 0
    assert sum(payload["weights"].values()) == pytest.approx(1) and payload["score"] == max(
        g["score"] for g in payload["grid"])
    # Nothing the selection reads is the evaluation split: with every test judgement changed, the weights' task is
    # the same one (its fingerprint hashes what it reads), while the fused test run is not.
    changed = tmp_path / "beir"
    shutil.copytree(slice_root, changed)
    qrels = changed / "scifact" / "qrels" / "test.tsv"
    lines = qrels.read_text().splitlines()
    qrels.write_text("\n".join([lines[0], *(line.rsplit("\t", 1)[0] + "\t2" for line in lines[1:])]) + "\n")
    other = hybrid_task(smoke_run, changed, "fused-students")
    assert other.weights_task().fingerprint() == chosen.fingerprint()
    assert other.fingerprint() != task.fingerprint()
    assert chosen.dataset_task().split == "train"
    assert all(search.dataset["split"] == "train" for search in chosen.searches().values())


@pytest.mark.slow
def test_search_cli_answers_from_the_built_hybrid(smoke_run: Path, slice_root: Path, tmp_path: Path) -> None:
    task = hybrid_task(smoke_run, slice_root, "fused-students")
    queries = dict(list(task.dataset_task().load().queries.items())[:5])
    common = ("--data-dir", str(slice_root), "--workdir", str(smoke_run))
    first_id, first = next(iter(queries.items()))
    result = run_cli("search", str(SMOKE), first, "--k", "5", *common)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"# {first}  (fused-students, ")
    assert lines[1].split("\t") == ["rank", "doc", "score", "dense-student", "sparse-student", "title"]
    rows = [line.split("\t") for line in lines[2:]]
    assert len(rows) == 5 and [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    pipeline = read_trec_run(task.out_dir / "run.trec")[first_id]
    weights = json.loads((task.out_dir / "hybrid.json").read_text())["weights"]
    for row in rows:
        assert float(row[2]) == pytest.approx(pipeline[row[1]], abs=1e-4)
        mean = sum(weights[m] * float(v) for m, v in zip(("dense-student", "sparse-student"), row[3:5], strict=True))
        assert float(row[2]) == pytest.approx(mean / sum(weights.values()), abs=2e-3)
    # A file of queries: a TREC run with the pipeline's scores.
    source = tmp_path / "queries.tsv"
    source.write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    out = tmp_path / "run.trec"
    result = run_cli("search", str(SMOKE), "--queries", str(source), "--out", str(out), *common)
    assert result.returncode == 0, result.stderr[-2000:]
    answered = read_trec_run(out)
    for qid in queries:
        ours = read_trec_run(task.out_dir / "run.trec")[qid]
        assert len(answered[qid]) == 10
        for doc, score in answered[qid].items():
            assert score == pytest.approx(ours[doc], abs=1e-4)
    # --timings: each query answered alone, the cost written as JSON; --list: what can be searched.
    timings = tmp_path / "cost.json"
    result = run_cli("search", str(SMOKE), "--queries", str(source), "--retriever", "bm25", "--repeats", "1",
                     "--timings", str(timings), *common)
    assert result.returncode == 0, result.stderr[-2000:]
    cost = json.loads(timings.read_text())
    assert cost["retriever"] == "bm25" and cost["queries"] == len(queries) and cost["repeats"] == 1
    assert 0 < cost["median_ms"] and 0 < cost["mean_ms"] < 60_000
    listed = run_cli("search", str(SMOKE), "--list", *common)
    assert listed.returncode == 0, listed.stderr[-2000:]
    table = [line.split("\t") for line in listed.stdout.splitlines()]
    assert table[0] == ["retriever", "dataset", "state"]
    assert ["fused-students", "scifact", "built"] in table and ["bm25", "scifact", "built"] in table
    no_queries = run_cli("search", str(SMOKE), "x", "--timings", str(timings), *common)
    assert one_error_line(no_queries) == "error: search --timings: give the queries to time with --queries FILE"
    unknown = run_cli("search", str(SMOKE), "x", "--retriever", "nope", *common)
    assert unknown.returncode == 2 and one_error_line(unknown).startswith("error: search --retriever: 'nope'")
    missing = run_cli("search", str(SMOKE), "--queries", str(tmp_path / "none.tsv"), *common)
    assert missing.returncode == 2
    assert one_error_line(missing).startswith(f"error: {tmp_path / 'none.tsv'}: cannot read")
    source.write_text("q1 no tab here\n")
    bad = run_cli("search", str(SMOKE), "--queries", str(source), *common)
    assert bad.returncode == 2
    assert one_error_line(bad) == f"error: {source}:1: expected \"id<TAB>query text\" (or give a .jsonl file)"


@pytest.mark.slow
def test_search_before_the_run_names_the_run_to_do(slice_root: Path, tmp_path: Path) -> None:
    result = run_cli("search", str(SMOKE), "a query", "--data-dir", str(slice_root), "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2
    assert one_error_line(result) == (f"error: search: fused-students on scifact is not built yet; run "
                                      f"`stillhouse run {SMOKE}` first")
    listed = run_cli("search", str(SMOKE), "--list", "--data-dir", str(slice_root), "--workdir", str(tmp_path / "w"))
    assert listed.returncode == 0 and "fused-students\tscifact\tnot built" in listed.stdout.splitlines()


@pytest.mark.slow
def test_every_export_carries_the_query_kit_and_the_hybrid(smoke_run: Path, slice_root: Path,
                                                           smoke_export: Path) -> None:
    task = hybrid_task(smoke_run, slice_root, "fused-students")
    weights = json.loads((task.out_dir / "hybrid.json").read_text())["weights"]
    for fmt in ("lucene", "faiss", "opensearch", "milvus"):
        manifest = json.loads((smoke_export / fmt / "manifest.json").read_text())
        assert manifest["hybrid"]["weights"] == {"dense": weights["dense-student"],
                                                 "sparse": weights["sparse-student"]}
        assert manifest["sparse"]["impact_scale"] == 100 and manifest["dense"]["dimension"] == 384
        for part in ("query/tokenizer/tokenizer.json", "query/idf.json", "query/dense-model/modules.json"):
            assert (smoke_export / fmt / part).is_file(), (fmt, part)
    pipeline = json.loads((smoke_export / "opensearch" / "opensearch-search-pipeline.json").read_text())
    processor = pipeline["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"]["technique"] == "min_max"
    assert processor["combination"]["technique"] == "arithmetic_mean"
    total = weights["dense-student"] + weights["sparse-student"]
    assert processor["combination"]["parameters"]["weights"] == pytest.approx(
        [weights["sparse-student"] / total, weights["dense-student"] / total])
    examples = json.loads((smoke_export / "opensearch" / "example-queries.json").read_text())
    sparse_query, dense_query = examples["hybrid_opensearch"]["query"]["hybrid"]["queries"]
    boosts = {c["rank_feature"]["field"].removeprefix("sparse."): c["rank_feature"]["boost"]
              for c in examples["sparse"]["query"]["bool"]["should"]}
    assert sparse_query["neural_sparse"]["sparse"]["query_tokens"] == boosts
    assert dense_query["knn"]["dense"]["vector"] == examples["dense_opensearch"]["query"]["knn"]["dense"]["vector"]
    linear = examples["hybrid_elasticsearch"]["retriever"]["linear"]
    assert [r["normalizer"] for r in linear["retrievers"]] == ["minmax", "minmax"]
    assert [r["weight"] for r in linear["retrievers"]] == [weights["sparse-student"], weights["dense-student"]]
    sparse_retriever = linear["retrievers"][0]["retriever"]["standard"]["query"]["sparse_vector"]
    assert sparse_retriever == {"field": "sparse", "query_vector": boosts}


@pytest.mark.slow
def test_milvus_lite_hybrid_search_runs_and_fuses_its_two_searches(smoke_run: Path, slice_root: Path,
                                                                   smoke_export: Path) -> None:
    from pymilvus import MilvusClient
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from stillhouse.eval.metrics import evaluate_run
    from stillhouse.retrievers.export import milvus_hybrid_run, milvus_hybrid_search
    from stillhouse.retrievers.impact_index import idf_query_vector, quantize
    from stillhouse.retrievers.sparse_student import read_idf_json

    folder = smoke_export / "milvus"
    weights = json.loads((folder / "manifest.json").read_text())["hybrid"]["weights"]
    tokenizer = AutoTokenizer.from_pretrained(folder / "query" / "tokenizer")
    idf, vocab = read_idf_json(folder / "query" / "idf.json", tokenizer), tokenizer.get_vocab()
    dense_model = SentenceTransformer(str(folder / "query" / "dense-model"), device="cpu")
    data = hybrid_task(smoke_run, slice_root, "fused-students").dataset_task().load()
    client = MilvusClient(uri=str(folder / "stillhouse.db"))
    client.load_collection("hybrid")
    for text in list(data.queries.values())[:5]:
        sparse = {vocab[t]: v / 100 for t, v in quantize(idf_query_vector(tokenizer, idf, text)).items()}
        dense = dense_model.encode_query([text])[0].tolist()
        found = milvus_hybrid_search(client, sparse, dense, weights, k=10, depth=100)
        assert len(found) == 10
        # Milvus's WeightedRanker on inner products: w_s (0.5 + atan(s) / pi) + w_d (0.5 + atan(d) / pi) over each
        # field's own top-100, checked hit by hit against the two plain searches of the same collection.
        by_field = {}
        for field, vector in (("sparse", sparse), ("dense", dense)):
            hits = client.search("hybrid", data=[vector], anns_field=field, limit=100,
                                 search_params={"metric_type": "IP"})[0]
            by_field[field] = {h["id"]: h["distance"] for h in hits}
        for doc, score in found.items():
            expected = sum(weights[f] * (0.5 + math.atan(by_field[f][doc]) / math.pi)
                           for f in ("sparse", "dense") if doc in by_field[f])
            assert score == pytest.approx(expected, rel=1e-3, abs=1e-4)
    client.close()
    # The whole split through the export's own query kit: measured beside the pipeline's fused score.
    milvus_ndcg = evaluate_run(data.qrels, milvus_hybrid_run(folder, data.queries), ["NDCG@10"])[0]["NDCG@10"]
    pipeline_ndcg = report_results(smoke_run)["fused-students"]["NDCG@10"]
    print(f"fused students NDCG@10: pipeline {pipeline_ndcg:.4f}, Milvus Lite hybrid {milvus_ndcg:.4f}")
    assert abs(milvus_ndcg - pipeline_ndcg) < 0.15  # the same two lists; only the normalization differs
