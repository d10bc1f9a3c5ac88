"""Atomic artifacts: every task output is built in a temp folder and renamed into place.

A killed run leaves at most a ``.tmp-*`` folder, which is never taken as complete (Luigi checks the
final path only) and is removed by the next attempt of the same task.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(final: Path) -> None:
    """Delete temp siblings of ``final`` left by dead processes on this host.

    Temps of other hosts (shared storage) are left alone: their writers may still be running.
    """
    host = socket.gethostname()
    for stale in final.parent.glob(f"{final.name}.tmp-*"):
        try:
            writer_host, pid, _ = stale.name.split(".tmp-", 1)[1].rsplit("-", 2)
        except ValueError:
            continue
        if writer_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp folder next to ``final``; rename it to ``final`` if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = final.with_name(f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            # Another worker finished the same fingerprint first: its output is equivalent.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON to ``path`` through a temp file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (an index's size on disk)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
