"""Your own corpus: a folder with only ``corpus.jsonl`` and a file of labeled pairs, through the smoke-sized DAG
(configs/own-corpus.toml, as the README runs it) to both students, their fused hybrid, search and exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

RETRIEVERS = {"bm25", "all-MiniLM-L6-v2", "dense-student", "sparse-student", "fused-students"}


def test_a_corpus_only_folder_runs_to_searchable_exported_students(tmp_path: Path, slice_root: Path) -> None:
    data = tmp_path / "my-data"
    data.mkdir()
    result = run_cli("slice", str(slice_root / "scifact"), str(data / "my-corpus"), "--corpus-only",
                     "--split", "train", "--queries", "20")
    assert result.returncode == 0, result.stderr[-2000:]
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "own-corpus.toml"  # its examples path is relative: ../my-data/my-corpus/...
    shutil.copy(REPO / "configs" / "own-corpus.toml", config)
    work = tmp_path / "work"
    common = ("--data-dir", str(data), "--workdir", str(work))
    result = run_cli("run", str(config), *common)
    assert result.returncode == 0, result.stderr[-3000:]

    # Nothing evaluated, and the report says why; every retriever and hybrid is built.
    assert not list(work.glob("Evaluate/*"))
    report = json.loads((work / "report" / "results.json").read_text())
    assert report["results"] == []
    assert {row["retriever"] for row in report["unjudged"]} == RETRIEVERS
    assert all(row["index_bytes"] > 0 for row in report["unjudged"])
    fused = next(row for row in report["unjudged"] if row["retriever"] == "fused-students")
    for row in report["unjudged"]:  # each student's training is reported: on what, how long
        trained = row["retriever"] in ("dense-student", "sparse-student")
        assert ("training" in row) == trained, row["retriever"]
        assert not trained or (row["training"]["queries"] >= 1 and row["training"]["steps"] >= 1)
    assert sum(fused["weights"].values()) == pytest.approx(1.0)
    page = (work / "report" / "results.md").read_text()
    assert "### my-corpus: not evaluated" in page and "no queries or judgements" in page
    # 20 pairs, all with a role (8 prompt, 8 tuning, 4 filter): the generation report says it has none held out.
    assert "held-out NLL not measured" in (work / "generation" / "generation.md").read_text()
    assert (work / "training-data" / "training_data.md").is_file()
    for student in ("TrainDense", "TrainSparse"):
        (trained,) = [p.parent for p in work.glob(f"{student}/*/provenance.json")]
        assert (trained / "model").is_dir()

    # The fused students answer a query, with the renamed documents.
    result = run_cli("search", str(config), "vitamin D and bone density", "--k", "5", *common)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# vitamin D and bone density  (fused-students, ")
    rows = [line.split("\t") for line in lines[2:]]
    assert len(rows) == 5 and all(row[1].startswith("doc-") for row in rows)

    # Exported with the hybrid's weights; the example query bodies use a labeled example's query.
    target = tmp_path / "indexes"
    result = run_cli("export", str(config), *common, "--to", str(target), "--formats", "lucene,opensearch")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((target / "opensearch" / "manifest.json").read_text())
    total = sum(fused["weights"].values())
    assert manifest["hybrid"]["weights"]["dense"] == pytest.approx(fused["weights"]["dense-student"] / total)
    first_example = json.loads((data / "my-corpus" / "examples.jsonl").read_text().splitlines()[0])["query"]
    assert json.loads((target / "opensearch" / "example-queries.json").read_text())["query"] == first_example
