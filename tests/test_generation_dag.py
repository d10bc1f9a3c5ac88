"""Query generation through the DAG on a slice: all three prompt kinds, round trip through MiniLM fine-tuned
on the unfiltered queries (Promptagator's filter), a datasets-loadable table, the report, and a SIGKILL during
generation that resumes without generating any finished shard again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import SMOLLM2, run_cli, run_until_then_kill, write_config

pytestmark = pytest.mark.slow

GENERATION = """
[generation]
generators = ["smollm2"]
prompts = ["zero-shot", "promptagator", "sptar"]
prompt_examples = 4
sptar_examples = 1
tune_pairs = 8
filter_eval_pairs = 4
filter_groups = 2
tune_epochs = 1
virtual_tokens = 8
targets = "held-out"
max_target_docs = 6
max_doc_tokens = 96
max_example_doc_tokens = 48
max_new_tokens = 24
nll_pairs = 6
shards = 3
roundtrip = "trained"
roundtrip_batch_size = 4
"""


def _config(tmp_path: Path, slice_root: Path) -> Path:
    config = write_config(tmp_path / "gen.toml", tmp_path / "work", slice_root)
    text = config.read_text().replace('[models]\n', f'[models]\nsmollm2 = "{SMOLLM2}"\n')
    text = text.split("[retrievers.minilm]")[0] + GENERATION  # BM25 is enough for the evaluation side here
    config.write_text(text)
    return config


def _shards(work: Path) -> dict[Path, float]:
    return {p.parent: p.stat().st_mtime for p in work.glob("GenerateShard/*/provenance.json")}


def test_generation_dag_resumes_by_shard(tmp_path: Path, slice_root: Path) -> None:
    config = _config(tmp_path, slice_root)
    work = tmp_path / "work"
    run_until_then_kill(config, lambda: bool(_shards(work)))
    before = _shards(work)
    assert 1 <= len(before) < 9, "the kill must land between the first and the last generation shard"

    resumed = run_cli("run", str(config))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _shards(work)
    assert len(after) == 9 and all(after[p] == mtime for p, mtime in before.items())

    results = json.loads((work / "generation" / "generation.json").read_text())
    assert [r["prompt"] for r in results] == ["zero-shot", "promptagator", "sptar"]
    for r in results:
        assert r["generated"] == 6 and 0 <= r["kept_rate"] <= 1 and r["nll_per_token"] > 0
    assert results[2]["hard_prompt_nll_per_token"] > 0
    assert "| smollm2 | sptar | 6 |" in (work / "generation" / "generation.md").read_text()

    from datasets import load_dataset

    for table in work.glob("FilterQueries/*/queries.parquet"):
        rows = load_dataset("parquet", data_files=str(table), split="train")
        assert {"query_id", "text", "doc_id", "generator", "prompt_kind", "score", "kept"} <= set(rows.column_names)
        for row in rows:
            if row["kept"]:
                assert row["trained_rank"] == 1 and not row["copy"] and not row["degenerate"]
    assert "trained top-1" in (work / "generation" / "generation.md").read_text()
    retrievers = list(work.glob("RoundTripRetriever/*/training.json"))
    assert len(retrievers) == 3 and all(json.loads(p.read_text())["pairs"] >= 2 for p in retrievers)
    assert all((p.parent / "model" / "config_sentence_transformers.json").is_file() for p in retrievers)
    assert (next(work.glob("TrainSoftPrompt/*")) / "adapter_config.json").is_file()
