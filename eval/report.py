"""The evaluation report: ``results.json``, a Markdown table per data set, and a PNG bar chart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class ResultRow:
    """One retriever's scores on one data set split."""

    dataset: str
    split: str
    retriever: str
    metrics: dict[str, float]
    queries: int


def markdown_table(rows: list[ResultRow], metric_names: list[str]) -> str:
    """Every retriever side by side, one block per data set, best score per column in bold."""
    lines: list[str] = []
    for dataset in sorted({r.dataset for r in rows}):
        block = [r for r in rows if r.dataset == dataset]
        best = {m: max(r.metrics.get(m, 0.0) for r in block) for m in metric_names}
        lines += [f"### {dataset} ({block[0].split}, {block[0].queries} queries)", "",
                  "| retriever | " + " | ".join(metric_names) + " |",
                  "|---|" + "---:|" * len(metric_names)]
        for row in block:
            cells = []
            for m in metric_names:
                value = f"{row.metrics.get(m, 0.0):.4f}"
                cells.append(f"**{value}**" if row.metrics.get(m, 0.0) == best[m] and len(block) > 1 else value)
            lines.append(f"| {row.retriever} | " + " | ".join(cells) + " |")
        lines.append("")
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
    """Write results.json, results.md and one PNG per metric into ``folder``; return the table."""
    table = markdown_table(rows, metric_names)
    payload = {"metrics": metric_names, "results": [asdict(r) for r in rows], **(extra or {})}
    (folder / "results.json").write_text(json.dumps(payload, indent=2))
    (folder / "results.md").write_text("# stillhouse evaluation\n\n" + table)
    for metric in metric_names:
        bar_chart(rows, metric, folder / f"{metric.replace('@', '_at_').lower()}.png")
    return table
