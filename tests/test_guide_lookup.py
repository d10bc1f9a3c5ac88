"""The frozen GISTEmbed guide read from precomputed vectors (stillhouse.retrievers.guide_lookup)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stillhouse.eval.beir_data import load_beir
from stillhouse.retrievers.dense import document_text, load_sentence_encoder
from stillhouse.retrievers.errors import UserError
from tests.conftest import SMOKE, report_results, run_cli, task_outputs
from tests.test_cli_errors import _assert_one_line_error


def _batch(slice_root: Path, size: int = 8) -> tuple[list[str], list[str], list[str]]:
    """Real SciFact queries, a judged positive each, and a negative (another query's positive)."""
    data = load_beir(slice_root / "scifact", "test")
    pairs = [(data.queries[q], next(iter(docs))) for q, docs in data.qrels.items()][:size]
    queries = [q for q, _ in pairs]
    positives = [document_text(data.corpus[d]) for _, d in pairs]
    return queries, positives, positives[1:] + positives[:1]


def _loss(student, guide, columns: list[list[str]]) -> torch.Tensor:
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

    torch.manual_seed(0)
    loss = GISTEmbedLoss(student, guide, margin_strategy="relative", margin=0.05)
    return loss([student.preprocess(texts) for texts in columns], None)


def test_precomputed_guide_gives_gistembedloss_its_own_value(minilm_dir: Path, slice_root: Path) -> None:
    from stillhouse.retrievers.guide_lookup import GuideLookup

    student = load_sentence_encoder(minilm_dir, 64)
    guide = load_sentence_encoder(minilm_dir, 64)
    columns = [list(texts) for texts in _batch(slice_root)]
    texts = [t for column in columns for t in column]
    table = dict(zip(texts, guide.encode(texts, convert_to_numpy=True), strict=True))

    reference = _loss(student, guide, columns)
    looked_up = _loss(student, GuideLookup(student, table), columns)
    assert torch.allclose(looked_up, reference, atol=1e-5), (looked_up, reference)

    # The guide's vectors decide the mask: other vectors (each text given another's) change the loss.
    shuffled = dict(zip(table, np.roll(np.stack(list(table.values())), 5, axis=0), strict=True))
    assert abs(_loss(student, GuideLookup(student, shuffled), columns).item() - reference.item()) > 1e-3

    # A left-padding tokenizer whose columns sentence-transformers merges (padded on the right to one width):
    # every row still finds its own text's vector.
    from sentence_transformers.base.losses.merged_forward import merge_feature_batches

    student.tokenizer.padding_side = "left"
    left = GuideLookup(student, table)
    merged = merge_feature_batches([student.preprocess(columns[1]), student.preprocess(columns[0])])
    found = left(merged)["sentence_embedding"].numpy()
    assert np.allclose(found, np.stack([table[t] for t in columns[1] + columns[0]]))
    student.tokenizer.padding_side = "right"

    # A text the table lacks is an error, not a silent zero vector.
    partial = {t: v for t, v in table.items() if t != columns[0][0]}
    with pytest.raises(KeyError, match="1 of 8 texts"):
        _loss(student, GuideLookup(student, partial), columns)


def test_smoke_students_train_list_wise_with_the_guide_from_the_index(smoke_run: Path, slice_root: Path,
                                                                     tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(smoke_run, work, symlinks=True)
    config = tmp_path / "smoke.toml"
    config.write_text(SMOKE.read_text()
                      .replace("[dense_student]\n", "[dense_student]\nguide_vectors = \"index\"\nlist_size = 3\n")
                      .replace("[sparse_student]", "[sparse_student]\nlist_size = 3\nloss = \"kl\"\n", 1))
    before = task_outputs(work)
    result = run_cli("run", str(config), "--data-dir", str(slice_root), "--workdir", str(work))
    assert result.returncode == 0, result.stderr[-3000:]
    added = set(task_outputs(work)) - set(before)
    # The training data and the guide teacher's corpus index (built for mining) are reused: the students retrain.
    assert {key.split("/")[0] for key in added} >= {"TrainDense", "TrainSparse", "Evaluate"}
    assert not {key.split("/")[0] for key in added} & {"TASTriples", "TeacherScores", "FetchModel"}
    stats = json.loads(next(work / key / "training.json" for key in added if key.startswith("TrainDense/")).read_text())
    assert stats["guide"] == "precomputed" and stats["losses"] == {"margin_mse": 1.0, "gist": 1.0}
    # One list per query: margin-MSE over its 3 negatives (a label shape other than (batch, 3) fails the loss).
    assert stats["list_size"] == 3 and stats["examples"] == stats["queries"] < stats["triples"]
    # The sparse student's KL over (positive, 3 negatives): labels of another width than 4 fail the loss.
    sparse = json.loads(next(work / key / "training.json" for key in added
                             if key.startswith("TrainSparse/")).read_text())
    assert sparse["list_size"] == 3 and sparse["loss"] == "kl" and sparse["examples"] == sparse["queries"]
    assert np.isfinite(sparse["train_loss"])
    assert re.search(r"guide vectors: \d+ documents from .+, \d+ queries encoded", result.stderr)
    assert {"dense-student", "sparse-student"} <= set(report_results(work))


def test_guide_vectors_index_refuses_another_guide_model(tmp_path: Path, slice_root: Path) -> None:
    from stillhouse.pipelines.config import load_config

    config = tmp_path / "smoke.toml"
    config.write_text(SMOKE.read_text().replace(
        "[dense_student]\n", "[dense_student]\nguide_vectors = \"index\"\nguide_model = \"splade\"\n"))
    with pytest.raises(UserError, match="guide_model names another model"):
        load_config(config)
    _assert_one_line_error(run_cli("run", str(config), "--data-dir", str(slice_root), "--workdir",
                                   str(tmp_path / "w")), "drop guide_model or use \"in-loss\"")
    # The same guide model named explicitly is the guide teacher's: accepted.
    config.write_text(SMOKE.read_text().replace(
        "[dense_student]\n", "[dense_student]\nguide_vectors = \"index\"\nguide_model = \"base\"\n"))
    assert load_config(config).dense_student.guide_vectors == "index"
