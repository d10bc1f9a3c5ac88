"""Query cost of every built retriever and hybrid of a run, on one CPU thread, in one process: ``python -m
benchmarks.query_cost configs/scifact.toml --data-dir ../shared/beir``.

Each retriever is opened as ``stillhouse search`` opens it (``stillhouse.pipelines.search.open_searcher``: models and
indexes loaded once) and answers the same judged queries one at a time, top-100 from each member, after a warm-up pass:
the time is query encoding + search + fusion, what one user query costs. torch and Lucene are held to one thread.
Prints a table (mean and median ms per query, ratio of the mean to BM25's) and writes it as JSON with ``--out``;
retrievers that are not built yet are listed as skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from benchmarks.impact_latency import timed_searches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--data-dir", help="BEIR root folder (default: [data] dir, then $STILLHOUSE_BEIR_DIR)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--dataset", help="data set (default: the students' data set)")
    parser.add_argument("--queries", type=int, default=100, help="judged queries timed (default 100)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", default="bm25", help="the retriever the ratio is to (default bm25)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from stillhouse.pipelines.cli import _prepare
    from stillhouse.pipelines.dag import search_task
    from stillhouse.pipelines.search import open_searcher

    torch.set_num_threads(1)
    args.datasets, args.retrievers, args.eval_split = None, None, None
    cfg, workdir, roots = _prepare(args)
    dataset = args.dataset or cfg.training_dataset()
    entries = [e for e in roots[0].entries if e["dataset"]["dataset"] == dataset]
    rows, skipped = [], []
    for entry in entries:
        task = search_task(str(workdir), dict(entry["dataset"]), dict(entry["retriever"]))
        if not task.complete():
            skipped.append(entry["name"])
            continue
        loading = time.perf_counter()
        searcher = open_searcher(task)
        load_seconds = time.perf_counter() - loading
        texts = list(task.dataset_task().load().queries.values())[:args.queries]
        times = timed_searches(lambda text, s=searcher: s.search({"q": text}, 100), texts, args.repeats)
        rows.append({"retriever": entry["name"], "mean_ms": statistics.fmean(times),
                     "median_ms": statistics.median(times), "load_s": load_seconds, "queries": len(texts)})
        print(f"{entry['name']}: {rows[-1]['mean_ms']:.2f} ms/query", flush=True)
    base = next((r["mean_ms"] for r in rows if r["retriever"] == args.baseline), None)
    timed = rows[0]["queries"] if rows else 0
    print(f"\n{dataset}, {timed} queries x {args.repeats}, one thread ({platform.processor() or 'cpu'})\n")
    print(f"| retriever | ms / query (mean) | median | vs {args.baseline} |\n|---|---:|---:|---:|")
    for row in rows:
        row["ratio"] = row["mean_ms"] / base if base else None
        ratio = f"{row['ratio']:.2f}x" if base else "-"
        print(f"| {row['retriever']} | {row['mean_ms']:.2f} | {row['median_ms']:.2f} | {ratio} |")
    if skipped:
        print(f"\nnot built yet (skipped): {', '.join(skipped)}")
    if args.out:
        from stillhouse.pipelines.artifacts import write_json_atomic

        write_json_atomic(args.out, {"dataset": dataset, "baseline": args.baseline, "rows": rows,
                                     "skipped": skipped, "machine": platform.platform()})


if __name__ == "__main__":
    main()
