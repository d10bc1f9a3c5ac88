"""Evidence for a row of a report: the confidence interval of its mean and paired tests against baselines.

Every retriever of a report answers the same judged queries, so two rows differ by the mean of per-query
differences ``d_q = m_A(q) - m_B(q)``; the paired t-test (Student, 1908; the test TREC practice recommends, Smucker
et al., CIKM 2007) asks whether ``mean(d)`` is 0:  ``t = mean(d) / (sd(d) / sqrt(n))`` with ``n - 1`` degrees of
freedom. The interval of one row's mean is the t-interval ``mean +- t_{0.975, n-1} * sd / sqrt(n)``. Both are
scipy's (``scipy.stats.ttest_rel``, ``scipy.stats.t.interval``); nothing here re-implements a statistic.

Example::

    low, high = t_interval([0.5, 0.7, 0.9])
    test = paired_test({"q1": 0.5, "q2": 0.9}, {"q1": 0.4, "q2": 0.6})   # PairedTest(diff=0.2, p=..., n=2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of ``values`` (a degenerate interval when they are all equal or n < 2)."""
    from scipy import stats

    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean()) if len(data) else math.nan
    if len(data) < 2 or float(data.std()) == 0.0:
        return mean, mean
    low, high = stats.t.interval(level, len(data) - 1, loc=mean, scale=stats.sem(data))
    return float(low), float(high)


@dataclass(frozen=True)
class PairedTest:
    """``diff``: mean of A - B over the shared queries; ``p``: the two-sided paired t-test's p-value."""

    diff: float
    p: float
    n: int

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


def paired_test(a: dict[str, float], b: dict[str, float]) -> PairedTest:
    """Paired t-test of per-query values ``a`` against ``b`` over the queries both hold."""
    from scipy import stats

    shared = sorted(set(a) & set(b))
    x = np.array([a[q] for q in shared], dtype=np.float64)
    y = np.array([b[q] for q in shared], dtype=np.float64)
    diff = float((x - y).mean()) if shared else math.nan
    if len(shared) < 2 or not np.any(x != y):
        return PairedTest(diff, 1.0, len(shared))  # identical lists: no evidence of a difference
    return PairedTest(diff, float(stats.ttest_rel(x, y).pvalue), len(shared))
