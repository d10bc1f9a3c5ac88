"""GISTEmbed's guided false-negative filter (Solatorio, 2024, "GISTEmbed: Guided In-sample Selection of
Training Negatives for Text Embedding Fine-tuning", §3.1).

A guide model ``G`` scores the query against its positive and against each candidate negative. A
candidate the guide finds more relevant than the positive (less a margin) is probably an unlabeled positive
(a false negative) and is dropped:

* absolute margin: drop ``c`` when ``G(q, c) > G(q, p) - margin``
* relative margin: drop ``c`` when ``G(q, c) > G(q, p) - |G(q, p)| * margin``

A candidate exactly at the threshold is kept. With several positives, ``G(q, p)`` is the lowest positive
score: a candidate the guide ranks above a known positive is treated as one. The same rule runs in-batch
during training through sentence-transformers' ``GISTEmbedLoss`` / ``CachedGISTEmbedLoss`` (``gist_loss``
below), and mining follows that loss to the comparison: its ``mask_false_negatives`` masks
``guided_sim_mat > guided_sim - margin`` (relative: ``> guided_sim - |guided_sim| * margin``), a strict
``>``, so a tie (e.g. a duplicate of the positive at margin 0) stays a negative in both places.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stillhouse.retrievers.errors import UserError
from stillhouse.settings import MarginStrategy


def guide_threshold(positive_score: np.ndarray, margin: float, strategy: MarginStrategy) -> np.ndarray:
    """The score above which a candidate counts as a false negative: ``G(q, p) - margin`` (absolute) or
    ``G(q, p) - |G(q, p)| * margin`` (relative)."""
    positive_score = np.asarray(positive_score, dtype=np.float64)
    if strategy == "absolute":
        return positive_score - margin
    if strategy == "relative":
        return positive_score - np.abs(positive_score) * margin
    raise ValueError(f"unknown margin strategy {strategy!r}")


def guide_keep(candidate_score: np.ndarray, positive_score: np.ndarray, margin: float,
               strategy: MarginStrategy) -> np.ndarray:
    """True for candidates the guide keeps as negatives: ``G(q, c) <= threshold``, the complement of
    GISTEmbedLoss's mask ``G(q, c) > threshold`` (a candidate at the threshold is kept)."""
    return np.asarray(candidate_score, dtype=np.float64) <= guide_threshold(positive_score, margin, strategy)


@dataclass(frozen=True)
class GuideStudyRow:
    """What one margin setting removes, measured against labels the miner was not told about."""

    strategy: str
    margin: float
    false_negatives: int  # candidates the qrels mark relevant
    false_negatives_removed: int
    others: int  # candidates the qrels do not mark relevant
    others_removed: int

    @property
    def recall(self) -> float:
        return self.false_negatives_removed / self.false_negatives if self.false_negatives else 0.0

    @property
    def cost(self) -> float:
        return self.others_removed / self.others if self.others else 0.0


def guide_study(candidate_score: np.ndarray, positive_score: np.ndarray, known_relevant: np.ndarray,
                margins: list[tuple[MarginStrategy, float]]) -> list[GuideStudyRow]:
    """Recall (relevant candidates removed) and cost (others removed) of each (strategy, margin)."""
    known_relevant = np.asarray(known_relevant, dtype=bool)
    rows = []
    for strategy, margin in margins:
        removed = ~guide_keep(candidate_score, positive_score, margin, strategy)
        rows.append(GuideStudyRow(strategy, margin, int(known_relevant.sum()),
                                  int((removed & known_relevant).sum()), int((~known_relevant).sum()),
                                  int((removed & ~known_relevant).sum())))
    return rows


@dataclass(frozen=True)
class GuideFiltered:
    """The mined pairs after the guide filter (``filter_mined``) and its study of the margins."""

    columns: dict[str, np.ndarray]  # query_id, doc_id, positive, judged_relevant, guide_score, positive_score, kept
    study: list[GuideStudyRow]

    @property
    def candidates(self) -> int:
        """Mined candidates (pairs that are not positives)."""
        return int((~self.columns["positive"]).sum())

    @property
    def dropped(self) -> int:
        """Candidates not kept as negatives."""
        return int((~self.columns["positive"] & ~self.columns["kept"]).sum())

    def study_records(self) -> list[dict]:
        """The study as JSON-ready rows, recall and cost included."""
        return [{**vars(row), "recall": row.recall, "cost": row.cost} for row in self.study]


def filter_mined(pairs: dict[str, np.ndarray], guide_scores: np.ndarray, margin: float, strategy: MarginStrategy,
                 enabled: bool = True, study_margins: Sequence[tuple[MarginStrategy, float]] = ()) -> GuideFiltered:
    """GISTEmbed's guide rule over mined pairs, before training: which candidates stay negatives.

    ``pairs`` holds the columns query_id, doc_id, positive and judged_relevant (one row per mined pair, as
    ``stillhouse.retrievers.mining.mine_candidates`` returns them) and ``guide_scores`` the guide's ``G(q, d)``
    of each row. A candidate ``c`` of query ``q`` is kept when ``G(q, c) <= G(q, p) - margin`` (absolute) or
    ``G(q, c) <= G(q, p) - |G(q, p)| * margin`` (relative), ``G(q, p)`` the lowest score of ``q``'s positives
    (Solatorio, 2024, §3.1; ``guide_keep``). With ``enabled`` False every candidate passes the rule (the
    ablation). Either way a candidate the labels call relevant (``judged_relevant``) is never kept as a
    negative, and positives are always kept.

    ``study_margins`` lists the (strategy, margin) settings whose removals ``guide_study`` measures against the
    labels: the relevant candidates each removes (recall) and the others (cost).

    Example::

        filtered = filter_mined(pairs, guide_scores, 0.0, "absolute", study_margins=[("absolute", 0.0)])
        filtered.columns["kept"], filtered.dropped, filtered.study_records()
    """
    scores = guide_scores.astype(np.float64)
    query_ids, positive = pairs["query_id"], pairs["positive"].astype(bool)
    lowest = {}
    for q, s in zip(query_ids[positive], scores[positive], strict=True):
        lowest[q] = min(s, lowest.get(q, np.inf))
    positive_score = np.array([lowest[q] for q in query_ids])
    candidate = ~positive
    keep = guide_keep(scores, positive_score, margin, strategy) if enabled else np.ones(len(scores), dtype=bool)
    judged = pairs["judged_relevant"].astype(bool)
    kept = positive | (keep & ~judged)  # a candidate the labels call relevant is never kept as a negative
    columns = {"query_id": query_ids, "doc_id": pairs["doc_id"], "positive": positive, "judged_relevant": judged,
               "guide_score": scores, "positive_score": positive_score, "kept": kept}
    study = guide_study(scores[candidate], positive_score[candidate], judged[candidate], list(study_margins))
    return GuideFiltered(columns, study)


def check_guide_tokenizer(student, guide, student_name: str, guide_name: str) -> None:
    """Refuse an in-batch guide that cannot read what the student reads.

    GISTEmbedLoss hands the guide the student's token ids; with a different vocabulary it decodes them
    to text and re-tokenizes, which silently truncates when the guide's window is shorter than the
    student's. That case is a config error here, stated in one line.
    """
    same_vocab = student.tokenizer.get_vocab() == guide.tokenizer.get_vocab()
    if not same_vocab and guide.max_seq_length < student.max_seq_length:
        raise UserError(
            f"guide {guide_name}: its tokenizer differs from the student's ({student_name}) and its window "
            f"({guide.max_seq_length} tokens) is shorter than the student's ({student.max_seq_length}); "
            "pick a guide with the student's tokenizer or lower the student's max_seq_length"
        )


def gist_loss(student, guide, margin: float = 0.0, strategy: MarginStrategy = "absolute", cached: bool = False,
              mini_batch_size: int = 32, temperature: float = 0.01, student_name: str = "student",
              guide_name: str = "guide"):
    """sentence-transformers' GISTEmbedLoss (or its gradient-cached variant for large batches), after
    ``check_guide_tokenizer``."""
    from sentence_transformers.sentence_transformer import losses

    check_guide_tokenizer(student, guide, student_name, guide_name)

    if cached:
        return losses.CachedGISTEmbedLoss(student, guide, temperature=temperature, mini_batch_size=mini_batch_size,
                                          margin_strategy=strategy, margin=margin)
    return losses.GISTEmbedLoss(student, guide, temperature=temperature, margin_strategy=strategy, margin=margin)
