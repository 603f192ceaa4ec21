"""Per-row losses and the per-task averaging of the papers' empirical risk.

The papers' risk is ``sum_i (1/n_i) sum_j l(f_ij, y_ij)`` ("mean" scaling); a proper likelihood
sums the rows ("sum" scaling). :func:`row_weights` gives the weight of each row for either.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def squared(f, y):
    """(N,) squared loss ``(y - f)^2``."""
    return (y - f) ** 2


def logistic(f, y01):
    """(N,) logistic loss ``log(1 + exp(-s f))`` with ``s = 2 y - 1``, y in {0, 1}."""
    return jnp.logaddexp(0.0, -(2.0 * y01 - 1.0) * f)


LOSSES = {"squared": squared, "logistic": logistic}


def task_loss_weights(counts, loss_scale: str = "sum") -> np.ndarray:
    """(m,) weight of each task's rows from its row count n_i: 1 for ``"sum"``, ``1/n_i`` for
    ``"mean"``."""
    counts = np.asarray(counts, dtype=np.float64)
    if loss_scale == "sum":
        return np.ones(len(counts))
    if loss_scale == "mean":
        return 1.0 / np.maximum(counts, 1.0)
    raise ValueError(f"loss_scale must be 'sum' or 'mean'; got {loss_scale!r}")


def row_weights(task: np.ndarray, n_tasks: int, loss_scale: str = "sum") -> np.ndarray:
    """(N,) weight of each row: 1 for ``"sum"``, ``1/n_i`` for ``"mean"``."""
    task = np.asarray(task)
    return task_loss_weights(np.bincount(task, minlength=n_tasks), loss_scale)[task]


def linear_predictor(X, task, W, b):
    """(N,) ``f_j = x_j^T w_{t_j} + b_{t_j}`` for stacked rows. X (N, d), W (d, m), b (m,)."""
    return jnp.sum(X * W.T[task], axis=1) + b[task]


def empirical_risk(loss, X, y, task, W, b, weights):
    """Weighted sum of per-row losses (the first term of the papers' objectives)."""
    return jnp.sum(weights * LOSSES[loss](linear_predictor(X, task, W, b), y))
