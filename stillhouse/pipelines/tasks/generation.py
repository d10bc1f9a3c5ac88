"""Query generation tasks: examples, SPTAR soft prompt and its example filter, sharded generation,
round-trip filtering, and the generation report.

Every task takes ``gen``: the generation settings (see ``stillhouse.pipelines.config.GenerationConfig``) with the
generator resolved to a source and the data sets resolved to LoadDataset parameters. ``spec(cls, gen)``
narrows it to the keys a task reads, so tasks that read the same keys are the same task.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi

from stillhouse.pipelines.config import decode_settings, fingerprinted, soft_prompt_settings
from stillhouse.pipelines.tasks.base import StageTask, read_json
from stillhouse.pipelines.tasks.data import FetchModel, LoadDataset, corpus_only_fingerprint
from stillhouse.pipelines.tasks.retrieval import BM25Index, DenseIndex

log = logging.getLogger("stillhouse")

EXAMPLE_KEYS = ("examples_dataset", "prompt_examples", "tune_pairs", "filter_eval_pairs", "seed")
BUILDER_KEYS = ("generator", "instruction", "max_doc_tokens", "max_example_doc_tokens")
SOFT_KEYS = (*EXAMPLE_KEYS, *BUILDER_KEYS, "virtual_tokens", "tune_epochs", "learning_rate", "tune_batch_size",
             "sptar_examples")
FILTER_KEYS = (*SOFT_KEYS, "filter_groups")
DECODE_KEYS = ("queries_per_doc", "max_new_tokens", "do_sample", "temperature", "top_p", "repetition_penalty",
               "batch_size", "no_repeat_ngram_size", "max_copy_tokens")
GENERATE_KEYS = (*FILTER_KEYS, "generator_name", "prompt", "target_dataset", "targets", "max_target_docs", "shards",
                 *DECODE_KEYS)
TRAINED_ROUNDTRIP_KEYS = ("roundtrip_epochs", "roundtrip_batch_size")
ROUNDTRIP_MODEL_KEYS = (*GENERATE_KEYS, "dense_model", *TRAINED_ROUNDTRIP_KEYS)
JUDGE_KEYS = (*GENERATE_KEYS, "roundtrip", "roundtrip_k", "dense_model", *TRAINED_ROUNDTRIP_KEYS)


SPTAR_ONLY_KEYS = ("virtual_tokens", "tune_epochs", "learning_rate", "tune_batch_size", "sptar_examples",
                   "filter_groups")


def spec(cls: type[GenTask], gen: dict) -> dict:
    """The keys of ``gen`` that ``cls`` reads (hard prompts do not read the soft-prompt settings)."""
    keys = cls.reads
    if gen.get("prompt", "sptar") != "sptar":
        keys = tuple(k for k in keys if k not in SPTAR_ONLY_KEYS)
    if gen.get("roundtrip", "trained") != "trained":
        keys = tuple(k for k in keys if k not in TRAINED_ROUNDTRIP_KEYS)
    return {key: gen[key] for key in keys if key in gen}


class GenTask(StageTask):
    """Base: the ``gen`` settings, narrowed to ``reads``."""

    reads: tuple[str, ...] = ()
    gen = luigi.DictParameter()

    def make(self, cls: type[GenTask], **extra) -> GenTask:
        return cls(workdir=self.workdir, gen=spec(cls, dict(self.gen)), **extra)

    def fingerprint_payload(self) -> dict:
        own = super().fingerprint_payload()
        gen = dict(self.gen)
        # Data set parameters (folder paths, download flags) enter through LoadDataset's content fingerprint.
        own["gen"] = fingerprinted("generation", {k: v for k, v in gen.items()
                                                  if k not in ("examples_dataset", "target_dataset")})
        return own

    def shards(self) -> list[GenerateShard]:
        return [self.make(GenerateShard, shard=i) for i in range(self.gen["shards"])]

    def generated_rows(self) -> list[dict]:
        """Every generated row of every shard, unfiltered, in shard order."""
        return [json.loads(line) for shard in self.shards()
                for line in (shard.out_dir / "rows.jsonl").read_text().splitlines()]

    def fetch(self, source_key: str = "generator") -> FetchModel:
        return FetchModel(workdir=self.workdir, source=self.gen[source_key])

    def builder(self, tokenizer):
        from stillhouse.generators.prompts import PromptBuilder

        return PromptBuilder(tokenizer, self.gen["instruction"], self.gen["max_doc_tokens"],
                             self.gen["max_example_doc_tokens"])


class SelectExamples(GenTask):
    """Disjoint labeled pairs from the examples split: prompt examples, SPTAR tuning set, filter eval, held out."""

    reads = EXAMPLE_KEYS

    def requires(self):
        return LoadDataset(workdir=self.workdir, **self.gen["examples_dataset"])

    def build(self, folder: Path) -> None:
        from stillhouse.generators.examples import labeled_pairs, ordered_split, split_examples

        data = self.requires().load()
        examples_file = self.gen["examples_dataset"].get("examples_file")
        if examples_file:  # the user's own pairs: roles in file order
            split = ordered_split(labeled_pairs(data), self.gen["prompt_examples"], self.gen["tune_pairs"],
                                  self.gen["filter_eval_pairs"], examples_file)
        else:
            split = split_examples(labeled_pairs(data), self.gen["prompt_examples"], self.gen["tune_pairs"],
                                   self.gen["filter_eval_pairs"], self.gen["seed"])
        (folder / "examples.json").write_text(json.dumps(split.to_json(), indent=1))
        log.info("examples: %d prompt, %d tuning, %d filter-eval, %d held out", len(split.prompt),
                 len(split.tune), len(split.filter_eval), len(split.held_out))

    def load(self):
        from stillhouse.generators.examples import ExampleSplit

        return ExampleSplit.from_json(json.loads((self.out_dir / "examples.json").read_text()))


class TrainSoftPrompt(GenTask):
    """SPTAR soft prompt (peft PromptTuning on the frozen LM) trained on the tuning pairs."""

    uses_gpu = True

    reads = SOFT_KEYS

    def requires(self):
        return [self.make(SelectExamples), self.fetch()]

    def build(self, folder: Path) -> None:
        from stillhouse.generators.lm import load_causal_lm
        from stillhouse.generators.soft_prompt import train_soft_prompt

        examples = self.make(SelectExamples).load()
        lm = load_causal_lm(self.fetch().model_dir())
        meta = train_soft_prompt(lm, self.builder(lm.tokenizer), examples.tune, examples.prompt,
                                 soft_prompt_settings(self.gen), folder)
        log.info("soft prompt trained on %d pairs, loss %.3f", meta["train_pairs"], meta["train_loss"])


class ChooseExamples(GenTask):
    """SPTAR's soft prompt filter: the in-prompt example group with the lowest eval loss."""

    reads = FILTER_KEYS

    def requires(self):
        return [self.make(SelectExamples), self.make(TrainSoftPrompt), self.fetch()]

    def build(self, folder: Path) -> None:
        from stillhouse.generators.example_filter import choose_examples
        from stillhouse.generators.lm import load_causal_lm

        examples = self.make(SelectExamples).load()
        lm = load_causal_lm(self.fetch().model_dir())
        result = choose_examples(lm, self.make(TrainSoftPrompt).out_dir, self.builder(lm.tokenizer), examples.prompt,
                                 examples.filter_eval, self.gen["sptar_examples"], self.gen["filter_groups"],
                                 self.gen["seed"])
        (folder / "chosen.json").write_text(json.dumps(result.to_json(), indent=1))

    def chosen(self):
        from stillhouse.generators.prompts import Example

        return [Example(**e) for e in json.loads((self.out_dir / "chosen.json").read_text())["chosen"]]


def prompt_setup(task: GenTask):
    """The PromptSetup a generation task uses, from its upstream outputs."""
    from stillhouse.generators.query_gen import PromptSetup

    kind = task.gen["prompt"]
    if kind == "zero-shot":
        return PromptSetup(kind)
    if kind == "promptagator":
        return PromptSetup(kind, task.make(SelectExamples).load().prompt)
    return PromptSetup(kind, task.make(ChooseExamples).chosen(), task.make(TrainSoftPrompt).out_dir)


def setup_requirements(task: GenTask) -> list[StageTask]:
    kind = task.gen["prompt"]
    needed: list[StageTask] = [task.make(SelectExamples), task.fetch()]
    if kind == "sptar":
        needed += [task.make(TrainSoftPrompt), task.make(ChooseExamples)]
    return needed


def target_documents(task: GenTask) -> list[tuple[str, str]]:
    """The documents to generate for: the whole target corpus, or the held-out examples' documents."""
    from stillhouse.generators.examples import prompt_text

    if task.gen["targets"] == "held-out":
        held_out = task.make(SelectExamples).load().held_out
        docs = list(dict.fromkeys((e.doc_id, e.document) for e in held_out))
    else:
        corpus = LoadDataset(workdir=task.workdir, **task.gen["target_dataset"]).load().corpus
        docs = [(doc_id, prompt_text(doc)) for doc_id, doc in corpus.items()]
    limit = task.gen["max_target_docs"]
    return docs[:limit] if limit else docs


class GenerateShard(GenTask):
    """Generated queries for one contiguous shard of the target documents (``rows.jsonl``)."""

    uses_gpu = True

    reads = GENERATE_KEYS
    shard = luigi.IntParameter()

    def label(self) -> str:
        return f"GenerateShard({self.gen['prompt']} {self.shard + 1}/{self.gen['shards']})"

    def requires(self):
        return [*setup_requirements(self), LoadDataset(workdir=self.workdir, **self.gen["target_dataset"])]

    def upstream_fingerprint(self, task: StageTask) -> str:
        return corpus_only_fingerprint(task)  # the target data set's corpus only, never its queries or judgements

    def build(self, folder: Path) -> None:
        from stillhouse.generators.lm import load_causal_lm
        from stillhouse.generators.query_gen import generate_shard

        docs = target_documents(self)
        lm = load_causal_lm(self.fetch().model_dir())
        rows, stats = generate_shard(lm, prompt_setup(self), self.builder(lm.tokenizer), docs, self.shard,
                                     self.gen["shards"], decode_settings(self.gen),
                                     self.gen["generator_name"], desc=self.label())
        (folder / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        (folder / "stats.json").write_text(json.dumps(stats))


class RoundTripRetriever(GenTask):
    """Promptagator's round-trip retriever: the base dense model fine-tuned on the unfiltered generated queries
    of every shard (``model/``, a sentence-transformers folder) and the target corpus indexed with it (``index/``)."""

    uses_gpu = True

    reads = ROUNDTRIP_MODEL_KEYS

    def requires(self):
        return [*self.shards(), FetchModel(workdir=self.workdir, source=self.gen["dense_model"]),
                LoadDataset(workdir=self.workdir, **self.gen["target_dataset"])]

    def upstream_fingerprint(self, task: StageTask) -> str:
        return corpus_only_fingerprint(task)  # the target data set's corpus only

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.dense import build_corpus_index, document_text, load_sentence_encoder
        from stillhouse.retrievers.finetune import finetune_on_pairs

        corpus = LoadDataset(workdir=self.workdir, **self.gen["target_dataset"]).load().corpus
        pairs = [(row["text"], document_text(corpus[row["doc_id"]])) for row in self.generated_rows()]
        stats = finetune_on_pairs(FetchModel(workdir=self.workdir, source=self.gen["dense_model"]).model_dir(),
                                  pairs, folder / "model", epochs=self.gen["roundtrip_epochs"],
                                  batch_size=self.gen["roundtrip_batch_size"], seed=self.gen["seed"])
        build_corpus_index(load_sentence_encoder(folder / "model"), corpus, folder / "index")
        (folder / "training.json").write_text(json.dumps(stats, indent=2))


class FilterQueries(GenTask):
    """Label every generated query (copy, degenerate, duplicate, BM25 and dense round-trip ranks) and keep
    those that pass; writes ``queries.parquet`` (loadable with ``datasets``) and ``summary.json``."""

    uses_gpu = True

    reads = JUDGE_KEYS

    def target(self) -> dict:
        return dict(self.gen["target_dataset"])

    def indexes(self) -> tuple[BM25Index, DenseIndex]:
        return (BM25Index(workdir=self.workdir, dataset=self.target(), multifield=True),
                DenseIndex(workdir=self.workdir, dataset=self.target(), model=self.gen["dense_model"], shards=4,
                           batch_size=64, max_seq_length=0))

    def requires(self):
        trained = [self.make(RoundTripRetriever)] if self.gen["roundtrip"] == "trained" else []
        return [*self.shards(), *self.indexes(), self.make(SelectExamples),
                FetchModel(workdir=self.workdir, source=self.gen["dense_model"]), *trained,
                *self.implied_requirements()]

    def implied_requirements(self) -> list[StageTask]:
        # The target corpus (its identity is in the indexes') and the prompt's examples (in every shard's).
        setup = [t for t in setup_requirements(self) if isinstance(t, (TrainSoftPrompt, ChooseExamples))]
        return [LoadDataset(workdir=self.workdir, **self.target()), *setup]

    def build(self, folder: Path) -> None:
        from stillhouse.generators.roundtrip import filter_generated

        rows = self.generated_rows()
        bm25, dense = self.indexes()
        corpus = LoadDataset(workdir=self.workdir, **self.target()).load().corpus
        setup = prompt_setup(self)
        summary = filter_generated(rows, corpus, [e.query for e in setup.examples], bm25.out_dir / "index",
                                   dense.out_dir, FetchModel(workdir=self.workdir,
                                                             source=self.gen["dense_model"]).model_dir(),
                                   self.gen["roundtrip"], self.gen["roundtrip_k"], folder / "queries.parquet",
                                   trained=self.make(RoundTripRetriever).out_dir
                                   if self.gen["roundtrip"] == "trained" else None)
        truncated = sum(json.loads((s.out_dir / "stats.json").read_text())["truncated"] for s in self.shards())
        (folder / "summary.json").write_text(json.dumps({**summary, "truncated_documents": truncated}, indent=2))


class QueryGenReport(StageTask):
    """Side by side for every (generator, prompt) pair: held-out NLL per token of real queries, round-trip
    rates under BM25 and the base dense model, copy, degenerate and kept rates (``generation.md``)."""

    publish_as = ("generation", "generation.md")
    entries = luigi.ListParameter(description="one gen dict (JUDGE_KEYS + nll_pairs) per (generator, prompt)")

    def filters(self) -> list[FilterQueries]:
        return [FilterQueries(workdir=self.workdir, gen=spec(FilterQueries, dict(e))) for e in self.entries]

    def requires(self):
        return [*self.filters(), *self.implied_requirements()]

    def implied_requirements(self) -> list[StageTask]:
        # Each filter's prompt setup (examples, soft prompt, the LM that scores held-out NLL): in its shards'.
        setups = {t.task_id: t for task in self.filters() for t in setup_requirements(task)}
        return list(setups.values())

    def fingerprint_payload(self) -> dict:
        return {"nll_pairs": [e["nll_pairs"] for e in self.entries]}

    def build(self, folder: Path) -> None:
        from stillhouse.generators.report import ReportSetup, report_generation

        report_generation([ReportSetup(entry["generator_name"], entry["generator"], task.fetch().model_dir,
                                       prompt_setup(task), task.builder,
                                       task.make(SelectExamples).load().held_out[: entry["nll_pairs"]],
                                       read_json(task.out_dir / "summary.json"))
                           for entry, task in zip(self.entries, self.filters(), strict=True)], folder)
