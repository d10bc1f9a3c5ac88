"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from retrievers.model_sources import ModelSource, materialize


def model_folder(source: str, given: Path | None, scratch: Path) -> Path:
    """``given`` if set, else the model named by ``source`` materialized under ``scratch``."""
    if given is not None:
        return given
    folder = scratch / "model"
    materialize(ModelSource.parse(source), folder)
    return folder


def add_data_arguments(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    """``--data``, the BEIR root ($STILLHOUSE_BEIR_DIR, else ../shared/beir), and ``--dataset`` (SciFact) unless
    ``dataset`` is False."""
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("STILLHOUSE_BEIR_DIR", "../shared/beir")))
    if dataset:
        parser.add_argument("--dataset", default="scifact")
