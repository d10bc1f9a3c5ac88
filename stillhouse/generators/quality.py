"""Cleaning generated queries and flagging the two ways a small LM games round-trip filtering.

* **Copies**: a query that is mostly one verbatim span of its document (Promptagator's round-trip
  check passes such a query trivially and it teaches a retriever nothing), or a near-duplicate of an
  in-prompt example query.
* **Degenerate** outputs: empty or very short, token loops ("1. 1. 1."), or never finished within the
  token budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)
_REPEAT = re.compile(r"(\b\w+\b[.,;:]?)(?:\s+\1){2,}")  # the same word three times in a row
_PREFIX = re.compile(r"^\s*(?:query|question|claim|q)\s*[:：]\s*", re.IGNORECASE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def clean_query(raw: str) -> str:
    """First line, without a leading "Query:" label, quotes or list markers, whitespace collapsed."""
    line = raw.strip().split("\n", 1)[0]
    line = _PREFIX.sub("", line)
    line = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s+", "", line)
    return " ".join(line.strip().strip('"').strip("'").split())


def longest_common_span(query_words: list[str], doc_words: list[str]) -> int:
    """Length of the longest run of consecutive words shared by query and document (DP, O(n*m))."""
    if not query_words or not doc_words:
        return 0
    best, previous = 0, [0] * (len(doc_words) + 1)
    for q in query_words:
        current = [0] * (len(doc_words) + 1)
        for j, d in enumerate(doc_words, start=1):
            if q == d:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


@dataclass(frozen=True)
class CopyRule:
    """A query copies its document if one verbatim span covers ``span_share`` of its words (at least
    ``min_span`` words) or is ``long_span`` words or longer; it copies an example if its word-set
    Jaccard with an example query reaches ``example_jaccard``."""

    span_share: float = 0.8
    min_span: int = 4
    long_span: int = 10
    example_jaccard: float = 0.6


def copies_document(query: str, document: str, rule: CopyRule = CopyRule()) -> bool:
    query_words = words(query)
    span = longest_common_span(query_words, words(document))
    return span >= rule.long_span or (span >= rule.min_span and span >= rule.span_share * len(query_words))


def copies_example(query: str, example_queries: list[str], rule: CopyRule = CopyRule()) -> bool:
    query_set = set(words(query))
    for example in example_queries:
        example_set = set(words(example))
        union = query_set | example_set
        if union and len(query_set & example_set) / len(union) >= rule.example_jaccard:
            return True
    return False


def degenerate_reason(query: str, finished: bool, min_words: int = 3, max_words: int = 48) -> str | None:
    """Why a generated query is unusable, or None."""
    tokens = words(query)
    if not tokens:
        return "empty"
    if not finished or len(tokens) > max_words:
        return "over-long"
    if len(tokens) < min_words:
        return "too short"
    if _REPEAT.search(query.lower()) or (len(tokens) >= 6 and len(set(tokens)) / len(tokens) < 0.5):
        return "repetition"
    return None
