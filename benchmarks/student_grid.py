"""What the student-training benchmarks share (``benchmarks.train_dense``, ``benchmarks.train_sparse``): their
command-line arguments, the grid's inputs (BEIR split, TASTriples tables copied from a work dir, the student
settings of a provenance file), one timer and the output files (``runs.npz``, ``stages.json``) that
``benchmarks.train_dense_eval`` scores."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import add_data_arguments, add_split_arguments, checked_splits
from stillhouse.artifacts import write_json_atomic
from stillhouse.eval.beir_data import BeirDataset, load_beir
from stillhouse.retrievers.dense import document_text


def add_grid_arguments(parser: argparse.ArgumentParser, task: str, section: str, scratch: str) -> None:
    """The arguments both benchmarks take; ``task`` names the provenance file, ``section`` the config table the
    grid overrides."""
    add_data_arguments(parser)
    add_split_arguments(parser)
    parser.add_argument("--triples", type=Path, nargs="+", required=True,
                        help="TASTriples folders (triples.parquet); a grid entry's 'triples' picks one by index")
    parser.add_argument("--provenance", type=Path, required=True,
                        help=f"a {task} provenance.json: the student settings and ensemble weights the grid varies")
    parser.add_argument("--base", type=Path, required=True, help="the student's base model folder")
    parser.add_argument("--grid", required=True,
                        help=f"JSON list of {{name, triples?, weights?, ...[{section}] overrides}}; 'weights' are "
                             "the teacher weights the chosen TASTriples table was built with")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--margin-bins", type=int, default=10, help="[training] margin_bins")
    parser.add_argument("--scratch", type=Path, default=Path(scratch))
    parser.add_argument("--max-queries", type=int, default=0,
                        help="train on the triples of the first N queries (a smoke run)")
    parser.add_argument("--max-docs", type=int, default=0, help="search only the first N documents (a smoke run)")


@dataclass
class GridInputs:
    """Everything a grid run reads once, and the rows and runs it accumulates."""

    base_student: dict
    base_weights: dict
    datasets: dict[str, BeirDataset]
    doc_ids: list[str]
    doc_texts: list[str]
    tables: list[dict[str, np.ndarray]]
    device: str
    runs: dict[str, np.ndarray] = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)

    @property
    def corpus(self) -> dict[str, dict[str, str]]:
        return next(iter(self.datasets.values())).corpus

    def entries(self, grid: str, max_queries: int) -> Iterator[tuple[str, dict[str, np.ndarray], dict, dict]]:
        """``(name, table, teacher weights, student settings)`` for each grid entry: the base settings with the
        entry's overrides, on the TASTriples table it picks (cut to its first ``max_queries`` queries if set)."""
        for entry in json.loads(grid):
            entry = dict(entry)
            name, table = entry.pop("name"), self.tables[entry.pop("triples", 0)]
            if max_queries:
                keep = np.isin(table["query_id"], np.unique(table["query_id"])[:max_queries])
                table = {column: values[keep] for column, values in table.items()}
            weights = dict(entry.pop("weights", self.base_weights))
            yield name, table, weights, {**self.base_student, **entry}

    def record(self, row: dict) -> None:
        self.stages.append(row)
        print(json.dumps(row), flush=True)

    def save(self, out: Path) -> None:
        """``runs.npz`` and ``stages.json`` as they stand (after every student: a run cut off at its time limit
        keeps what it finished)."""
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "runs.tmp.npz", **self.runs)
        (out / "runs.tmp.npz").replace(out / "runs.npz")
        write_json_atomic(out / "stages.json", self.stages)


def load_grid_inputs(args: argparse.Namespace) -> GridInputs:
    import pyarrow.parquet as pq
    import torch

    params = json.loads(args.provenance.read_text())["params"]
    splits = checked_splits(args, args.splits)
    datasets = {split: load_beir(args.data / args.dataset, split) for split in splits}
    corpus = datasets[splits[0]].corpus
    doc_ids = list(corpus)[: args.max_docs or None]
    tables = [{n: c.to_numpy(zero_copy_only=False) for n, c in zip(t.column_names, t.columns, strict=True)}
              for t in (pq.read_table(folder / "triples.parquet") for folder in args.triples)]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps({"device": device, "torch": torch.__version__}), flush=True)
    # The ensemble weights the first triples table was built with (its TASTriples provenance); older student
    # provenance files carried them beside the student settings.
    triples_params = json.loads((args.triples[0] / "provenance.json").read_text())["params"]
    weights = params.get("weights") or triples_params["training"]["weights"]
    inputs = GridInputs(dict(params["student"]), dict(weights), datasets, doc_ids,
                        [document_text(corpus[d]) for d in doc_ids], tables, device)
    inputs.runs["doc_ids"] = np.asarray(doc_ids)
    for split in splits:
        inputs.runs[f"{split}/query_ids"] = np.asarray(list(datasets[split].queries))
    return inputs


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(stage: str, stages: list[dict], **facts):
    """Context manager appending ``{stage, seconds, **facts}`` to ``stages`` and printing it."""

    class _Timer:
        def __enter__(self):
            synchronize()
            self.started = time.perf_counter()
            return self

        def __exit__(self, *exc):
            synchronize()
            row = {"stage": stage, "seconds": round(time.perf_counter() - self.started, 2), **facts}
            stages.append(row)
            print(json.dumps(row), flush=True)

    return _Timer()
