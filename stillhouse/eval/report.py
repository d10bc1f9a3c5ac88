"""The evaluation report: ``results.json``, a Markdown table per data set, and a PNG bar chart.

With per-query values, each row also carries its evidence (``stillhouse.eval.significance``): the 95% t-interval of
its first
metric and a paired t-test against each baseline of its data set (BM25, the base model), marked when p >= 0.05."""

from __future__ import annotations

import json
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
        lines += [f"### {dataset} ({block[0].split} split, {block[0].queries} queries{ids})", "",
                  "| retriever | " + " | ".join([*metric_names, *extra]) + " |",
                  "|---|" + "---:|" * (len(metric_names) + len(extra))]
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
            lines.append(f"| {row.retriever}{seeds} | " + " | ".join(cells) + " |")
        lines.append("")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    for metric in metric_names:
        bar_chart(rows, metric, folder / f"{metric.replace('@', '_at_').lower()}.png")
    return table
