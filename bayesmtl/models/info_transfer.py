r"""The shared-module model of Wu, Zhang & Ré (information transfer in MTL), linear case.

Generative model
----------------
m tasks, task i with rows X_i (n_i, d) and targets y_i (n_i,); capacity r ≤ d:

    B ~ N(0, λ⁻¹)  i.i.d.   (d, r)     the shared module      -log p = (λ/2)‖B‖²_F + c
    A_i ~ N(0, λ⁻¹ I_r)     (r,)       task i's output head   -log p = (λ/2)‖A_i‖²  + c
    b_i flat                           task intercepts (eq. (1) has none; b = 0 there)
    y_ij ~ N(x_ijᵀ B A_i + b_i, σ²)  with log-likelihood tempered by α_i · s_i

(g = identity; the ReLU module g(X B) = relu(X B) is the deep network of
:mod:`bayesmtl.deep` with ``hidden = r``). The weight decay (λ/2)‖B‖²_F of the shared module is
the Gaussian prior on B and the weight decay (λ/2)‖A‖²_F of the heads is the Gaussian prior on
the A_i; ``lam = 0`` makes both flat (MAP only). α_i are the task weights of eq. (2) and s_i
the loss scaling (1/n_i for the per-task mean loss, 1 for the sum). With σ = 1/√2 the negative
log joint is, up to a constant,

    F(B, A, b) = Σ_i α_i s_i ‖X_i B A_i + b_i 1 - y_i‖² + (λ/2)(‖B‖²_F + ‖A‖²_F),      (★)

eq. (2) (and, with α_i = s_i = 1 and λ = 0, eq. (3)) plus the weight decay.

Identifiability
---------------
B and A are not identifiable: (B Q, Q⁻¹ A) fits the data equally for any invertible Q (and
with λ > 0 still has the same prior density for orthogonal Q). The identifiable quantities
are the task models θ̂_i = B A_i — the columns of W = B A (d, m) — and their pairwise cosines
cos(θ̂_i, θ̂_j). They are exported as ``W`` and as ``omega`` = WᵀW / d (the Gram matrix of
the task models), whose correlation ``omega_corr`` *is* the cosine matrix. Because
min_{BA = W} (‖B‖²_F + ‖A‖²_F)/2 = ‖W‖_* (Srebro et al. 2005), the MAP W of (★) solves
min L(W) + λ‖W‖_* s.t. rank W ≤ r: trace-norm MTL with a rank cap.

MAP
---
* :func:`fit_subspace` (Gaussian): alternating exact minimisation over A (a ridge solve per
  task) and B (one linear solve of size d·r), intercepts profiled out by centring each task,
  then the factors rebalanced to B = U S^{1/2}, A = S^{1/2} Vᵀ (the SVD of B A; this keeps W
  and never raises the penalty). F decreases monotonically to a stationary point.
* :func:`proposition3` (Proposition 3, every task with the same X of rank d, λ = 0): the
  global optimum in closed form, B* = (XᵀX)⁻¹ V D Q_r = V D⁻¹ Q_r with X = U D Vᵀ and Q_r the
  top-r eigenvectors of Σ_i α_i Uᵀ y_i y_iᵀ U. By Lemma 11 of the paper every local minimum
  of (★) has this value when the tasks share X.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import MultiTaskData
from ..errors import DataError, HyperparameterError
from .likelihoods import Gaussian
from .losses import linear_predictor

__all__ = ["shared_subspace_model", "TaskStats", "SubspaceFit", "task_stats",
           "subspace_objective", "fit_subspace", "proposition3", "shared_design",
           "require_shared_design", "check_rank", "task_gram", "task_cosines",
           "balanced_factors", "spectral_init"]


# ----------------------------------------------------------------------------- the model


def shared_subspace_model(X, task, n_tasks, y=None, *, rank, lam=1.0, likelihood=None,
                          weights=None, task_weights=None):
    """The shared-module model (module docstring) as a plain NumPyro model.

    Parameters
    ----------
    X : (N, d); task : (N,) int; n_tasks : m; y : (N,) or None (prior predictive).
    rank : r, the capacity of the shared module. lam : λ ≥ 0 (0: flat B and A, MAP only).
    likelihood : ``Gaussian(σ)`` (default σ = 1) or ``BernoulliLogit()``.
    weights : (N,) row weights s_i (1/n_i for the mean loss) or None.
    task_weights : (m,) α_i of eq. (2) or None (all 1).

    Sites: ``B`` (d, r), ``A`` (r, m), ``b`` (m,), deterministic ``W`` = B A (d, m) and
    ``omega`` = WᵀW / d (m, m), the likelihood's sites and ``y``.
    """
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    d = X.shape[1]
    B = numpyro.sample("B", _weight_prior(lam, (d, rank)))
    A = numpyro.sample("A", _weight_prior(lam, (rank, n_tasks)))
    W = numpyro.deterministic("W", B @ A)
    numpyro.deterministic("omega", task_gram(W))
    b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), (n_tasks,)))
    if task_weights is not None:
        alpha = jnp.asarray(task_weights)[task]
        weights = alpha if weights is None else weights * alpha
    return likelihood(linear_predictor(X, task, W, b), task, n_tasks, y, weights)


def _weight_prior(lam, shape):
    if lam == 0:
        return dist.ImproperUniform(constraints.real, (), shape)
    return dist.Normal(0.0, lam ** -0.5).expand(list(shape)).to_event(2)


def task_gram(W):
    """(m, m) WᵀW / d of the task models W (d, m): identifiable, and its correlation is the
    matrix of cosines cos(θ_i, θ_j)."""
    return W.T @ W / W.shape[0]


def task_cosines(W: np.ndarray) -> np.ndarray:
    """(m, m) cos(θ_i, θ_j) of the columns of W (d, m); 0 off the diagonal for a zero column."""
    W = np.asarray(W, dtype=np.float64)
    norms = np.linalg.norm(W, axis=0)
    denom = np.outer(norms, norms)
    cos = np.divide(W.T @ W, denom, out=np.zeros((W.shape[1],) * 2), where=denom > 0)
    np.fill_diagonal(cos, 1.0)
    return cos


# ----------------------------------------------------------------------------- checks


def check_rank(r, d: int) -> int:
    """r as an int in [1, d] (the shared module B is d × r), else HyperparameterError."""
    if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)) or r < 1:
        raise HyperparameterError(f"r (the capacity of the shared module) must be an integer "
                                  f"≥ 1; got {r!r}", "r", r)
    if r > d:
        raise HyperparameterError(f"r = {r} exceeds the number of features d = {d}: the shared "
                                  f"module B is d × r, so r ≤ d", "r", r)
    return int(r)


def shared_design(data: MultiTaskData) -> np.ndarray | None:
    """X (n, d) when every task has the same covariates (multi-label data), else None."""
    X0 = data.X[data.task_slice(0)]
    for i in range(1, data.n_tasks):
        Xi = data.X[data.task_slice(i)]
        if Xi.shape != X0.shape or not np.array_equal(Xi, X0):
            return None
    return X0


def require_shared_design(data: MultiTaskData, who: str) -> np.ndarray:
    """X (n, d) shared by every task, or a DataError naming the first task that differs."""
    X = shared_design(data)
    if X is None:
        X0 = data.X[data.task_slice(0)]
        first = next(i for i in range(1, data.n_tasks)
                     if data.X[data.task_slice(i)].shape != X0.shape
                     or not np.array_equal(data.X[data.task_slice(i)], X0))
        raise DataError(f"{who} needs the same covariates X for every task (multi-label data, "
                        f"as in Proposition 3); task {data.task_names[first]!r} has other rows "
                        f"than task {data.task_names[0]!r}")
    return X


def _centred(X, y, fit_intercept):
    if not fit_intercept:
        return X, y, np.zeros(X.shape[1]), 0.0
    xm, ym = X.mean(0), y.mean()
    return X - xm, y - ym, xm, ym


def _check_identified(stats: TaskStats, lam: float) -> None:
    """λ = 0 needs features of full column rank (after centring), else the MAP is not unique."""
    if lam > 0:
        return
    G = stats.G.sum(0)
    rank = np.linalg.matrix_rank(G, hermitian=True)
    if rank < G.shape[0]:
        raise DataError(f"the features have rank {rank} < d = {G.shape[0]} (after centring each "
                        "task): with lam = 0 (eq. (3), no weight decay) the MAP is not unique. "
                        "Pass lam > 0, or drop the dependent features")


# ----------------------------------------------------------------------------- MAP


class TaskStats(NamedTuple):
    """Sufficient statistics of the Gaussian likelihood, intercepts profiled out.

    G : (m, d, d) X̃_iᵀX̃_i; c : (m, d) X̃_iᵀỹ_i; s : (m,) ‖ỹ_i‖² (X̃, ỹ centred per task when
    there are intercepts); x_mean (m, d), y_mean (m,); v : (m,) the weight α_i s_i / (2σ²)
    of task i's squared loss in (★).
    """

    G: np.ndarray
    c: np.ndarray
    s: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    v: np.ndarray


def task_stats(data: MultiTaskData, *, alpha=None, loss_scale: str = "mean",
               noise: float = 2.0 ** -0.5, fit_intercept: bool = True) -> TaskStats:
    """:class:`TaskStats` of ``data`` with task weights ``alpha`` (m,) (None: all 1)."""
    parts = [_centred(X, y, fit_intercept) for X, y in data.tasks()]
    G = np.stack([Xc.T @ Xc for Xc, *_ in parts])
    c = np.stack([Xc.T @ yc for Xc, yc, *_ in parts])
    s = np.array([yc @ yc for _, yc, *_ in parts])
    scale = 1.0 / data.n_per_task if loss_scale == "mean" else np.ones(data.n_tasks)
    alpha = np.ones(data.n_tasks) if alpha is None else np.asarray(alpha, dtype=np.float64)
    return TaskStats(G, c, s, np.stack([p[2] for p in parts]),
                     np.array([p[3] for p in parts], dtype=np.float64),
                     alpha * scale / (2.0 * noise**2))


def subspace_objective(B, A, stats: TaskStats, lam: float) -> float:
    """(★) at (B, A) with the intercepts at their optimum."""
    BA = np.einsum("dr,rm->md", B, A)  # θ_i as rows
    fit = np.einsum("md,mde,me->m", BA, stats.G, BA) - 2 * np.einsum("md,md->m", stats.c, BA)
    return float(stats.v @ (fit + stats.s) + 0.5 * lam * (np.sum(B**2) + np.sum(A**2)))


def intercepts(B, A, stats: TaskStats) -> np.ndarray:
    """(m,) optimal b_i = ȳ_i - x̄_iᵀ B A_i (0 without intercepts)."""
    return stats.y_mean - np.einsum("md,dr,rm->m", stats.x_mean, B, A)


def _a_step(B, stats: TaskStats, lam: float) -> np.ndarray:
    """argmin_A (★) for fixed B: (v_i BᵀG_iB + (λ/2)I) a_i = v_i Bᵀc_i (minimum norm at λ = 0)."""
    r = B.shape[1]
    M = stats.v[:, None, None] * np.einsum("dr,mde,es->mrs", B, stats.G, B)
    rhs = stats.v[:, None] * (stats.c @ B)
    if lam > 0:
        return np.linalg.solve(M + 0.5 * lam * np.eye(r), rhs[..., None])[..., 0].T
    return np.einsum("mrs,ms->rm", np.linalg.pinv(M, hermitian=True), rhs)


def _b_step(A, stats: TaskStats, lam: float) -> np.ndarray:
    """argmin_B (★) for fixed A: Σ_i v_i G_i B a_i a_iᵀ + (λ/2) B = Σ_i v_i c_i a_iᵀ, solved
    as one (d·r) system in vec(B)."""
    d, r = stats.G.shape[1], A.shape[0]
    H = np.einsum("m,pm,qm,mjk->pjqk", stats.v, A, A, stats.G).reshape(r * d, r * d)
    rhs = np.einsum("m,pm,mj->pj", stats.v, A, stats.c).reshape(-1)
    H[np.diag_indices_from(H)] += 0.5 * lam
    if lam > 0:
        sol = np.linalg.solve(H, rhs)
    else:
        sol = np.linalg.lstsq(H, rhs, rcond=None)[0]
    return sol.reshape(r, d).T


def balanced_factors(B, A):
    """(U S^{1/2}, S^{1/2} Vᵀ) from the thin SVD of B A (r components): the factorisation of W
    = B A with the smallest (‖B‖²_F + ‖A‖²_F)/2, columns of B orthogonal, by decreasing size."""
    r = B.shape[1]
    U, S, Vt = np.linalg.svd(B @ A, full_matrices=False)
    k = min(r, len(S))  # r > min(d, m): the extra columns carry nothing
    root = np.sqrt(S[:k])
    Bn, An = np.zeros_like(B), np.zeros((r, A.shape[1]))
    Bn[:, :k], An[:k] = U[:, :k] * root, root[:, None] * Vt[:k]
    return Bn, An


def spectral_init(stats: TaskStats, r: int) -> np.ndarray:
    """B₀ (d, r): the top-r left singular vectors of the weighted ridge single-task models
    [√v_i θ_i], θ_i = (G_i + εI)⁻¹c_i (ε = 10⁻⁶ of G_i's mean eigenvalue)."""
    d = stats.G.shape[1]
    eps = 1e-6 * np.maximum(np.trace(stats.G, axis1=1, axis2=2) / d, 1e-12)
    theta = np.linalg.solve(stats.G + eps[:, None, None] * np.eye(d), stats.c[..., None])[..., 0]
    U = np.linalg.svd((np.sqrt(stats.v)[:, None] * theta).T, full_matrices=True)[0]
    return U[:, :r]


class SubspaceFit(NamedTuple):
    """A MAP fit of (★): B (d, r), A (r, m), b (m,), W = B A (d, m), objective (★),
    history (objective per sweep), n_iter, converged, grad_norm (max |∂F/∂B| at the end,
    relative to max(1, F))."""

    B: np.ndarray
    A: np.ndarray
    b: np.ndarray
    W: np.ndarray
    objective: float
    history: np.ndarray
    n_iter: int
    converged: bool
    grad_norm: float


def _grad_b(B, A, stats: TaskStats, lam: float) -> np.ndarray:
    theta = B @ A
    GBa = np.einsum("mde,em->dm", stats.G, theta)
    return 2 * (GBa - stats.c.T) @ (stats.v[:, None] * A.T) + lam * B


def fit_subspace(data: MultiTaskData, r: int, lam: float, *, alpha=None,
                 loss_scale: str = "mean", noise: float = 2.0 ** -0.5,
                 fit_intercept: bool = True, init=None, max_iter: int = 5000,
                 tol: float = 1e-13) -> SubspaceFit:
    """MAP of (★) for Gaussian targets by alternating exact block minimisation.

    init : None (spectral start, :func:`spectral_init`), a B₀ (d, r), or an int seed for a
        random Gaussian B₀ (to probe local minima). Stops when a sweep lowers F by less than
        ``tol`` (relative) — converged — or after ``max_iter`` sweeps.
    """
    r = check_rank(r, data.n_features)
    stats = task_stats(data, alpha=alpha, loss_scale=loss_scale, noise=noise,
                       fit_intercept=fit_intercept)
    _check_identified(stats, lam)
    if init is None:
        B = spectral_init(stats, r)
    elif isinstance(init, (int, np.integer)):
        B = np.random.default_rng(int(init)).normal(size=(data.n_features, r))
    else:
        B = np.asarray(init, dtype=np.float64)
    A = _a_step(B, stats, lam)
    history = [subspace_objective(B, A, stats, lam)]
    converged = False
    for _ in range(max_iter):
        B = _b_step(A, stats, lam)
        A = _a_step(B, stats, lam)
        B, A = balanced_factors(B, A)
        history.append(subspace_objective(B, A, stats, lam))
        if history[-2] - history[-1] <= tol * max(1.0, abs(history[-1])):
            converged = True
            break
    F = history[-1]
    grad = float(np.max(np.abs(_grad_b(B, A, stats, lam)))) / max(1.0, abs(F))
    return SubspaceFit(B, A, intercepts(B, A, stats), B @ A, F, np.asarray(history),
                       len(history) - 1, converged, grad)


def proposition3(data: MultiTaskData, r: int, *, alpha=None, loss_scale: str = "mean",
                 noise: float = 2.0 ** -0.5, fit_intercept: bool = True) -> SubspaceFit:
    """The global MAP of (★) at λ = 0 when every task has the same X (Proposition 3).

    With X̃ = U D Vᵀ (thin SVD; X̃ the centred X when there are intercepts) of rank d and
    Z = [√v_i Uᵀỹ_i] (d, m): Q_r = the top-r left singular vectors of Z (so Q_r Q_rᵀ is the
    best rank-r approximation's range of Σ_i v_i Uᵀy_iy_iᵀU), B* = V D⁻¹ Q_r, A_i* = Q_rᵀUᵀỹ_i.
    Raises DataError when the tasks do not share X or X̃ is rank-deficient.
    """
    X = require_shared_design(data, "the closed form of Proposition 3")
    r = check_rank(r, data.n_features)
    stats = task_stats(data, alpha=alpha, loss_scale=loss_scale, noise=noise,
                       fit_intercept=fit_intercept)
    Xc = X - X.mean(0) if fit_intercept else X
    Yc = np.stack([_centred(X, y, fit_intercept)[1] for _, y in data.tasks()], axis=1)
    U, D, Vt = np.linalg.svd(Xc, full_matrices=False)
    if D[-1] <= D[0] * max(Xc.shape) * np.finfo(float).eps:
        raise DataError(f"Proposition 3 needs X of rank d = {X.shape[1]}; X"
                        f"{' (centred)' if fit_intercept else ''} has rank "
                        f"{np.linalg.matrix_rank(Xc)}. Use fit_subspace with lam > 0")
    UY = U.T @ Yc  # (d, m)
    Q = np.linalg.svd(UY * np.sqrt(stats.v), full_matrices=True)[0][:, :r]
    B, A = balanced_factors(Vt.T @ (Q / D[:, None]), Q.T @ UY)
    F = subspace_objective(B, A, stats, 0.0)
    return SubspaceFit(B, A, intercepts(B, A, stats), B @ A, F, np.asarray([F]), 0, True,
                       float(np.max(np.abs(_grad_b(B, A, stats, 0.0)))) / max(1.0, abs(F)))
