"""The training-data report: the guide filter against labels, each teacher and the ensemble as rerankers
of BM25's top-k, TAS-Balanced's margin balance, and teacher throughput (``training_data.md``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi
import numpy as np

from stillhouse.eval.metrics import ignores_identical_ids
from stillhouse.pipelines.tasks.base import StageTask
from stillhouse.pipelines.tasks.data import LoadDataset
from stillhouse.pipelines.tasks.training_data import (
    EnsembleScores,
    GuideFilter,
    RerankPairs,
    TASTriples,
    TeacherScores,
    TrainTask,
    read_table,
    write_table,
)

log = logging.getLogger("stillhouse")
REPORT_KEYS = (*TASTriples.reads, "rerank", "metrics")


class RerankStudy(StageTask):
    """Each teacher alone and the normalized ensemble reranking BM25's top-``depth`` of one split.

    Output ``rerank.json`` (metrics per reranker, and the ensemble under a grid of weights) and
    ``rerank.parquet`` (every pair's raw and normalized teacher scores, for re-weighting later).
    """

    dataset = luigi.DictParameter()
    depth = luigi.IntParameter(default=100)
    teachers = luigi.DictParameter()
    weights = luigi.DictParameter()
    normalization = luigi.Parameter(default="minmax")
    metrics = luigi.ListParameter()

    def label(self) -> str:
        return f"RerankStudy({self.dataset['dataset']}/{self.dataset['split']})"

    def pairs(self) -> dict:
        return {"kind": "rerank", "dataset": dict(self.dataset), "depth": self.depth}

    def corpus(self) -> dict:
        return dict(self.dataset)

    def scores(self, name: str) -> TeacherScores:
        return TeacherScores(workdir=self.workdir, pairs=self.pairs(), corpus=self.corpus(),
                             teacher=self.teachers[name], name=name)

    def requires(self):
        return [LoadDataset(workdir=self.workdir, **self.dataset),
                RerankPairs(workdir=self.workdir, dataset=self.dataset, depth=self.depth),
                *(self.scores(name) for name in self.teachers)]

    def fingerprint_payload(self) -> dict:
        return {"depth": self.depth, "weights": dict(self.weights), "normalization": self.normalization,
                "metrics": list(self.metrics), "teachers": sorted(self.teachers),
                "identical_ids": "ignored" if ignores_identical_ids(self.dataset["dataset"]) else "kept"}

    def build(self, folder: Path) -> None:
        from stillhouse.eval.metrics import evaluate_run, ignores_identical_ids
        from stillhouse.eval.rerank import run_from_scores, sweep_weights, weight_grid
        from stillhouse.retrievers.ensemble import aggregate, normalize_per_query

        same_ids = ignores_identical_ids(self.dataset["dataset"])

        def evaluate(run, names):
            return evaluate_run(qrels, run, names, same_ids)

        qrels = LoadDataset(workdir=self.workdir, **self.dataset).load().qrels
        table = read_table(RerankPairs(workdir=self.workdir, dataset=self.dataset, depth=self.depth).out_dir
                           / "pairs.parquet")
        query_ids, doc_ids = table["query_id"], table["doc_id"]
        metrics = list(self.metrics)
        rows = [{"reranker": f"BM25 top-{self.depth} (first stage)",
                 "metrics": evaluate(run_from_scores(query_ids, doc_ids, table["bm25"]), metrics)[0]}]
        columns: dict = {"query_id": query_ids, "doc_id": doc_ids}
        normalized = {}
        for name in self.teachers:
            raw = self.scores(name).load()
            normalized[name] = normalize_per_query(raw, query_ids, self.normalization)
            columns[f"raw_{name}"], columns[f"norm_{name}"] = raw, normalized[name]
            rows.append({"reranker": f"{name} ({self.teachers[name]['kind']})",
                         "metrics": evaluate(run_from_scores(query_ids, doc_ids, raw), metrics)[0]})
        weights = dict(self.weights)
        ensemble = aggregate(normalized, weights)
        columns["ensemble"] = ensemble
        rows.append({"reranker": "ensemble " + ", ".join(f"{k}={v:g}" for k, v in weights.items()),
                     "metrics": evaluate(run_from_scores(query_ids, doc_ids, ensemble), metrics)[0]})
        grid = sweep_weights(qrels, query_ids, doc_ids, normalized, metrics[0], weight_grid(list(self.teachers)),
                             same_ids)
        write_table(columns, folder / "rerank.parquet")
        (folder / "rerank.json").write_text(json.dumps({
            "dataset": self.dataset["dataset"], "split": self.dataset["split"], "queries": len(qrels),
            "rows": rows, "grid_metric": metrics[0],
            "grid": [{"weights": w, "value": v} for w, v in grid]}, indent=2))

    def evaluate_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """The ensemble's metrics on this split under other weights (read back from ``rerank.parquet``)."""
        from stillhouse.eval.metrics import evaluate_run, ignores_identical_ids
        from stillhouse.eval.rerank import run_from_scores
        from stillhouse.retrievers.ensemble import aggregate

        table = read_table(self.out_dir / "rerank.parquet")
        normalized = {name: table[f"norm_{name}"] for name in self.teachers}
        qrels = LoadDataset(workdir=self.workdir, **self.dataset).load().qrels
        run = run_from_scores(table["query_id"], table["doc_id"], aggregate(normalized, weights))
        return evaluate_run(qrels, run, list(self.metrics), ignores_identical_ids(self.dataset["dataset"]))[0]


class TrainingDataReport(TrainTask):
    """``training_data.md`` / ``.json`` and plots over the training-data stages."""

    reads = REPORT_KEYS
    publish_as = ("training-data", "training_data.md")

    def studies(self) -> list[RerankStudy]:
        t = self.training
        return [RerankStudy(workdir=self.workdir, dataset=split, depth=t["rerank"]["depth"], teachers=t["teachers"],
                            weights=t["weights"], normalization=t["normalization"], metrics=t["metrics"])
                for split in t["rerank"]["splits"]]

    def requires(self):
        return [self.make(GuideFilter), self.make(EnsembleScores), self.make(TASTriples), *self.studies()]

    def build(self, folder: Path) -> None:
        guide = self.make(GuideFilter)
        study = json.loads((guide.out_dir / "study.json").read_text())
        balance = json.loads((self.make(TASTriples).out_dir / "balance.json").read_text())
        mined = json.loads((self.make(EnsembleScores).requires()[0].out_dir / "stats.json").read_text())
        kept = read_table(guide.out_dir / "guide.parquet")
        throughput = {name: json.loads((task.out_dir / "timing.json").read_text())
                      for name, task in ((n, _teacher_task(self, n)) for n in self.training["teachers"])}
        reranks = [json.loads((s.out_dir / "rerank.json").read_text()) for s in self.studies()]
        chosen = self._weights_chosen_on_train(reranks)
        if chosen:
            for study_task, rerank in zip(self.studies(), reranks, strict=True):
                rerank["rows"].append({"reranker": "ensemble, weights chosen on train " + ", ".join(
                    f"{k}={v:g}" for k, v in chosen.items()), "metrics": study_task.evaluate_weights(chosen)})
        payload = {"mined": mined, "guide": {"margin": self.training["guide_margin"],
                                             "strategy": self.training["guide_margin_strategy"],
                                             "candidates_dropped": int((~kept["kept"] & ~kept["positive"]).sum()),
                                             "study": study},
                   "rerank": reranks, "weights_chosen_on_train": chosen, "tas": balance, "throughput": throughput}
        (folder / "training_data.json").write_text(json.dumps(payload, indent=2))
        (folder / "training_data.md").write_text(render_markdown(payload, list(self.training["metrics"])))
        plot_guide_study(study, folder / "guide_study.png")
        plot_margins(balance, folder / "tas_margins.png")

    @staticmethod
    def _weights_chosen_on_train(reranks: list[dict]) -> dict[str, float]:
        train = [r for r in reranks if r["split"] == "train" and r["grid"]]
        return dict(train[0]["grid"][0]["weights"]) if train else {}


def _teacher_task(task: TrainTask, name: str) -> TeacherScores:
    from stillhouse.pipelines.tasks.training_data import teacher_scores

    return teacher_scores(task, name)


def render_markdown(payload: dict, metrics: list[str]) -> str:
    lines = ["# Training data", "", "## Candidate mining", "",
             f"{payload['mined']['queries']} queries, {payload['mined']['positives']} positives, "
             f"{payload['mined']['candidates']} candidates "
             f"({payload['mined']['judged_relevant_candidates']} of them judged relevant: known false negatives).",
             "", "## GISTEmbed guide filter against the labels", "",
             f"Training uses strategy `{payload['guide']['strategy']}`, margin {payload['guide']['margin']:g}: "
             f"{payload['guide']['candidates_dropped']} candidates dropped.", "",
             "| strategy | margin | false negatives removed (recall) | other candidates removed (cost) |",
             "|---|---:|---:|---:|"]
    for row in payload["guide"]["study"]:
        lines.append(f"| {row['strategy']} | {row['margin']:g} | {row['false_negatives_removed']}/"
                     f"{row['false_negatives']} ({row['recall']:.1%}) | {row['others_removed']}/{row['others']} "
                     f"({row['cost']:.1%}) |")
    for rerank in payload["rerank"]:
        lines += ["", f"## Reranking BM25's candidates: {rerank['dataset']} {rerank['split']} "
                      f"({rerank['queries']} queries)", "", "| reranker | " + " | ".join(metrics) + " |",
                  "|---|" + "---:|" * len(metrics)]
        for row in rerank["rows"]:
            lines.append(f"| {row['reranker']} | " + " | ".join(f"{row['metrics'][m]:.4f}" for m in metrics) + " |")
        top = rerank["grid"][:3]
        lines += ["", f"{len(rerank['grid'])} weightings tried (each teacher 0, 0.5, 1 or 2); best on this split by "
                      f"{rerank['grid_metric']}: " + "; ".join(
            "(" + ", ".join(f"{k}={v:g}" for k, v in g["weights"].items()) + f") {g['value']:.4f}" for g in top)]
    tas = payload["tas"]
    lines += ["", "## TAS-Balanced sampling", "",
              f"{tas['triples']} triples; over {tas['epochs']} epochs, {tas['single_cluster_batches']} of "
              f"{tas['batches']} batches drew every query from one cluster.",
              f"KL(margin histogram || uniform): TAS-Balanced {tas['kl_tas']:.3f}, one random pair per query "
              f"{tas['kl_random']:.3f} (lower is flatter).", "", "## Teacher throughput", "",
              "| teacher | pairs | pairs/s | device |", "|---|---:|---:|---|"]
    for name, timing in payload["throughput"].items():
        lines.append(f"| {name} | {timing['pairs']} | {timing['pairs_per_second']:.0f} | {timing['device']} |")
    return "\n".join(lines) + "\n"


def plot_guide_study(study: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for strategy in dict.fromkeys(r["strategy"] for r in study):
        rows = [r for r in study if r["strategy"] == strategy]
        ax.plot([r["cost"] for r in rows], [r["recall"] for r in rows], marker="o", label=strategy)
        for r in rows:
            ax.annotate(f"{r['margin']:g}", (r["cost"], r["recall"]), fontsize=7)
    ax.set_xlabel("other candidates removed (cost)")
    ax.set_ylabel("false negatives removed (recall)")
    ax.legend(fontsize=8)
    ax.set_title("GISTEmbed guide filter")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_margins(balance: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(balance["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = (edges[1] - edges[0]) * 0.4
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for offset, key, label in ((-width / 2, "hist_random", "random pair"), (width / 2, "hist_tas", "TAS-Balanced")):
        counts = np.asarray(balance[key], dtype=float)
        ax.bar(centers + offset, counts / counts.sum(), width, label=label)
    ax.set_xlabel("margin position in its query's range (0 = lowest, 1 = highest)")
    ax.set_ylabel("share of sampled pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
