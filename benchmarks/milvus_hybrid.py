"""NDCG@10 of the exported Milvus Lite hybrid beside the pipeline's own fused run: ``python -m
benchmarks.milvus_hybrid EXPORT/milvus --data ../shared/beir --dataset scifact``.

Milvus's ``WeightedRanker`` normalizes each field's inner products with ``0.5 + arctan(s) / pi`` instead of the
pipeline's per-query min-max, so the exported hybrid ranks somewhat differently; this measures by how much, on
the judged queries of a split (``stillhouse.retrievers.export.milvus_hybrid_run``: query vectors from the export's own
query kit). Give the pipeline's run (``<workdir>/HybridSearch/<fingerprint>/run.trec``) with ``--pipeline-run`` to print
both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import add_data_arguments, add_split_arguments, checked_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="the milvus/ folder of a `stillhouse export`")
    add_data_arguments(parser)
    add_split_arguments(parser, "--split")
    parser.add_argument("--pipeline-run", type=Path, help="the HybridSearch run.trec of the same hybrid and split")
    args = parser.parse_args()
    checked_splits(args, args.split)
    from stillhouse.eval.beir_data import load_beir
    from stillhouse.eval.metrics import DEFAULT_METRICS, evaluate_run, ignores_identical_ids
    from stillhouse.retrievers.export import milvus_hybrid_run
    from stillhouse.retrievers.runs import read_trec_run

    data = load_beir(args.data / args.dataset, args.split)
    same_ids = ignores_identical_ids(args.dataset)
    rows = {"milvus hybrid (arctan, weighted sum)": evaluate_run(
        data.qrels, milvus_hybrid_run(args.export, data.queries, k=100), DEFAULT_METRICS, same_ids)[0]}
    if args.pipeline_run:
        rows["pipeline hybrid (min-max, weighted mean)"] = evaluate_run(
            data.qrels, read_trec_run(args.pipeline_run), DEFAULT_METRICS, same_ids)[0]
    print(f"{args.dataset} {args.split} ({len(data.qrels)} queries)\n")
    print("| hybrid | " + " | ".join(DEFAULT_METRICS) + " |\n|---|" + "---:|" * len(DEFAULT_METRICS))
    for name, means in rows.items():
        print(f"| {name} | " + " | ".join(f"{means[m]:.4f}" for m in DEFAULT_METRICS) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
