r"""Sparse weight priors of the MALSAR family: joint feature selection, Lasso, the dirty model.

These methods couple tasks through the *support* of W (d, m) (rows w_r (m,) are one feature
across the tasks), not through a task covariance: they have no Ω (relation "none").

Generative models (flat intercepts b, likelihood as everywhere in the library)
---------------------------------------------------------------------------------
``l21`` (joint feature selection; MALSAR ``Least_L21``, Liu, Ji & Ye 2009)
    rows w_r ~ p(w) ∝ exp(-λ‖w‖₂) i.i.d.: a multivariate Laplace on R^m (radius
    ‖w‖₂ ~ Gamma(m, λ), direction uniform; normaliser m! vol(B₂ᵐ)/λᵐ: proper). MAP penalty
    λ‖W‖₂,₁ = λ Σ_r ‖w_r‖₂: whole rows (features) are zero for all tasks together.
``lasso`` (per-task Lasso; MALSAR ``Least_Lasso``)
    W_ij ~ Laplace(0, 1/λ) i.i.d. (proper). MAP penalty λ‖W‖₁; the tasks share nothing but λ.
``dirty`` (Jalali, Ravikumar, Sanghavi & Ruan 2010; MALSAR ``Least_Dirty``)
    W = P + Q with rows p_r ~ p(p) ∝ exp(-λ‖p‖_∞) (‖p‖_∞ ~ Gamma(m, λ); normaliser
    m! 2ᵐ/λᵐ: proper) and Q_ij ~ Laplace(0, 1/λ₂) (proper). MAP penalty
    λ‖P‖₁,∞ + λ₂‖Q‖₁: P carries the support shared by the tasks, Q the task-specific entries.

λ = ``lam`` is the rate of the (row) prior on W or P — MALSAR's ρ1 — and λ₂ = ``lam2`` the
Laplace rate of Q (MALSAR's ρ2). The dirty model's block norm is ℓ1,∞, the choice of Jalali
et al. and of MALSAR, so fits and λ's compare with theirs; it also makes the split of W into
P and Q closed-form (below). With ``loss_scale="mean"`` and σ = 1/√2 (the MAP defaults) the
negative log joint is Σ_i (1/n_i) Σ_j l(w_iᵀx_ij + b_i, y_ij) + penalty + const; MALSAR's
least-squares objectives ½Σ‖y_i - X_i w_i‖² + ρ-terms are ours with ``loss_scale="sum"``,
``noise=1`` and λ = ρ (MALSAR has no intercept there: ours is flat, i.e. per-task centring).

MAP
---
Profile form: min_{W,b} L(W, b) + R(W), solved by the library's profile loops
(:func:`~bayesmtl.inference.profile.solve_profile`: ADMM with exact per-task W-solves for the
Gaussian likelihood, FISTA for any likelihood) with R's proximal operator; the Gaussian
lasso, separable over tasks, has its own exact per-task solver (:func:`lasso_blocks`). For the dirty
model R(W) = min_{P+Q=W} λ‖P‖₁,∞ + λ₂‖Q‖₁ (an infimal convolution, convex, prox by Moreau's
decomposition, :func:`~bayesmtl.inference.prox.prox_dirty`). Per row, the inner minimiser is
p_r = clip(w_r, -s_r, s_r) with s_r minimising λ s + λ₂ Σ_j (|w_rj| - s)₊ (piecewise linear:
s_r is the (k+1)-th largest |w_rj|, k = ⌊λ/λ₂⌋, or 0 when k ≥ m); hence λ ≥ mλ₂ gives
P = 0 (per-task Lasso) and λ < λ₂ gives Q = 0 (pure ℓ1,∞). All three problems are convex:
MAP is the global optimum (unique in W for the strictly convex Gaussian loss with full-rank
designs; the split P/Q is then one of the optimal ones).
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions import constraints

from ..data import MultiTaskData, require_data
from ..errors import ConvergenceWarning
from ..inference.profile import MTRLResult, centred_blocks, solve_profile
from ..inference.prox import prox_dirty, prox_l1, prox_l21
from ..inference.solvers import nonnegative_qp
from ..inference.stats import GaussianTerm, data_loss, data_term
from .likelihoods import Gaussian
from .losses import linear_predictor

__all__ = ["PENALTIES", "NormLaplace", "sparse_rows_model", "fit_sparse_rows", "dirty_split",
           "l21_penalty", "lasso_penalty", "dirty_penalty"]

PENALTIES = ("l21", "lasso", "dirty")


# ----------------------------------------------------------------------------- the row prior


class NormLaplace(dist.Distribution):
    """p(x) ∝ exp(-rate ‖x‖) on R^dim for ‖·‖ = ℓ2 (``norm="l2"``) or ℓ∞ (``"linf"``).

    Normalised: ∫ exp(-λ‖x‖) dx = dim! vol(B)/λ^dim, B the norm's unit ball. Sampling:
    ‖x‖ ~ Gamma(dim, rate) times U/‖U‖, U uniform on B (equivalently a Gaussian direction for
    ℓ2). Event shape (dim,).
    """

    arg_constraints = {"rate": constraints.positive}
    support = constraints.real_vector
    reparametrized_params = ["rate"]

    def __init__(self, rate, dim: int, norm: str = "l2", *, validate_args=None):
        if norm not in ("l2", "linf"):
            raise ValueError(f"norm must be 'l2' or 'linf'; got {norm!r}")
        self.rate, self.dim, self.norm = rate, int(dim), norm
        super().__init__(batch_shape=jnp.shape(rate), event_shape=(self.dim,),
                         validate_args=validate_args)

    def _norm(self, x):
        return jnp.linalg.norm(x, axis=-1) if self.norm == "l2" else jnp.max(jnp.abs(x), -1)

    def _log_unit_ball_volume(self):
        k = self.dim
        if self.norm == "l2":
            return 0.5 * k * jnp.log(jnp.pi) - gammaln(0.5 * k + 1.0)
        return k * jnp.log(2.0)

    def sample(self, key, sample_shape=()):
        k_radius, k_direction = jax.random.split(key)
        shape = tuple(sample_shape) + self.batch_shape
        radius = jax.random.gamma(k_radius, float(self.dim), shape) / self.rate
        if self.norm == "l2":
            u = jax.random.normal(k_direction, shape + (self.dim,))
        else:
            u = jax.random.uniform(k_direction, shape + (self.dim,), minval=-1.0, maxval=1.0)
        return radius[..., None] * u / self._norm(u)[..., None]

    def log_prob(self, value):
        k = self.dim
        return (-self.rate * self._norm(value) + k * jnp.log(self.rate) - gammaln(k + 1.0)
                - self._log_unit_ball_volume())


# ----------------------------------------------------------------------------- the model


def sparse_rows_model(X, task, n_tasks, y=None, *, penalty, lam, lam2=None, likelihood=None,
                      weights=None, intercept_scale=None):
    """The MALSAR-family model (module docstring) as a plain NumPyro model.

    X (N, d), task (N,) int, n_tasks m, y (N,) or None; penalty in :data:`PENALTIES`;
    lam = λ, lam2 = λ₂ (dirty only); weights (N,) per-row log-likelihood weights.
    Sites: ``W`` (d, m) [dirty: ``P`` (d, m), ``Q`` (d, m), deterministic ``W`` = P + Q],
    ``b`` (m,), likelihood sites, ``y``.
    """
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    d = X.shape[1]
    if penalty == "l21":
        W = numpyro.sample("W", NormLaplace(lam, n_tasks, "l2").expand([d]).to_event(1))
    elif penalty == "lasso":
        W = numpyro.sample("W", dist.Laplace(0.0, 1.0 / lam).expand([d, n_tasks]).to_event(2))
    elif penalty == "dirty":
        P = numpyro.sample("P", NormLaplace(lam, n_tasks, "linf").expand([d]).to_event(1))
        Q = numpyro.sample("Q", dist.Laplace(0.0, 1.0 / lam2).expand([d, n_tasks]).to_event(2))
        W = numpyro.deterministic("W", P + Q)
    else:
        raise ValueError(f"penalty must be one of {PENALTIES}; got {penalty!r}")
    if intercept_scale is None:
        b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), (n_tasks,)))
    else:
        b = numpyro.sample("b", dist.Normal(0.0, intercept_scale).expand([n_tasks]).to_event(1))
    return likelihood(linear_predictor(X, task, W, b), task, n_tasks, y, weights)


# ----------------------------------------------------------------------------- penalties
# Module-level (static arguments of the jitted profile loops); ``args`` is traced.


def l21_penalty(W, lam):
    """λ‖W‖₂,₁ = λ Σ_r ‖w_r‖₂."""
    return lam * jnp.sum(jnp.sqrt(jnp.sum(W**2, axis=1)))


def l21_prox(V, step, lam):
    return prox_l21(V, step * lam)


def lasso_penalty(W, lam):
    """λ‖W‖₁."""
    return lam * jnp.sum(jnp.abs(W))


def lasso_prox(V, step, lam):
    return prox_l1(V, step * lam)


def _row_threshold(W, lam, lam2):
    """(d,) s_r minimising λ s + λ₂ Σ_j (|w_rj| - s)₊: the (k+1)-th largest |w_rj| (0 when
    k ≥ m), k = ⌊λ/λ₂⌋ (the slope λ - λ₂·#{|w_rj| > s} changes sign there; on a tie,
    λ/λ₂ an integer, the smallest minimiser)."""
    m = W.shape[1]
    kinks = jnp.concatenate([-jnp.sort(-jnp.abs(W), axis=1),
                             jnp.zeros((W.shape[0], 1), W.dtype)], axis=1)  # (d, m + 1)
    k = jnp.minimum(jnp.floor(lam / lam2), m).astype(jnp.int32)
    return kinks[:, k]


def dirty_split(W, lam, lam2):
    """(P, Q) with P + Q = W (d, m) minimising λ‖P‖₁,∞ + λ₂‖Q‖₁: P_r = clip(w_r, ±s_r)."""
    s = _row_threshold(W, lam, lam2)[:, None]
    P = jnp.clip(W, -s, s)
    return P, W - P


def dirty_penalty(W, args):
    """R(W) = min_{P+Q=W} λ‖P‖₁,∞ + λ₂‖Q‖₁, ``args = (λ, λ₂)``."""
    lam, lam2 = args
    P, Q = dirty_split(W, lam, lam2)
    return lam * jnp.sum(jnp.max(jnp.abs(P), axis=1)) + lam2 * jnp.sum(jnp.abs(Q))


def dirty_prox(V, step, args):
    lam, lam2 = args
    return prox_dirty(V, step, lam, lam2)


_PROFILE = {"l21": (l21_prox, l21_penalty), "lasso": (lasso_prox, lasso_penalty),
            "dirty": (dirty_prox, dirty_penalty)}


def _unit_spectrum(a, args):
    """solve_profile's Ω slot is unused here (relation "none"): Ω = I."""
    del args
    return jnp.ones_like(a)


@partial(jax.jit, static_argnames=("d", "max_sweeps"))
def lasso_blocks(term: GaussianTerm, lam, d: int, max_sweeps: int = 200, tol: float = 1e-10):
    """Exact MAP of the Gaussian lasso member, one task at a time (the penalty is separable).

    With the intercepts minimised out (:func:`~bayesmtl.inference.profile.centred_blocks`),
    task i is min_w ½wᵀS_iw - r̃_iᵀw + λ‖w‖₁ (S_i (d, d) its centred Gram matrix, singular
    when a feature is constant within the task, as School's school-level ones are). On the
    split w = u - v, u, v ≥ 0, it is a non-negative QP with factor [F_i, -F_i], S_i = F_iᵀF_i,
    solved by the interior point of :func:`~bayesmtl.inference.solvers.nonnegative_qp` (tasks
    batched by vmap); entries below their bound's multiplier are set to 0 and cyclic
    coordinate descent (all tasks at once, soft-thresholding) makes the zeros exact. Stops when
    the KKT residual max_j |∂_j| (the distance of 0 from the subdifferential, relative to
    max(1, λ, max |r̃|)) is ≤ ``tol`` or after ``max_sweeps`` sweeps. ADMM on School at
    λ = 0.01 stopped at its 5,000-evaluation cap 2e-8 above the optimum.

    Returns W (d, m), b (m,), (KKT residual, sweeps).
    """
    S, r, intercept = centred_blocks(term, d)
    evals, Q = jnp.linalg.eigh(S)
    F = jnp.sqrt(jnp.clip(evals, 0.0))[:, :, None] * jnp.swapaxes(Q, 1, 2)  # (m, d, d)

    def task_qp(F_i, r_i):
        x, res = nonnegative_qp(jnp.concatenate([F_i, -F_i], axis=1),
                                jnp.concatenate([lam - r_i, lam + r_i])[:, None])
        x = jnp.where(x > res.multiplier, x, 0.0)[:, 0]
        return x[:d] - x[d:]

    W = jax.vmap(task_qp)(F, r)  # W here (m, d)
    diag = jnp.diagonal(S, axis1=1, axis2=2)
    # S_jj = 0: the feature is constant within the task, r̃_j = 0 and w_j = 0 is optimal
    positive = diag > 0
    safe_diag = jnp.where(positive, diag, 1.0)
    scale = jnp.maximum(jnp.maximum(1.0, lam), jnp.max(jnp.abs(r)))

    def kkt(W):
        g = jnp.einsum("mjk,mk->mj", S, W) - r
        off = jnp.where(W != 0, jnp.abs(g + lam * jnp.sign(W)), jnp.maximum(jnp.abs(g) - lam, 0.0))
        return jnp.max(off) / scale

    def coordinate(j, W):
        g = jnp.einsum("mk,mk->m", S[:, j, :], W) - r[:, j]
        new = prox_l1(W[:, j] - g / safe_diag[:, j], lam / safe_diag[:, j])
        return W.at[:, j].set(jnp.where(positive[:, j], new, 0.0))

    def body(state):
        W, _, sweeps = state
        W = jax.lax.fori_loop(0, d, coordinate, W)
        return W, kkt(W), sweeps + 1

    W, residual, sweeps = jax.lax.while_loop(
        lambda st: (st[2] < max_sweeps) & (st[1] > tol), body, (W, kkt(W), 0))
    W = W.T
    return W, intercept(W), (residual, sweeps)


def _fit_lasso_blocks(data, lam, loss_scale, noise, max_iter, tol):
    """:func:`lasso_blocks` as a profile result (Ω = I; ``history`` the final objective)."""
    require_data(data, "lasso", statistics=True)
    term = data_term(data, loss_scale, noise)
    tol = max(tol, 1e-10)  # the KKT residual's floor (the ADMM's tol is on the objective)
    W, b, (residual, sweeps) = lasso_blocks(term, jnp.asarray(float(lam)), data.n_features,
                                            max_sweeps=max_iter, tol=tol)
    objective = float(data_loss(term, W, b) + lasso_penalty(W, lam))
    converged = bool(residual <= tol)
    if not converged:
        warnings.warn(f"lasso blocks solver stopped after {int(sweeps)} coordinate sweeps "
                      f"with KKT residual {float(residual):.2e}", ConvergenceWarning,
                      stacklevel=3)
    return MTRLResult(np.asarray(W), np.asarray(b), np.eye(data.n_tasks), objective,
                      np.array([objective]), int(sweeps), converged, float(residual))


def fit_sparse_rows(data: MultiTaskData, penalty: str, lam: float, lam2: float | None = None,
                    *, loss_scale: str = "mean", noise: float | None = None,
                    method: str = "auto", max_iter: int = 5000, tol: float = 1e-12,
                    init=None) -> MTRLResult:
    """MAP of :func:`sparse_rows_model`: min_{W,b} L(W, b) + R(W) (module docstring).

    ``noise`` is the Gaussian σ (default 1/√2: the squared loss); ``method`` "admm"
    (Gaussian), "proximal" (FISTA, any likelihood), "blocks" (Gaussian lasso: the exact
    per-task solver :func:`lasso_blocks`, ``max_iter`` its sweeps) or "auto" (blocks for the
    Gaussian lasso, else admm or proximal); ``init`` a warm start (W, b), unused by blocks.
    Returns the profile loop's result (its ``omega`` is unused, the identity).
    """
    if penalty not in _PROFILE:
        raise ValueError(f"penalty must be one of {PENALTIES}; got {penalty!r}")
    if not lam > 0 or (penalty == "dirty" and not (lam2 is not None and lam2 > 0)):
        raise ValueError(f"{penalty}: lam (and lam2 for dirty) must be positive; got "
                         f"lam={lam}, lam2={lam2}")
    blocks_ok = penalty == "lasso" and data.kind == "regression"
    if method == "blocks" and not blocks_ok:
        raise ValueError("method='blocks' is the exact solver of the Gaussian lasso; use "
                         "'admm' or 'proximal'")
    if method == "blocks" or (method == "auto" and blocks_ok):
        return _fit_lasso_blocks(data, lam, loss_scale, noise, max_iter, tol)
    prox, value = _PROFILE[penalty]
    args = (jnp.asarray(float(lam)), jnp.asarray(float(lam2))) if penalty == "dirty" \
        else jnp.asarray(float(lam))
    m = data.n_tasks
    return solve_profile(data, name=penalty, method=method, prox=prox, penalty=value,
                         args=args, omega_spectrum=_unit_spectrum, omega0=np.eye(m), lam=lam,
                         loss_scale=loss_scale, noise=noise, max_iter=max_iter, tol=tol,
                         init=init, methods=("admm", "proximal"))
