"""The DAG end to end on a real slice: report, no re-work on rerun, only the dense branch re-runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stillhouse.pipelines.config import load_config

from .conftest import SMOKE, report_results, run_cli, task_outputs, write_config

pytestmark = pytest.mark.slow


def test_report_has_every_retriever(baseline_run: Path) -> None:
    results = report_results(baseline_run)
    assert set(results) == {"bm25", "minilm"}
    # 40 judged queries and only 400 documents: both retrievers find most relevant documents.
    for metrics in results.values():
        assert set(metrics) == {"NDCG@10", "Recall@100", "MRR@10"}
        assert 0.6 < metrics["NDCG@10"] <= 1.0 and metrics["Recall@100"] > 0.85
    assert (baseline_run / "report" / "results.md").read_text().count("| minilm |") == 1
    assert (baseline_run / "report" / "ndcg_at_10.png").stat().st_size > 5000
    assert not list(baseline_run.glob("*/*.tmp-*")), "a temp folder survived a successful run"


def test_rerun_redoes_nothing_and_model_change_reruns_only_dense(baseline_run: Path, tmp_path: Path,
                                                                 slice_root: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(baseline_run, work, symlinks=True)
    config = write_config(tmp_path / "run.toml", work, slice_root)
    before = task_outputs(work)
    again = run_cli("run", str(config))
    assert again.returncode == 0, again.stderr[-2000:]
    assert task_outputs(work) == before
    assert "ran 0 of" in again.stderr

    # An intermediate folder deleted once what it fed was built (to save disk): nothing reruns, nothing fails.
    shard = next(work.glob("EncodeShard/*"))
    moved = tmp_path / "shard-aside"
    shard.rename(moved)
    pruned = run_cli("run", str(config))
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    assert "ran 0 of" in pruned.stderr and "1 not needed" in pruned.stderr and not shard.exists()
    moved.rename(shard)

    # The same MiniLM weights through another source: a different model for the DAG.
    model_dir = next(work.glob("FetchModel/*/model"))
    config = write_config(tmp_path / "run.toml", work, slice_root, dense_model=f"path:{model_dir}")
    changed = run_cli("run", str(config))
    assert changed.returncode == 0, changed.stderr[-2000:]
    after = task_outputs(work)
    new = {key.split("/")[0] for key in set(after) - set(before)}
    assert new == {"FetchModel", "EncodeShard", "DenseIndex", "DenseSearch", "Evaluate", "Report"}
    assert all(after[key] == stamp for key, stamp in before.items())
    assert sum(key.startswith("Evaluate/") for key in set(after) - set(before)) == 1
    assert report_results(work) == report_results(baseline_run)


def test_status_lists_every_task_done(baseline_run: Path, tmp_path: Path, slice_root: Path) -> None:
    config = write_config(tmp_path / "run.toml", baseline_run, slice_root)
    status = run_cli("status", str(config))
    assert status.returncode == 0, status.stderr
    assert "EncodeShard(scifact 4/4)" in status.stdout and "pending" not in status.stdout
    assert "13/13 tasks done" in status.stdout


# Task families rebuilt by the next test; the ones that train or encode a corpus are left out for time.
REBUILT_FROM_REQUIREMENTS = {"BM25Index", "BM25Search", "Evaluate", "DenseIndex", "SelectExamples", "FilterQueries",
                             "TrainingQueries", "GuideFilter", "EnsembleScores", "TASTriples", "HybridWeights",
                             "HybridSearch", "Report", "QueryGenReport", "TrainingDataReport"}


def test_a_task_reads_only_what_it_requires(smoke_run: Path, slice_root: Path, tmp_path: Path) -> None:
    """Each task of the smoke DAG rebuilt in a work dir that holds only its ``requires()`` outputs (linked from
    the smoke run): a task that reads another task's folder without requiring it fails here, as it would when
    Luigi runs it before that folder exists or on a machine given only what the task asks for."""
    import os

    from luigi.task import flatten

    from stillhouse.pipelines.dag import build_roots, walk

    roots = build_roots(load_config(SMOKE), smoke_run, slice_root)
    tasks = {t.task_family: t for root in roots for t in walk(root) if t.task_family in REBUILT_FROM_REQUIREMENTS}
    assert set(tasks) == REBUILT_FROM_REQUIREMENTS
    failures = []
    for family, task in sorted(tasks.items()):
        workdir = tmp_path / family / "work"
        for needed in flatten(task.requires()):
            link = workdir / needed.out_dir.relative_to(smoke_run)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(needed.out_dir, link)
        (tmp_path / family / "out").mkdir()
        try:
            task.clone(workdir=str(workdir)).build(tmp_path / family / "out")
        except Exception as exc:  # every family is tried; the failures are listed together
            failures.append(f"{family}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


def test_an_int8_dense_retriever_encodes_both_sides_in_int8_and_scores_near_fp32(baseline_run: Path, tmp_path: Path,
                                                                                  slice_root: Path) -> None:
    import json

    import numpy as np
    import torch

    from stillhouse.retrievers.dense import INT8_RECIPE, load_sentence_encoder

    work = tmp_path / "work"
    shutil.copytree(baseline_run, work, symlinks=True)
    before = task_outputs(work)
    int8 = '[retrievers.minilm-int8]\nkind = "dense"\nmodel = "base"\nbatch_size = 16\nshards = 1\nquantize = "int8"\n'
    result = run_cli("run", str(write_config(tmp_path / "run.toml", work, slice_root, extra=int8)))
    assert result.returncode == 0, result.stderr[-2000:]
    new = {key.split("/")[0] for key in set(task_outputs(work)) - set(before)}
    assert new == {"EncodeShard", "DenseIndex", "DenseSearch", "Evaluate", "Report"}  # MiniLM's fetch is shared

    fp32_shard_names = {key.split("/")[1] for key in before if key.startswith("EncodeShard/")}
    (shard,) = [p for p in work.glob("EncodeShard/*") if p.name not in fp32_shard_names]
    assert json.loads((shard / "timing.json").read_text())["quantize"] == "int8"
    provenance = json.loads((shard / "provenance.json").read_text())
    assert provenance["params"]["quantize"] == "int8" and (provenance["device"], provenance["precision"]) == (
        "cpu", "int8")
    assert all("quantize" not in json.loads((work / "EncodeShard" / name / "provenance.json").read_text())["params"]
               for name in fp32_shard_names)  # fp32: the fingerprint it had before the setting
    fp32_shards = sorted((p for p in work.glob("EncodeShard/*") if p.name in fp32_shard_names),
                         key=lambda p: int(json.loads((p / "provenance.json").read_text())["params"]["shard"]))
    # The 4 fp32 shards in order hold the corpus as the single int8 shard does: rows match.
    fp32_rows = np.concatenate([np.load(p / "embeddings.npy") for p in fp32_shards])
    int8_rows = np.load(shard / "embeddings.npy")
    assert fp32_rows.shape == int8_rows.shape and not np.allclose(fp32_rows, int8_rows, atol=1e-4)
    cosine = np.einsum("ij,ij->i", fp32_rows, int8_rows) / (np.linalg.norm(fp32_rows, axis=1) *
                                                          np.linalg.norm(int8_rows, axis=1))
    assert cosine.mean() > 0.95

    model_dir = next(work.glob("FetchModel/*/model"))
    model = load_sentence_encoder(model_dir, quantize="int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
    assert str(model.device) == "cpu"
    # The recipe the export hands a service (manifest.json, the FAISS README) builds the same encoder.
    fp32_model = load_sentence_encoder(model_dir, device="cpu", half=False)
    recipe_model = eval(INT8_RECIPE, {"torch": torch, "model": fp32_model})
    queries = ["vitamin d and infections", "statins lower ldl cholesterol"]
    np.testing.assert_allclose(recipe_model.encode(queries), model.encode(queries), rtol=0, atol=1e-6)

    results = report_results(work)
    assert set(results) == {"bm25", "minilm", "minilm-int8"}
    assert abs(results["minilm-int8"]["NDCG@10"] - results["minilm"]["NDCG@10"]) < 0.05
    assert results["minilm"] == report_results(baseline_run)["minilm"]
