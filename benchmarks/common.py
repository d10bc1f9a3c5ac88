"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stillhouse.retrievers.model_sources import ModelSource, materialize


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


def add_split_arguments(parser: argparse.ArgumentParser, flag: str = "--splits") -> None:
    """The query split(s) a benchmark scores: train by default; a test split needs ``--read-test`` (settings are
    chosen on train, and the test split is read once, for the chosen setting)."""
    parser.add_argument(flag, default="train", help="comma-separated query splits to score (default: train)")
    parser.add_argument("--read-test", action="store_true",
                        help="allow the test split (read it once, for the setting chosen on train)")


def checked_splits(args: argparse.Namespace, value: str) -> list[str]:
    """The requested splits, refusing ``test`` without ``--read-test`` (one line, exit 2)."""
    splits = [s for s in value.split(",") if s]
    if "test" in splits and not args.read_test:
        print("error: this benchmark selects settings on the train split; pass --read-test to score the test split "
              "(once, for the chosen setting)", file=sys.stderr)
        raise SystemExit(2)
    return splits
