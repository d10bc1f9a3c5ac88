"""Content fingerprints for task outputs: a short hash of exactly what a task reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from luigi.freezing import recursively_unfreeze


def fingerprint(payload: object, length: int = 16) -> str:
    """Stable hash of a JSON-serializable payload (keys sorted; Luigi's frozen dicts read as dicts)."""
    text = json.dumps(recursively_unfreeze(payload), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
