r"""GAMTL: group-adaptive multi-task learning with a trace-Lasso prior on task combinations.

Generative model
----------------
m tasks with d features, task i with rows (x_ij, y_ij); W = (w_1, …, w_m) (d, m), intercepts
b (m,), and the combination matrix C (m, m) with zero diagonal and entries of either sign
(NumPyro site ``combination``; column i is c_i, C[s, i] the weight of source task s in target
task i). With W_{-i} the matrix W without column i and c_i^{[-i]} the column c_i without its
i-th entry:

    reconstruction prior   w_i | W_{-i}, c_i ~ N(W_{-i} c_i^{[-i]}, (1/λ) I_d)      (λ = lam)
    trace-Lasso prior      p(c_i | W) ∝ exp(-γ ‖W_{-i} Diag(c_i^{[-i]})‖_*)          (γ = gamma)
    likelihood             y_ij ~ N(f_ij, 1/2) (squared loss) or Bernoulli(sigmoid(f_ij))
                           (logistic loss), f_ij = w_iᵀ x_ij + b_i, each row's log-likelihood
                           tempered by 1/n_i ("mean" scaling, the papers' per-task mean loss)

with flat (improper) priors on W and b (optionally b_i ~ N(0, intercept_scale²)).

Neither prior is normalised: the trace-Lasso density of c_i has a normaliser
Z_i(W) = ∫ exp(-γ‖W_{-i} Diag(c)‖_*) dc that depends on W, and the product over i of the
reconstruction conditionals equals exp(-(λ/2)‖W - W C‖²_F) up to the W-free constant, whose
normaliser in W is |det(I - C)|^{-d} times a constant. Both normalisers are dropped, so the
object sampled and maximised is the **joint Gibbs-type posterior**

    p(W, b, C | D) ∝ exp(-F(W, b, C)),
    F = Σ_i L(w_i, D_i) + (λ/2) Σ_i ‖w_i - W_{-i} c_i^{[-i]}‖² + γ Σ_i ‖W_{-i} Diag(c_i^{[-i]})‖_*,

which is objective (1) of the paper (L = per-task mean loss; intercepts b are unpenalised and
are not reconstructed). The negative log density of :func:`gamtl_model` equals F up to a
constant (tested), and MAP (:func:`fit_gamtl`) minimises F exactly.

Trace Lasso (Grave et al. 2011): ‖X Diag(c)‖_* interpolates between ℓ1 and ℓ2. When the
columns of X are orthogonal it equals Σ_k ‖x_k‖ |c_k| — the ℓ1 norm with normalised predictors,
so the prior on c_i is a product of Laplace densities; when all columns are equal to x it equals
‖x‖ ‖c‖_2 — an ℓ2 norm, so correlated tasks are selected together. The term is
‖W Diag(zero_diagonal(C)[:, i])‖_* too, as a zero column leaves the singular values unchanged;
the code uses that form so that W_{-i} c_i has one representation (``reconstruction``),
shared with AMTL.

MAP (Algorithm 1): W from single-task learning (F with C = 0, i.e. ridge (λ/2)‖w_i‖²), then
alternate the C-step (2)–(3) and the W-step (4), both convex (Theorem 1: F is bi-convex), each
solved by ADMM (``bayesmtl.inference.solvers.admm``), vectorised over tasks and JIT-compiled.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import CLASSIFICATION, MultiTaskData
from ..inference.solvers import admm, prox_trace_norm
from .likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from .losses import LOSSES, empirical_risk, linear_predictor, row_weights
from .reconstruction import reconstruction_residual, zero_diagonal

__all__ = ["trace_lasso", "trace_lasso_columns", "gamtl_objective", "gamtl_model",
           "offdiag_to_combination", "combination_to_offdiag", "GAMTLResult", "fit_gamtl",
           "fit_single_task", "c_step", "w_step", "task_groups", "group_coassignment",
           "stable_groups", "predict_gamtl", "to_datatree", "sample_gamtl"]


# ----------------------------------------------------------------------------- the penalty


def trace_lasso(W_minus_i, c):
    """Trace Lasso ``‖W_{-i} Diag(c)‖_*`` (sum of singular values).

    Parameters
    ----------
    W_minus_i : (d, k) predictors (task parameters of the source tasks).
    c : (k,) coefficients.
    """
    return jnp.sum(jnp.linalg.svd(W_minus_i * c[None, :], compute_uv=False))


def trace_lasso_columns(W, C):
    """(m,) trace Lasso of every column: entry i is ``‖W_{-i} Diag(c_i^{[-i]})‖_*``.

    W (d, m), C (m, m); C's diagonal is ignored (computed as ‖W Diag(zero_diag(C)[:, i])‖_*).
    """
    return jax.vmap(lambda c: trace_lasso(W, c), in_axes=1)(zero_diagonal(C))


def gamtl_objective(W, b, C, X, y, task, weights, lam, gamma, loss="squared"):
    """Objective (1): ``Σ_i L_i + (λ/2) Σ_i ‖w_i - W_{-i} c_i‖² + γ Σ_i ‖W_{-i} Diag(c_i)‖_*``.

    W (d, m), b (m,), C (m, m), X (N, d), y (N,), task (N,), weights (N,) row weights of the
    loss (1/n_i for the per-task mean); loss is "squared" or "logistic".
    """
    return (empirical_risk(loss, X, y, task, W, b, weights)
            + 0.5 * lam * jnp.sum(reconstruction_residual(W, C) ** 2)
            + gamma * jnp.sum(trace_lasso_columns(W, C)))


# ----------------------------------------------------------------------------- C's layout


def _offdiag_index(m):
    """(m-1, m) row indices: column i lists the rows k != i of an (m, m) matrix."""
    k = np.arange(m - 1)[:, None]
    return k + (k >= np.arange(m)[None, :])


def offdiag_to_combination(offdiag):
    """(m-1, m) columns c_i^{[-i]} → (m, m) C with zero diagonal."""
    m = offdiag.shape[1]
    rows = _offdiag_index(m)
    cols = np.broadcast_to(np.arange(m), rows.shape)
    return jnp.zeros((m, m), offdiag.dtype).at[rows, cols].set(offdiag)


def combination_to_offdiag(C):
    """(m, m) C → (m-1, m) array whose column i is c_i^{[-i]}."""
    m = C.shape[0]
    rows = _offdiag_index(m)
    return C[rows, np.broadcast_to(np.arange(m), rows.shape)]


# ----------------------------------------------------------------------------- NumPyro model


def gamtl_model(X, task, n_tasks, y=None, *, lam, gamma, likelihood=None, weights=None,
                intercept_scale=None):
    """GAMTL as a plain NumPyro model (see the module docstring for the density).

    Parameters
    ----------
    X : (N, d) features; task : (N,) int task index; n_tasks : m ≥ 2; y : (N,) or None.
    lam : λ, precision of the reconstruction prior; gamma : γ, trace-Lasso weight.
    likelihood : ``Gaussian(1/√2)`` (default; the squared loss) or ``BernoulliLogit()``.
    weights : (N,) per-row log-likelihood weights (1/n_i reproduces the per-task mean loss).
    intercept_scale : None for flat intercepts, else b_i ~ N(0, intercept_scale²).

    Sites: ``W`` (d, m), ``combination_offdiag`` (m-1, m) (column i is c_i^{[-i]}),
    deterministic ``combination`` (m, m), factors ``reconstruction`` and ``trace_lasso``,
    ``b`` (m,), and the likelihood's ``y``.
    """
    likelihood = Gaussian(PAPER_SQUARED_LOSS_NOISE) if likelihood is None else likelihood
    d, m = X.shape[1], n_tasks
    W = numpyro.sample("W", dist.ImproperUniform(constraints.real, (), (d, m)))
    offdiag = numpyro.sample("combination_offdiag",
                             dist.ImproperUniform(constraints.real, (), (m - 1, m)))
    C = numpyro.deterministic("combination", offdiag_to_combination(offdiag))
    # reconstruction prior: log Π_i N(w_i | W_{-i} c_i, I/λ)
    numpyro.factor("reconstruction", jnp.sum(
        dist.Normal(W - reconstruction_residual(W, C), lam**-0.5).log_prob(W)))
    # trace-Lasso prior, unnormalised in c given W
    numpyro.factor("trace_lasso", -gamma * jnp.sum(trace_lasso_columns(W, C)))
    if intercept_scale is None:
        b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), (m,)))
    else:
        b = numpyro.sample("b", dist.Normal(0.0, intercept_scale).expand([m]).to_event(1))
    return likelihood(linear_predictor(X, task, W, b), task, m, y, weights)


# ----------------------------------------------------------------------------- C-step


class AdmmWarmStart(NamedTuple):
    """Split variable z, scaled dual u and penalty rho carried from one ADMM solve to the next
    (outer iterations change W or C only a little, so a warm-started solve is short)."""

    z: jax.Array
    u: jax.Array
    rho: jax.Array


def c_step(W, C0, lam, gamma, warm: AdmmWarmStart | None = None, *, abs_tol=1e-9,
           rel_tol=1e-7, max_iter=5000, relaxation=1.6):
    """C-step (2)–(3): argmin over C of (λ/2)Σ‖w_i - W_{-i}c_i‖² + γ Σ‖W_{-i}Diag(c_i)‖_*.

    One ADMM per column, vmapped over the m columns: split J_i = W Diag(c_i) (d, m);
    (a) c_i in closed form from (λ WᵀW + ρ Diag(‖w_k‖²)) c = λ Wᵀw_i + ρ diag(Wᵀ(J_i - U_i))
    restricted to k ≠ i, (b) J_i by singular-value soft-thresholding at γ/ρ, (c) dual update.
    (U here is the negative of the paper's U: constraint written W Diag(c_i) = J_i.)

    Parameters
    ----------
    W : (d, m); C0 : (m, m) starting C; lam, gamma : λ, γ.
    warm : z (m, d, m), u (m, d, m), rho (m,) from a previous C-step; default J_i = W Diag(c_i)
        of C0, U = 0, ρ = λ.
    abs_tol, rel_tol, max_iter, relaxation : ADMM settings (see ``admm``).

    Returns
    -------
    C (m, m) and the vmapped ``AdmmResult`` (fields of leading size m).
    """
    m = W.shape[1]
    if warm is None:
        J0 = jnp.moveaxis(W[:, :, None] * zero_diagonal(C0)[None], 2, 0)
        warm = AdmmWarmStart(J0, jnp.zeros_like(J0), jnp.full((m,), float(lam)))
    return _c_step(W, C0, *warm, lam, gamma, abs_tol, rel_tol, max_iter, relaxation)


@jax.jit(static_argnames=("max_iter",))
def _c_step(W, C0, J0, U0, rho0, lam, gamma, abs_tol, rel_tol, max_iter, relaxation):
    m = W.shape[1]
    gram = W.T @ W
    sq = jnp.diag(gram)
    jitter = 1e-12 * (1.0 + jnp.mean(sq))

    def column(i, c0, J0, U0, rho0):
        mask = 1.0 - jax.nn.one_hot(i, m, dtype=W.dtype)
        target = lam * (W.T @ W[:, i])

        def A(c):
            return W * c[None, :]

        def At(Y):
            return jnp.sum(W * Y, axis=0)

        def x_update(c, v, rho):
            del c
            M = lam * gram + rho * jnp.diag(sq)
            M = mask[:, None] * M * mask[None, :] + jnp.diag(1.0 - mask) + jitter * jnp.eye(m)
            rhs = mask * (target + rho * At(v))
            return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(M), True), rhs)

        def z_update(v, rho):
            return prox_trace_norm(v, gamma / rho)

        return admm(x_update, z_update, A, At, c0 * mask, J0, U0, rho0=rho0,
                    max_iter=max_iter, abs_tol=abs_tol, rel_tol=rel_tol, relaxation=relaxation)

    res = jax.vmap(column, in_axes=(0, 1, 0, 0, 0))(jnp.arange(m), C0, J0, U0, rho0)
    return res.x.T, res


# ----------------------------------------------------------------------------- W-step


def _padded_rows(task, m):
    """(m, n_max) row index of each task's j-th row and its (m, n_max) validity mask."""
    counts = np.bincount(task, minlength=m)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    j = np.arange(counts.max())[None, :]
    mask = j < counts[:, None]
    return np.where(mask, starts[:, None] + j, 0), mask.astype(np.float64)


def _newton_cg(fun, theta0, blocks, max_newton=30, tol=1e-14):
    """Minimise a smooth convex ``fun`` over theta (m, p) by Newton–CG with Armijo backtracking.

    ``blocks(theta) -> (m, p, p)`` gives positive definite diagonal blocks of the Hessian
    (block-Jacobi preconditioner). Stops when half the Newton decrement is below
    ``tol * max(1, |fun|)``.
    """
    grad = jax.grad(fun)

    def body(s):
        theta, f, _, it = s
        g = grad(theta)
        chol = jnp.linalg.cholesky(blocks(theta))

        def precond(r):
            return jax.vmap(lambda L, ri: jax.scipy.linalg.cho_solve((L, True), ri))(chol, r)

        def hvp(v):
            return jax.jvp(grad, (theta,), (v,))[1]

        p, _ = jax.scipy.sparse.linalg.cg(hvp, -g, M=precond, tol=1e-11,
                                          maxiter=20 * theta.shape[1])
        slope = jnp.vdot(g, p)
        p = jnp.where(slope < 0, p, -precond(g))  # CG failure: preconditioned gradient
        slope = jnp.vdot(g, p)

        def ls_cond(c):
            t, ft = c
            return ~(ft <= f + 1e-4 * t * slope) & (t > 1e-12)

        def ls_body(c):
            t = 0.5 * c[0]
            return t, fun(theta + t * p)

        t, ft = jax.lax.while_loop(ls_cond, ls_body, (jnp.asarray(1.0, f.dtype),
                                                      fun(theta + p)))
        ok = ft <= f
        return (jnp.where(ok, theta + t * p, theta), jnp.where(ok, ft, f), -slope, it + 1)

    def cond(s):
        _, f, decrement, it = s
        return (it < max_newton) & (0.5 * decrement > tol * jnp.maximum(1.0, jnp.abs(f)))

    f0 = fun(theta0)
    init = (theta0, f0, jnp.asarray(jnp.inf, f0.dtype), jnp.asarray(0))
    return jax.lax.while_loop(cond, body, init)[0]


def w_step(X, y, task, weights, rows, row_mask, W0, b0, C, lam, gamma, loss="squared",
           warm: AdmmWarmStart | None = None, *, abs_tol=1e-9, rel_tol=1e-7, max_iter=5000,
           relaxation=1.6):
    """W-step (4): argmin over (W, b) of Σ L_i + (λ/2)Σ‖w_i - W_{-i}c_i‖² + γΣ‖Z_i‖_*,
    Z_i = W_{-i} Diag(c_i), by ADMM.

    The split variable stacks Z_i = W Diag(zero_diag(C)[:, i]) for all tasks, (m, d, m); its
    update is singular-value soft-thresholding vmapped over tasks. The (W, b) update minimises
    a smooth convex function (exactly, for the squared loss) by Newton–CG with a per-task
    block-Jacobi preconditioner.

    Parameters
    ----------
    X (N, d), y (N,), task (N,), weights (N,) : stacked data and row weights.
    rows, row_mask : (m, n_max) padded per-task row layout (from ``_padded_rows``).
    W0 (d, m), b0 (m,) : starting point; C (m, m) : fixed combination; lam, gamma : λ, γ.
    loss : "squared" or "logistic".
    warm : z (m, d, m), u (m, d, m), rho () from a previous W-step; default Z_i = W0 Diag(c_i),
        U = 0, ρ = λ.
    abs_tol, rel_tol, max_iter, relaxation : ADMM settings (see ``admm``).

    Returns
    -------
    W (d, m), b (m,), and the ``AdmmResult``.
    """
    if warm is None:
        Z0 = jnp.moveaxis(W0[:, :, None] * zero_diagonal(C)[None], 2, 0)
        warm = AdmmWarmStart(Z0, jnp.zeros_like(Z0), jnp.asarray(float(lam)))
    return _w_step(X, y, task, weights, rows, row_mask, W0, b0, *warm, C, lam, gamma, loss,
                   abs_tol, rel_tol, max_iter, relaxation)


@jax.jit(static_argnames=("loss", "max_iter"))
def _w_step(X, y, task, weights, rows, row_mask, W0, b0, Z0, U0, rho0, C, lam, gamma, loss,
            abs_tol, rel_tol, max_iter, relaxation):
    d, m = W0.shape
    Ct = zero_diagonal(C)
    row_loss = LOSSES[loss]
    curvature = jax.vmap(jax.grad(jax.grad(row_loss)))
    Xa = jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)[rows]  # (m, n, d+1)
    # Hessian diagonal (per task, on w_i) of the reconstruction and the ρ-coupling terms
    recon_diag = lam * jnp.sum((jnp.eye(m) - Ct) ** 2, axis=1)
    split_diag = jnp.sum(Ct**2, axis=1)
    w_part = jnp.concatenate([jnp.ones(d), jnp.zeros(1)])

    def unpack(theta):  # theta (m, d+1) = [Wᵀ, b]
        return theta[:, :d].T, theta[:, d]

    def A(theta):
        W = unpack(theta)[0]
        return W[None, :, :] * Ct.T[:, None, :]  # (m, d, m): Z_k = W Diag(c_k)

    def At(Z):
        Wg = jnp.einsum("kdi,ik->di", Z, Ct)
        return jnp.concatenate([Wg.T, jnp.zeros((m, 1), Z.dtype)], axis=1)

    def x_update(theta, v, rho):
        def fun(th):
            W, b = unpack(th)
            return (empirical_risk(loss, X, y, task, W, b, weights)
                    + 0.5 * lam * jnp.sum(reconstruction_residual(W, C) ** 2)
                    + 0.5 * rho * jnp.sum((A(th) - v) ** 2))

        def blocks(th):
            W, b = unpack(th)
            h = weights * curvature(linear_predictor(X, task, W, b), y)
            H = jnp.einsum("tn,tnp,tnq->tpq", h[rows] * row_mask, Xa, Xa)
            q = recon_diag + rho * split_diag
            jitter = 1e-10 * (1.0 + jnp.trace(H, axis1=1, axis2=2) / (d + 1))
            return H + (q[:, None] * w_part + jitter[:, None])[:, :, None] * jnp.eye(d + 1)

        return _newton_cg(fun, theta, blocks)

    def z_update(v, rho):
        return jax.vmap(prox_trace_norm, in_axes=(0, None))(v, gamma / rho)

    theta0 = jnp.concatenate([W0.T, b0[:, None]], axis=1)
    res = admm(x_update, z_update, A, At, theta0, Z0, U0, rho0=rho0, max_iter=max_iter,
               abs_tol=abs_tol, rel_tol=rel_tol, relaxation=relaxation)
    W, b = unpack(res.x)
    return W, b, res


# ----------------------------------------------------------------------------- task groups


def _normalised_laplacian(affinity):
    deg = affinity.sum(axis=1)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    lap = np.eye(len(deg)) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    lap[deg == 0, deg == 0] = 0.0  # an isolated task is its own connected component
    return lap


def task_groups(C, max_groups=None, seed=0):
    """Task clusters read off C: spectral clustering of ``|C| + |C|ᵀ``.

    The number of groups k maximises the eigengap ``λ_{k+1} - λ_k`` of the symmetric
    normalised Laplacian over k ≤ ``max_groups`` (default ``max(2, round(√m))``: beyond that
    the gaps inside a group's own sparse structure compete with the gap between groups,
    which is the one sought); tasks are then
    clustered by k-means on the row-normalised k smallest eigenvectors (Ng, Jordan & Weiss).

    Parameters
    ----------
    C : (m, m) combination matrix. max_groups : largest k considered. seed : k-means seed.

    Returns
    -------
    labels (m,) int in [0, k), and k.
    """
    from sklearn.cluster import KMeans

    C = np.asarray(C, dtype=np.float64)
    m = C.shape[0]
    affinity = np.abs(C) + np.abs(C).T
    np.fill_diagonal(affinity, 0.0)
    lap = _normalised_laplacian(affinity)
    evals, evecs = np.linalg.eigh((lap + lap.T) / 2)
    k_max = min(m - 1, max(2, round(m**0.5)) if max_groups is None else max_groups)
    k = int(np.argmax(np.diff(evals[: k_max + 1]))) + 1
    if k == 1:
        return np.zeros(m, dtype=int), 1
    emb = evecs[:, :k]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(emb)
    return _relabel_by_first_appearance(labels), k


def _relabel_by_first_appearance(labels):
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    mapping = np.empty_like(order)
    mapping[np.unique(labels)[order]] = np.arange(len(order))
    return mapping[labels]


def group_coassignment(C_draws, max_groups=None, seed=0):
    """(m, m) fraction of draws in which two tasks fall in the same group.

    C_draws : (S, m, m) posterior draws of C; each draw is clustered with :func:`task_groups`.
    """
    C_draws = np.asarray(C_draws)
    together = np.zeros(C_draws.shape[1:])
    for C in C_draws:
        labels, _ = task_groups(C, max_groups, seed)
        together += labels[:, None] == labels[None, :]
    return together / len(C_draws)


def stable_groups(coassignment, threshold=0.9):
    """Groups of ≥ 2 tasks linked by co-assignment ≥ ``threshold`` (connected components).

    Returns a list of index arrays, largest first.
    """
    from scipy.sparse.csgraph import connected_components

    n, labels = connected_components(np.asarray(coassignment) >= threshold, directed=False)
    groups = [np.flatnonzero(labels == g) for g in range(n)]
    return sorted((g for g in groups if len(g) >= 2), key=len, reverse=True)


# ----------------------------------------------------------------------------- MAP fit


class GAMTLResult(NamedTuple):
    """MAP of GAMTL.

    W : (d, m) task parameters; b : (m,) intercepts; combination : (m, m) C, zero diagonal.
    groups : (m,) task-group labels read off C (:func:`task_groups`); n_groups : their number.
    objective : final value of objective (1).
    history : (n_outer + 1,) objective after single-task initialisation and after each outer
        (C-step + W-step) iteration.
    n_outer : outer iterations run; converged : relative objective change fell below tol.
    c_residuals, w_residuals : (n_outer, 2) final ADMM primal and dual residual norms of each
        step (largest over the per-column C-step problems).
    c_iterations, w_iterations : (n_outer,) ADMM iterations of each step (largest over columns).
    admm_converged : (n_outer, 2) whether the C-step (all columns) and the W-step met Boyd et
        al.'s stopping rule.
    task_names, feature_names : labels for export.
    """

    W: np.ndarray
    b: np.ndarray
    combination: np.ndarray
    groups: np.ndarray
    n_groups: int
    objective: float
    history: np.ndarray
    n_outer: int
    converged: bool
    c_residuals: np.ndarray
    w_residuals: np.ndarray
    c_iterations: np.ndarray
    w_iterations: np.ndarray
    admm_converged: np.ndarray
    task_names: tuple
    feature_names: tuple


def _check(data, lam, gamma, loss):
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"data must be a MultiTaskData; got {type(data).__name__}")
    if data.n_tasks < 2:
        raise ValueError(f"GAMTL reconstructs each task from the others and needs at least 2 "
                         f"tasks; got {data.n_tasks}")
    if not (np.isfinite(lam) and lam > 0):
        raise ValueError(f"lam (λ, reconstruction precision) must be positive; got {lam}")
    if gamma is not None and not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma (γ, trace-Lasso weight) must be positive; got {gamma}")
    default = "logistic" if data.kind == CLASSIFICATION else "squared"
    loss = default if loss is None else loss
    if loss not in LOSSES:
        raise ValueError(f"loss must be 'squared' or 'logistic'; got {loss!r}")
    if loss == "logistic" and data.kind != CLASSIFICATION:
        raise ValueError("the logistic loss needs classification data (y in {0, 1})")
    return loss


def _arrays(data, loss_scale):
    rows, row_mask = _padded_rows(data.task, data.n_tasks)
    return (jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task),
            jnp.asarray(row_weights(data.task, data.n_tasks, loss_scale)), jnp.asarray(rows),
            jnp.asarray(row_mask))


def fit_single_task(data: MultiTaskData, lam: float = 1.0, loss=None, *,
                    loss_scale: str = "mean"):
    """Single-task learning: each task minimises L(w_i, D_i) + (λ/2)‖w_i‖² on its own.

    This is objective (1) at C = 0 and GAMTL's initialisation. Returns ``(W (d, m), b (m,))``.
    """
    loss = _check(data, lam, None, loss)
    arrays = _arrays(data, loss_scale)
    d, m = data.n_features, data.n_tasks
    W, b, _ = w_step(*arrays, jnp.zeros((d, m)), jnp.zeros(m), jnp.zeros((m, m)), lam, 1.0,
                     loss)
    return np.asarray(W), np.asarray(b)


def fit_gamtl(data: MultiTaskData, lam: float = 1.0, gamma: float = 1.0, loss=None, *,
              max_outer: int = 50, tol: float = 1e-6, loss_scale: str = "mean",
              admm_abs_tol: float = 1e-9, admm_rel_tol: float = 1e-7,
              admm_max_iter: int = 5000, relaxation: float = 1.6, init=None, max_groups=None,
              seed: int = 0) -> GAMTLResult:
    """MAP of GAMTL (objective (1)) by the paper's alternating ADMM scheme (Algorithm 1).

    Parameters
    ----------
    data : MultiTaskData with m ≥ 2 tasks.
    lam : λ > 0, reconstruction precision; gamma : γ > 0, trace-Lasso weight.
    loss : "squared" or "logistic" (default from ``data.kind``).
    max_outer, tol : outer-iteration cap; stop when the relative change of (1) is ≤ tol.
    loss_scale : "mean" (paper: per-task mean loss) or "sum".
    admm_abs_tol, admm_rel_tol, admm_max_iter, relaxation : ADMM settings of both steps
        (Boyd et al.'s stopping rule, over-relaxation). Each step is warm-started from the
        previous outer iteration's split and dual variables and solved to the relative
        tolerance ``max(admm_rel_tol, min(1e-3, 0.01 × last relative decrease of (1)))``.
    init : optional ``(W, b, C)`` warm start (default: single-task W, C = 0).
    max_groups, seed : passed to :func:`task_groups`.
    """
    loss = _check(data, lam, gamma, loss)
    arrays = _arrays(data, loss_scale)
    X, y, task, weights = arrays[:4]
    d, m = data.n_features, data.n_tasks
    if init is None:
        W, b, _ = w_step(*arrays, jnp.zeros((d, m)), jnp.zeros(m), jnp.zeros((m, m)), lam,
                         gamma, loss, max_iter=admm_max_iter)
        C = jnp.zeros((m, m))
    else:
        W, b, C = (jnp.asarray(a, dtype=jnp.float64) for a in init)
        C = zero_diagonal(C)

    def objective(W, b, C):
        return float(gamtl_objective(W, b, C, X, y, task, weights, lam, gamma, loss))

    history = [objective(W, b, C)]
    c_res, w_res, c_it, w_it, ok = [], [], [], [], []
    c_warm = w_warm = None
    converged = False
    change = 1.0
    for _ in range(max_outer):
        # inexact alternation: each step solved to a tolerance tied to the last decrease
        rel_tol = max(admm_rel_tol, min(1e-3, 0.01 * change))
        tols = dict(abs_tol=admm_abs_tol, rel_tol=rel_tol, max_iter=admm_max_iter,
                    relaxation=relaxation)
        C, cr = c_step(W, C, lam, gamma, c_warm, **tols)
        W, b, wr = w_step(*arrays, W, b, C, lam, gamma, loss, w_warm, **tols)
        c_warm, w_warm = AdmmWarmStart(cr.z, cr.u, cr.rho), AdmmWarmStart(wr.z, wr.u, wr.rho)
        history.append(objective(W, b, C))
        c_res.append([float(cr.primal_residual.max()), float(cr.dual_residual.max())])
        w_res.append([float(wr.primal_residual), float(wr.dual_residual)])
        c_it.append(int(cr.n_iter.max()))
        w_it.append(int(wr.n_iter))
        ok.append([bool(cr.converged.all()), bool(wr.converged)])
        change = abs(history[-2] - history[-1]) / max(1.0, abs(history[-1]))
        if change <= tol:
            converged = True
            break
    C = np.asarray(C)
    groups, n_groups = task_groups(C, max_groups, seed)
    return GAMTLResult(np.asarray(W), np.asarray(b), C, groups, n_groups, history[-1],
                       np.asarray(history), len(c_it), converged, np.asarray(c_res),
                       np.asarray(w_res), np.asarray(c_it), np.asarray(w_it), np.asarray(ok),
                       data.task_names, data.feature_names)


def predict_gamtl(result: GAMTLResult, X, task, classification=False):
    """(N,) predictions ``f = x w_t + b_t``, or P(y = 1) for classification."""
    f = linear_predictor(jnp.asarray(X), jnp.asarray(task), jnp.asarray(result.W),
                         jnp.asarray(result.b))
    return np.asarray(jax.nn.sigmoid(f) if classification else f)


def to_datatree(result: GAMTLResult):
    """The MAP point (W, b, combination) as a DataTree with task and feature coordinates."""
    from ..inference.export import from_point

    return from_point({"W": result.W, "b": result.b, "combination": result.combination},
                      task_names=result.task_names, feature_names=result.feature_names,
                      attrs={"model": "gamtl", "inference": "map"})


# ----------------------------------------------------------------------------- NUTS


def sample_gamtl(data: MultiTaskData, lam: float = 1.0, gamma: float = 1.0, loss=None, *,
                 loss_scale: str = "mean", num_warmup=500, num_samples=500, num_chains=2,
                 seed=0, init: GAMTLResult | None = None, intercept_scale=None, **nuts_kwargs):
    """NUTS draws from the joint Gibbs-type posterior exp(-F(W, b, C)) (small problems).

    Chains start at ``init`` (a MAP fit) when given. Returns a DataTree with ``W`` (feature,
    task), ``b`` (task) and ``combination`` (source_task, target_task).
    """
    from ..inference.export import from_mcmc
    from ..inference.mcmc import run_nuts

    loss = _check(data, lam, gamma, loss)
    likelihood = BernoulliLogit() if loss == "logistic" else Gaussian(PAPER_SQUARED_LOSS_NOISE)
    weights = jnp.asarray(row_weights(data.task, data.n_tasks, loss_scale))
    init_params = None
    if init is not None:
        init_params = {"W": jnp.asarray(init.W), "b": jnp.asarray(init.b),
                       "combination_offdiag": combination_to_offdiag(
                           jnp.asarray(init.combination))}
    mcmc = run_nuts(gamtl_model, jnp.asarray(data.X), jnp.asarray(data.task), data.n_tasks,
                    y=jnp.asarray(data.y), lam=lam, gamma=gamma, likelihood=likelihood,
                    weights=weights, intercept_scale=intercept_scale, num_warmup=num_warmup,
                    num_samples=num_samples, num_chains=num_chains, seed=seed,
                    init_params=init_params, **nuts_kwargs)
    return from_mcmc(mcmc, task_names=data.task_names, feature_names=data.feature_names,
                     var_names=["W", "b", "combination"],
                     attrs={"model": "gamtl", "inference": "nuts"})
