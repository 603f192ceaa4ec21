r"""SVD-based task re-weighting (Algorithm 2 of Wu, Zhang & Ré) for tasks sharing X.

Input: k tasks (X, y_i) with the same covariates X (n, d) (multi-label data) and a rank
r ∈ {1, …, k}:

    θ_i = Xᵀ y_i                      (d,)   step 1
    U_r = top-r left singular vectors of Θ = [θ_1 … θ_k] (d, k)   step 2 (best rank-r)
    α_i = ‖θ_iᵀ U_r‖                         step 3

Proposition 3 says the re-weighted loss Σ_i α_i L_i moves the optimal shared module towards
the span of the well-weighted tasks; a task whose labels are corrupted (random flips) has
Xᵀy_i attenuated towards the noise floor, so it projects less on U_r and is down-weighted.

With intercepts in the models, X and y_i are centred first (``center=True``, the default);
otherwise the mean direction X̄ dominates Θ and a task gets weight for its label *frequency*.
The weights are normalised to mean 1 (eq. (2)'s minimiser over B does not depend on a common
factor; λ keeps its meaning), and floored at 10⁻⁸ so a task is never dropped entirely.
"""

from __future__ import annotations

import numpy as np

from ..data import MultiTaskData
from ..errors import DataError, HyperparameterError
from ..models.info_transfer import require_shared_design

__all__ = ["svd_task_weights", "task_signals"]


def task_signals(data: MultiTaskData, center: bool = True) -> np.ndarray:
    """Θ = [Xᵀy_1 … Xᵀy_k] (d, k) of tasks sharing X (DataError otherwise)."""
    X = require_shared_design(data, "SVD task re-weighting (Algorithm 2)")
    Y = np.stack([y for _, y in data.tasks()], axis=1)
    if center:
        X, Y = X - X.mean(0), Y - Y.mean(0)
    return X.T @ Y


def svd_task_weights(data: MultiTaskData, rank: int = 1, *, center: bool = True,
                     normalize: bool = True) -> np.ndarray:
    """(k,) Algorithm 2's α_i = ‖θ_iᵀ U_r‖ (module docstring); ``rank`` r in 1..k."""
    k = data.n_tasks
    if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, (int, np.integer)) \
            or not 1 <= rank <= k:
        raise HyperparameterError(f"rank (r of Algorithm 2) must be an integer in 1..{k} (the "
                                  f"number of tasks); got {rank!r}", "rank", rank)
    theta = task_signals(data, center)
    U = np.linalg.svd(theta, full_matrices=False)[0][:, :rank]
    alpha = np.linalg.norm(U.T @ theta, axis=0)
    if not alpha.max() > 0:
        raise DataError("every task has Xᵀy = 0 (constant labels or X): Algorithm 2 has no "
                        "direction to weight by")
    alpha = np.maximum(alpha, 1e-8 * alpha.max())
    return alpha / alpha.mean() if normalize else alpha
