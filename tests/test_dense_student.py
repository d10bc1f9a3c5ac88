"""The dense student end to end on a slice of real SciFact: configs/smoke.toml (generation -> training data ->
TrainDense -> evaluation), the ablation runner, SIGKILL during training and resume, bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from stillhouse.pipelines.ablation import why_not
from stillhouse.pipelines.config import load_config
from stillhouse.retrievers.distill_dense import list_examples, select_rows, training_columns
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.tas import tas_balanced_sampler

from .conftest import (
    SMOKE,
    report_results,
    run_cli,
    run_until_then_kill,
    seeded_workdir,
    task_outputs,
    write_config,
)
from .test_training_data import one_error_line

pytestmark = pytest.mark.slow

def test_smoke_dag_trains_a_student_that_loads_as_a_plain_sentence_transformer(smoke_run: Path,
                                                                             minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    results = report_results(smoke_run)
    assert set(results) == {"bm25", "all-MiniLM-L6-v2", "splade-tiny", "dense-student", "sparse-student",
                            "fused-students", "base-bm25"}
    assert 0.5 < results["dense-student"]["NDCG@10"] <= 1.0
    (folder,) = (smoke_run / "TrainDense").glob("*/model")
    stats = json.loads((folder.parent / "training.json").read_text())
    assert stats["steps"] > 0 and stats["losses"] == {"margin_mse": 1.0, "gist": 1.0}
    assert stats["resumed_from_step"] == 0 and stats["precision"] == "fp32"
    assert not list((smoke_run / "TrainDense").glob("*.checkpoints"))  # removed once the model is in place
    texts = ["EZH2 regulates stem cell differentiation", "Smoking increases the risk of lung cancer"]
    student = SentenceTransformer(str(folder), device="cpu").encode(texts)
    base = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    assert student.shape == base.shape and not np.allclose(student, base, atol=1e-4)  # trained, not copied
    # The student's corpus index is its own (another fingerprint than the base model's).
    assert len(list((smoke_run / "DenseIndex").glob("*/index.faiss"))) == 2


def test_ablate_shares_upstream_work_and_writes_one_table(smoke_run: Path, slice_root: Path) -> None:
    before = task_outputs(smoke_run)
    result = run_cli("ablate", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run),
                     "--variants", "full,random-batches,no-guide-filter")
    assert result.returncode == 0, result.stderr[-3000:]
    new = {path.split("/")[0] for path in set(task_outputs(smoke_run)) - set(before)}
    # Nothing upstream of the changed stages reran: no generation, mining or teacher scoring.
    assert not new & {"GenerateShard", "FilterQueries", "MineCandidates", "TeacherScores", "TrainSoftPrompt"}
    assert len(list((smoke_run / "TrainDense").glob("*/model"))) == 3  # full (reused) + two variants
    table = (smoke_run / "ablation" / "ablation.md").read_text()
    for row in ("bm25", "all-MiniLM-L6-v2", "dense student: full", "dense student: random-batches",
                "dense student: no-guide-filter"):
        assert f"| {row} |" in table
    full = json.loads((smoke_run / "ablation" / "ablation.json").read_text())["results"]
    by_row = {r["retriever"]: r["metrics"]["NDCG@10"] for r in full}
    assert by_row["dense student: full"] == pytest.approx(report_results(smoke_run)["dense-student"]["NDCG@10"])
    # no-guide-filter: the mining filter keeps every candidate and the in-batch loss has no guide.
    kept = [json.loads(p.read_text()) for p in (smoke_run / "TrainDense").glob("*/training.json")]
    assert sorted(tuple(sorted(k["losses"])) for k in kept).count(("margin_mse", "mnrl")) == 1


STUDENT_ON_SPLIT = """
[training]
queries = "split"
queries_split = "train"
guide = "minilm"
bm25_candidates = 6
dense_candidates = 6
clusters = 4
margin_bins = 4
rerank_splits = []
[training.teachers.minilm]
kind = "dense"
model = "base"
batch_size = 16
[training.teachers.bm25]
kind = "bm25"
[dense_student]
batch_size = 4
epochs = 2
train_max_seq_length = 96
negatives_per_query = 3
checkpoint_steps = 2
"""


def test_the_same_config_adapts_a_corpus_without_labels(smoke_run: Path, slice_root: Path, tmp_path: Path) -> None:
    """Cranfield has no train split: SciFact's examples and soft prompt (already built) generate its queries, and
    both students are trained for it and evaluated beside its baselines."""
    config = tmp_path / "smoke-cranfield.toml"
    text = SMOKE.read_text().replace('datasets = ["scifact"]', 'datasets = ["scifact", "cranfield"]')
    text = text.replace('examples_split = "train"', 'examples_dataset = "scifact"\nexamples_split = "train"')
    config.write_text(text.replace("rerank_splits = []", 'rerank_splits = ["train", "test"]'))
    before = task_outputs(smoke_run)
    result = run_cli("run", str(config), "--data-dir", str(slice_root), "--workdir", str(smoke_run),
                     "--datasets", "cranfield")
    assert result.returncode == 0, result.stderr[-3000:]
    new = {path.split("/")[0] for path in set(task_outputs(smoke_run)) - set(before)}
    # The examples, the soft prompt and its example filter are SciFact's, reused; the queries are Cranfield's.
    assert not new & {"SelectExamples", "TrainSoftPrompt", "ChooseExamples"}
    assert {"GenerateShard", "FilterQueries", "TrainDense", "TrainSparse"} <= new
    cranfield_docs = {json.loads(line)["_id"] for line in (slice_root / "cranfield" / "corpus.jsonl").open()}
    positives = [json.loads((smoke_run / folder / "positives.json").read_text())
                 for folder in set(task_outputs(smoke_run)) - set(before) if folder.startswith("TrainingQueries/")]
    (generated,) = positives
    assert generated and {doc for docs in generated.values() for doc in docs} <= cranfield_docs
    # The rerank study keeps the splits Cranfield has: test, not train.
    studies = [json.loads(path.read_text()) for path in (smoke_run / "RerankStudy").glob("*/rerank.json")]
    assert [study["split"] for study in studies if study["dataset"] == "cranfield"] == ["test"]
    payload = json.loads((smoke_run / "report" / "results.json").read_text())
    rows = {(r["dataset"], r["retriever"]) for r in payload["results"]}
    assert rows == {("cranfield", name) for name in
                    ("bm25", "all-MiniLM-L6-v2", "splade-tiny", "dense-student", "sparse-student", "fused-students",
                     "base-bm25")}
    # Cranfield has no labels: the hybrids' weights come from SciFact's spent example pairs, searched over SciFact by
    # the same members (the Cranfield students included).
    chosen = [json.loads(p.read_text()) for p in (smoke_run / "HybridWeights").glob("*/weights.json")]
    assert chosen and {(c["dataset"], c["split"], c["source"]) for c in chosen} == {("scifact", "train", "examples")}
    # The ablation skips the variant Cranfield cannot give: there are no judged train queries to train on.
    cfg = load_config(config, ["cranfield"])
    assert why_not(cfg, "real-queries", "dense", slice_root) == "cranfield has no judged train split to train on"
    assert why_not(load_config(config, ["scifact"]), "real-queries", "dense", slice_root) == ""
    # Put the published links back on the SciFact run the other tests read (everything is cached).
    assert run_cli("run", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run)).returncode == 0
    assert {r["dataset"] for r in json.loads((smoke_run / "report" / "results.json").read_text())["results"]} \
        == {"scifact"}


def test_sigkill_during_training_resumes_from_the_last_checkpoint(tmp_path: Path, slice_root: Path,
                                                                  baseline_run: Path) -> None:
    workdir = seeded_workdir(baseline_run, tmp_path / "work")  # BM25 and MiniLM indexes (the miner's) cached
    config = write_config(tmp_path / "run.toml", workdir, slice_root, extra=STUDENT_ON_SPLIT)

    def checkpoint_written() -> bool:
        return any((workdir / "TrainDense").glob("*.checkpoints/checkpoint-*/trainer_state.json"))

    run_until_then_kill(config, checkpoint_written)
    assert checkpoint_written() and not list((workdir / "TrainDense").glob("*/model"))
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming dense student training from" in result.stderr
    (stats_file,) = (workdir / "TrainDense").glob("*/training.json")
    stats = json.loads(stats_file.read_text())
    assert stats["resumed_from_step"] >= 2  # not from scratch
    queries = len(json.loads(next((workdir / "TrainingQueries").glob("*/positives.json")).read_text()))
    # Two epochs of ceil(cluster size / 4) batches each: the resumed run finished the schedule, no more, no less.
    assert stats["steps"] >= 2 * -(-queries // 4) and stats["resumed_from_step"] < stats["steps"]


def test_dense_student_bad_input_is_one_line(tmp_path: Path, slice_root: Path) -> None:
    lonely = write_config(tmp_path / "lonely.toml", tmp_path / "w", slice_root, extra="[dense_student]\n")
    assert "dense_student needs a [training] section" in one_error_line(run_cli("run", str(lonely)))
    no_loss = write_config(tmp_path / "noloss.toml", tmp_path / "w", slice_root,
                           extra=STUDENT_ON_SPLIT + "margin_mse_weight = 0\nin_batch_weight = 0\n")
    assert "both 0" in one_error_line(run_cli("run", str(no_loss)))
    variant = run_cli("ablate", str(SMOKE), "--data-dir", str(slice_root), "--variants", "full,no-teachers")
    assert "unknown variant 'no-teachers'" in one_error_line(variant)
    plain = write_config(tmp_path / "plain.toml", tmp_path / "w", slice_root)
    assert "no [dense_student] section" in one_error_line(run_cli("ablate", str(plain)))
    seeds = run_cli("ablate", str(SMOKE), "--data-dir", str(slice_root), "--seeds", "13,seven")
    assert one_error_line(seeds) == "error: ablate --seeds 13,seven: give comma-separated integers, e.g. 13,7,42"


def test_ablate_seeds_train_one_student_per_seed_and_share_the_configured_one(slice_root: Path) -> None:
    """``ablate --seeds``: one row per (variant, seed); the configured seed's row is the single-seed run's
    student (the same retriever spec, so the same cached training task)."""
    from stillhouse.pipelines.ablation import ablation_rows
    from stillhouse.pipelines.cli import with_seeds
    from stillhouse.pipelines.config import load_config

    cfg = load_config(SMOKE)
    configured = cfg.dense_student.seed
    seeded, _ = ablation_rows(with_seeds(cfg, f"{configured},7,42"), Path("/unused"), slice_root,
                              ["full", "random-batches"])
    students = [(r["name"], r["seed"]) for r in seeded if r["name"].startswith("dense student")]
    assert students == [(f"dense student: {v}", s) for v in ("full", "random-batches") for s in (configured, 7, 42)]
    single, _ = ablation_rows(cfg, Path("/unused"), slice_root, ["full"])
    (alone,) = [r for r in single if r["name"] == "dense student: full"]
    assert next(r["retriever"] for r in seeded if r.get("seed") == configured) == alone["retriever"]


def test_select_rows_spreads_over_each_querys_margins() -> None:
    query_ids = np.array(["a"] * 10 + ["b"] * 2)
    margins = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0, 0.5, 0.4])
    rows = select_rows(query_ids, margins, 4)
    picked_a = sorted(margins[rows][query_ids[rows] == "a"])
    assert picked_a[0] == 0.0 and picked_a[-1] == 0.9 and len(picked_a) == 4  # both ends of the range kept
    assert (query_ids[rows] == "b").sum() == 2


def test_list_examples_hold_each_querys_spread_negatives_hardest_first() -> None:
    triples = {"query_id": ["a"] * 5 + ["b"], "query": ["qa"] * 5 + ["qb"], "positive": ["pa"] * 5 + ["pb"],
               "negative": ["n0", "n1", "n2", "n3", "n4", "m0"], "margin": [0.4, 0.0, 0.9, 0.2, 0.6, 0.3],
               "cluster": [1] * 5 + [2]}
    examples = list_examples(triples, 3)
    assert examples["query_id"] == ["a", "b"] and examples["cluster"] == [1, 2]
    # a: the lowest, the middle and the highest margin of its five, hardest (smallest margin) first.
    assert [examples[f"negative_{i}"][0] for i in (1, 2, 3)] == ["n1", "n0", "n2"]
    assert examples["margins"][0] == [0.0, 0.4, 0.9] and examples["margin"][0] == pytest.approx(1.3 / 3)
    # b has one negative: the list repeats it.
    assert [examples[f"negative_{i}"][1] for i in (1, 2, 3)] == ["m0"] * 3 and examples["margins"][1] == [0.3] * 3
    rows, columns = training_columns(triples, 3)
    assert rows is not triples and list(columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3",
                                                     "label"]
    assert columns["label"][0] == pytest.approx([0.0, 0.4, 0.9])
    assert training_columns(triples, 1)[1]["label"] == pytest.approx(triples["margin"])


def test_list_wise_and_pair_wise_ablation_variants_flip_each_students_objective() -> None:
    from stillhouse.pipelines.ablation import VARIANTS

    cfg = load_config(SMOKE.parent / "scifact.toml")
    assert cfg.dense_student.list_size == 1 and cfg.dense_student.negatives_per_query == 16
    assert cfg.sparse_student.list_size == 1 and cfg.sparse_student.negatives_per_query == 16
    listed = VARIANTS["list-wise"](cfg)
    assert listed.dense_student.list_size == listed.sparse_student.list_size == 7
    for student in ("dense", "sparse"):
        assert why_not(cfg, "list-wise", student=student) == ""
        assert why_not(cfg, "pair-wise", student=student) == f"the config's {student} student is already pair-wise"
        assert why_not(listed, "pair-wise", student=student) == ""
    paired = VARIANTS["pair-wise"](listed)
    assert paired.dense_student.list_size == paired.sparse_student.list_size == 1
    smoke = load_config(SMOKE)  # 4 negatives kept per query: the list holds 4
    assert VARIANTS["list-wise"](smoke).dense_student.list_size == 4


def test_a_list_longer_than_the_kept_negatives_is_refused_for_either_student(tmp_path: Path) -> None:
    for section in ("dense_student", "sparse_student"):
        config = tmp_path / f"{section}.toml"
        config.write_text(SMOKE.read_text().replace(f"[{section}]", f"[{section}]\nlist_size = 5\n", 1))
        with pytest.raises(UserError, match="list_size 5 is more than negatives_per_query 4"):
            load_config(config)


def test_tas_sampler_factory_survives_the_trainers_checkpoint_pickle() -> None:
    factory = tas_balanced_sampler(["q1", "q1", "q2"], {"q1": 0, "q2": 1}, [0.1, 0.5, 0.2], bins=2)
    sampler = pickle.loads(pickle.dumps(factory))(list(range(3)), batch_size=2, drop_last=False, seed=3)
    batches = list(sampler)
    assert sorted(len(b) for b in batches) == [1, 1]  # one query per cluster, one batch per cluster


def test_slice_command_cuts_a_loadable_slice_and_never_overwrites(tmp_path: Path, beir_dir: Path) -> None:
    from stillhouse.eval.beir_data import load_beir

    target = tmp_path / "scifact"
    result = run_cli("slice", str(beir_dir / "scifact"), str(target), "--docs", "120", "--queries", "10")
    assert result.returncode == 0, result.stderr[-2000:]
    test, train = load_beir(target, "test"), load_beir(target, "train")
    assert len(test.qrels) == 10 and len(train.qrels) == 10 and len(test.corpus) == 120
    judged = {d for docs in (*test.qrels.values(), *train.qrels.values()) for d in docs}
    assert judged <= set(test.corpus)  # every judged document is in the slice
    assert "already exists" in one_error_line(run_cli("slice", str(beir_dir / "scifact"), str(target)))
