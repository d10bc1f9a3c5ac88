"""The evaluation report: ``results.json``, a Markdown table per data set, and a PNG bar chart.

With per-query values, each row also carries its evidence (``stillhouse.eval.significance``): the 95% t-interval of
its first
metric and a paired t-test against each baseline of its data set (BM25, the base model), marked when p >= 0.05.

The training-data report (``write_training_data_report``: ``training_data.md``/``.json`` and two plots) is written
here too, with the same Markdown tables (``table_lines``) and figure setup.

Example::

    write_report(rows, ["NDCG@10", "Recall@100"], folder)     # results.json, results.md, one PNG per metric
    "\n".join(table_lines(["teacher", "pairs/s"], "lr", [["minilm", "812"]]))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stillhouse.eval.significance import ALPHA, paired_test, t_interval


@dataclass
class ResultRow:
    """One retriever's scores on one data set split."""

    dataset: str
    split: str
    retriever: str
    metrics: dict[str, float]
    queries: int
    per_query: dict[str, float] = field(default_factory=dict)  # query id -> the first metric
    evidence: dict = field(default_factory=dict)  # {metric, ci: [low, high], tests: {baseline: {diff, p, n}}}
    identical_ids_ignored: bool = False  # BEIR's rule: a hit with the query's own id dropped (eval.metrics)
    seeds: list[int] = field(default_factory=list)  # a row over several training seeds: metrics are their mean
    sd: dict[str, float] = field(default_factory=dict)  # ... and these the standard deviations across seeds


def merge_seeds(rows: list[ResultRow]) -> ResultRow:
    """One row for the same retriever trained with several seeds: the mean and sample standard deviation of each
    metric across seeds, and the per-query mean (what the paired tests compare)."""
    import numpy as np

    if len(rows) == 1:
        return rows[0]
    first = rows[0]
    names = list(first.metrics)
    values = {m: np.array([r.metrics[m] for r in rows]) for m in names}
    per_query = {q: float(np.mean([r.per_query[q] for r in rows])) for q in first.per_query}
    return ResultRow(first.dataset, first.split, first.retriever, {m: float(v.mean()) for m, v in values.items()},
                     first.queries, per_query, identical_ids_ignored=first.identical_ids_ignored,
                     seeds=[s for r in rows for s in r.seeds], sd={m: float(v.std(ddof=1)) for m, v in values.items()})


def add_evidence(rows: list[ResultRow], baselines: dict[str, str], metric: str) -> None:
    """Fill each row's ``evidence``: the t-interval of ``metric`` over its queries and, for every baseline label ->
    retriever name of ``baselines`` present on the row's data set, the paired t-test of the row against it."""
    for row in rows:
        if not row.per_query:
            continue
        tests = {}
        for label, name in baselines.items():
            other = next((r for r in rows if r.dataset == row.dataset and r.retriever == name and r.per_query), None)
            if other is not None and other is not row:
                result = paired_test(row.per_query, other.per_query)
                tests[label] = {"diff": result.diff, "p": result.p, "n": result.n, "significant": result.significant}
        row.evidence = {"metric": metric, "ci": list(t_interval(list(row.per_query.values()))), "tests": tests,
                        "baselines": list(baselines)}


def table_lines(header: Sequence[str], align: str, rows: Iterable[Sequence[str]] = ()) -> list[str]:
    """A Markdown table as lines: the header, the alignment row (one letter per column, ``l`` left or ``r``
    right) and one line per row of formatted cells."""
    return ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _test_cell(test: dict | None) -> str:
    if test is None:
        return "-"
    mark = "" if test["significant"] else " (n.s.)"
    return f"{test['diff']:+.4f}, p {test['p']:.2g}{mark}"


def markdown_table(rows: list[ResultRow], metric_names: list[str]) -> str:
    """Every retriever side by side, one block per data set, best score per column in bold."""
    lines: list[str] = []
    for dataset in sorted({r.dataset for r in rows}):
        block = [r for r in rows if r.dataset == dataset]
        best = {m: max(r.metrics.get(m, 0.0) for r in block) for m in metric_names}
        present = {label for r in block for label in r.evidence.get("tests", {})}
        order = next((r.evidence["baselines"] for r in block if r.evidence), [])
        labels = [label for label in order if label in present]
        evidence = any(r.evidence for r in block)
        metric = next((r.evidence["metric"] for r in block if r.evidence), "")
        extra = ([f"{metric} 95% CI"] if evidence else []) + [f"vs {label} ({metric})" for label in labels]
        ids = "; hits with the query's own id dropped" if block[0].identical_ids_ignored else ""
        body = []
        for row in block:
            cells = []
            for m in metric_names:
                value = f"{row.metrics.get(m, 0.0):.4f}"
                value = f"**{value}**" if row.metrics.get(m, 0.0) == best[m] and len(block) > 1 else value
                cells.append(value + (f" ± {row.sd[m]:.4f}" if m in row.sd else ""))
            if evidence:
                ci = row.evidence.get("ci")
                cells.append(f"{ci[0]:.4f}-{ci[1]:.4f}" if ci else "-")
            cells += [_test_cell(row.evidence.get("tests", {}).get(label)) for label in labels]
            seeds = f" ({len(row.seeds)} seeds)" if len(row.seeds) > 1 else ""
            body.append([f"{row.retriever}{seeds}", *cells])
        lines += [f"### {dataset} ({block[0].split} split, {block[0].queries} queries{ids})", "",
                  *table_lines(["retriever", *metric_names, *extra], "l" + "r" * (len(metric_names) + len(extra)),
                               body), ""]
        if any(len(r.seeds) > 1 for r in block):
            lines += ["Rows over several seeds: mean ± sample standard deviation across seeds; their CI and tests are "
                      "on the per-query mean across seeds.", ""]
        if evidence:
            lines += [f"95% CI: t-interval of the mean {metric} over the queries. vs X: mean paired difference in "
                      f"{metric} and the two-sided paired t-test's p over the same queries (scipy); (n.s.): not "
                      f"significant at {ALPHA}.", ""]
    return "\n".join(lines)


def bar_chart(rows: list[ResultRow], metric: str, path: Path) -> None:
    """Grouped bars: one group per data set, one bar per retriever."""
    plt = _pyplot()
    datasets = sorted({r.dataset for r in rows})
    retrievers = list(dict.fromkeys(r.retriever for r in rows))
    width = 0.8 / max(len(retrievers), 1)
    # Wide enough for a readable score label on every bar; the legend goes beside the axes.
    fig, ax = plt.subplots(figsize=(max(4.0, len(datasets) * (0.55 * len(retrievers) + 0.6)) + 2.8, 3.6))
    for i, retriever in enumerate(retrievers):
        values = [next((r.metrics.get(metric, 0.0) for r in rows if r.dataset == d and r.retriever == retriever), 0.0)
                  for d in datasets]
        positions = [j + (i - (len(retrievers) - 1) / 2) * width for j in range(len(datasets))]
        bars = ax.bar(positions, values, width, label=retriever)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: bars keep their labels
    ax.set_title(f"{metric} per data set")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_report(rows: list[ResultRow], metric_names: list[str], folder: Path, extra: dict | None = None) -> str:
    """Write results.json, results.md and one PNG per metric into ``folder``; return the table. Per-query values
    stay in each Evaluate's ``metrics.json``; results.json keeps the means and the evidence."""
    table = markdown_table(rows, metric_names)
    payload = {"metrics": metric_names, "results": [{k: v for k, v in asdict(r).items() if k != "per_query"}
                                                    for r in rows], **(extra or {})}
    (folder / "results.json").write_text(json.dumps(payload, indent=2))
    (folder / "results.md").write_text("# stillhouse evaluation\n\n" + table)
    for metric in metric_names if rows else []:  # a run on corpora without judgements has nothing to plot
        bar_chart(rows, metric, folder / f"{metric.replace('@', '_at_').lower()}.png")
    return table


def unjudged_markdown(built: list[dict]) -> str:
    """The report's section on retrievers built on corpora without judgements (``Report.unjudged``): why nothing was
    evaluated there, what each serves, and where the rest of what the run can say without labels is."""
    from stillhouse.eval.beir_data import NO_JUDGEMENTS

    def training(row: dict) -> str:
        if "training" not in row:
            return "-"
        t, losses = row["training"], row["training"]["loss_log"]
        curve = f"; loss {losses[0][1]:.3g} at step {losses[0][0]} -> {losses[-1][1]:.3g} at {losses[-1][0]}" \
            if losses else ""
        return f"{t['queries']} queries, {t['triples']} triples, {t['steps']} steps, {t['seconds']:.0f} s{curve}"

    lines = []
    for dataset in dict.fromkeys(row["dataset"] for row in built):
        rows = [[row["retriever"], row["kind"], f"{row['index_bytes'] / 2**20:.1f}",
                 ", ".join(f"{m} {w:.2f}" for m, w in row["weights"].items()) if "weights" in row else "-",
                 training(row)]
                for row in built if row["dataset"] == dataset]
        lines += [f"### {dataset}: not evaluated", "", f"{dataset} has {NO_JUDGEMENTS}.", "",
                  *table_lines(["retriever", "kind", "index MiB", "hybrid weights", "training"], "llrll", rows), ""]
    if any(row.get("training", {}).get("loss_log") for row in built):  # plot_training_curves drew them
        lines += ["![training loss per logged step](training_curves.png)", ""]
    lines += ["Without judgements the run still reports what it can: query generation (`generation/generation.md`: "
              "queries kept, round-trip rates), training data (`training-data/training_data.md`) and the students' "
              "training above; `stillhouse search CONFIG --queries FILE --timings OUT` measures query latency.", ""]
    return "\n".join(lines)


def plot_training_curves(rows: list[dict], path: Path) -> None:
    """Each trained student's logged training loss against the step, one panel per student (their losses have
    different scales: margin-MSE + GISTEmbed for the dense one, margin-MSE + FLOPS for the sparse one)."""
    curves = [row for row in rows if row["training"]["loss_log"]]
    if not curves:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, row in zip(axes[0], curves, strict=True):
        steps, losses = zip(*row["training"]["loss_log"], strict=True)
        ax.plot(steps, losses, marker="o", markersize=3)
        ax.set_title(f"{row['retriever']} ({row['dataset']})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_data_markdown(payload: dict, metrics: list[str]) -> str:
    """``training_data.md`` from ``write_training_data_report``'s payload: candidate mining, the guide filter's
    recall and cost per margin, each reranker's ``metrics`` per split with the best weightings, TAS-Balanced's
    margin balance and teacher throughput."""
    from stillhouse.eval.rerank import weights_label

    mined, guide, tas = payload["mined"], payload["guide"], payload["tas"]
    study = [[f"{row['strategy']}", f"{row['margin']:g}",
              f"{row['false_negatives_removed']}/{row['false_negatives']} ({row['recall']:.1%})",
              f"{row['others_removed']}/{row['others']} ({row['cost']:.1%})"] for row in guide["study"]]
    lines = ["# Training data", "", "## Candidate mining", "",
             f"{mined['queries']} queries, {mined['positives']} positives, {mined['candidates']} candidates "
             f"({mined['judged_relevant_candidates']} of them judged relevant: known false negatives).",
             "", "## GISTEmbed guide filter against the labels", "",
             f"Training uses strategy `{guide['strategy']}`, margin {guide['margin']:g}: "
             f"{guide['candidates_dropped']} candidates dropped.", "",
             *table_lines(["strategy", "margin", "false negatives removed (recall)", "other candidates removed (cost)"],
                          "lrrr", study)]
    for rerank in payload["rerank"]:
        rows = [[f"{row['reranker']}", *(f"{row['metrics'][m]:.4f}" for m in metrics)] for row in rerank["rows"]]
        best = "; ".join(f"({weights_label(g['weights'])}) {g['value']:.4f}" for g in rerank["grid"][:3])
        lines += ["", f"## Reranking BM25's candidates: {rerank['dataset']} {rerank['split']} "
                      f"({rerank['queries']} queries)", "",
                  *table_lines(["reranker", *metrics], "l" + "r" * len(metrics), rows),
                  "", f"{len(rerank['grid'])} weightings tried (each teacher 0, 0.5, 1 or 2); best on this split by "
                      f"{rerank['grid_metric']}: {best}"]
    throughput = [[f"{name}", f"{timing['pairs']}", f"{timing['pairs_per_second']:.0f}", f"{timing['device']}"]
                  for name, timing in payload["throughput"].items()]
    lines += ["", "## TAS-Balanced sampling", "",
              f"{tas['triples']} triples; over {tas['epochs']} epochs, {tas['single_cluster_batches']} of "
              f"{tas['batches']} batches drew every query from one cluster.",
              f"KL(margin histogram || uniform): TAS-Balanced {tas['kl_tas']:.3f}, one random pair per query "
              f"{tas['kl_random']:.3f} (lower is flatter).", "", "## Teacher throughput", "",
              *table_lines(["teacher", "pairs", "pairs/s", "device"], "lrrl", throughput)]
    return "\n".join(lines) + "\n"


def plot_guide_study(study: list[dict], path: Path) -> None:
    """The guide filter's trade-off: false negatives removed (recall) against other candidates removed (cost),
    one line per margin strategy, each point labeled with its margin."""
    plt = _pyplot()
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
    """TAS-Balanced against one random pair per query: the share of sampled pairs per margin bin (``balance`` as
    written by the TAS sampler: ``edges``, ``hist_random``, ``hist_tas``)."""
    import numpy as np

    plt = _pyplot()
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


def write_training_data_report(folder: Path, *, mined: dict, study: list[dict], kept: Mapping[str, Sequence],
                               margin: float, strategy: str, reranks: list[dict],
                               reweigh: Sequence[Callable[[dict[str, float]], dict[str, float]]], balance: dict,
                               throughput: dict[str, dict], metrics: list[str]) -> dict:
    """Write ``training_data.json``, ``training_data.md``, ``guide_study.png`` and ``tas_margins.png`` into
    ``folder``; return the JSON payload.

    ``mined`` is candidate mining's stats, ``study`` the guide filter's recall and cost per (strategy, margin) and
    ``kept`` its table over the training candidates (boolean columns ``kept`` and ``positive``; a candidate neither
    kept nor positive was dropped) under the training ``margin`` and ``strategy``. ``reranks`` are the rerank
    studies' records (``stillhouse.eval.rerank.rerank_study``), one per split, and ``reweigh`` for each a function
    giving the ensemble's ``metrics`` on that split under other weights: when a train split was studied, its best
    weighting (``weights_chosen_on_train``) is applied to every split, one more row each, so that the other splits
    show the ensemble with weights not chosen on them. ``balance`` is TAS-Balanced's margin balance and
    ``throughput`` each teacher's timing.

    Example::

        payload = write_training_data_report(folder, mined=stats, study=study, kept=guide_table, margin=0.0,
                                             strategy="absolute", reranks=[record], reweigh=[evaluate_weights],
                                             balance=balance, throughput={"minilm": timing}, metrics=["NDCG@10"])
    """
    from stillhouse.eval.rerank import weights_chosen_on_train, weights_label

    chosen = weights_chosen_on_train(reranks)
    if chosen:
        for evaluate, rerank in zip(reweigh, reranks, strict=True):
            rerank["rows"].append({"reranker": "ensemble, weights chosen on train " + weights_label(chosen),
                                   "metrics": evaluate(chosen)})
    payload = {"mined": mined, "guide": {"margin": margin, "strategy": strategy,
                                         "candidates_dropped": int((~kept["kept"] & ~kept["positive"]).sum()),
                                         "study": study},
               "rerank": reranks, "weights_chosen_on_train": chosen, "tas": balance, "throughput": throughput}
    (folder / "training_data.json").write_text(json.dumps(payload, indent=2))
    (folder / "training_data.md").write_text(training_data_markdown(payload, metrics))
    plot_guide_study(study, folder / "guide_study.png")
    plot_margins(balance, folder / "tas_margins.png")
    return payload
