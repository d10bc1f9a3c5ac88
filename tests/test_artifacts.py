"""Atomic outputs: temp folders renamed into place, and only dead writers' temps are cleaned up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stillhouse.artifacts import atomic_dir, remove_stale_temps


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "Task" / "abc"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert not final.exists() and not list(final.parent.iterdir())
    with atomic_dir(final) as tmp:
        (tmp / "whole.bin").write_bytes(b"y")
    assert (final / "whole.bin").read_bytes() == b"y"


def test_only_dead_writers_on_this_host_are_cleaned(tmp_path: Path) -> None:
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    final = tmp_path / "abc"
    live_here = tmp_path / f"abc.tmp-{host}-{os.getpid()}-aaaa"
    dead_here = tmp_path / f"abc.tmp-{host}-{dead_pid}-bbbb"
    other_host = tmp_path / f"abc.tmp-gpu-node-7-{dead_pid}-cccc"
    for folder in (live_here, dead_here, other_host):
        folder.mkdir()
    remove_stale_temps(final)
    assert live_here.exists() and other_host.exists() and not dead_here.exists()


def test_a_task_version_bump_changes_its_fingerprint_and_every_downstream_one(tmp_path: Path) -> None:
    """A fixed method detail (``StageTask.version``) invalidates the cached outputs of the old code, downstream
    included, while version 0 leaves fingerprints as they were."""
    from luigi.task_register import Register

    from stillhouse.pipelines.tasks.data import LoadDataset
    from stillhouse.pipelines.tasks.retrieval import BM25Index, BM25Search

    dataset = {"dataset": "scifact", "data_dir": str(tmp_path), "split": "test"}

    def fingerprints() -> tuple[str, str, str]:
        Register.clear_instance_cache()  # fresh task objects: a fingerprint is computed once per object
        search = BM25Search(workdir=str(tmp_path), dataset=dataset)
        return LoadDataset(workdir=str(tmp_path), **dataset).fingerprint(), search.index_task().fingerprint(), \
            search.fingerprint()

    before = fingerprints()
    BM25Index.version = 1
    try:
        after = fingerprints()
    finally:
        BM25Index.version = 0
    assert after[0] == before[0]  # upstream of the bumped task: unchanged
    assert after[1] != before[1] and after[2] != before[2]
    assert fingerprints() == before
