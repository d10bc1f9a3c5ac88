"""One GPU per running model stage: Luigi's ``gpu`` resource caps them, each holds its own slot."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tests.conftest import run_cli, write_config

MODEL_STAGES = {"EncodeShard", "DenseSearch"}
OTHER_STAGES = {"LoadDataset", "FetchModel", "BM25Index", "BM25Search", "DenseIndex", "Evaluate", "Report"}


def test_model_stages_hold_distinct_gpu_slots_and_luigi_caps_them(tmp_path: Path, slice_root: Path) -> None:
    """``--workers 3 --gpus 2``: three Luigi workers, but at most two model stages at once, never two on one slot.
    No GPU is needed: the slots are GPU ids 0 and 1, which torch cannot see on a CPU machine, so the stages run on
    the CPU while provenance records where they were placed."""
    config = write_config(tmp_path / "c.toml", tmp_path / "w", slice_root, shards=4)
    result = run_cli("run", str(config), "--workers", "3", "--gpus", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "w").glob("*/*/provenance.json")]
    model = [r for r in records if r["task"] in MODEL_STAGES]
    assert sorted(r["task"] for r in model) == ["DenseSearch"] + ["EncodeShard"] * 4
    assert all(r["gpu_slot"] in (0, 1) and r["cuda_visible_devices"] == str(r["gpu_slot"]) for r in model)
    others = [r for r in records if r["task"] in OTHER_STAGES]
    assert {r["task"] for r in others} == OTHER_STAGES and not any("gpu_slot" in r for r in others)
    spans = [(r["finished"] - r["seconds"], r["finished"], r["gpu_slot"]) for r in model]
    for (start_a, end_a, slot_a), (start_b, end_b, slot_b) in itertools.combinations(spans, 2):
        if start_a < end_b and start_b < end_a:
            assert slot_a != slot_b, "two model stages ran at once on one GPU slot"
    for start, _, _ in spans:  # at any stage's start, at most two model stages are running
        assert sum(s <= start < e for s, e, _ in spans) <= 2


def test_gpu_slots_option_is_checked(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "w", tmp_path / "nowhere")
    result = run_cli("run", str(config), "--gpus", "two")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --gpus two: give auto or a number of GPU slots (0: none)"]
    assert not (tmp_path / "w").exists()
