r"""The layerwise graph neural network (LGNN) of L2MT, eqs. (3)–(4), in torch.

For one task with rows x_1..x_n (the paper's columns of X) and labels y:

    H₁ = ReLU(L₁ᵀX + β₁1ᵀ),     Hᵢ = ReLU(LᵢᵀX + Hᵢ₋₁G + βᵢ1ᵀ)  (2 ≤ i ≤ s),
    e  = Hₛ1/n                  (the task embedding, d̂ entries),

with the label graph G (:func:`label_graph`): g_ij = 1 when y_i = y_j (the diagonal too),
-1 when y_i ≠ y_j and one is among the other's k nearest neighbours, 0 otherwise. The paper
defines G for classification; for a regression task (our extension) the two sides of the
task's median label play the classes. As in
the paper's experiments (Section 4), L₂ = … = L_s and β₂ = … = β_s are shared.

Here rows are rows (X is (n, d), H is (n, d̂)), so Hᵢ₋₁G is ``G @ H`` (G is symmetric).
Tasks of different sizes are padded to one array with a row mask: padded rows have zero
graph entries, so they never reach a real row, and the mean runs over real rows only.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError, HyperparameterError

__all__ = ["label_graph", "graph_labels", "pad_tasks", "lgnn_embed", "task_arrays"]


def label_graph(X: np.ndarray, y: np.ndarray, k: int = 6) -> np.ndarray:
    """The label graph G (n, n) of one classification task: X (n, d), y (n,) labels.

    +1 for a pair with the same label (i = j included), -1 for a pair with different labels
    where i is among j's k nearest neighbours (Euclidean, excluding j itself) or j among
    i's, 0 otherwise.
    """
    X, y = np.asarray(X, float), np.asarray(y)
    n = X.shape[0]
    if X.ndim != 2 or y.shape != (n,):
        raise DataError(f"label_graph needs X (n, d) and y (n,); got {X.shape} and {y.shape}")
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise HyperparameterError(f"k must be an integer ≥ 1; got {k!r}", "k", k)
    same = y[:, None] == y[None, :]
    sq = np.sum(X**2, axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * X @ X.T
    np.fill_diagonal(dist, np.inf)
    kk = min(int(k), n - 1)
    near = np.zeros((n, n), bool)
    if kk > 0:
        idx = np.argsort(dist, axis=1, kind="stable")[:, :kk]
        near[np.repeat(np.arange(n), kk), idx.ravel()] = True
    near |= near.T
    return np.where(same, 1.0, np.where(near, -1.0, 0.0))


def graph_labels(y: np.ndarray, kind: str) -> np.ndarray:
    """The labels G compares: the classes, or for regression y > median(y) (our extension)."""
    if kind == "classification":
        return np.asarray(y)
    if kind == "regression":
        y = np.asarray(y, float)
        return y > np.median(y)
    raise DataError(f"L2MT's label graph needs binary classification or regression tasks; "
                    f"got {kind} data")


def task_arrays(data, k: int = 6) -> list:
    """[(X_t (n_t, d), G_t (n_t, n_t))] for every task of a MultiTaskData."""
    out = []
    for t in range(data.n_tasks):
        rows = data.task == t
        labels = graph_labels(data.y[rows], data.kind)
        out.append((data.X[rows], label_graph(data.X[rows], labels, k)))
    return out


def pad_tasks(tasks: list, n_max: int | None = None):
    """Stack ragged tasks [(X_t, G_t)] into X (T, n, d), G (T, n, n), mask (T, n) (NumPy)."""
    if not tasks:
        raise DataError("no tasks to embed")
    d = tasks[0][0].shape[1]
    if any(X.shape[1] != d for X, _ in tasks):
        raise DataError("every task must have the same number of features")
    n = max(X.shape[0] for X, _ in tasks) if n_max is None else n_max
    T = len(tasks)
    Xp, Gp, mask = np.zeros((T, n, d)), np.zeros((T, n, n)), np.zeros((T, n), bool)
    for t, (X, G) in enumerate(tasks):
        r = X.shape[0]
        Xp[t, :r], Gp[t, :r, :r], mask[t, :r] = X, G, True
    return Xp, Gp, mask


def lgnn_embed(X: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, L1, beta1, L2, beta2,
               layers: int = 2) -> torch.Tensor:
    """Task embeddings E (..., d̂) of padded tasks X (..., n, d), G (..., n, n), mask (..., n).

    L1, L2 (d, d̂) and beta1, beta2 (d̂,): layer 1 and the shared layers 2..s (s = ``layers``).
    """
    H = torch.relu(X @ L1 + beta1)
    skip = X @ L2 if layers > 1 else None
    for _ in range(layers - 1):
        H = torch.relu(skip + G @ H + beta2)
    w = mask.to(H.dtype)
    return (H * w[..., None]).sum(-2) / w.sum(-1, keepdim=True).clamp(min=1.0)
