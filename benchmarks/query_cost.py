"""Query cost of every built retriever and hybrid of a run, on one CPU thread: ``python -m benchmarks.query_cost
configs/scifact.toml --data-dir ../shared/beir``.

Each built retriever is timed through the command line a user runs, ``stillhouse search CONFIG --retriever NAME
--queries FILE --timings OUT`` (models and indexes loaded once, then every query answered alone after a warm-up
pass, top-100 from each member: query encoding + search + fusion, what one user query costs;
``stillhouse.eval.query_cost``), one process per retriever with torch and the BLAS libraries held to one thread.
Prints a table (mean and median ms per query, ratio of the mean to BM25's) and writes it as JSON with ``--out``;
retrievers that are not built yet are listed as skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from stillhouse.artifacts import write_json_atomic
from stillhouse.eval.beir_data import data_dir_from_env, load_beir

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM":
              "false"}


def stillhouse(*args: str) -> str:
    """Run ``python -m stillhouse ARGS`` on one thread; its standard output (errors end the benchmark)."""
    done = subprocess.run([sys.executable, "-m", "stillhouse", *args], capture_output=True, text=True,
                          env={**os.environ, **ONE_THREAD})
    if done.returncode:
        raise SystemExit(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"stillhouse {args[0]} "
                         f"failed ({done.returncode})")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--data-dir", help="BEIR root folder (default: $STILLHOUSE_BEIR_DIR)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--dataset", help="data set (default: the first a retriever is built for)")
    parser.add_argument("--split", default="test", help="whose queries are timed (texts only; default test)")
    parser.add_argument("--queries", type=int, default=100, help="queries timed (default 100)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", default="bm25", help="the retriever the ratio is to (default bm25)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data_dir = data_dir_from_env(args.data_dir)
    if data_dir is None:
        raise SystemExit("give --data-dir (or set STILLHOUSE_BEIR_DIR): the timed queries are read from there")
    common = [str(args.config), "--data-dir", str(data_dir), *(["--workdir", str(args.workdir)] if args.workdir
                                                                else [])]
    listed = list(csv.DictReader(io.StringIO(stillhouse("search", *common, "--list")), delimiter="\t"))
    dataset = args.dataset or next((r["dataset"] for r in listed if r["state"] == "built"), None)
    if dataset is None:
        raise SystemExit(f"nothing of {args.config} is built yet; run `stillhouse run {args.config}` first")
    texts = list(load_beir(data_dir / dataset, args.split).queries.items())[:args.queries]
    rows, skipped = [], [r["retriever"] for r in listed if r["dataset"] == dataset and r["state"] != "built"]
    with tempfile.TemporaryDirectory() as scratch:
        queries = Path(scratch) / "queries.tsv"
        queries.write_text("".join(f"{qid}\t{' '.join(text.split())}\n" for qid, text in texts), encoding="utf-8")
        for row in listed:
            if row["dataset"] != dataset or row["state"] != "built":
                continue
            out = Path(scratch) / f"{len(rows)}.json"
            stillhouse("search", *common, "--retriever", row["retriever"], "--dataset", dataset, "--queries",
                       str(queries), "--k", "100", "--repeats", str(args.repeats), "--timings", str(out))
            rows.append(json.loads(out.read_text()))
            print(f"{row['retriever']}: {rows[-1]['mean_ms']:.2f} ms/query", flush=True)
    base = next((r["mean_ms"] for r in rows if r["retriever"] == args.baseline), None)
    print(f"\n{dataset} {args.split}, {len(texts)} queries x {args.repeats}, one thread "
          f"({platform.processor() or 'cpu'})\n")
    print(f"| retriever | ms / query (mean) | median | vs {args.baseline} |\n|---|---:|---:|---:|")
    for row in rows:
        row["ratio"] = row["mean_ms"] / base if base else None
        ratio = f"{row['ratio']:.2f}x" if base else "-"
        print(f"| {row['retriever']} | {row['mean_ms']:.2f} | {row['median_ms']:.2f} | {ratio} |")
    if skipped:
        print(f"\nnot built yet (skipped): {', '.join(skipped)}")
    if args.out:
        write_json_atomic(args.out, {"dataset": dataset, "split": args.split, "baseline": args.baseline,
                                     "rows": rows, "skipped": skipped, "machine": platform.platform()})


if __name__ == "__main__":
    main()
