"""Hybrid tasks: the fused retriever's weights (chosen without the evaluation split) and its fused run.

Both are wiring around ``stillhouse.retrievers.hybrid``: ``HybridWeights`` calls ``weights_record`` (``select_weights``
with its checks and log lines) on the members' runs of a selection split, ``HybridSearch`` calls ``fuse_runs`` on the
members' runs of the evaluated split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import luigi
from luigi.freezing import recursively_unfreeze

from stillhouse.artifacts import write_json_atomic
from stillhouse.pipelines.tasks.base import StageTask, UpstreamMapParameter, UpstreamParameter
from stillhouse.pipelines.tasks.data import LoadDataset
from stillhouse.pipelines.tasks.retrieval import DatasetTask
from stillhouse.retrievers.runs import read_trec_run, write_trec_run


def member_runs(searches: dict[str, StageTask]) -> dict:
    """Each member's TREC run, by member name."""
    return {name: read_trec_run(task.out_dir / "run.trec") for name, task in searches.items()}


class HybridWeights(StageTask):
    """The simplex-grid weights that maximize NDCG@10 on the selection queries: the labeled pairs the run's
    generation already spends (``examples``), or a judged split other than the evaluation split (``split``)."""

    members = UpstreamMapParameter(description="member name -> its search task on the selection queries")
    selection = luigi.DictParameter(description="{kind: examples|split, dataset, step, metric[, gen]}")
    examples = UpstreamParameter(default=None, description="SelectExamples, for kind examples: the spent pairs")
    top_k = luigi.IntParameter(default=100)

    def label(self) -> str:
        return f"HybridWeights({'+'.join(name for name, _ in self.members)} on {self.selection['kind']})"

    def dataset_task(self) -> LoadDataset:
        return LoadDataset(workdir=self.workdir, **self.selection["dataset"])

    def searches(self) -> dict[str, StageTask]:
        return dict(self.members)

    def examples_task(self) -> StageTask | None:
        return self.examples

    def requires(self):
        examples = self.examples_task()
        return [self.dataset_task(), *self.searches().values(), *([examples] if examples else [])]

    def fingerprint_payload(self) -> dict:
        # Member name -> its search's fingerprint: renaming or swapping members changes the weights' meaning.
        return {"members": {name: task.fingerprint() for name, task in self.searches().items()},
                "selection": {k: v for k, v in recursively_unfreeze(self.selection).items()
                              if k not in ("dataset", "gen")},
                "top_k": self.top_k}

    def selection_qrels(self) -> tuple[dict[str, dict[str, int]], list[dict]]:
        """The judged queries the weights are chosen on, and (for ``examples``) the pairs behind them."""
        data = self.dataset_task().load()
        examples = self.examples_task()
        if examples is None:
            return data.qrels, []
        split = examples.load()
        by_text: dict[str, str] = {}
        for qid, text in data.queries.items():
            by_text.setdefault(text, qid)
        roles = self.selection.get("roles", ["prompt", "tune", "filter_eval"])
        pairs = [{"query_id": by_text[e.query], "doc_id": e.doc_id, "query": e.query, "role": role}
                 for role in roles for e in getattr(split, role) if e.query in by_text]
        return {p["query_id"]: {p["doc_id"]: 1} for p in pairs}, pairs

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.hybrid import weights_record

        qrels, pairs = self.selection_qrels()
        selection, data = self.selection, self.selection["dataset"]
        record = weights_record(member_runs(self.searches()), qrels, pairs, selection["kind"], data["dataset"],
                                data["split"], selection["step"], selection["metric"], self.top_k,
                                ignore_identical_ids=selection.get("ignore_identical_ids", False))
        write_json_atomic(folder / "weights.json", record)

    def weights(self) -> dict[str, float]:
        return json.loads((self.out_dir / "weights.json").read_text())["weights"]


class HybridSearch(DatasetTask):
    """The fused run of the split's judged queries: each member's top-k, min-max normalized per query, weighted
    mean (``stillhouse.retrievers.hybrid.fuse_runs``), with the weights used in ``hybrid.json``."""

    members = UpstreamMapParameter(description="member name -> its search task on this split, at depth top_k")
    weights = luigi.DictParameter(description="{fixed: {member: weight}} or {select: HybridWeights.selection}")
    chosen = UpstreamParameter(default=None, description="the HybridWeights task, for selected weights")
    top_k = luigi.IntParameter(default=100)

    def label(self) -> str:
        return f"HybridSearch({self.dataset['dataset']} {'+'.join(name for name, _ in self.members)})"

    def searches(self) -> dict[str, StageTask]:
        return dict(self.members)

    def weights_task(self) -> HybridWeights | None:
        return self.chosen

    def requires(self):
        chosen = self.weights_task()
        return [self.dataset_task(), *self.searches().values(), *([chosen] if chosen else [])]

    def fingerprint_payload(self) -> dict:
        fixed = self.weights.get("fixed")
        return {"members": {name: task.fingerprint() for name, task in self.searches().items()},
                "weights": recursively_unfreeze(fixed) if fixed else "selected", "top_k": self.top_k}

    def member_weights(self) -> dict[str, float]:
        chosen = self.weights_task()
        return chosen.weights() if chosen else dict(self.weights["fixed"])

    def build(self, folder: Path) -> None:
        from stillhouse.retrievers.hybrid import fuse_runs

        runs = member_runs(self.searches())
        weights = self.member_weights()
        started = time.perf_counter()
        fused, _ = fuse_runs(runs, {m: w for m, w in weights.items() if w > 0}, self.top_k)
        fuse_seconds = time.perf_counter() - started
        write_trec_run(fused, folder / "run.trec", "hybrid")
        member_seconds = sum(json.loads((t.out_dir / "timing.json").read_text())["seconds"]
                             for t in self.searches().values())
        (folder / "timing.json").write_text(json.dumps({"queries": len(fused), "seconds": member_seconds + fuse_seconds,
                                                        "fuse_seconds": fuse_seconds}))
        (folder / "hybrid.json").write_text(json.dumps({"weights": weights, "members": list(self.searches()),
                                                        "selected": self.weights_task() is not None}, indent=2))
