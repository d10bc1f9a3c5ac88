"""BEIR loading and validation on the real shared data and on broken copies of it."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from stillhouse.eval.beir_data import copy_corpus_only, copy_slice, is_corpus_only, load_beir, resolve_dataset_dir
from stillhouse.retrievers.errors import UserError


def test_scifact_counts(beir_dir: Path) -> None:
    data = load_beir(beir_dir / "scifact", "test")
    assert (data.report.documents, data.report.judged_queries, data.report.judgements) == (5183, 300, 339)
    train = load_beir(beir_dir / "scifact", "train")
    assert train.report.judged_queries == 809


def test_cranfield_and_vaswani_load(beir_dir: Path) -> None:
    assert load_beir(beir_dir / "cranfield", "test").report.documents == 1400
    assert load_beir(beir_dir / "vaswani", "test").report.documents == 11429


@pytest.fixture
def small(tmp_path: Path, beir_dir: Path) -> Path:
    copy_slice(beir_dir / "scifact", tmp_path / "scifact", "test", max_docs=60, max_queries=10)
    return tmp_path / "scifact"


def test_slice_is_consistent_and_gz_reads_the_same(small: Path) -> None:
    plain = load_beir(small, "test")
    assert plain.report.documents == 60 and plain.report.judged_queries == 10
    with open(small / "corpus.jsonl", "rb") as src, gzip.open(small / "corpus.jsonl.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (small / "corpus.jsonl").unlink()
    assert load_beir(small, "test").corpus == plain.corpus


def test_malformed_jsonl_names_file_and_line(small: Path) -> None:
    lines = (small / "corpus.jsonl").read_text().splitlines()
    lines[6] = lines[6][:-5]
    (small / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"corpus\.jsonl:7: malformed JSON"):
        load_beir(small, "test")


def test_duplicate_ids_are_rejected(small: Path) -> None:
    lines = (small / "corpus.jsonl").read_text().splitlines()
    (small / "corpus.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(UserError, match=r"corpus\.jsonl:61: duplicate _id .*first on line 1"):
        load_beir(small, "test")


def test_unknown_qrels_are_counted_or_refused(small: Path) -> None:
    with open(small / "qrels" / "test.tsv", "a") as qrels:
        qrels.write("1\tno-such-doc\t1\n9999999\t4983\t1\n")
    with pytest.raises(UserError, match=r"2 judgements name ids not in the corpus or queries"):
        load_beir(small, "test")
    data = load_beir(small, "test", drop_unknown_qrels=True)
    assert data.report.unknown_qrels_dropped == 2
    assert all("no-such-doc" not in docs for docs in data.qrels.values())


def test_empty_corpus(small: Path) -> None:
    (small / "corpus.jsonl").write_text("")
    with pytest.raises(UserError, match=r"corpus\.jsonl: the corpus is empty"):
        load_beir(small, "test")


def test_missing_folder_and_missing_split(tmp_path: Path, small: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        resolve_dataset_dir("nfcorpus", tmp_path, download=False)
    with pytest.raises(UserError, match="no such qrels file; splits present: test"):
        load_beir(small, "dev")


def test_empty_documents_are_counted(small: Path) -> None:
    with open(small / "corpus.jsonl", "a") as corpus:
        corpus.write('{"_id": "blank", "title": "", "text": "  "}\n')
    assert load_beir(small, "test").report.empty_documents == 1


def test_a_corpus_alone_loads_with_no_judgements_and_a_half_folder_is_refused(small: Path) -> None:
    judged = load_beir(small, "test")
    shutil.rmtree(small / "qrels")
    (small / "queries.jsonl").rename(small / "queries.held")
    assert is_corpus_only(small)
    alone = load_beir(small, "dev")  # every split of a corpus-only folder is the corpus, unjudged
    assert (alone.corpus, alone.queries, alone.qrels) == (judged.corpus, {}, {})
    assert any("corpus-only" in warning for warning in alone.report.warnings)
    (small / "qrels").mkdir()  # judgements without queries: a broken BEIR folder, not a corpus of one's own
    assert not is_corpus_only(small)
    with pytest.raises(UserError, match=r"no queries\.jsonl or queries\.jsonl\.gz"):
        load_beir(small, "test")


def test_a_corpus_of_ones_own_is_cut_with_renamed_ids_and_valid_examples(tmp_path: Path, beir_dir: Path) -> None:
    from stillhouse.generators.examples import read_examples_file

    source = load_beir(beir_dir / "scifact", "train")
    documents, pairs = copy_corpus_only(beir_dir / "scifact", tmp_path / "mine", "train", max_docs=300, examples=20)
    assert (documents, pairs) == (300, 20)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["corpus.jsonl", "examples.jsonl"]
    mine = load_beir(tmp_path / "mine", "test")
    assert list(mine.corpus) == [f"doc-{n:05d}" for n in range(1, 301)]
    examples = read_examples_file(tmp_path / "mine" / "examples.jsonl", mine.corpus, "mine")  # its own validation
    assert len(examples.qrels) == 20
    by_text = {(d["title"], d["text"]): doc_id for doc_id, d in source.corpus.items()}
    for query_id, docs in examples.qrels.items():  # each example is a real judged pair of the source split
        (doc,) = docs
        source_doc = by_text[(mine.corpus[doc]["title"], mine.corpus[doc]["text"])]
        query = examples.queries[query_id]
        assert any(source.queries[q] == query and source_doc in judged for q, judged in source.qrels.items())
