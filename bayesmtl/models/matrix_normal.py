r"""The matrix-variate task-covariance model (eq. (1) of L2MT) and MTRL.

Generative model
----------------
For m tasks with d features, task i having rows (x_ij, y_ij):

    Ω ~ p(Ω)                                   (an OmegaPrior, see bayesmtl.priors)
    W | Ω ~ MatrixNormal(0, I_d, Ω / λ)        i.e. each row of W (d, m) ~ N(0, Ω / λ)
    b_i ~ flat (improper) or N(0, intercept_scale²)
    y_ij | W, b ~ Gaussian(f_ij, σ²) or Bernoulli(sigmoid(f_ij)),  f_ij = w_iᵀ x_ij + b_i

optionally with an extra ridge factor exp(-(ρ/2)‖W‖²_F) (Zhang & Yeung's λ1). So

    -log p(W | Ω) = (λ/2) tr(W Ω⁻¹ Wᵀ) + (d/2) log|Ω| - (md/2) log λ + const.

With "mean" loss scaling each row's log-likelihood is tempered by 1/n_i, and with the
Gaussian noise σ = 1/√2 the negative log joint equals

    Σ_i (1/n_i) Σ_j (y_ij - f_ij)² + (λ/2) tr(W Ω⁻¹ Wᵀ) + λ₂ g(Ω)

(eq. (1), λ = λ₁), where the prior on Ω supplies ``λ₂ g(Ω)`` and, for priors written
without the log-determinant, cancels ``(d/2) log|Ω|`` (see ``bayesmtl.priors.MTRL``).

MTRL (Zhang & Yeung 2010)
-------------------------
MAP under ``priors.MTRL`` minimises over W, b and Ω ∈ {Ω ⪰ 0, tr Ω = 1}

    L(W, b) + (ρ/2)‖W‖²_F + (λ/2) tr(W Ω⁻¹ Wᵀ).

Minimising over Ω gives Ω = (WᵀW)^{1/2} / tr (WᵀW)^{1/2} and the convex profile
``L + (ρ/2)‖W‖²_F + (λ/2)‖W‖²_*``. :func:`fit_mtrl` solves it exactly by the proximal loop
(ADMM or FISTA) or by Zhang & Yeung's alternating closed-form scheme
(``method="alternating"``; ε-smoothed Ω-step, Gaussian likelihood).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import MultiTaskData
from ..inference.solvers import fista, prox_squared_trace_norm
from .likelihoods import PAPER_SQUARED_LOSS_NOISE, Gaussian
from .losses import linear_predictor, row_weights

__all__ = ["mtl_model", "predict_linear", "fit_mtrl", "MTRLResult", "omega_from_W",
           "ConvergenceWarning", "model_inputs"]


class ConvergenceWarning(UserWarning):
    """An optimiser stopped at its iteration limit before meeting its tolerance."""


def mtl_model(X, task, n_tasks, y=None, *, omega_prior, likelihood=None, lam=1.0, ridge=0.0,
              weights=None, intercept_scale=None, noncentered=False):
    """The matrix-normal multi-task model as a plain NumPyro model.

    Parameters
    ----------
    X : (N, d) features; task : (N,) int task index; n_tasks : m; y : (N,) or None.
    omega_prior : an ``OmegaPrior`` (registers sites ``omega…``, returns Ω (m, m)).
    likelihood : ``Gaussian(...)`` (default ``Gaussian(1.0)``) or ``BernoulliLogit()``.
    lam : λ, precision scale of the matrix-normal prior (eq. (1)'s λ₁).
    ridge : ρ ≥ 0, extra factor exp(-(ρ/2)‖W‖²_F) (MTRL's λ₁).
    weights : (N,) per-row log-likelihood weights (``row_weights(..., "mean")`` = 1/n_i).
    intercept_scale : None for flat intercepts, else b_i ~ N(0, intercept_scale²).
    noncentered : sample ``W_raw ~ N(0, 1)`` and set W = W_raw Lᵀ (better NUTS geometry;
        MAP must use the centred form, whose density is the one stated above).

    Sites: ``omega…``, ``W`` (d, m) [or ``W_raw``], ``b`` (m,), likelihood sites, ``y``.
    """
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    d = X.shape[1]
    omega = omega_prior(n_tasks, d)
    scale_tril = jnp.linalg.cholesky(omega / lam)
    if noncentered:
        z = numpyro.sample("W_raw", dist.Normal(0.0, 1.0).expand([d, n_tasks]).to_event(2))
        W = numpyro.deterministic("W", z @ scale_tril.T)
    else:
        row = dist.MultivariateNormal(jnp.zeros(n_tasks), scale_tril=scale_tril)
        W = numpyro.sample("W", row.expand([d]).to_event(1))
    if ridge:
        numpyro.factor("ridge", -0.5 * ridge * jnp.sum(W**2))
    if intercept_scale is None:
        b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), (n_tasks,)))
    else:
        b = numpyro.sample("b", dist.Normal(0.0, intercept_scale).expand([n_tasks]).to_event(1))
    f = linear_predictor(X, task, W, b)
    return likelihood(f, task, n_tasks, y, weights)


def model_inputs(data: MultiTaskData, loss_scale: str = "sum"):
    """``(X, task, n_tasks)`` args and ``y``/``weights`` kwargs for :func:`mtl_model`."""
    weights = None if loss_scale == "sum" else jnp.asarray(
        row_weights(data.task, data.n_tasks, loss_scale))
    return (jnp.asarray(data.X), jnp.asarray(data.task), data.n_tasks), {
        "y": jnp.asarray(data.y), "weights": weights}


def predict_linear(X, task, W, b, classification=False):
    """(N,) predictions: f, or P(y = 1) = sigmoid(f) for classification."""
    f = linear_predictor(jnp.asarray(X), jnp.asarray(task), jnp.asarray(W), jnp.asarray(b))
    return jax.nn.sigmoid(f) if classification else f


def omega_from_W(W, eps=0.0):
    """MTRL's Ω-step: ``(WᵀW + εI)^{1/2} / tr(·)`` for W (d, m)."""
    evals, evecs = jnp.linalg.eigh(W.T @ W + eps * jnp.eye(W.shape[1]))
    root = (evecs * jnp.sqrt(jnp.clip(evals, 0.0))) @ evecs.T
    return root / jnp.trace(root)


# ----------------------------------------------------------------------------- MTRL MAP


class MTRLResult(NamedTuple):
    """MAP of MTRL: W (d, m), b (m,), omega (m, m), objective, history, n_iter, converged,
    residual (KKT residual of the proximal solve, or relative W change for alternating)."""

    W: np.ndarray
    b: np.ndarray
    omega: np.ndarray
    objective: float
    history: np.ndarray
    n_iter: int
    converged: bool
    residual: float


def _data_loss(X, y, task, weights, W, b, classification, noise):
    f = linear_predictor(X, task, W, b)
    if classification:
        return jnp.sum(weights * jnp.logaddexp(0.0, -(2.0 * y - 1.0) * f))
    return jnp.sum(weights * (y - f) ** 2) / (2.0 * noise**2)


def mtrl_objective(W, b, X, y, task, weights, lam, ridge, classification=False, noise=1.0):
    """MTRL's profile objective L + (ρ/2)‖W‖²_F + (λ/2)‖W‖²_* (the negative log joint at
    the optimal Ω, up to a constant)."""
    nuclear = jnp.sum(jnp.linalg.svd(W, compute_uv=False))
    return (_data_loss(X, y, task, weights, W, b, classification, noise)
            + 0.5 * ridge * jnp.sum(W**2) + 0.5 * lam * nuclear**2)


def _check_hyper(lam, ridge):
    if not lam > 0:
        raise ValueError(f"lam (λ) must be positive; got {lam}")
    if not ridge >= 0:
        raise ValueError(f"ridge (ρ) must be non-negative; got {ridge}")


def _inputs(data, loss_scale, noise):
    classification = data.kind == "classification"
    if noise is None:
        noise = PAPER_SQUARED_LOSS_NOISE
    weights = row_weights(data.task, data.n_tasks, loss_scale)
    return (jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task),
            jnp.asarray(weights), classification, float(noise))


def fit_mtrl(data: MultiTaskData, lam: float = 1.0, ridge: float = 0.0, *,
             loss_scale: str = "mean", noise: float | None = None, method: str = "auto",
             max_iter: int = 5000, tol: float = 1e-12, init=None) -> MTRLResult:
    """MAP of the MTRL model (see module docstring) on ``data``.

    ``noise`` is the Gaussian σ (default 1/√2, i.e. the squared loss (y - f)²); ignored for
    classification (logistic loss). ``init`` is an optional ``(W, b)`` warm start.

    Methods: ``"admm"`` (Gaussian; splitting W = Z with an exact per-task block solve for W,
    the prox of the squared trace norm for Z, adaptive penalty, Boyd et al. stopping — immune
    to badly scaled features), ``"proximal"`` (FISTA on the profile objective; any
    likelihood), ``"alternating"`` (Zhang & Yeung's W/Ω alternation; slow when the optimum
    is low-rank), ``"auto"`` = admm for regression, proximal for classification.
    """
    _check_hyper(lam, ridge)
    X, y, task, weights, classification, noise = _inputs(data, loss_scale, noise)
    d, m = data.n_features, data.n_tasks
    W0, b0 = (jnp.zeros((d, m)), jnp.zeros(m)) if init is None else map(jnp.asarray, init)
    if method == "auto":
        method = "proximal" if classification else "admm"
    if method == "admm":
        if classification:
            raise ValueError("method='admm' has an exact W-step for the Gaussian likelihood "
                             "only; use method='proximal' for classification")
        W, b, res = _mtrl_admm(X, y, task, weights, lam, ridge, noise, W0, b0, m, max_iter,
                               tol)
    elif method == "proximal":
        out = _mtrl_proximal(X, y, task, weights, lam, ridge, classification, noise,
                             jnp.concatenate([W0.ravel(), b0]), d, m, max_iter, tol)
        W = out.x[: d * m].reshape(d, m)
        b = out.x[d * m:]
        res = (out.objective, out.history, out.n_iter, out.converged, out.residual)
    elif method == "alternating":
        if classification:
            raise ValueError("method='alternating' has a closed-form W-step for the Gaussian "
                             "likelihood only; use method='proximal' for classification")
        W, b, res = _mtrl_alternating(X, y, task, weights, lam, ridge, noise, W0, b0, m,
                                      max_iter, tol)
    else:
        raise ValueError(f"method must be 'auto', 'admm', 'proximal' or 'alternating'; got "
                         f"{method!r}")
    objective, history, n_iter, converged, residual = res
    history = np.asarray(history)
    history = history[~np.isnan(history)]
    if not bool(converged):
        warnings.warn(f"MTRL {method} solver stopped after {int(n_iter)} iterations without "
                      f"meeting tol={tol} (residual {float(residual):.2e})",
                      ConvergenceWarning, stacklevel=2)
    return MTRLResult(np.asarray(W), np.asarray(b), np.asarray(omega_from_W(W)),
                      float(objective), history, int(n_iter), bool(converged), float(residual))


@jax.jit(static_argnames=("classification", "d", "m", "max_iter"))
def _mtrl_proximal(X, y, task, weights, lam, ridge, classification, noise, x0, d, m, max_iter,
                   tol):
    def unpack(x):
        return x[: d * m].reshape(d, m), x[d * m:]

    def smooth(x):
        W, b = unpack(x)
        return (_data_loss(X, y, task, weights, W, b, classification, noise)
                + 0.5 * ridge * jnp.sum(W**2))

    def prox(x, step):
        W, b = unpack(x)
        return jnp.concatenate([prox_squared_trace_norm(W, step * lam).ravel(), b])

    def penalty(x):
        return 0.5 * lam * jnp.sum(jnp.linalg.svd(unpack(x)[0], compute_uv=False)) ** 2

    return fista(smooth, prox, penalty, x0, max_iter=max_iter, tol=tol)


def _task_blocks(X, y, task, weights, noise, m):
    """Per-task Gram blocks H_i = Σ_j c_j x̃_j x̃_jᵀ (m, d+1, d+1) and right-hand sides
    (m, d+1) of the Gaussian W-step, x̃ = (x, 1), c_j = w_j / σ²."""
    Xa = jnp.concatenate([X, jnp.ones((X.shape[0], 1))], axis=1)
    c = weights / noise**2
    H = jax.ops.segment_sum(c[:, None, None] * Xa[:, :, None] * Xa[:, None, :], task, m)
    rhs = jax.ops.segment_sum((c * y)[:, None] * Xa, task, m)
    return H, rhs


@jax.jit(static_argnames=("m", "max_iter"))
def _mtrl_admm(X, y, task, weights, lam, ridge, noise, W0, b0, m, max_iter, tol):
    d = X.shape[1]
    H, rhs = _task_blocks(X, y, task, weights, noise, m)
    E = jnp.diag(jnp.concatenate([jnp.ones(d), jnp.zeros(1)]))  # W-part selector
    abs_tol, rel_tol = 1e-12, jnp.sqrt(tol)

    def theta_step(Z, U, rho):
        chol = jnp.linalg.cholesky(H + (ridge + rho) * E[None])
        r = rhs + rho * jnp.pad((Z - U).T, ((0, 0), (0, 1)))
        theta = jax.vmap(lambda L, ri: jax.scipy.linalg.cho_solve((L, True), ri))(chol, r)
        return theta[:, :d].T, theta[:, d]

    def objective(W, b):
        return mtrl_objective(W, b, X, y, task, weights, lam, ridge, False, noise)

    def body(s):
        W, b, Z, U, rho, f_prev, f, hist, it, _, _ = s
        W, b = theta_step(Z, U, rho)
        Z_new = prox_squared_trace_norm(W + U, lam / rho)
        U = U + W - Z_new
        primal = jnp.linalg.norm(W - Z_new)
        dual = rho * jnp.linalg.norm(Z_new - Z)
        f_new = objective(Z_new, b)
        # residual balancing (Boyd et al. 3.4.1); U is the scaled dual, so rescale it
        scale = jnp.where(primal > 10 * dual, 2.0, jnp.where(dual > 10 * primal, 0.5, 1.0))
        return (W, b, Z_new, U / scale, rho * scale, f, f_new, hist.at[it].set(f_new), it + 1,
                primal, dual)

    def cond(s):
        W, b, Z, U, rho, f_prev, f, hist, it, primal, dual = s
        n = jnp.sqrt(W.size)
        eps_pri = n * abs_tol + rel_tol * jnp.maximum(jnp.linalg.norm(W), jnp.linalg.norm(Z))
        eps_dual = n * abs_tol + rel_tol * rho * jnp.linalg.norm(U)
        stalled = jnp.abs(f_prev - f) <= tol * jnp.maximum(1.0, jnp.abs(f))
        return (it < max_iter) & ~((primal <= eps_pri) & (dual <= eps_dual) & stalled)

    rho0 = jnp.maximum(1e-3, jnp.mean(jnp.trace(H, axis1=1, axis2=2)) / (d + 1))
    f0 = objective(W0, b0)
    init = (W0, b0, W0, jnp.zeros_like(W0), rho0, jnp.inf, f0, jnp.full((max_iter,), jnp.nan),
            0, jnp.inf, jnp.inf)
    W, b, Z, U, rho, f_prev, f, hist, it, primal, dual = jax.lax.while_loop(cond, body, init)
    return Z, b, (f, hist, it, it < max_iter, jnp.maximum(primal, dual))


# --- alternating scheme (Gaussian): exact W-step by preconditioned CG, closed-form Ω-step


def gaussian_w_step(X, y, task, weights, noise, precision, ridge, W0, b0, m, tol=1e-13):
    """Exact minimiser over (W, b) of Σ w_j (y_j - f_j)²/(2σ²) + ½ tr(W P Wᵀ) + (ρ/2)‖W‖²
    for a task precision P (m, m), by block-Jacobi preconditioned conjugate gradients."""
    d = X.shape[1]
    H, rhs = _task_blocks(X, y, task, weights, noise, m)
    pen = jnp.concatenate([jnp.ones(d), jnp.zeros(1)])  # prior acts on w, not b

    def matvec(theta):  # theta (m, d+1)
        W = theta[:, :d].T
        coupling = (W @ precision + ridge * W).T  # (m, d)
        return jnp.einsum("mij,mj->mi", H, theta) + jnp.pad(coupling, ((0, 0), (0, 1)))

    diag = (jnp.diag(precision) + ridge)[:, None, None] * jnp.diag(pen)[None]
    M_chol = jnp.linalg.cholesky(H + diag)

    def precond(r):  # block-Jacobi: solve each task's (d+1)×(d+1) block
        return jax.vmap(lambda L, ri: jax.scipy.linalg.cho_solve((L, True), ri))(M_chol, r)

    theta0 = jnp.concatenate([W0.T, b0[:, None]], axis=1)
    theta, _ = jax.scipy.sparse.linalg.cg(matvec, rhs, x0=theta0, M=precond,
                                          tol=tol, maxiter=20 * (d + 1) * m)
    return theta[:, :d].T, theta[:, d]


@jax.jit(static_argnames=("m", "max_iter"))
def _mtrl_alternating(X, y, task, weights, lam, ridge, noise, W0, b0, m, max_iter, tol):
    eps = 1e-10 * jnp.maximum(1.0, jnp.sum(W0**2))

    def precision_of(W):
        evals, evecs = jnp.linalg.eigh(W.T @ W + eps * jnp.eye(m))
        root_sum = jnp.sum(jnp.sqrt(evals))
        return lam * root_sum * (evecs / jnp.sqrt(evals)) @ evecs.T  # λ Ω⁻¹

    def objective(W, b):
        return mtrl_objective(W, b, X, y, task, weights, lam, ridge, False, noise)

    def body(s):
        W, b, prev, _, hist, it = s
        # first W-step with Ω = I/m; then Ω from the current W
        precision = jnp.where(it == 0, lam * m * jnp.eye(m), precision_of(W))
        W_new, b_new = gaussian_w_step(X, y, task, weights, noise, precision, ridge, W, b, m)
        f = objective(W_new, b_new)
        change = jnp.linalg.norm(W_new - W) / jnp.maximum(1.0, jnp.linalg.norm(W_new))
        return W_new, b_new, f, change, hist.at[it].set(f), it + 1

    def cond(s):
        _, _, f, change, hist, it = s
        prev = jnp.where(it > 1, hist[jnp.maximum(it - 2, 0)], jnp.inf)
        done = (jnp.abs(prev - f) <= tol * jnp.maximum(1.0, jnp.abs(f))) & (change < 1e-6)
        return (it < max_iter) & ~done

    hist = jnp.full((max_iter,), jnp.nan)
    W, b, f, change, hist, it = jax.lax.while_loop(
        cond, body, (W0, b0, objective(W0, b0), jnp.inf, hist, 0))
    return W, b, (f, hist, it, it < max_iter, change)
