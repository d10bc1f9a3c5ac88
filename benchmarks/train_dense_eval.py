"""Score the students of ``benchmarks.train_dense``: ``python -m benchmarks.train_dense_eval RUNS.npz``.

Reads the top-100 rows it kept per student and split, and prints one table per split with the pipeline's own
metrics (``stillhouse.eval.metrics.evaluate_run``, ir_measures). Pick settings by the train split; read the test split
for the chosen one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import add_data_arguments, add_split_arguments, checked_splits
from stillhouse.eval.beir_data import load_beir
from stillhouse.eval.metrics import DEFAULT_METRICS, evaluate_run


def runs_of(npz, split: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{student: {query_id: {doc_id: score}}}`` for one split."""
    doc_ids = npz["doc_ids"]
    query_ids = npz[f"{split}/query_ids"]
    names = sorted({key.split("/")[1] for key in npz.files if key.startswith(f"{split}/") and key.endswith("/rows")})
    runs = {}
    for name in names:
        rows, scores = npz[f"{split}/{name}/rows"], npz[f"{split}/{name}/scores"]
        runs[name] = {str(q): {str(doc_ids[r]): float(s) for r, s in zip(rows[i], scores[i], strict=True)}
                      for i, q in enumerate(query_ids)}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    add_data_arguments(parser)
    add_split_arguments(parser)
    args = parser.parse_args()
    npz = np.load(args.runs)
    for split in checked_splits(args, args.splits):
        qrels = load_beir(args.data / args.dataset, split).qrels
        print(f"\n{args.dataset} {split} ({len(qrels)} judged queries)\n")
        print("| student | " + " | ".join(DEFAULT_METRICS) + " |")
        print("|---|" + "---:|" * len(DEFAULT_METRICS))
        for name, run in runs_of(npz, split).items():
            mean, _ = evaluate_run(qrels, run)
            print(f"| {name} | " + " | ".join(f"{mean[m]:.4f}" for m in DEFAULT_METRICS) + " |")


if __name__ == "__main__":
    main()
