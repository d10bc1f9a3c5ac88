"""Content fingerprints for task outputs: a short hash of exactly what a task reads."""

from __future__ import annotations

import hashlib
import json

from luigi.freezing import recursively_unfreeze


def fingerprint(payload: object, length: int = 16) -> str:
    """Stable hash of a JSON-serializable payload (keys sorted; Luigi's frozen dicts read as dicts)."""
    text = json.dumps(recursively_unfreeze(payload), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
