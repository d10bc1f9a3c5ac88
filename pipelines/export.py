"""``stillhouse export CONFIG --to DIR``: the built indexes, in forms search services load.

* ``lucene``: the sparse student's Lucene impact index folder, its query weight table (``idf.json``) and the
  document encoder (to index new documents).
* ``faiss``: the dense student's FAISS index, the row -> document id map and the student model (to encode
  queries).
* ``opensearch``: one bulk NDJSON for OpenSearch and Elasticsearch (``sparse`` as ``rank_features``, ``dense`` as
  ``knn_vector`` / ``dense_vector``, plus title and text), each engine's index mapping, and example query
  bodies that reproduce the pipeline's scores (a ``rank_feature`` clause per query token boosted by its weight;
  a k-NN query).
* ``milvus``: an embedded Milvus Lite database with a ``dense`` (FLAT, inner product) and a ``sparse``
  (SPARSE_INVERTED_INDEX, inner product) collection.

Every exporter streams: documents are read line by line from the corpus, the impact vectors and the FAISS
index, one batch at a time. The whole export is written into a temporary folder beside the target and
renamed into place at the end, so an interrupted export leaves nothing half-written; an existing target is
refused unless ``--force``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrievers.errors import UserError
from retrievers.impact_index import IMPACT_SCALE  # the index stores round(weight x IMPACT_SCALE)

log = logging.getLogger("stillhouse")

FORMATS = ("lucene", "faiss", "opensearch", "milvus")
BATCH = 256


@dataclass(frozen=True)
class BuiltIndexes:
    """Where a finished run keeps what the exporters read."""

    corpus: Path  # LoadDataset's corpus.jsonl
    dense_index: Path | None = None  # DenseIndex folder: index.faiss + docids.json
    dense_model: Path | None = None
    sparse_index: Path | None = None  # ImpactIndex folder: index/ + vectors.jsonl
    sparse_model: Path | None = None
    idf: Path | None = None  # the sparse student's idf.json


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


def export_lucene(built: BuiltIndexes, out: Path) -> None:
    shutil.copytree(built.sparse_index / "index", out / "index")
    shutil.copy2(built.idf, out / "idf.json")
    shutil.copytree(built.sparse_model, out / "model")
    (out / "README.md").write_text(
        "# Lucene impact index (inference-free sparse retrieval)\n\n"
        "Queries run no model: tokenize with `model/` (no special tokens), weight each distinct token by "
        "`idf.json`, multiply by 100 and round, and search with Pyserini's `LuceneImpactSearcher(\"index\", "
        "encoder)` (or Anserini's `SearchCollection -impact -pretokenized`).\n")


def export_faiss(built: BuiltIndexes, out: Path) -> None:
    shutil.copy2(built.dense_index / "index.faiss", out / "index.faiss")
    shutil.copy2(built.dense_index / "docids.json", out / "docids.json")
    shutil.copytree(built.dense_model, out / "model")
    (out / "README.md").write_text(
        "# FAISS index (dense retrieval)\n\n`faiss.read_index(\"index.faiss\")`: an exact inner-product index "
        "whose row i is document `docids.json[i]`. Encode queries with "
        "`SentenceTransformer(\"model\").encode(queries)` and call `index.search(vectors, k)`.\n")


def opensearch_mapping(built: BuiltIndexes, engine: str) -> dict:
    properties: dict = {"title": {"type": "text"}, "text": {"type": "text"}}
    settings: dict = {}
    if built.sparse_index:
        properties["sparse"] = {"type": "rank_features"}
    if built.dense_index:
        dim = dense_dimension(built)
        if engine == "opensearch":
            settings = {"index": {"knn": True}}
            properties["dense"] = {"type": "knn_vector", "dimension": dim,
                                   "method": {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct"}}
        else:
            properties["dense"] = {"type": "dense_vector", "dims": dim, "index": True, "similarity": "dot_product"}
    return {"settings": settings, "mappings": {"properties": properties}} if settings else \
        {"mappings": {"properties": properties}}


def sparse_query_body(query_vector: dict[str, int], k: int = 10) -> dict:
    """A query whose score is the impact index's ``sum_t q_t d_t`` over integer impacts: one ``rank_feature``
    clause (linear) per query token, boosted by the token's query impact. The documents' features are integer
    impacts too: ``rank_features`` keeps 9 significant bits, so integers under 512 are stored exactly."""
    return {"size": k, "query": {"bool": {"should": [
        {"rank_feature": {"field": f"sparse.{feature_name(t)}", "linear": {}, "boost": w}}
        for t, w in query_vector.items()]}}}


def dense_query_body(vector: list[float], engine: str, k: int = 10) -> dict:
    if engine == "opensearch":
        return {"size": k, "query": {"knn": {"dense": {"vector": vector, "k": k}}}}
    return {"knn": {"field": "dense", "query_vector": vector, "k": k, "num_candidates": max(100, k)}}


def export_opensearch(built: BuiltIndexes, out: Path, index_name: str, example_query: str) -> None:
    with open(out / "bulk.ndjson", "w", encoding="utf-8") as bulk:
        for row in documents(built):
            source = {"title": row["title"], "text": row["text"]}
            if "sparse" in row:
                source["sparse"] = {feature_name(t): impact for t, impact in row["sparse"].items()}
            if "dense" in row:
                source["dense"] = [round(float(x), 7) for x in row["dense"]]
            bulk.write(json.dumps({"index": {"_index": index_name, "_id": row["id"]}}) + "\n")
            bulk.write(json.dumps(source) + "\n")
    for engine in ("opensearch", "elasticsearch"):
        (out / f"{engine}-mapping.json").write_text(json.dumps(opensearch_mapping(built, engine), indent=2))
    examples: dict = {"query": example_query}
    if built.sparse_index:
        examples["sparse"] = sparse_query_body(sparse_query_vector(built, example_query))
    if built.dense_index:
        vector = dense_query_vector(built, example_query)
        examples["dense_opensearch"] = dense_query_body(vector, "opensearch")
        examples["dense_elasticsearch"] = dense_query_body(vector, "elasticsearch")
    (out / "example-queries.json").write_text(json.dumps(examples, indent=2))
    (out / "README.md").write_text(
        f"# OpenSearch / Elasticsearch\n\n1. `PUT /{index_name}` with `opensearch-mapping.json` (or "
        f"`elasticsearch-mapping.json`).\n2. `POST /_bulk` with `bulk.ndjson` (split it for large corpora).\n"
        "3. Query with the bodies in `example-queries.json`. Sparse features are integer impacts (weight x 100) "
        "named by vocabulary token, with `%` and `.` percent-escaped (`%25`, `%2E`); a query's boosts are its "
        "tokens' `idf.json` weights x 100, rounded, as in the example.\n")


def export_milvus(built: BuiltIndexes, out: Path) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=str(out / "stillhouse.db"))
    vocab = None
    if built.sparse_model:
        from transformers import AutoTokenizer

        vocab = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(built.sparse_model)).get_vocab()
    for name, present in (("sparse", built.sparse_index), ("dense", built.dense_index)):
        if not present:
            continue
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        if name == "sparse":
            schema.add_field("vector", DataType.SPARSE_FLOAT_VECTOR)
        else:
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dense_dimension(built))
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type="SPARSE_INVERTED_INDEX" if name == "sparse" else "FLAT",
                         metric_type="IP")
        client.create_collection(name, schema=schema, index_params=params)
    batch: dict[str, list] = {"sparse": [], "dense": []}
    for row in documents(built):
        if "sparse" in row:
            batch["sparse"].append({"id": row["id"], "vector": {vocab[t]: v / IMPACT_SCALE
                                                                for t, v in row["sparse"].items()}})
        if "dense" in row:
            batch["dense"].append({"id": row["id"], "vector": row["dense"].astype(np.float32).tolist()})
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
        "distinct tokens weighted by the lucene export's `idf.json`.\n")


def sparse_tokenizer_dir(model_dir: Path) -> Path:
    """The folder holding the sparse model's tokenizer (a Router saves its document route in a sub-folder)."""
    found = sorted(model_dir.rglob("tokenizer.json"), key=lambda p: len(p.parts))
    if not found:
        raise UserError(f"export: no tokenizer under {model_dir}")
    return found[0].parent


def sparse_query_vector(built: BuiltIndexes, query: str) -> dict[str, int]:
    """The sparse student's query impacts for ``query`` (its static table, quantized as the index searches)."""
    from transformers import AutoTokenizer

    from retrievers.impact_index import IdfQueryEncoder
    from retrievers.sparse_student import read_idf_json

    tokenizer = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(built.sparse_model))
    return IdfQueryEncoder(tokenizer, read_idf_json(built.idf, tokenizer)).encode(query)


def dense_query_vector(built: BuiltIndexes, query: str) -> list[float]:
    from retrievers.dense import load_sentence_encoder

    model = load_sentence_encoder(built.dense_model, device="cpu")
    return [round(float(x), 7) for x in model.encode([query])[0]]


EXPORTERS = {"lucene": export_lucene, "faiss": export_faiss, "milvus": export_milvus}


def export(built: BuiltIndexes, target: Path, formats: list[str], force: bool = False, index_name: str = "stillhouse",
           example_query: str = "", workdir: Path | None = None) -> list[Path]:
    """Write the chosen exports under ``target`` (one sub-folder per format); return the folders written.

    Everything is written into a staging folder beside ``target`` that replaces it only once complete; a
    failed export removes its staging folder and leaves ``target`` as it was."""
    formats = list(dict.fromkeys(formats))
    if not formats:
        raise UserError(f"export --formats: name at least one of {', '.join(FORMATS)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"export --formats: unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
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
                export_opensearch(built, folder, index_name, example_query)
            else:
                EXPORTERS[fmt](built, folder)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target / fmt for fmt in formats]
