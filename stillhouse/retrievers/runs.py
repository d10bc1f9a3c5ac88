"""TREC run files: ``qid Q0 docid rank score tag``, the format every IR tool reads."""

from __future__ import annotations

from pathlib import Path

Run = dict[str, dict[str, float]]


def write_trec_run(run: Run, path: Path, tag: str) -> None:
    """Write ``run`` sorted by descending score per query."""
    with open(path, "w", encoding="utf-8") as out:
        for query_id, hits in run.items():
            ranked = sorted(hits.items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                out.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: Path) -> Run:
    run: Run = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            query_id, _, doc_id, _, score, _ = line.split()
            run.setdefault(query_id, {})[doc_id] = float(score)
    return run
