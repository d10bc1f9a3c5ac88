"""``stillhouse export CONFIG --to DIR``: the built indexes, in forms search services load.

* ``lucene``: the sparse student's Lucene impact index folder, its query weight table (``idf.json``) and the
  document encoder (to index new documents).
* ``faiss``: the dense student's FAISS index, the row -> document id map and the student model (to encode
  queries).
* ``opensearch``: bulk NDJSON files (each under ``bulk_max_bytes``) for OpenSearch and Elasticsearch, each
  engine's index mapping (``sparse`` as ``rank_features`` in OpenSearch, ``sparse_vector`` in Elasticsearch;
  ``dense`` as ``knn_vector`` / ``dense_vector``; title and text), and example query bodies in each engine's
  idiom that reproduce the pipeline's scores: OpenSearch ``neural_sparse`` with ``query_tokens``, Elasticsearch
  ``sparse_vector`` with a ``query_vector``, the portable ``rank_feature`` form (a clause per query token
  boosted by its weight, for a ``rank_features`` field), and each engine's k-NN query.
* ``milvus``: an embedded Milvus Lite database with a ``dense`` (FLAT, inner product) and a ``sparse``
  (SPARSE_INVERTED_INDEX, inner product) collection, and a ``hybrid`` collection holding both vectors for
  Milvus's ``hybrid_search`` with a ``WeightedRanker``.

When both students are exported and the config fuses them (a ``[hybrid]`` whose members are the dense and the
sparse student), every format also ships the hybrid as its engine runs it natively: an OpenSearch search pipeline
(``normalization-processor``: min_max, arithmetic_mean, the weights) and ``hybrid`` query; an Elasticsearch
``linear`` retriever with the ``minmax`` normalizer; Milvus's weighted ``hybrid_search``; for Lucene and FAISS,
the fusion rule to apply over the two lists (or ``stillhouse search``).

Every format folder carries what a service needs to build a query without this project's Python: ``query/``
(the sparse tokenizer, ``idf.json``, the dense model folder) and ``manifest.json`` (dimensions, similarity,
normalization, impact scale, token escaping, hybrid weights).

Every exporter streams: documents are read line by line from the corpus, the impact vectors and the FAISS
index, one batch at a time. The whole export is written into a temporary folder beside the target and
renamed into place at the end, so an interrupted export leaves nothing half-written; an existing target is
refused unless ``--force``.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stillhouse.retrievers.dense import INT8_RECIPE
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.impact_index import IMPACT_SCALE  # the index stores round(weight x IMPACT_SCALE)

log = logging.getLogger("stillhouse")

FORMATS = ("lucene", "faiss", "opensearch", "milvus")
BATCH = 256


@dataclass(frozen=True)
class BuiltIndexes:
    """Where a finished run keeps what the exporters read."""

    corpus: Path  # LoadDataset's corpus.jsonl
    dense_index: Path | None = None  # DenseIndex folder: index.faiss + docids.json
    dense_model: Path | None = None
    dense_quantize: str = "none"  # "int8": the index was encoded with int8 linear layers (dense.quantize_int8)
    sparse_index: Path | None = None  # ImpactIndex folder: index/ + vectors.jsonl
    sparse_model: Path | None = None
    idf: Path | None = None  # the sparse student's idf.json
    hybrid: dict | None = None  # {name, weights: {dense, sparse}, depth}: the config's fusion of the two students


def feature_name(token: str) -> str:
    """A vocabulary token as a ``rank_features`` key: both engines read ``.`` in a key as an object path, so
    ``%`` and ``.`` are percent-escaped."""
    return token.replace("%", "%25").replace(".", "%2E")


def iter_corpus(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def iter_impacts(path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """(doc id, {token: integer impact}) from a JsonVectorCollection (impact = round(weight x 100))."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield row["id"], row["vector"]


def mapped_index(index_dir: Path):
    """The FAISS index of a folder, memory-mapped (read only): rows are read from disk as they are used."""
    import faiss

    return faiss.read_index(str(index_dir / "index.faiss"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)


def iter_dense(index_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(doc id, vector) from a FAISS flat index folder, ``BATCH`` rows reconstructed at a time."""
    index = mapped_index(index_dir)
    doc_ids = json.loads((index_dir / "docids.json").read_text())
    for start in range(0, index.ntotal, BATCH):
        block = index.reconstruct_n(start, min(BATCH, index.ntotal - start))
        yield from zip(doc_ids[start:start + len(block)], block, strict=True)


def documents(built: BuiltIndexes) -> Iterator[dict]:
    """Each document once: id, title, text, and its sparse and dense vectors where built (streams zipped in
    corpus order, ids checked)."""
    sparse = iter_impacts(built.sparse_index / "vectors.jsonl") if built.sparse_index else None
    dense = iter_dense(built.dense_index) if built.dense_index else None
    streams = {name: stream for name, stream in (("sparse", sparse), ("dense", dense)) if stream is not None}
    for doc in iter_corpus(built.corpus):
        row = {"id": doc["_id"], "title": doc.get("title", ""), "text": doc.get("text", "")}
        for name, stream in streams.items():
            doc_id, vector = next(stream, (None, None))
            if doc_id != row["id"]:
                raise UserError(f"export: the {name} index is out of step with the corpus ({doc_id} where "
                                f"{row['id']} was expected); rebuild it with `stillhouse run`")
            row[name] = vector
        yield row
    for name, stream in streams.items():
        if next(stream, None) is not None:
            raise UserError(f"export: the {name} index holds more documents than the corpus; rebuild it with "
                            "`stillhouse run`")


def dense_dimension(built: BuiltIndexes) -> int:
    return mapped_index(built.dense_index).d


def link_tree(source: Path, target: Path) -> None:
    """Copy a folder, hard-linking files where the file system allows (models are large and never rewritten)."""
    import os

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


@functools.cache
def dense_is_unit_length(index_dir: Path, tolerance: float = 1e-3) -> bool:
    """Whether every document vector of a FAISS folder has unit length (Elasticsearch's ``dot_product`` requires
    it); read once per export, whatever the number of formats."""
    return all(abs(float(np.linalg.norm(vector)) - 1) <= tolerance for _, vector in iter_dense(index_dir))


def manifest(built: BuiltIndexes) -> dict:
    """What a service needs to know to query the export: one JSON in every format folder."""
    payload: dict = {"query_kit": "query/"}
    if built.dense_index:
        payload["dense"] = {"field": "dense", "dimension": dense_dimension(built), "similarity": "inner_product",
                            "unit_length": dense_is_unit_length(built.dense_index), "model": "query/dense-model",
                            "encode": "SentenceTransformer('query/dense-model').encode_query(texts)",
                            "quantize": built.dense_quantize}
        if built.dense_quantize == "int8":
            payload["dense"]["encode"] += f", the model first quantized as the index was: {INT8_RECIPE}"
    if built.sparse_index:
        payload["sparse"] = {"field": "sparse", "impact_scale": IMPACT_SCALE, "tokenizer": "query/tokenizer",
                             "query_weights": "query/idf.json",
                             "query": "the query's distinct tokens (tokenizer without special tokens), each weighted "
                                      "by idf.json; impacts are round(weight x impact_scale)",
                             "document_impacts": "round(weight x impact_scale), integers",
                             "service_max_impact": SERVICE_MAX_IMPACT,
                             "service_cap": "OpenSearch rank_features and Elasticsearch sparse_vector keep 9 "
                                            "significant bits, so bulk-*.ndjson caps document impacts at "
                                            "service_max_impact (exact below it); Lucene and Milvus keep them whole",
                             "token_escaping": {"%": "%25", ".": "%2E"}}
    if built.hybrid:
        payload["hybrid"] = {"name": built.hybrid["name"], "normalization": "min_max",
                             "combination": "arithmetic_mean", "weights": built.hybrid["weights"],
                             "depth": built.hybrid["depth"],
                             "rule": "each member's top `depth`, scores min-max normalized per query over that list "
                                     "(a document a member did not return gets 0 from it), weighted mean",
                             "engines": "OpenSearch's min_max maps a list's lowest score to 0.001 and leaves a "
                                        "sub-query that missed a document out of its mean; Elasticsearch's minmax "
                                        "keeps the raw score of a list of equal scores; Milvus's WeightedRanker "
                                        "normalizes inner products with 0.5 + arctan(s) / pi: rankings are close to "
                                        "the rule above, not identical"}
    return payload


def write_query_kit(built: BuiltIndexes, out: Path) -> None:
    """``query/`` (tokenizer, idf.json, dense model) and ``manifest.json`` in a format folder."""
    kit = out / "query"
    kit.mkdir()
    if built.sparse_index:
        link_tree(sparse_tokenizer_dir(built.sparse_model), kit / "tokenizer")
        shutil.copy2(built.idf, kit / "idf.json")
    if built.dense_index:
        link_tree(built.dense_model, kit / "dense-model")
    (out / "manifest.json").write_text(json.dumps(manifest(built), indent=2))


FUSION_NOTE = ("Hybrid: take each list's top `depth` (manifest.json), min-max normalize each list's scores per query, "
               "give a document missing from a list 0 for it, and rank by the weighted mean with the manifest's "
               "weights; `stillhouse search CONFIG \"query\"` does exactly this; Pyserini's HybridSearcher "
               "(normalization on, alpha = the sparse weight over the dense one) fuses a Lucene and a FAISS searcher "
               "with a similar min-max rule.\n")


def export_lucene(built: BuiltIndexes, out: Path) -> None:
    shutil.copytree(built.sparse_index / "index", out / "index")
    shutil.copy2(built.idf, out / "idf.json")
    shutil.copytree(built.sparse_model, out / "model")
    (out / "README.md").write_text(
        "# Lucene impact index (inference-free sparse retrieval)\n\n"
        "Queries run no model: tokenize with `model/` (no special tokens), weight each distinct token by "
        "`idf.json`, multiply by 100 and round, and search with Pyserini's `LuceneImpactSearcher(\"index\", "
        "encoder)` (or Anserini's `SearchCollection -impact -pretokenized`).\n\n"
        + (FUSION_NOTE if built.hybrid else ""))


INT8_NOTE = ("The index was encoded with int8 linear layers (`manifest.json`: `dense.quantize`): encode queries the "
             f"same way, `model = {INT8_RECIPE}` on the CPU, before `encode_query`.\n\n")


def export_faiss(built: BuiltIndexes, out: Path) -> None:
    shutil.copy2(built.dense_index / "index.faiss", out / "index.faiss")
    shutil.copy2(built.dense_index / "docids.json", out / "docids.json")
    shutil.copytree(built.dense_model, out / "model")
    (out / "README.md").write_text(
        "# FAISS index (dense retrieval)\n\n`faiss.read_index(\"index.faiss\")`: an exact inner-product index "
        "whose row i is document `docids.json[i]`. Encode queries with "
        "`SentenceTransformer(\"model\").encode_query(queries)` and call `index.search(vectors, k)`.\n\n"
        + (INT8_NOTE if built.dense_quantize == "int8" else "")
        + (FUSION_NOTE if built.hybrid else ""))


def opensearch_mapping(built: BuiltIndexes, engine: str) -> dict:
    properties: dict = {"title": {"type": "text"}, "text": {"type": "text"}}
    settings: dict = {}
    if built.sparse_index:
        # Elasticsearch's own idiom for learned sparse vectors is the sparse_vector field and query; OpenSearch's is
        # rank_features (which neural_sparse and rank_feature queries read). Both keep 9 significant bits.
        properties["sparse"] = {"type": "rank_features" if engine == "opensearch" else "sparse_vector"}
    if built.dense_index:
        dim = dense_dimension(built)
        if engine == "opensearch":
            settings = {"index": {"knn": True}}
            properties["dense"] = {"type": "knn_vector", "dimension": dim,
                                   "method": {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct"}}
        else:
            # Elasticsearch rejects dot_product for a vector more than 1e-3 off unit length (bf16 encoding puts most
            # off); max_inner_product takes any vector and ranks as the pipeline's inner product does.
            similarity = "dot_product" if dense_is_unit_length(built.dense_index) else "max_inner_product"
            properties["dense"] = {"type": "dense_vector", "dims": dim, "index": True, "similarity": similarity}
    return {"settings": settings, "mappings": {"properties": properties}} if settings else \
        {"mappings": {"properties": properties}}


def sparse_query_body(query_vector: dict[str, int], k: int = 10) -> dict:
    """A query whose score is the impact index's ``sum_t q_t d_t`` over integer impacts: one ``rank_feature``
    clause (linear) per query token, boosted by the token's query impact. The documents' features are integer
    impacts too: ``rank_features`` keeps 9 significant bits, so integers under 512 are stored exactly."""
    return {"size": k, "query": {"bool": {"should": [
        {"rank_feature": {"field": f"sparse.{feature_name(t)}", "linear": {}, "boost": w}}
        for t, w in query_vector.items()]}}}


def elasticsearch_sparse_query(query_vector: dict[str, int]) -> dict:
    """Elasticsearch's ``sparse_vector`` query with a precomputed ``query_vector`` (no inference in the cluster):
    its score is the dot product of the query's and the document's weights, the impact index's ``sum_t q_t d_t``."""
    return {"sparse_vector": {"field": "sparse",
                              "query_vector": {feature_name(t): w for t, w in query_vector.items()}}}


def dense_query_body(vector: list[float], engine: str, k: int = 10) -> dict:
    if engine == "opensearch":
        return {"size": k, "query": {"knn": {"dense": {"vector": vector, "k": k}}}}
    return {"knn": {"field": "dense", "query_vector": vector, "k": k, "num_candidates": max(100, k)}}


def neural_sparse_query(query_vector: dict[str, int]) -> dict:
    """OpenSearch's ``neural_sparse`` query with raw ``query_tokens`` (no model in the cluster): the dot product of
    the query's impacts with the ``rank_features`` field."""
    return {"neural_sparse": {"sparse": {"query_tokens": {feature_name(t): w for t, w in query_vector.items()}}}}


def opensearch_hybrid(hybrid: dict, sparse_vector: dict[str, int], dense_vector: list[float], k: int = 10
                      ) -> tuple[dict, dict]:
    """The search pipeline (``normalization-processor``) and the ``hybrid`` query: sub-queries sparse, then dense,
    so the weights (summing to 1, ``stillhouse.pipelines.dag.students_hybrid``) are listed in that order."""
    pipeline = {"description": f"stillhouse hybrid {hybrid['name']}: min-max per sub-query, weighted mean",
                "phase_results_processors": [{"normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {"technique": "arithmetic_mean",
                                    "parameters": {"weights": [hybrid["weights"]["sparse"],
                                                               hybrid["weights"]["dense"]]}}}}]}
    depth = hybrid["depth"]
    query = {"size": k, "query": {"hybrid": {"pagination_depth": depth, "queries": [
        neural_sparse_query(sparse_vector), {"knn": {"dense": {"vector": dense_vector, "k": depth}}}]}}}
    return pipeline, query


def elasticsearch_linear(hybrid: dict, sparse_vector: dict[str, int], dense_vector: list[float], k: int = 10
                         ) -> dict:
    """Elasticsearch's ``linear`` retriever: each sub-retriever min-max normalized (``minmax``) and weighted. It
    sums rather than averages; dividing by a constant ranks the same."""
    depth = hybrid["depth"]
    sparse = {"standard": {"query": elasticsearch_sparse_query(sparse_vector)}}
    dense = {"knn": {"field": "dense", "query_vector": dense_vector, "k": depth, "num_candidates": depth}}
    return {"size": k, "retriever": {"linear": {"rank_window_size": depth, "retrievers": [
        {"retriever": sparse, "weight": hybrid["weights"]["sparse"], "normalizer": "minmax"},
        {"retriever": dense, "weight": hybrid["weights"]["dense"], "normalizer": "minmax"}]}}}


# rank_features and sparse_vector store a feature as a float with 9 significant bits: every integer impact up to 511
# is stored exactly, a larger one is rounded. The bulk files cap document impacts there, so the service scores them
# as written (Lucene and Milvus keep the integers whole).
SERVICE_MAX_IMPACT = 511


def service_impacts(impacts: dict[str, int]) -> tuple[dict[str, int], int]:
    """A document's impacts as the bulk files carry them: feature names escaped, each impact capped at
    ``SERVICE_MAX_IMPACT``; and how many were capped."""
    capped = sum(impact > SERVICE_MAX_IMPACT for impact in impacts.values())
    return {feature_name(t): min(impact, SERVICE_MAX_IMPACT) for t, impact in impacts.items()}, capped


def write_bulk_files(built: BuiltIndexes, out: Path, index_name: str, max_bytes: int) -> tuple[list[str], int]:
    """The documents as ``_bulk`` NDJSON, split into ``bulk-00001.ndjson``, ... of at most ``max_bytes`` each (the
    services refuse a request over their limit: 100 MB by default in both); returns the file names and how many
    document impacts were capped (``service_impacts``)."""
    from tqdm import tqdm

    names: list[str] = []
    handle = None
    written = capped = 0
    try:
        for row in tqdm(documents(built), desc="bulk documents", unit="doc", mininterval=5):
            source = {"title": row["title"], "text": row["text"]}
            if "sparse" in row:
                source["sparse"], over = service_impacts(row["sparse"])
                capped += over
            if "dense" in row:
                source["dense"] = [round(float(x), 7) for x in row["dense"]]
            pair = (json.dumps({"index": {"_index": index_name, "_id": row["id"]}}) + "\n" + json.dumps(source)
                    + "\n").encode("utf-8")
            if handle is None or (written and written + len(pair) > max_bytes):
                if handle is not None:
                    handle.close()
                names.append(f"bulk-{len(names) + 1:05d}.ndjson")
                handle, written = open(out / names[-1], "wb"), 0
            handle.write(pair)
            written += len(pair)
    finally:
        if handle is not None:
            handle.close()
    if capped:
        log.warning("bulk files: %d document impacts above %d capped to it (rank_features keeps 9 significant bits)",
                    capped, SERVICE_MAX_IMPACT)
    return names, capped


def export_opensearch(built: BuiltIndexes, out: Path, index_name: str, example_query: str,
                      bulk_max_bytes: int = 50_000_000) -> None:
    bulk_files, capped = write_bulk_files(built, out, index_name, bulk_max_bytes)
    for engine in ("opensearch", "elasticsearch"):
        (out / f"{engine}-mapping.json").write_text(json.dumps(opensearch_mapping(built, engine), indent=2))
    examples: dict = {"query": example_query}
    sparse_vector = sparse_query_vector(built, example_query) if built.sparse_index else None
    dense_vector = dense_query_vector(built, example_query) if built.dense_index else None
    if sparse_vector is not None:
        examples["sparse"] = sparse_query_body(sparse_vector)
        examples["sparse_opensearch_neural"] = {"size": 10, "query": neural_sparse_query(sparse_vector)}
        examples["sparse_elasticsearch"] = {"size": 10, "query": elasticsearch_sparse_query(sparse_vector)}
    if dense_vector is not None:
        examples["dense_opensearch"] = dense_query_body(dense_vector, "opensearch")
        examples["dense_elasticsearch"] = dense_query_body(dense_vector, "elasticsearch")
    hybrid_steps = ""
    if built.hybrid and sparse_vector is not None and dense_vector is not None:
        pipeline, query = opensearch_hybrid(built.hybrid, sparse_vector, dense_vector)
        (out / "opensearch-search-pipeline.json").write_text(json.dumps(pipeline, indent=2))
        examples["hybrid_opensearch"] = query
        examples["hybrid_elasticsearch"] = elasticsearch_linear(built.hybrid, sparse_vector, dense_vector)
        hybrid_steps = (
            f"4. Hybrid ({built.hybrid['name']}): OpenSearch: `PUT /_search/pipeline/stillhouse-hybrid` with "
            f"`opensearch-search-pipeline.json`, then `POST /{index_name}/_search?search_pipeline=stillhouse-hybrid` "
            "with `hybrid_opensearch`. Elasticsearch (8.18+): `POST /{index}/_search` with `hybrid_elasticsearch` "
            "(a `linear` retriever, `minmax` normalizer). `pagination_depth` needs OpenSearch 2.19+. Both engines "
            "normalize at the edges slightly differently from stillhouse (see manifest.json), so rankings are close, "
            "not identical.\n".replace("{index}", index_name))
    (out / "example-queries.json").write_text(json.dumps(examples, indent=2))
    (out / "README.md").write_text(
        f"# OpenSearch / Elasticsearch\n\n1. `PUT /{index_name}` with `opensearch-mapping.json` (or "
        f"`elasticsearch-mapping.json`).\n2. `POST /_bulk` with each of {', '.join(f'`{n}`' for n in bulk_files)} "
        f"(each under {bulk_max_bytes / 1e6:g} MB, the request limit being 100 MB by default).\n"
        "3. Query with the bodies in `example-queries.json`: `sparse_opensearch_neural` (OpenSearch `neural_sparse`) "
        "or `sparse` (`rank_feature` clauses) on the OpenSearch mapping, `sparse_elasticsearch` (`sparse_vector`) on "
        "the Elasticsearch one; `dense_opensearch` / `dense_elasticsearch`. Sparse features are integer impacts "
        "(weight x 100) named by vocabulary token, with `%` and `.` percent-escaped (`%25`, `%2E`); a query's "
        "boosts are its tokens' `idf.json` weights x 100, rounded, as in the example. Document impacts are capped "
        f"at {SERVICE_MAX_IMPACT} (the services keep 9 significant bits; {capped} impacts were capped in this "
        "export).\n" + hybrid_steps)


def export_milvus(built: BuiltIndexes, out: Path) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=str(out / "stillhouse.db"))
    vocab = None
    if built.sparse_model:
        from transformers import AutoTokenizer

        vocab = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(built.sparse_model)).get_vocab()
    hybrid = bool(built.hybrid and built.sparse_index and built.dense_index)
    collections = {"sparse": {"sparse": "vector"} if built.sparse_index else {},
                   "dense": {"dense": "vector"} if built.dense_index else {},
                   "hybrid": {"sparse": "sparse", "dense": "dense"} if hybrid else {}}
    for name, fields in collections.items():
        if not fields:
            continue
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        params = client.prepare_index_params()
        for kind, field in fields.items():
            if kind == "sparse":
                schema.add_field(field, DataType.SPARSE_FLOAT_VECTOR)
            else:
                schema.add_field(field, DataType.FLOAT_VECTOR, dim=dense_dimension(built))
            params.add_index(field_name=field, index_type="SPARSE_INVERTED_INDEX" if kind == "sparse" else "FLAT",
                             metric_type="IP")
        client.create_collection(name, schema=schema, index_params=params)
    batch: dict[str, list] = {name: [] for name, fields in collections.items() if fields}
    for row in documents(built):
        vectors = {}
        if "sparse" in row:
            vectors["sparse"] = milvus_sparse(row["sparse"], vocab)
        if "dense" in row:
            vectors["dense"] = row["dense"].astype(np.float32).tolist()
        for name, fields in collections.items():
            if fields:
                batch[name].append({"id": row["id"], **{field: vectors[kind] for kind, field in fields.items()}})
        for name, rows in batch.items():
            if len(rows) >= BATCH:
                client.insert(name, rows)
                rows.clear()
    for name, rows in batch.items():
        if rows:
            client.insert(name, rows)
    client.close()
    (out / "README.md").write_text(
        "# Milvus Lite\n\n`MilvusClient(uri=\"stillhouse.db\")`, then `load_collection(\"dense\")` / "
        "`load_collection(\"sparse\")` (a reopened database starts with its collections released) and "
        "`search(name, data=[vector], anns_field=\"vector\", search_params={\"metric_type\": \"IP\"})`. "
        "Sparse query vectors are `{token id: weight}` over the document encoder's vocabulary: the query's "
        "distinct tokens weighted by `query/idf.json`.\n\n" + (
            "Hybrid: the `hybrid` collection holds both vectors (`sparse`, `dense`); run `hybrid_search(\"hybrid\", "
            "[AnnSearchRequest(...sparse...), AnnSearchRequest(...dense...)], WeightedRanker(w_sparse, w_dense))` "
            "with the manifest's weights (see `milvus_hybrid_search` in stillhouse's retrievers/export.py). Milvus "
            "normalizes inner products with arctan, not min-max, so its ranking differs slightly from the "
            "pipeline's.\n" if hybrid else ""))


def milvus_sparse(impacts: dict[str, int], vocab: dict[str, int]) -> dict[int, float]:
    """Integer impacts by token as Milvus's sparse vector: {token id: weight} (impact / IMPACT_SCALE)."""
    return {vocab[t]: v / IMPACT_SCALE for t, v in impacts.items()}


def milvus_hybrid_run(folder: Path, queries: dict[str, str], k: int = 10) -> dict[str, dict[str, float]]:
    """Answer ``queries`` with the Milvus export in ``folder`` (``<export>/milvus``) the way a service would: query
    vectors built from its ``query/`` kit alone (tokenizer + idf.json, the dense model), then Milvus's weighted
    ``hybrid_search`` with the manifest's weights and depth."""
    from pymilvus import MilvusClient
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from stillhouse.retrievers.impact_index import IdfQueryEncoder
    from stillhouse.retrievers.sparse_student import read_idf_json

    manifest_json = json.loads((folder / "manifest.json").read_text())
    hybrid = manifest_json.get("hybrid")
    if hybrid is None:
        raise UserError(f"{folder}: the export has no hybrid (its config fuses no dense and sparse student)")
    tokenizer = AutoTokenizer.from_pretrained(folder / "query" / "tokenizer")
    encoder, vocab = IdfQueryEncoder(tokenizer, read_idf_json(folder / "query" / "idf.json", tokenizer)), \
        tokenizer.get_vocab()
    dense_model = SentenceTransformer(str(folder / "query" / "dense-model"), device="cpu")
    client = MilvusClient(uri=str(folder / "stillhouse.db"))
    client.load_collection("hybrid")  # a reopened database starts with its collections released
    run = {}
    try:
        for query_id, text in queries.items():
            sparse = milvus_sparse(encoder.encode(text), vocab)
            dense = dense_model.encode_query([text])[0].tolist()
            run[query_id] = milvus_hybrid_search(client, sparse, dense, hybrid["weights"], k, hybrid["depth"])
    finally:
        client.close()
    return run


def milvus_hybrid_search(client, sparse_vector: dict[int, float], dense_vector: list[float], weights: dict[str, float],
                         k: int = 10, depth: int = 100) -> dict[str, float]:
    """Milvus's native hybrid search over the export's ``hybrid`` collection: each field's top ``depth``, fused by
    a ``WeightedRanker`` (Milvus normalizes IP scores with ``0.5 + arctan(s) / pi``, then takes the weighted sum)."""
    from pymilvus import AnnSearchRequest, WeightedRanker

    requests = [AnnSearchRequest(data=[sparse_vector], anns_field="sparse", param={"metric_type": "IP"}, limit=depth),
                AnnSearchRequest(data=[dense_vector], anns_field="dense", param={"metric_type": "IP"}, limit=depth)]
    hits = client.hybrid_search("hybrid", requests, WeightedRanker(weights["sparse"], weights["dense"]), limit=k)[0]
    return {hit["id"]: float(hit["distance"]) for hit in hits}


def sparse_tokenizer_dir(model_dir: Path) -> Path:
    """The folder holding the sparse model's tokenizer (a Router saves its document route in a sub-folder)."""
    found = sorted(model_dir.rglob("tokenizer.json"), key=lambda p: len(p.parts))
    if not found:
        raise UserError(f"export: no tokenizer under {model_dir}")
    return found[0].parent


def sparse_query_vector(built: BuiltIndexes, query: str) -> dict[str, int]:
    """The sparse student's query impacts for ``query`` (its static table, quantized as the index searches)."""
    from transformers import AutoTokenizer

    from stillhouse.retrievers.impact_index import IdfQueryEncoder
    from stillhouse.retrievers.sparse_student import read_idf_json

    tokenizer = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(built.sparse_model))
    return IdfQueryEncoder(tokenizer, read_idf_json(built.idf, tokenizer)).encode(query)


def dense_query_vector(built: BuiltIndexes, query: str) -> list[float]:
    from stillhouse.retrievers.dense import load_sentence_encoder

    model = load_sentence_encoder(built.dense_model, device="cpu", quantize=built.dense_quantize)
    return [round(float(x), 7) for x in model.encode([query])[0]]


EXPORTERS = {"lucene": export_lucene, "faiss": export_faiss, "milvus": export_milvus}


def checked_formats(formats: list[str]) -> list[str]:
    """``formats`` without repeats, each one of ``FORMATS`` (a UserError names the first that is not)."""
    formats = list(dict.fromkeys(formats))
    if not formats:
        raise UserError(f"export --formats: name at least one of {', '.join(FORMATS)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"export --formats: unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    return formats


def export(built: BuiltIndexes, target: Path, formats: list[str], force: bool = False, index_name: str = "stillhouse",
           example_query: str = "", workdir: Path | None = None, bulk_max_bytes: int = 50_000_000) -> list[Path]:
    """Write the chosen exports under ``target`` (one sub-folder per format); return the folders written.

    Everything is written into a staging folder beside ``target`` that replaces it only once complete; a
    failed export removes its staging folder and leaves ``target`` as it was."""
    formats = checked_formats(formats)
    needs = {"lucene": built.sparse_index, "faiss": built.dense_index}
    for fmt, present in needs.items():
        if fmt in formats and not present:
            kind = "sparse" if fmt == "lucene" else "dense"
            raise UserError(f"export --formats {fmt}: the config has no {kind} student index; add "
                            f"[{kind}_student] to the config or drop {fmt}")
    if workdir is not None and (target == workdir or target in workdir.parents or workdir in target.parents):
        raise UserError(f"export --to {target}: inside or around the work dir {workdir}; choose a folder outside it")
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise UserError(f"export target {target} already exists; pass --force to replace it or choose another --to")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for fmt in formats:
            log.info("export: %s", fmt)
            folder = staging / fmt
            folder.mkdir()
            if fmt == "opensearch":
                export_opensearch(built, folder, index_name, example_query, bulk_max_bytes)
            else:
                EXPORTERS[fmt](built, folder)
            write_query_kit(built, folder)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target / fmt for fmt in formats]
