"""Query latency of the inference-free impact index against BM25 on the same Lucene: ``python -m
benchmarks.impact_latency``.

Both searchers answer the same queries one at a time on one thread (``search``, not ``batch_search``), top-100,
after a warm-up pass; the impact side's time includes building the query vector from text (tokenize, look up
the IDF table, quantize), which is all an inference-free query costs. Prints one JSON line with the mean and
median milliseconds per query of each and their ratio (Geng et al., 2024 report about 1.1x BM25); BM25 as the
pipeline runs it (BEIR multifield: title and contents) and on the contents field alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from benchmarks.common import add_data_arguments
from stillhouse.eval.beir_data import load_beir
from stillhouse.eval.query_cost import timed_searches
from stillhouse.retrievers.impact_index import IdfQueryEncoder, idf_query_vector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--bm25-index", type=Path, required=True, help="a BM25Index folder's index/")
    parser.add_argument("--impact-index", type=Path, required=True, help="an ImpactIndex folder's index/")
    parser.add_argument("--student", type=Path, required=True, help="a TrainSparse folder (model/, idf.json)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()

    from stillhouse.retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()
    from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher
    from transformers import AutoTokenizer

    from stillhouse.retrievers.export import sparse_tokenizer_dir
    from stillhouse.retrievers.sparse_student import read_idf_json

    queries = list(load_beir(args.data / args.dataset, "test").queries.values())
    tokenizer = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(args.student / "model"))
    weights = read_idf_json(args.student / "idf.json", tokenizer)
    bm25 = LuceneSearcher(str(args.bm25_index))
    bm25.set_bm25(0.9, 0.4)
    impact = LuceneImpactSearcher(str(args.impact_index), IdfQueryEncoder(tokenizer, weights))
    if bm25.num_docs != impact.num_docs:  # two indexes of different corpora time different work
        raise SystemExit(f"--bm25-index holds {bm25.num_docs} documents and --impact-index {impact.num_docs}: give "
                         f"two indexes of the same corpus ({args.dataset})")
    fields = {"contents": 1.0, "title": 1.0}  # the pipeline's BM25 (BEIR multifield)
    bm25_ms = timed_searches(lambda q: bm25.search(q, k=args.k, fields=fields), queries, args.repeats)
    contents_ms = timed_searches(lambda q: bm25.search(q, k=args.k), queries, args.repeats)  # one field
    impact_ms = timed_searches(lambda q: impact.search(q, k=args.k), queries, args.repeats)
    vectors = [idf_query_vector(tokenizer, weights, q) for q in queries]
    print(json.dumps({
        "dataset": args.dataset, "queries": len(queries), "repeats": args.repeats, "k": args.k,
        "machine": platform.processor() or platform.machine(), "threads": 1,
        "bm25_mean_ms": round(statistics.mean(bm25_ms), 3), "bm25_median_ms": round(statistics.median(bm25_ms), 3),
        "impact_mean_ms": round(statistics.mean(impact_ms), 3),
        "impact_median_ms": round(statistics.median(impact_ms), 3),
        "ratio_mean": round(statistics.mean(impact_ms) / statistics.mean(bm25_ms), 3),
        "bm25_contents_only_mean_ms": round(statistics.mean(contents_ms), 3),
        "ratio_to_contents_only": round(statistics.mean(impact_ms) / statistics.mean(contents_ms), 3),
        "mean_query_terms": round(sum(map(len, vectors)) / len(vectors), 2)}))


if __name__ == "__main__":
    main()
