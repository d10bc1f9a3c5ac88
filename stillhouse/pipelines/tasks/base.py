"""The base of every stillhouse task: fingerprinted output folder, atomic writes, provenance."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import traceback
from pathlib import Path
from typing import ClassVar

import luigi
from luigi.freezing import recursively_unfreeze
from luigi.task import flatten

from stillhouse.artifacts import atomic_dir, write_json_atomic
from stillhouse.pipelines.fingerprint import fingerprint
from stillhouse.retrievers.errors import UserError

log = logging.getLogger("stillhouse")


class UpstreamParameter(luigi.Parameter):
    """An upstream task handed to a task by the DAG assembly (``stillhouse.pipelines.dag``), so the task never
    builds what feeds it. It enters Luigi's task id as that task's id, and the fingerprint only through
    ``requires()`` (its fingerprint), never as a value. ``None`` (the default, where allowed) means "none given"."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("positional", False)
        super().__init__(*args, **kwargs)

    def serialize(self, x) -> str:
        return "" if x is None else x.task_id

    def normalize(self, x):
        return x


class UpstreamMapParameter(UpstreamParameter):
    """Named upstream tasks (name -> task), kept in the given order, e.g. a hybrid's member searches."""

    def serialize(self, x) -> str:
        return json.dumps([[name, task.task_id] for name, task in (x or ())])

    def normalize(self, x):
        items = x.items() if isinstance(x, dict) else (x or ())
        return tuple((str(name), task) for name, task in items)  # hashable, so Luigi can cache the task instance


class StageTask(luigi.Task):
    """A task whose output is the folder ``<workdir>/<TaskName>/<fingerprint>/``.

    The fingerprint hashes the task's own parameters (never ``workdir``) and the fingerprints of
    what it requires, so it changes exactly when something the task reads changes. Subclasses
    implement ``build(folder)``, which fills a temp folder that is renamed into place on success.
    """

    workdir = luigi.Parameter(description="root folder of all artifacts (local or shared storage)")
    # A DAG root's (link name under the workdir, page printed at the end of a run).
    publish_as: tuple[str, str] = ("", "")
    # Raised when a code change alters the output while every parameter stays the same (a fixed method detail):
    # it enters the fingerprint (when above 0), so cached outputs of the old code are not reused.
    version: int = 0
    # Parameters added after outputs were cached, at the value that reproduces those outputs: a parameter enters
    # the fingerprint only when set to something else, so the cache stays valid (``{"quantize": "none"}``).
    unkeyed_defaults: ClassVar[dict[str, str]] = {}
    # Runs a model (encoding, generation, training): holds one GPU slot while it builds, when the run has slots
    # (``stillhouse.pipelines.gpu_slots``).
    uses_gpu: bool = False

    @property
    def resources(self) -> dict[str, int]:
        """Luigi's resources: one ``gpu`` unit for a model stage when the run has GPU slots, so Luigi runs at most
        as many model stages at once as there are slots."""
        from stillhouse.pipelines.gpu_slots import RESOURCE, configured_devices

        return {RESOURCE: 1} if self.uses_gpu and configured_devices() else {}

    def fingerprint_payload(self) -> dict:
        params = self.to_str_params(only_significant=True)
        params.pop("workdir", None)
        for name, param in self.get_params():
            if isinstance(param, UpstreamParameter):  # enters through requires(): its fingerprint, not its id
                params.pop(name, None)
        for name, value in self.unkeyed_defaults.items():
            if params.get(name) == value:
                params.pop(name)
        return params

    def implied_requirements(self) -> list[StageTask]:
        """Outputs this task reads whose identity its other requirements already carry (the examples every
        generated shard was prompted with, the candidates an ensemble was scored on). A task lists them in
        ``requires()`` too, so Luigi builds them first and a work dir copied without them fails before the task
        runs; the fingerprint leaves them out, since they add nothing to it."""
        return []

    def fingerprint(self) -> str:
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            implied = {task.task_id for task in self.implied_requirements()}
            upstream = sorted(self.upstream_fingerprint(task) for task in flatten(self.requires())
                              if isinstance(task, StageTask) and task.task_id not in implied)
            payload = {"task": self.task_family, "own": self.fingerprint_payload(), "upstream": upstream}
            if self.version:
                payload["version"] = self.version
            cached = fingerprint(payload)
            self.__dict__["_fingerprint"] = cached
        return cached

    def upstream_fingerprint(self, task: StageTask) -> str:
        """How a requirement enters this task's fingerprint (a task reading less may narrow it)."""
        return task.fingerprint()

    @property
    def out_dir(self) -> Path:
        return Path(self.workdir) / self.task_family / self.fingerprint()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.out_dir))

    def build(self, folder: Path) -> None:
        raise NotImplementedError

    def label(self) -> str:
        """A short human name for logs and status (family plus what distinguishes it)."""
        return self.task_family

    def ran_on(self) -> dict[str, str]:
        """The device and precision this task's provenance records (asked once it has built)."""
        from stillhouse.retrievers.dense import device_record

        return device_record()

    def run(self) -> None:
        if self.out_dir.is_dir():  # a twin task (same fingerprint, other parameters) already built it
            log.info("%s: already built -> %s", self.label(), self.out_dir)
            return
        from contextlib import nullcontext

        from stillhouse.pipelines.gpu_slots import gpu_slot

        started = time.time()
        log.info("%s: starting -> %s", self.label(), self.out_dir)
        with atomic_dir(self.out_dir) as tmp, (gpu_slot(Path(self.workdir)) if self.uses_gpu else nullcontext({})) \
                as slot:
            self.build(tmp)
            ran_on = self.ran_on()
            write_json_atomic(tmp / "provenance.json", {**ran_on, **slot,
                "task": self.task_family, "task_id": self.task_id, "fingerprint": self.fingerprint(),
                "params": recursively_unfreeze(self.fingerprint_payload()), "host": socket.gethostname(),
                "pid": os.getpid(),
                "seconds": round(time.time() - started, 3), "finished": time.time(),
            })
        log.info("%s: done in %.1fs on %s (%s)%s", self.label(), time.time() - started, ran_on["device"],
                 ran_on["precision"], f", GPU slot {slot['gpu_slot']}" if slot else "")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


WORKER_PID_ENV = "STILLHOUSE_WORKER_PID"  # set by ``stillhouse run`` to the process that runs Luigi's worker


def failure_dir(workdir: str) -> Path:
    return Path(workdir) / ".failures"


@StageTask.event_handler(luigi.Event.FAILURE)
def _record_failure(task: StageTask, exception: BaseException) -> None:
    """Leave the failure where the CLI (in this or another process) can read it back as one line."""
    folder = failure_dir(task.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{task.task_family}-{task.fingerprint()}.json", {
        "task_id": task.task_id, "user_error": isinstance(exception, UserError), "message": str(exception),
        "type": type(exception).__name__, "time": time.time(),
        "traceback": "".join(traceback.format_exception(exception)),
    })
    worker = os.environ.get(WORKER_PID_ENV, "")
    if isinstance(exception, UserError) and worker.isdigit() and int(worker) in (os.getpid(), os.getppid()):
        # Bad input stops the run: SIGUSR1 is Luigi's own "take no more work" signal to its worker (this
        # process, or the parent of a forked task process); stages already running finish and are cached, then
        # the CLI prints the error line instead of running every other stage first.
        os.kill(int(worker), signal.SIGUSR1)
