"""The statistics of a comparison, computed by scipy: per configuration mean, sample standard deviation and a
95% t-interval over seeds; per pair of configurations a paired test over the seeds both ran (t-test on the
paired differences, Wilcoxon signed-rank from 6 pairs on), the mean difference with its 95% interval and
Cohen's d of the paired differences (d_z: mean difference / standard deviation of the differences), and
deepsig's almost stochastic order between the two score distributions."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ASO_ITERATIONS = 1000  # deepsig's default bootstrap size; about 1.5 s a pair on one core
WILCOXON_MIN_PAIRS = 6  # below this the exact signed-rank test cannot reach p < 0.05 (two-sided)


def _clean(values: Iterable[float]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype="float64")
    return array[~np.isnan(array)]


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for n < 2
    low: float  # the t-interval at CONFIDENCE; nan for n < 2
    high: float


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> Summary:
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(np.mean(x))
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(np.std(x, ddof=1))
    if std == 0:
        return Summary(n, mean, 0.0, mean, mean)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=stats.sem(x))
    return Summary(n, mean, std, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    n: int  # pairs (seeds both configurations ran)
    mean_diff: float  # mean of a - b
    diff_low: float  # CONFIDENCE interval of the mean difference (paired t)
    diff_high: float
    t: float
    p_t: float  # two-sided paired t-test
    p_wilcoxon: float | None  # two-sided Wilcoxon signed-rank; None below WILCOXON_MIN_PAIRS pairs
    cohens_d: float  # mean difference / std of the differences (d_z)


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    """``a`` and ``b`` hold the two configurations' values seed by seed (the same seeds, in one order)."""
    x, y = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same seeds: {len(x)} vs {len(y)}")
    diff = x - y
    n = len(diff)
    mean_diff = float(np.mean(diff)) if n else math.nan
    if n < 2:
        return Paired(n, mean_diff, math.nan, math.nan, math.nan, math.nan, None, math.nan)
    sd = float(np.std(diff, ddof=1))
    if sd == 0:  # identical differences: no spread to test against
        return Paired(n, mean_diff, mean_diff, mean_diff, math.nan, math.nan, None, math.nan)
    result = stats.ttest_rel(x, y)
    low, high = result.confidence_interval(confidence)
    wilcoxon = float(stats.wilcoxon(x, y).pvalue) if n >= WILCOXON_MIN_PAIRS else None
    return Paired(
        n, mean_diff, float(low), float(high), float(result.statistic), float(result.pvalue), wilcoxon,
        mean_diff / sd,
    )  # fmt: skip


def false_discovery_adjusted(p_values: Sequence[float | None]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (scipy) over the finite ones of a family of tests, the pairs of
    one table: many pairs tested at 0.05 each would find some differences by chance. NaN stays NaN."""
    values = np.array([math.nan if p is None else p for p in p_values], dtype="float64")
    finite = np.isfinite(values)
    adjusted = values.copy()
    if finite.any():
        adjusted[finite] = stats.false_discovery_control(values[finite])
    return adjusted.tolist()


def almost_stochastic_order(
    a: Sequence[float], b: Sequence[float], comparisons: int = 1, iterations: int = ASO_ITERATIONS
) -> float:
    """deepsig's ε_min that ``a``'s scores are stochastically larger than ``b``'s (Dror et al. 2019, ASO):
    0 is stochastic dominance, below 0.5 leans to ``a``, 0.2 the threshold its authors suggest. Compares the
    two distributions, not pairs; ``comparisons`` makes the confidence Bonferroni-corrected over a table's
    pairs. Seeded, so a report made twice says the same. NaN with fewer than 2 scores a side."""
    from deepsig import aso  # imports torch: only the report's comparison needs it

    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return math.nan
    with warnings.catch_warnings():  # its division-by-zero warning is the no-overlap case, ε 0 or 1
        warnings.simplefilter("ignore", UserWarning)
        return float(
            aso(x, y, confidence_level=CONFIDENCE, num_comparisons=comparisons,
                num_bootstrap_iterations=iterations, seed=0, show_progress=False)
        )  # fmt: skip
