"""One GPU per running GPU stage: Luigi caps how many run at once, a host-local lock says which GPU each gets.

Idea: Luigi schedules with ``resources``. Every task that runs a model asks for one unit of ``gpu``, and the
scheduler runs at most ``[resources] gpu = N`` of them at once, across all workers it serves. Luigi does not say
*which* GPU a task gets. So the worker process that runs a task takes the first free slot: slot ``i`` is GPU
``devices[i]``, held by an exclusive ``fcntl`` lock on ``<workdir>/.gpu-slots/<host>-<i>.lock``. The operating system
drops that lock if the process dies, so a killed run leaves no stale slot. The process then narrows
``CUDA_VISIBLE_DEVICES`` to that GPU before torch touches CUDA. The stage's ``provenance.json`` records the slot and
the device.

With ``stillhouse run --workers N`` on a machine with N GPUs, Luigi forks one process per running task, and each
GPU stage lands on its own GPU. With one worker, the stages run one after another in one process, and slot 0 is
reused.

Usage::

    stillhouse run configs/scifact.toml --workers 4             # --gpus auto: one slot per visible GPU
    stillhouse run configs/scifact.toml --workers 3 --gpus 2    # at most 2 GPU stages at once, on GPUs 0 and 1

A central ``luigid`` counts resources for every machine it serves, and gives a resource it has no setting for
only one unit. So start it with ``[resources] gpu = <GPUs on all machines>`` in its ``luigi.cfg``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "STILLHOUSE_GPU_SLOTS"  # comma-separated GPU ids, one per slot; set by the CLI, inherited by Luigi's workers
RESOURCE = "gpu"


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, read without initializing CUDA (a forked Luigi worker could not use CUDA
    after its parent initialized it): ``CUDA_VISIBLE_DEVICES`` when set, else the GPUs ``nvidia-smi -L`` lists."""
    narrowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if narrowed is not None:
        return [gpu.strip() for gpu in narrowed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def slot_devices(count: int | None) -> list[str]:
    """The GPU id of each slot: every visible GPU (``count`` None, ``--gpus auto``), or the first ``count`` of
    them. Where fewer GPUs are visible than asked for (a CPU machine checking the placement), the ids run on
    0, 1, ... and torch finds no such GPU, so the stage runs on the CPU and its provenance says so."""
    visible = visible_gpus()
    if count is None:
        return visible
    return visible[:count] if len(visible) >= count else [str(i) for i in range(count)]


def configured_devices() -> list[str]:
    """The slots the CLI configured for this run (none: no GPU stage asks Luigi for a ``gpu`` unit)."""
    return [gpu for gpu in os.environ.get(ENV, "").split(",") if gpu]


def configure(devices: list[str]) -> None:
    """Make ``devices`` the slots of this process and of the Luigi workers it forks. For the local scheduler,
    it also sets Luigi's ``[resources] gpu``."""
    import luigi.configuration

    os.environ[ENV] = ",".join(devices)
    if devices:
        luigi.configuration.get_config().set("resources", RESOURCE, str(len(devices)))


@contextmanager
def gpu_slot(workdir: Path) -> Iterator[dict]:
    """Hold a free GPU slot while the body runs, with ``CUDA_VISIBLE_DEVICES`` narrowed to its GPU. Yields what
    provenance records: ``{"gpu_slot": i, "cuda_visible_devices": id}``, or ``{}`` when no slots are configured.
    It waits only when every slot is held, which happens only when Luigi lets more GPU stages run than this
    host has slots (a ``luigid`` shared by machines with a larger ``gpu`` count)."""
    devices = configured_devices()
    if not devices:
        yield {}
        return
    folder = workdir / ".gpu-slots"
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index, device in enumerate(devices):
            handle = open(folder / f"{socket.gethostname()}-{index}.lock", "w")  # held while the stage runs
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            previous = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            try:
                yield {"gpu_slot": index, "cuda_visible_devices": device}
            finally:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(1.0)
