"""BEIR data sets: a local folder in the standard layout, or BEIR's official zip (md5 checked).

Layout (Thakur et al., 2021): ``corpus.jsonl`` (or ``.jsonl.gz``) with ``_id``, ``title``, ``text``;
``queries.jsonl`` with ``_id``, ``text``; ``qrels/<split>.tsv`` with a header and
``query-id  corpus-id  score`` rows. Loading validates what later stages rely on and reports counts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stillhouse.retrievers.errors import UserError

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
# md5 of each official zip, as published in BEIR's README (github.com/beir-cellar/beir).
BEIR_MD5 = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}


@dataclass
class LoadReport:
    """Counts found while loading; written next to the data as ``stats.json``."""

    documents: int = 0
    queries: int = 0
    judged_queries: int = 0
    judgements: int = 0
    empty_documents: int = 0
    unknown_qrels_dropped: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class BeirDataset:
    """One split of a BEIR data set, held in memory (corpora here are up to a few million docs)."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    report: LoadReport


def data_dir_from_env(explicit: str | None) -> Path | None:
    """The BEIR root: an explicit option wins, then ``STILLHOUSE_BEIR_DIR``."""
    chosen = explicit or os.environ.get("STILLHOUSE_BEIR_DIR")
    return Path(chosen).expanduser() if chosen else None


def resolve_dataset_dir(name: str, data_dir: Path | None, download: bool) -> Path:
    """Find ``<data_dir>/<name>``; download BEIR's zip into ``data_dir`` when allowed and missing."""
    if data_dir is None:
        raise UserError(
            f"data set {name!r}: no BEIR folder given; pass --data-dir DIR or set STILLHOUSE_BEIR_DIR"
        )
    folder = data_dir / name
    if folder.is_dir():
        return folder
    if download:
        return download_beir(name, data_dir)
    raise UserError(
        f"data set {name!r}: {folder} does not exist; point --data-dir at a folder holding {name}/ "
        "or set download = true in [data]"
    )


def download_beir(name: str, data_dir: Path) -> Path:
    """Download BEIR's official zip for ``name``, check its published md5, unpack it atomically."""
    if name not in BEIR_MD5:
        raise UserError(f"data set {name!r}: not an official BEIR download; known: {', '.join(BEIR_MD5)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    url = BEIR_URL.format(name=name)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{name}-download-") as scratch:
        archive = Path(scratch) / f"{name}.zip"
        log.info("downloading %s", url)
        try:
            urllib.request.urlretrieve(url, archive)
        except OSError as exc:
            raise UserError(f"data set {name!r}: cannot download {url} ({exc}); fetch it by hand into "
                            f"{data_dir}") from exc
        digest = hashlib.md5(archive.read_bytes()).hexdigest()
        if digest != BEIR_MD5[name]:
            raise UserError(f"data set {name!r}: {url} has md5 {digest}, expected {BEIR_MD5[name]}; "
                            "the download is corrupt, retry")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(scratch)
        os.replace(Path(scratch) / name, data_dir / name)
    return data_dir / name


def _open_text(path: Path) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.jsonl", folder / f"{stem}.jsonl.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{folder}: no {stem}.jsonl or {stem}.jsonl.gz; a BEIR folder needs both corpus and "
                    "queries (or a corpus alone, without qrels/, for a corpus of your own)")


def iter_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)``; a bad line raises a UserError naming file and line."""
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: malformed JSON ({exc.msg}); fix or remove that line") from None
            if not isinstance(record, dict) or any(key not in record for key in required):
                raise UserError(f"{path}:{lineno}: expected a JSON object with {', '.join(required)}")
            yield lineno, record


def load_corpus(folder: Path, report: LoadReport) -> dict[str, dict[str, str]]:
    """The validated corpus of a BEIR folder alone (a split's queries and judgements not read)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such data set folder; check --data-dir and the data set name")
    return _load_corpus(_find(folder, "corpus"), report)


def _load_corpus(path: Path, report: LoadReport) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for lineno, record in iter_jsonl(path, ("_id", "text")):
        doc_id = str(record["_id"])
        if doc_id in corpus:
            raise UserError(f"{path}:{lineno}: duplicate _id {doc_id!r} (first on line {first_line[doc_id]}); "
                            "document ids must be unique")
        first_line[doc_id] = lineno
        title, text = str(record.get("title") or ""), str(record.get("text") or "")
        if not (title.strip() or text.strip()):
            report.empty_documents += 1
        corpus[doc_id] = {"title": title, "text": text}
    if not corpus:
        raise UserError(f"{path}: the corpus is empty; a BEIR corpus needs at least one document")
    return corpus


def _load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, record in iter_jsonl(path, ("_id", "text")):
        query_id = str(record["_id"])
        if query_id in queries:
            raise UserError(f"{path}:{lineno}: duplicate query _id {query_id!r}; query ids must be unique")
        queries[query_id] = str(record["text"])
    return queries


def _load_qrels(path: Path) -> list[tuple[int, str, str, int]]:
    if not path.is_file():
        splits = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise UserError(f"{path}: no such qrels file; splits present: {', '.join(splits) or 'none'}")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if lineno == 1 and fields[0] == "query-id":
                continue
            if not line.strip():
                continue
            try:
                rows.append((lineno, fields[0], fields[1], int(fields[2])))
            except (IndexError, ValueError):
                raise UserError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>integer score'") from None
    return rows


def is_corpus_only(folder: Path) -> bool:
    """A folder with a corpus and nothing else of BEIR's layout (no ``queries.jsonl``, no ``qrels/``): your own
    documents, which the pipeline adapts to but cannot evaluate on."""
    has = {stem: any((folder / f"{stem}.jsonl{gz}").is_file() for gz in ("", ".gz")) for stem in ("corpus", "queries")}
    return has["corpus"] and not has["queries"] and not (folder / "qrels").exists()


NO_JUDGEMENTS = "no queries or judgements (a corpus-only folder): retrievers are built and searchable, not evaluated"


def load_beir(folder: Path, split: str, name: str | None = None, drop_unknown_qrels: bool = False) -> BeirDataset:
    """Load and validate one split of a BEIR folder.

    Judgements naming an unknown query or document are an error naming the count and an example,
    unless ``drop_unknown_qrels``, in which case they are dropped and the count is reported.
    A corpus-only folder (``is_corpus_only``) loads as every split, with no queries and no judgements.
    """
    if not folder.is_dir():
        raise UserError(f"{folder}: no such data set folder; check --data-dir and the data set name")
    report = LoadReport()
    corpus = _load_corpus(_find(folder, "corpus"), report)
    if is_corpus_only(folder):
        report.documents = len(corpus)
        report.warnings.append(NO_JUDGEMENTS)
        return BeirDataset(name or folder.name, corpus, {}, {}, report)
    all_queries = _load_queries(_find(folder, "queries"))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    unknown: list[str] = []
    for lineno, query_id, doc_id, score in _load_qrels(qrels_path):
        if query_id not in all_queries or doc_id not in corpus:
            what = f"query {query_id!r}" if query_id not in all_queries else f"document {doc_id!r}"
            unknown.append(f"line {lineno}: unknown {what}")
            continue
        qrels.setdefault(query_id, {})[doc_id] = score
    if unknown:
        if not drop_unknown_qrels:
            raise UserError(
                f"{qrels_path}: {len(unknown)} judgements name ids not in the corpus or queries "
                f"(first: {unknown[0]}); fix the file, or set drop_unknown_qrels = true in [data]"
            )
        report.unknown_qrels_dropped = len(unknown)
        report.warnings.append(f"{qrels_path}: dropped {len(unknown)} judgements with unknown ids")
    if not qrels:
        raise UserError(f"{qrels_path}: no usable judgements; the split needs at least one judged query")
    queries = {qid: all_queries[qid] for qid in qrels}
    empty_queries = [qid for qid, text in queries.items() if not text.strip()]
    if empty_queries:
        raise UserError(f"{_find(folder, 'queries')}: judged query {empty_queries[0]!r} has empty text")
    if report.empty_documents:
        report.warnings.append(f"{report.empty_documents} documents have neither title nor text")
    report.documents, report.queries = len(corpus), len(all_queries)
    report.judged_queries = len(qrels)
    report.judgements = sum(len(v) for v in qrels.values())
    return BeirDataset(name or folder.name, corpus, queries, qrels, report)


def write_beir(dataset: BeirDataset, folder: Path, split: str) -> None:
    """Write a data set back in BEIR layout (plain ``corpus.jsonl``) with the split's judged queries (a data set
    without queries or judgements as a corpus-only folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc_id, doc in dataset.corpus.items():
            out.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
    if not dataset.queries and not dataset.qrels:
        return
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for query_id, text in dataset.queries.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    write_qrels(dataset.qrels, folder / "qrels" / f"{split}.tsv")


def write_qrels(qrels: dict[str, dict[str, int]], path: Path) -> None:
    """A BEIR qrels file: header, then ``query-id  corpus-id  score`` rows."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for query_id, docs in qrels.items():
            for doc_id, score in docs.items():
                out.write(f"{query_id}\t{doc_id}\t{score}\n")


def copy_slice(source: Path, dest: Path, split: str, max_docs: int, max_queries: int,
               extra_splits: tuple[str, ...] = ()) -> None:
    """Write a small, self-consistent slice of a BEIR folder (for tests and smoke runs).

    For ``split`` and each of ``extra_splits``: keeps the first ``max_queries`` judged queries and every
    document they judge, then fills up to ``max_docs`` with other documents in corpus order.
    """
    splits = {name: load_beir(source, name) for name in (split, *extra_splits)}
    full = splits[split]
    keep: set[str] = set()
    chosen: dict[str, list[str]] = {}
    for name, data in splits.items():
        chosen[name] = list(data.qrels)[:max_queries]
        keep |= {doc for qid in chosen[name] for doc in data.qrels[qid]}
    for doc_id in full.corpus:
        if len(keep) >= max_docs:
            break
        keep.add(doc_id)
    if dest.exists():
        shutil.rmtree(dest)
    corpus = {doc_id: doc for doc_id, doc in full.corpus.items() if doc_id in keep}
    queries = {q: splits[name].queries[q] for name in splits for q in chosen[name]}
    write_beir(BeirDataset(full.name, corpus, queries, {q: full.qrels[q] for q in chosen[split]}, LoadReport()),
               dest, split)
    for name in extra_splits:
        write_qrels({q: splits[name].qrels[q] for q in chosen[name]}, dest / "qrels" / f"{name}.tsv")


def copy_corpus_only(source: Path, dest: Path, split: str, max_docs: int, examples: int,
                     seed: int = 0) -> tuple[int, int]:
    """A corpus of your own, cut from a BEIR folder to try the few-shot setting end to end: ``corpus.jsonl`` alone
    (no queries, no qrels: ``is_corpus_only``) with every document renamed ``doc-00001``, ``doc-00002``, ... in corpus
    order, and ``examples.jsonl`` beside it: ``examples`` judged queries of ``split`` drawn at random (``seed``), each
    with its first relevant document not already taken, as ``{"query", "doc_id"}`` lines (the ``[generation]
    examples`` format). The corpus keeps those documents and fills up to ``max_docs`` with others in corpus order;
    nothing in it names a BEIR id.
    Returns (documents, examples) written."""
    import random

    from stillhouse.artifacts import atomic_dir

    data = load_beir(source, split)
    pairs: list[tuple[str, str]] = []
    keep: set[str] = set()  # the examples' documents, each taken once (read_examples_file's rule)
    judged = sorted(data.qrels)
    random.Random(seed).shuffle(judged)  # BEIR lists queries by id: the first few can share a form (SciFact: digits)
    for qid in judged:
        if len(pairs) == examples:
            break
        doc = next((d for d, score in data.qrels[qid].items() if score > 0 and d not in keep), None)
        if doc is not None:
            pairs.append((data.queries[qid], doc))
            keep.add(doc)
    for doc_id in data.corpus:
        if len(keep) >= max_docs:
            break
        keep.add(doc_id)
    renamed = {doc_id: f"doc-{n:05d}" for n, doc_id in enumerate((d for d in data.corpus if d in keep), start=1)}
    with atomic_dir(dest) as folder:
        write_beir(BeirDataset(dest.name, {renamed[d]: data.corpus[d] for d in renamed}, {}, {}, LoadReport()),
                   folder, split)
        with open(folder / "examples.jsonl", "w", encoding="utf-8") as out:
            for query, doc in pairs:
                out.write(json.dumps({"query": query, "doc_id": renamed[doc]}) + "\n")
    return len(renamed), len(pairs)
