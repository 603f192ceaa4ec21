"""Scale paths give the same numbers as the direct computations (issue 19; no timing here)."""

import numpy as np
import pytest

from bayesmtl import methods
from bayesmtl.inference import profile


@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("chunk_numbers", [7, 500, 2**22])
def test_chunked_gram_blocks_equal_per_task_products(monkeypatch, chunk_numbers, m):
    """Any chunk size (one row per chunk, ragged chunks, one chunk), any row order, and the
    single-block shortcut."""
    monkeypatch.setattr(profile, "_CHUNK_NUMBERS", chunk_numbers)
    rng = np.random.default_rng(0)
    D = 3
    task = rng.integers(0, m, size=53)
    Xa, c, y = rng.normal(size=(53, D)), rng.uniform(0.5, 2, size=53), rng.normal(size=53)
    H, rhs = profile._chunked_blocks(Xa, c, y, task, m)
    for i in range(m):
        rows = task == i
        np.testing.assert_allclose(H[i], Xa[rows].T @ (c[rows, None] * Xa[rows]), rtol=1e-12)
        np.testing.assert_allclose(rhs[i], Xa[rows].T @ (c[rows] * y[rows]), rtol=1e-12)


def test_stl_is_per_task_ridge():
    """STL's MAP (λ/2)‖w_i‖² + (1/n_i) Σ (y - xᵀw_i - b_i)² per task, by its normal equations."""
    from conftest import make_regression

    data = make_regression(seed=3, d=4, sizes=(30, 50, 20))[0]
    lam = 0.3
    fit, _ = methods.fit(data, "stl", {"lam": lam})
    for i, (X, y) in enumerate(data.tasks()):
        n = len(y)
        A = np.c_[X, np.ones(n)]
        reg = np.diag([lam] * X.shape[1] + [0.0])
        theta = np.linalg.solve(2 / n * A.T @ A + reg, 2 / n * A.T @ y)
        np.testing.assert_allclose(fit.W[:, i], theta[:-1], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.b[i], theta[-1], rtol=1e-8, atol=1e-10)
