r"""Covariance similarity score (eq. (5) of Wu, Zhang & Ré): how aligned two tasks' data are.

For a task with covariates X_i (n_i, d), its covariance is C_i = X_iᵀX_i (d, d) (uncentred, as
in the paper; ``center=True`` centres the columns first). Keep its top r_i eigenpairs, r_i the
smallest rank whose eigenvalues sum to ``keep`` (99 %) of the total, and write
M_i = U_{i,r_i} D_{i,r_i}^{1/2} (d, r_i), so that M_i M_iᵀ is the best rank-r_i approximation
of C_i. Eq. (5) is

    score_paper(i, j) = ‖M_iᵀ M_j‖_F / (‖M_i‖_F ‖M_j‖_F) = √(⟨C̄_i, C̄_j⟩ / (tr C̄_i · tr C̄_j)),

C̄_i = M_i M_iᵀ. As printed it is *not* 1 for identical covariances (it is ‖C̄‖_F / tr C̄,
e.g. 1/√d for an isotropic one). The default ``normalization="self"`` divides by the self-
scores instead,

    score(i, j) = ‖M_iᵀ M_j‖_F / (‖M_iᵀ M_i‖_F ‖M_jᵀ M_j‖_F)^{1/2}
                = √(⟨C̄_i, C̄_j⟩ / (‖C̄_i‖_F ‖C̄_j‖_F)),

the square root of the cosine between the truncated covariances: 1 exactly when C̄_i ∝ C̄_j,
in [0, 1], symmetric, invariant to a rotation X_i ↦ X_i Q applied to every task (the
feature space) and to any row rotation X_i ↦ P X_i, and to rescaling either task. It is *not*
invariant to rotating one task alone — that misalignment is what it measures.
"""

from __future__ import annotations

import numpy as np

from ..data import MultiTaskData, TaskStatistics
from ..errors import HyperparameterError, ShapeMismatchError

__all__ = ["KEEP", "NORMALIZATIONS", "retained_rank", "covariance_factor",
           "covariance_similarity_score", "covariance_similarity"]

#: fraction of the covariance's singular values (eigenvalues) kept, as in the paper
KEEP = 0.99
NORMALIZATIONS = ("self", "paper")


def retained_rank(eigenvalues: np.ndarray, keep: float = KEEP) -> int:
    """Smallest r with Σ_{j≤r} λ_j ≥ keep · Σ_j λ_j (λ sorted decreasing, clipped at 0)."""
    lam = np.clip(np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1], 0.0, None)
    total = lam.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(lam), keep * total * (1 - 1e-12)) + 1)


def covariance_factor(X: np.ndarray, keep: float = KEEP, center: bool = False) -> np.ndarray:
    """M = U_r D_r^{1/2} (d, r) of C = XᵀX (X (n, d)), r = :func:`retained_rank`. Computed
    from the SVD of X (D = its squared singular values); (d, 0) for X = 0."""
    if not 0 < keep <= 1:
        raise HyperparameterError(f"keep must lie in (0, 1]; got {keep!r}", "keep", keep)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ShapeMismatchError(f"X must be 2-D (n, d); got shape {X.shape}")
    if center:
        X = X - X.mean(0)
    _, sv, Vt = np.linalg.svd(X, full_matrices=False)
    r = retained_rank(sv**2, keep)
    return Vt[:r].T * sv[:r]


def _gram_factor(C: np.ndarray, keep: float) -> np.ndarray:
    """:func:`covariance_factor` from C = XᵀX itself (d, d), by its eigendecomposition (the
    per-task moments of a :class:`~bayesmtl.data.TaskStatistics` hold C, not X)."""
    lam, V = np.linalg.eigh(C)
    lam, V = np.clip(lam[::-1], 0.0, None), V[:, ::-1]
    r = retained_rank(lam, keep)
    return V[:, :r] * np.sqrt(lam[:r])


def _task_factors(data, keep: float, center: bool) -> list:
    """M_i of every task: from the rows, or from the moments of a TaskStatistics."""
    if not isinstance(data, TaskStatistics):
        return [covariance_factor(X, keep, center) for X, _ in data.tasks()]
    if not 0 < keep <= 1:
        raise HyperparameterError(f"keep must lie in (0, 1]; got {keep!r}", "keep", keep)
    d = data.n_features
    factors = []
    for gram in data.moments.gram:
        C = gram[:d, :d]
        if center:  # Σ (x - x̄)(x - x̄)ᵀ = Σ xxᵀ - s sᵀ / n with s = Σ x
            C = C - np.outer(gram[:d, d], gram[:d, d]) / max(gram[d, d], 1.0)
        factors.append(_gram_factor(C, keep))
    return factors


def _score(Mi, Mj, normalization):
    cross = np.linalg.norm(Mi.T @ Mj)
    if normalization == "paper":
        denom = np.linalg.norm(Mi) * np.linalg.norm(Mj)
    else:
        denom = np.sqrt(np.linalg.norm(Mi.T @ Mi) * np.linalg.norm(Mj.T @ Mj))
    return float(cross / denom) if denom > 0 else 0.0


def _check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        raise HyperparameterError(f"normalization must be one of {NORMALIZATIONS}; got "
                                  f"{normalization!r}", "normalization", normalization)


def covariance_similarity_score(X1, X2, keep: float = KEEP, normalization: str = "self",
                                center: bool = False) -> float:
    """Eq. (5) between two covariate matrices X1 (n1, d) and X2 (n2, d) (see the module
    docstring for the two normalisations). Different d raise ShapeMismatchError."""
    _check_normalization(normalization)
    X1, X2 = np.asarray(X1, dtype=np.float64), np.asarray(X2, dtype=np.float64)
    if X1.ndim != 2 or X2.ndim != 2 or X1.shape[1] != X2.shape[1]:
        raise ShapeMismatchError(f"the two tasks must have the same number of features d; got "
                                 f"X1 {X1.shape} and X2 {X2.shape}")
    return _score(covariance_factor(X1, keep, center), covariance_factor(X2, keep, center),
                  normalization)


def covariance_similarity(data: MultiTaskData | TaskStatistics, keep: float = KEEP,
                          normalization: str = "self", center: bool = False):
    """(m, m) eq. (5) between every pair of tasks of ``data`` (rows, or the streamed
    statistics, whose moments hold each C_i), as an xarray DataArray with dims (``task``,
    ``task_``) labelled by the task names; attrs hold ``keep``, the normalisation and each
    task's retained rank (``ranks``)."""
    import xarray as xr

    _check_normalization(normalization)
    factors = _task_factors(data, keep, center)
    m = data.n_tasks
    S = np.eye(m)
    for i in range(m):
        for j in range(i + 1 if normalization == "self" else i, m):
            S[i, j] = S[j, i] = _score(factors[i], factors[j], normalization)
    names = list(data.task_names)
    return xr.DataArray(S, dims=("task", "task_"), coords={"task": names, "task_": names},
                        name="covariance_similarity",
                        attrs={"keep": keep, "normalization": normalization,
                               "center": int(center), "ranks": [f.shape[1] for f in factors]})
