"""Tasks that bring inputs into the work dir: BEIR data sets and models."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi

from stillhouse.artifacts import file_digest
from stillhouse.eval.beir_data import BEIR_MD5, load_beir, resolve_dataset_dir, write_beir
from stillhouse.pipelines.fingerprint import fingerprint
from stillhouse.pipelines.tasks.base import StageTask
from stillhouse.retrievers.model_sources import ModelSource, file_manifest, materialize, verify_manifest

log = logging.getLogger("stillhouse")


class LoadDataset(StageTask):
    """Validate one split of a BEIR data set and store it in canonical BEIR layout.

    Output: ``corpus.jsonl``, ``queries.jsonl`` (the split's judged queries), ``qrels/<split>.tsv``
    and ``stats.json`` with the counts found. The fingerprint hashes the source files' bytes.

    With ``examples_file`` (``[generation] examples``), the split (named ``examples``) is the user's labeled pairs
    from that JSONL file, in file order, over the data set's corpus
    (``stillhouse.generators.examples.read_examples_file``).
    """

    dataset = luigi.Parameter()
    data_dir = luigi.Parameter()
    split = luigi.Parameter(default="test")
    download = luigi.BoolParameter(default=False)
    drop_unknown_qrels = luigi.BoolParameter(default=False)
    examples_file = luigi.Parameter(default="", description="a JSONL file of labeled pairs that is the split")

    def label(self) -> str:
        return f"LoadDataset({self.dataset}/{self.split})"

    def source_dir(self) -> Path:
        return resolve_dataset_dir(self.dataset, Path(self.data_dir), self.download)

    def fingerprint_payload(self) -> dict:
        folder = Path(self.data_dir) / self.dataset
        wanted = ("corpus",) if self.examples_file else ("corpus", "queries")
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.is_file() and (p.name.startswith(wanted)
                                                                             or p.name == f"{self.split}.tsv"))
            content = {str(p.relative_to(folder)): file_digest(p) for p in files}
        else:
            content = {"beir-zip-md5": BEIR_MD5.get(self.dataset, "")}
        if self.examples_file:
            examples = Path(self.examples_file)
            content["examples-file"] = file_digest(examples) if examples.is_file() else "missing"
        return {"dataset": self.dataset, "split": self.split, "drop_unknown_qrels": self.drop_unknown_qrels,
                "content": content}

    def corpus_fingerprint(self) -> str:
        """Identity of the corpus alone: tasks that read only documents share it across splits."""
        content = self.fingerprint_payload()["content"]
        return fingerprint({"dataset": self.dataset, "corpus": {k: v for k, v in content.items()
                                                                if not k.startswith(("queries", "qrels"))}})

    def build(self, folder: Path) -> None:
        data = self.examples_split() if self.examples_file else \
            load_beir(self.source_dir(), self.split, self.dataset, self.drop_unknown_qrels)
        write_beir(data, folder, self.split)
        stats = vars(data.report)
        (folder / "stats.json").write_text(json.dumps(stats, indent=2))
        log.info("%s/%s: %d documents, %d judged queries, %d judgements%s", self.dataset, self.split,
                 data.report.documents, data.report.judged_queries, data.report.judgements,
                 "".join(f"; {w}" for w in data.report.warnings))

    def load(self):
        """The canonical copy, re-read (fast; already validated)."""
        return load_beir(self.out_dir, self.split, self.dataset)

    def examples_split(self):
        """The user's examples file as this data set's split: its queries, one judged document each (documents
        given as text join the corpus)."""
        from stillhouse.eval.beir_data import BeirDataset, LoadReport, load_corpus
        from stillhouse.generators.examples import read_examples_file

        report = LoadReport()
        corpus = load_corpus(self.source_dir(), report)
        examples = read_examples_file(Path(self.examples_file), corpus, self.dataset)
        corpus.update(examples.extra_docs)
        report.documents, report.queries = len(corpus), len(examples.queries)
        report.judged_queries = report.judgements = len(examples.qrels)
        return BeirDataset(self.dataset, corpus, examples.queries, examples.qrels, report)


def corpus_only_fingerprint(task: StageTask) -> str:
    """``upstream_fingerprint`` for a task that reads only the corpus of its LoadDataset requirements: the
    corpus's identity (shared by every split), and the full fingerprint of any other requirement."""
    return task.corpus_fingerprint() if isinstance(task, LoadDataset) else task.fingerprint()


class FetchModel(StageTask):
    """Materialize a model source into ``model/`` with a sha256 ``manifest.json`` of every file."""

    source = luigi.Parameter()

    def label(self) -> str:
        return f"FetchModel({self.source})"

    def fingerprint_payload(self) -> dict:
        own = super().fingerprint_payload()
        if self.source.startswith("path:"):  # a folder can change in place: fingerprint what is in it
            folder = Path(self.source[len("path:"):]).expanduser()
            own["files"] = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                                  for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        return own

    def build(self, folder: Path) -> None:
        source = ModelSource.parse(self.source)
        log.info("fetching model %s", source)
        materialize(source, folder / "model")
        (folder / "manifest.json").write_text(json.dumps({"source": self.source,
                                                          "files": file_manifest(folder / "model")}, indent=2))

    def model_dir(self, verify: bool = True) -> Path:
        """The model folder, checked against the manifest written when it was fetched."""
        if verify:
            verify_manifest(self.out_dir / "model", self.out_dir / "manifest.json")
        return self.out_dir / "model"
