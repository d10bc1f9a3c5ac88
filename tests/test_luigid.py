"""A real central scheduler (luigid on 127.0.0.1) with two worker processes sharing the encoding."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import REPO, report_results, write_config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"luigid did not listen on {port}")


@contextmanager
def running_luigid(folder: Path) -> Iterator[str]:
    """A real central scheduler on a free local port, its state and logs in ``folder``; yields its URL."""
    port = _free_port()
    luigid = Path(sys.executable).with_name("luigid")
    daemon = subprocess.Popen([str(luigid), "--address", "127.0.0.1", "--port", str(port),
                               "--state-path", str(folder / "luigid.state"), "--logdir", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def test_two_workers_under_luigid_match_single_process(tmp_path: Path, slice_root: Path, baseline_run: Path) -> None:
    with running_luigid(tmp_path) as url:
        work = tmp_path / "work"
        config = write_config(tmp_path / "run.toml", work, slice_root)
        command = [sys.executable, "-m", "stillhouse", "run", str(config), "--scheduler-url", url]
        workers = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        outputs = [w.communicate(timeout=900) for w in workers]
        for worker, (_, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, err[-2000:]

    shard_pids = {json.loads(p.read_text())["pid"] for p in work.glob("EncodeShard/*/provenance.json")}
    assert len(shard_pids) == 2, f"encoding shards all ran in one worker: {shard_pids}"
    assert len(list(work.glob("EncodeShard/*/provenance.json"))) == 4
    assert report_results(work) == report_results(baseline_run)


SLOW_ROOT = '''
import sys
import time
from pathlib import Path

import luigi


class SlowRoot(luigi.Task):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)

    def run(self):
        time.sleep(6)
        Path(self.path).write_text("done")


if __name__ == "__main__":
    luigi.build([SlowRoot(path=sys.argv[2])], scheduler_url=sys.argv[1], workers=1)
'''


def test_a_worker_waits_for_a_root_another_worker_is_running(tmp_path: Path) -> None:
    """Luigi's worker leaves while the last task of its DAG runs elsewhere; ``stillhouse run`` must not."""
    import importlib.util

    import luigi

    from stillhouse.pipelines.cli import _wait_for_other_workers, central_scheduler_settings

    script = tmp_path / "slow_root.py"
    script.write_text(SLOW_ROOT)
    spec = importlib.util.spec_from_file_location("slow_root", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        with running_luigid(tmp_path) as url:
            root = module.SlowRoot(path=str(tmp_path / "root.txt"))
            other = subprocess.Popen([sys.executable, str(script), url, root.path])
            scheduler = luigi.rpc.RemoteScheduler(url)
            deadline = time.time() + 60
            while root.task_id not in scheduler.task_list(status="RUNNING", search=None, limit=False):
                assert time.time() < deadline and other.poll() is None, "the other worker never ran the root"
                time.sleep(0.2)
            settings = {"workers": 1, "local_scheduler": False, **central_scheduler_settings(url)}
            started = time.time()
            result = luigi.build([root], detailed_summary=True, **settings)
            assert not root.complete(), "Luigi's own worker waited; the race this guards against is gone"
            _wait_for_other_workers([root], settings, url, tmp_path, started, result)
            assert root.complete()
            assert other.wait(timeout=60) == 0
    finally:  # the worker settings central_scheduler_settings put into Luigi's process-wide config
        config = luigi.configuration.get_config()
        for section, option in [("worker", "keep_alive"), ("worker", "wait_interval"),
                                ("worker", "max_keep_alive_idle_duration"), ("core", "rpc-retry-wait")]:
            config.remove_option(section, option)
