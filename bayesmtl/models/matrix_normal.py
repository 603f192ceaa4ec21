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

The same three loops (:func:`profile_admm`, :func:`profile_proximal`,
:func:`profile_alternating`, dispatched by :func:`solve_profile`) serve every g(Ω) whose
Ω-step is a closed-form spectral function of WᵀW — MTRL here, the (squared) Schatten members
in :mod:`bayesmtl.models.schatten`; they differ only in the prox and value of the profile
penalty and in that spectral function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import MultiTaskData
from ..inference.profile import MTRLResult, omega_from_W_spectrum, profile_objective, solve_profile
from ..inference.prox import prox_squared_trace_norm
from ..inference.stats import padded_rows
from .likelihoods import Gaussian
from .losses import linear_predictor, row_weights

__all__ = ["mtl_model", "predict_linear", "fit_mtrl", "omega_from_W", "model_inputs",
           "bucketed_inputs",
           "mtrl_objective"]


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


def bucketed_inputs(data: MultiTaskData, loss_scale: str = "sum"):
    """:func:`model_inputs` with the rows padded to a bucket size (:func:`padded_rows`), so
    every fold of a cross-validation compiles the same shapes. Padding rows have x = 0, y = 0,
    task 0 and the smallest positive weight (2.2e-308; NumPyro rejects a zero scale): their
    log-likelihood terms, bounded by a few units times that weight, vanish below float64
    resolution."""
    (X, task, m), kw = model_inputs(data, loss_scale)
    weights = jnp.ones(X.shape[0]) if kw["weights"] is None else kw["weights"]
    X, y, task, weights = padded_rows(X, kw["y"], task, weights,
                                      fill=jnp.finfo(weights.dtype).tiny)
    return (X, task, m), {"y": y, "weights": weights}


def predict_linear(X, task, W, b, classification=False):
    """(N,) predictions: f, or P(y = 1) = sigmoid(f) for classification."""
    f = linear_predictor(jnp.asarray(X), jnp.asarray(task), jnp.asarray(W), jnp.asarray(b))
    return jax.nn.sigmoid(f) if classification else f


def omega_from_W(W, eps=0.0):
    """MTRL's Ω-step: ``(WᵀW + εI)^{1/2} / tr(·)`` for W (d, m)."""
    return omega_from_W_spectrum(W, _mtrl_omega_spectrum, (), eps)


def _mtrl_omega_spectrum(a, args):
    del args
    root = jnp.sqrt(a)
    total = jnp.sum(root)
    # W = 0: every Ω with tr Ω = 1 is optimal; take I/m
    return jnp.where(total > 0, root / jnp.maximum(total, 1e-300), 1.0 / a.shape[0])


# ----------------------------------------------------------------------------- profile MAP
#
# Every member of the g(Ω) family whose Ω-step has a closed form reduces, after minimising
# over Ω, to a profile problem  min_{W,b} L(W, b) + (ρ/2)‖W‖²_F + R(W)  with a spectral
# penalty R. The loops below take R through ``prox(V, step, args)`` = argmin_Z R(Z) +
# ‖Z - V‖²/(2 step) and ``penalty(W, args)`` = R(W); ``args`` is a pytree of the penalty's
# hyperparameters (traced, so changing λ does not recompile). prox and penalty must be
# module-level functions (they are static arguments of the jitted loops).


def _squared_trace_norm_value(s, lam):
    """(λ/2)(Σ σ_k)² from the singular values s."""
    return 0.5 * lam * jnp.sum(s) ** 2


def squared_trace_norm_penalty(W, lam):
    """(λ/2)‖W‖²_* (MTRL's profile penalty)."""
    return _squared_trace_norm_value(jnp.linalg.svd(W, compute_uv=False), lam)


def squared_trace_norm_prox(V, step, lam):
    """(prox of step·(λ/2)‖·‖²_*, the penalty at it) (the profile loops' protocol)."""
    Z, s = prox_squared_trace_norm(V, step * lam, values=True)
    return Z, _squared_trace_norm_value(s, lam)


def mtrl_objective(W, b, X, y, task, weights, lam, ridge, classification=False, noise=1.0):
    """MTRL's profile objective L + (ρ/2)‖W‖²_F + (λ/2)‖W‖²_* (the negative log joint at
    the optimal Ω, up to a constant)."""
    return profile_objective(W, b, X, y, task, weights, ridge, squared_trace_norm_penalty, lam,
                             classification, noise)


def _check_hyper(lam, ridge):
    if not lam > 0:
        raise ValueError(f"lam (λ) must be positive; got {lam}")
    if not ridge >= 0:
        raise ValueError(f"ridge (ρ) must be non-negative; got {ridge}")


def fit_mtrl(data: MultiTaskData, lam: float = 1.0, ridge: float = 0.0, *,
             loss_scale: str = "mean", noise: float | None = None, method: str = "auto",
             fit_intercept: bool = True, max_iter: int = 5000, tol: float = 1e-12,
             init=None) -> MTRLResult:
    """MAP of the MTRL model (see module docstring) on ``data``.

    ``noise`` is the Gaussian σ (default 1/√2, i.e. the squared loss (y - f)²); ignored for
    classification (logistic loss). ``init`` is an optional ``(W, b)`` warm start.
    ``fit_intercept=False`` drops the task intercepts b (b = 0).

    Methods: ``"admm"`` (Gaussian; :func:`profile_admm`: splitting W = Z with an exact
    per-task solve for W, the prox of the squared trace norm for Z, adaptive penalty, Boyd et
    al. stopping — immune to badly scaled features), ``"proximal"`` (FISTA on the profile
    objective; any likelihood), ``"alternating"`` (Zhang & Yeung's W/Ω alternation; slow
    when the optimum is low-rank), ``"auto"`` = admm for regression, proximal for
    classification.
    """
    _check_hyper(lam, ridge)
    m = data.n_tasks
    return solve_profile(data, name="MTRL", method=method, prox=squared_trace_norm_prox,
                         penalty=squared_trace_norm_penalty, args=jnp.asarray(float(lam)),
                         omega_spectrum=_mtrl_omega_spectrum, omega0=np.eye(m) / m, lam=lam,
                         ridge=ridge, loss_scale=loss_scale, noise=noise,
                         fit_intercept=fit_intercept, max_iter=max_iter, tol=tol, init=init)


# --- alternating scheme (Gaussian): exact W-step by preconditioned CG, closed-form Ω-step


