"""BM25 (Robertson & Zaragoza, 2009) through Pyserini/Lucene.

BEIR's "multifield" setting (Thakur et al., 2021) indexes the title as its own field and scores a
query against ``contents`` and ``title`` with equal weight; it is the default here. Parameters
k1=0.9, b=0.4 are Anserini's defaults used for BEIR.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stillhouse.retrievers.lucene_runtime import ensure_pyserini
from stillhouse.retrievers.runs import Run

log = logging.getLogger(__name__)


def build_bm25_index(beir_folder: Path, index_dir: Path, multifield: bool = True, threads: int = 2) -> None:
    """Index ``beir_folder/corpus.jsonl`` (BEIR layout) into a new Lucene index at ``index_dir``."""
    ensure_pyserini()
    from jnius import autoclass

    args = ["-collection", "BeirMultifieldCollection" if multifield else "BeirFlatCollection",
            "-input", str(beir_folder), "-index", str(index_dir),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw", "-quiet"]
    if multifield:
        args += ["-fields", "title"]
    log.info("building Lucene BM25 index of %s", beir_folder)
    autoclass("io.anserini.index.IndexCollection").main(args)


def bm25_search(index_dir: Path, queries: dict[str, str], k: int, k1: float = 0.9, b: float = 0.4,
                multifield: bool = True, threads: int = 2) -> Run:
    """Top-``k`` documents per query from a Lucene index."""
    ensure_pyserini()
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index_dir))
    searcher.set_bm25(k1, b)
    query_ids = list(queries)
    fields = {"contents": 1.0, "title": 1.0} if multifield else {}
    hits = searcher.batch_search([queries[q] for q in query_ids], query_ids, k=k, threads=threads, fields=fields)
    searcher.close()
    return {qid: {hit.docid: float(hit.score) for hit in hits.get(qid, [])} for qid in query_ids}
