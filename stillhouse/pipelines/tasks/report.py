"""Evaluation of each run and the report that puts every retriever side by side."""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from stillhouse.eval.metrics import evaluate_run
from stillhouse.eval.report import ResultRow, write_report
from stillhouse.pipelines.tasks.base import StageTask, UpstreamMapParameter, UpstreamParameter
from stillhouse.pipelines.tasks.retrieval import DatasetTask
from stillhouse.retrievers.runs import read_trec_run


class Evaluate(DatasetTask):
    """BEIR metrics of one retriever's run on one data set split."""

    search = UpstreamParameter(description="the search task whose run is scored")
    metrics = luigi.ListParameter()
    ignore_identical_ids = luigi.BoolParameter(default=False, description="drop a hit whose id is the query's")

    def label(self) -> str:
        return f"Evaluate({self.dataset['dataset']} {self.search.task_family.removesuffix('Search')})"

    def requires(self):
        return [self.dataset_task(), self.search]

    def fingerprint_payload(self) -> dict:
        return {"metrics": list(self.metrics), "identical_ids": "ignored" if self.ignore_identical_ids else "kept"}

    def build(self, folder: Path) -> None:
        qrels = self.dataset_task().load().qrels
        run = read_trec_run(self.search.out_dir / "run.trec")
        mean, per_query = evaluate_run(qrels, run, list(self.metrics), self.ignore_identical_ids)
        (folder / "metrics.json").write_text(json.dumps({"mean": mean, "per_query": per_query,
                                                         "queries": len(qrels),
                                                         "ignore_identical_ids": self.ignore_identical_ids}, indent=2))


class Report(StageTask):
    """``results.json``, ``results.md`` and bar charts over every (data set, retriever) pair."""

    publish_as = ("report", "results.md")
    entries = luigi.ListParameter(description="[{name, dataset, retriever[, seed]}] in report order")
    evaluate = UpstreamMapParameter(description="each entry's Evaluate task, named as its entry, in entry order")
    metrics = luigi.ListParameter()
    baselines = luigi.DictParameter(default={}, description="label -> retriever name each row is tested against "
                                                             "(paired t-test on the first metric)")
    unjudged = UpstreamMapParameter(default=(), description="each entry on a corpus-only data set: its search task, "
                                                            "built but not evaluated (entries marked judged: false)")

    def evaluations(self) -> list[tuple[str, Evaluate]]:
        return list(self.evaluate)

    def requires(self):
        return [task for _, task in self.evaluations()] + [task for _, task in self.unjudged]

    def fingerprint_payload(self) -> dict:
        # Ordered (name, evaluation) pairs: swapping two retrievers' settings changes the report.
        own = {"entries": [[name, task.fingerprint()] for name, task in self.evaluations()],
               "metrics": list(self.metrics)}
        if self.baselines:
            own["baselines"] = dict(self.baselines)
        if self.unjudged:
            own["unjudged"] = [[name, task.fingerprint()] for name, task in self.unjudged]
        return own

    def judged_entries(self) -> list[dict]:
        return [e for e in self.entries if e.get("judged", True)]

    def result_rows(self) -> list[ResultRow]:
        from stillhouse.eval.report import add_evidence, merge_seeds

        groups: dict[tuple[str, str], list[ResultRow]] = {}
        primary = self.metrics[0]
        for entry, (name, task) in zip(self.judged_entries(), self.evaluations(), strict=True):
            result = json.loads((task.out_dir / "metrics.json").read_text())
            per_query = {q: values[primary] for q, values in result["per_query"].items()}
            row = ResultRow(task.dataset["dataset"], task.dataset["split"], name, result["mean"], result["queries"],
                            per_query, identical_ids_ignored=task.ignore_identical_ids,
                            seeds=[entry["seed"]] if "seed" in entry else [])
            groups.setdefault((row.dataset, name), []).append(row)
        rows = [merge_seeds(group) for group in groups.values()]  # a student's seeds: one row, mean +- sd
        add_evidence(rows, dict(self.baselines), primary)
        return rows

    def build(self, folder: Path) -> None:
        from stillhouse.eval.report import plot_training_curves, unjudged_markdown

        built = [unjudged_row(name, task) for name, task in self.unjudged]
        write_report(self.result_rows(), list(self.metrics), folder, {"unjudged": built} if built else None)
        if built:
            with open(folder / "results.md", "a", encoding="utf-8") as page:
                page.write(unjudged_markdown(built))
            plot_training_curves([row for row in built if row.get("training")], folder / "training_curves.png")


def unjudged_row(name: str, search: StageTask) -> dict:
    """What the report can say of a retriever built on a corpus without judgements: its data set, the index it
    serves (files and bytes on disk; a hybrid's members' together), a hybrid's weights and a student's training
    (queries, triples, steps, seconds and the logged loss per step, from its ``training.json``)."""
    from stillhouse.artifacts import folder_bytes

    hybrid = search.task_family == "HybridSearch"
    indexes = [member.index_task() for member in search.searches().values()] if hybrid else [search.index_task()]
    row = {"dataset": search.dataset["dataset"], "retriever": name, "kind": search.task_family.removesuffix("Search"),
           "index_bytes": sum(folder_bytes(index.out_dir) for index in indexes),
           "indexes": [index.label() for index in indexes]}
    if hybrid:
        row["weights"] = search.member_weights()
    trained = getattr(search, "model_task", None)  # a student's training task (BM25 and hybrids have none)
    if trained is not None and (trained.out_dir / "training.json").is_file():  # a student: how its training went
        log = json.loads((trained.out_dir / "training.json").read_text())
        row["training"] = {key: log[key] for key in ("queries", "triples", "steps", "seconds", "device")} | {
            "loss_log": [[entry["step"], entry["loss"]] for entry in log.get("loss_log", []) if "loss" in entry]}
    return row


class AblationReport(Report):
    """The ablation table: each variant's student beside BM25 and the base model (``ablation.md``/``.json``,
    one bar chart per metric). ``entries`` are ``{name, dataset, retriever}``: one per (variant or baseline,
    data set)."""

    publish_as = ("ablation", "ablation.md")
    skipped = luigi.DictParameter(default={}, description="variant -> why it was not run")

    def fingerprint_payload(self) -> dict:
        return {**super().fingerprint_payload(), "skipped": dict(self.skipped)}

    def build(self, folder: Path) -> None:
        from stillhouse.eval.report import bar_chart, markdown_table

        rows = self.result_rows()
        table = markdown_table(rows, list(self.metrics))
        notes = "".join(f"- `{variant}` not run: {why}\n" for variant, why in self.skipped.items())
        (folder / "ablation.md").write_text(
            "# stillhouse ablation\n\nThe student with one component off at a time (`full` has every component "
            "on), beside the configured retrievers.\n\n" + table + ("\n" + notes if notes else ""))
        (folder / "ablation.json").write_text(json.dumps(
            {"metrics": list(self.metrics), "skipped": dict(self.skipped),
             "results": [{k: v for k, v in vars(r).items() if k != "per_query"} for r in rows]},
            indent=2))
        for metric in self.metrics:
            bar_chart(rows, metric, folder / f"ablation_{metric.replace('@', '_at_').lower()}.png")
