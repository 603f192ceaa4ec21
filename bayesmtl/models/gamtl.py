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
alternate the C-step (2)–(3) and the W-step (4), both convex (Theorem 1: F is bi-convex).
The data enter through one data term: the per-task moments (x̃ᵀx̃, x̃ᵀy, yᵀy) for the squared
loss, so no step touches the rows (and a ``TaskStatistics`` fits too), and the rows padded per
task to a bucketed length for the logistic loss, so CV folds share the compiled steps.

* C-step: Newton's method on each column first. ‖W Diag(c)‖_* = tr((W Diag(c²) Wᵀ)^{1/2}) is
  smooth wherever that d × d matrix is non-singular, which holds at the dense optima that small
  γ gives, and there Newton reaches the optimum in 3–15 steps with its decrement as the
  certificate (:func:`_column_newton`). A column it cannot certify (a sparse optimum) sends the
  step to ADMM (``bayesmtl.inference.solvers.admm``), started from Newton's point with the
  certified columns' exact duals; its linear solves reuse one thin SVD per column for every ρ,
  and singular-value thresholding goes through the smaller Gram matrix. After a failure
  Newton is retried after 1, 2, 4, … 16 outer iterations.
* W-step: ADMM with a consensus splitting whose per-task update is one (d+1)-dimensional
  solve (squared loss) or a damped Newton method (logistic loss), with a closed-form
  reconstruction update. For the logistic loss, where each ADMM iteration costs a Newton
  solve per task, Newton's method on all of (W, b) is tried first when every c_k has ≥ d
  non-zeros and its dense (m(d+1))² Hessian is affordable (``W_NEWTON_MAX_FLOPS``)
  (:func:`_w_step_newton`, certified like the C-step's; retried on the same schedule).
  A column of the C-step whose optimum is c_i = 0 is certified by a subgradient first.

Both are vectorised over tasks and JIT-compiled once per problem shape. A step is kept only if
it lowers F, and the sweeps are Anderson-accelerated with a safeguard, so F decreases
monotonically.
"""

from __future__ import annotations

import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints

from ..data import CLASSIFICATION, MultiTaskData, require_data
from ..errors import ConvergenceWarning
from ..inference.prox import prox_trace_norm_gram
from ..inference.solvers import AdmmResult, admm, after, anderson_point, damped_newton
from ..inference.stats import GaussianTerm, bucket_size, data_loss, gaussian_term, task_moments
from .likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from .losses import LOSSES, empirical_risk, linear_predictor, row_weights, task_loss_weights
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


def _first_rho(lam):
    """ADMM's first penalty ρ = λ as a strongly typed float64 scalar, like the ρ that a solve
    returns (a weakly typed one made the compiled steps compile a second time)."""
    return jnp.asarray(float(lam), dtype=jnp.float64)


def c_step(W, C0, lam, gamma, warm: AdmmWarmStart | None = None, *, abs_tol=1e-9,
           rel_tol=1e-7, max_iter=5000, relaxation=1.6, newton=True):
    """C-step (2)–(3): argmin over C of (λ/2)Σ‖w_i - W_{-i}c_i‖² + γ Σ‖W_{-i}Diag(c_i)‖_*.

    First Newton's method on every column (:func:`_column_newton`): where the optimum has
    M_i = W Diag(c_i²) Wᵀ ≻ 0 (a dense enough c_i, which small γ gives) the trace Lasso is
    smooth there and Newton reaches the optimum in a few steps (certified by its decrement).
    If a column is not certified (a sparse optimum, M_i singular), the whole step runs ADMM
    from Newton's point with the certified columns' exact duals:

    ADMM on the whole of problem (2) (its m column problems are independent, and are updated
    in parallel): split J_i = W Diag(c_i) (d, m) for every column i,
    (a) c_i in closed form from (λ WᵀW + ρ Diag(‖w_k‖²)) c = λ Wᵀw_i + ρ diag(Wᵀ(J_i - U_i))
    restricted to k ≠ i (one thin SVD per column and C-step serves every ρ), (b) J_i by
    singular-value soft-thresholding at γ/ρ, (c) dual update. One penalty ρ and Boyd et al.'s
    stopping rule on the stacked residuals of all columns. (U here is the negative of the
    paper's U: constraint written W Diag(c_i) = J_i.)

    Parameters
    ----------
    W : (d, m); C0 : (m, m) starting C; lam, gamma : λ, γ.
    warm : z (m, d, m), u (m, d, m), rho () to start from (``fit_gamtl`` passes the previous
        C-step's); default J_i = W Diag(c_i) of C0, U = 0, ρ = λ.
    abs_tol, rel_tol, max_iter, relaxation : ADMM settings (see ``admm``).

    newton : try Newton first (False: ADMM only).

    Returns
    -------
    C (m, m) and an ``AdmmResult`` (when Newton certified every column: x = C, z and u the
    ADMM fixed point for the next step's warm start, n_iter its largest column step count,
    dual_residual the largest gradient norm).
    """
    return _c_step_certified(W, C0, lam, gamma, warm, abs_tol, rel_tol, max_iter, relaxation,
                             newton)[:2]


def _c_step_certified(W, C0, lam, gamma, warm, abs_tol, rel_tol, max_iter, relaxation, newton):
    """:func:`c_step`, returning also whether Newton certified every column."""
    C0 = zero_diagonal(jnp.asarray(C0, dtype=jnp.float64))
    rho = _first_rho(lam) if warm is None else warm.rho
    if newton:
        C, grad, ok, steps, J, U = _c_step_newton(W, C0, lam, gamma, rho)
        if bool(jnp.all(ok)):
            zero = jnp.zeros((), W.dtype)
            return C, AdmmResult(C, J, U, rho, jnp.max(steps), jnp.asarray(True), zero,
                                 jnp.max(grad)), True
        C0, warm = C, AdmmWarmStart(J, U, rho)
    if warm is None:
        J0 = jnp.moveaxis(W[:, :, None] * C0[None], 2, 0)
        warm = AdmmWarmStart(J0, jnp.zeros_like(J0), _first_rho(lam))
    return (*_c_step(W, C0, *warm, lam, gamma, abs_tol, rel_tol, max_iter, relaxation), False)


@jax.jit(static_argnames=("max_iter",))
def _c_step(W, C0, J0, U0, rho0, lam, gamma, abs_tol, rel_tol, max_iter, relaxation):
    m = W.shape[1]
    sq = jnp.sum(W**2, axis=0)
    inv_norm = jnp.where(sq > 0, 1.0 / jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    # The c_i-update solves (λ W_iᵀW_i + ρ Diag(‖w_k‖²)) c = rhs over k ≠ i. In the scaled
    # variable c̃ = Diag(‖w_k‖) c the matrix is λ Ŵ_iᵀŴ_i + ρ I with Ŵ_i = W Diag(scale_i),
    # scale_i = 1/‖w_k‖ off row i and 0 on it (and on zero columns, which pins their c to 0),
    # so one thin SVD Ŵ_i = U S Vᵀ gives every solve for any ρ in O(dm):
    # (λ V S² Vᵀ + ρ I)⁻¹ = (I - V Diag(λs²/(λs² + ρ)) Vᵀ) / ρ.
    scale = (1.0 - jnp.eye(m, dtype=W.dtype)) * inv_norm[:, None]  # column i: scale_i
    _, s, Vt = jax.vmap(lambda sc: jnp.linalg.svd(W * sc[None, :], full_matrices=False),
                        in_axes=1)(scale)  # s (m, r), Vt (m, r, m)
    ls2 = lam * s**2
    target = lam * (W.T @ W)  # column i: λ Wᵀ w_i

    def A(C):  # (m, d, m): J_i = W Diag(c_i)
        return W[None, :, :] * C.T[:, None, :]

    def At(J):  # (m, m): column i is diag(Wᵀ J_i)
        return jnp.sum(J * W, axis=1).T  # a reduction, not a batched dot: no transposed J

    def x_update(C, v, rho):
        del C
        r = scale * (target + rho * At(v))
        back = jnp.einsum("irk,ir->ki", Vt, ls2 / (ls2 + rho) * jnp.einsum("irk,ki->ir", Vt, r))
        return scale * (r - back) / rho

    def z_update(v, rho):
        return jax.vmap(prox_trace_norm_gram, in_axes=(0, None))(v, gamma / rho)

    res = admm(x_update, z_update, A, At, C0, J0, U0, rho0=rho0, max_iter=max_iter,
               abs_tol=abs_tol, rel_tol=rel_tol, relaxation=relaxation)
    return res.x, res


def _newton_direction(g, H):
    """The Newton step -H⁻¹g (Cholesky, a relative jitter of 1e-14) and its slope g·δ."""
    jitter = 1e-14 * (1.0 + jnp.trace(H) / H.shape[0])
    L = jnp.linalg.cholesky(H + jitter * jnp.eye(H.shape[0]))
    delta = -jax.scipy.linalg.cho_solve((L, True), g)
    return delta, jnp.vdot(g, delta)


def _smooth(mu):
    """Whether a trace norm is twice differentiable at M with ascending spectrum ``mu`` (..., d):
    M ≻ 0 to an eigenvalue ratio of 1e-12 (where Newton's steps and certificates are valid)."""
    return mu[..., 0] > 1e-12 * mu[..., -1]


def _column_newton(W, keep, w_target, c0, lam, gamma, max_newton):
    """One column problem of the C-step by Newton's method, where the trace Lasso is smooth.

    min over c (m,) with c_k = 0 where ``keep`` is 0 of
    f(c) = (λ/2)‖w - W c‖² + γ φ(c),  φ(c) = ‖W Diag(c)‖_* = tr(M^{1/2}),  M = W Diag(c²) Wᵀ.

    Where M ≻ 0, φ is twice differentiable (also at c_k = 0): with M = U Diag(μ) Uᵀ,
    s = √μ and ũ_k = Uᵀw_k, ∂φ/∂c_k = c_k Σ_a ũ_ak²/s_a and
    ∂²φ/∂c_k∂c_l = δ_kl Σ_a ũ_ak²/s_a + 2 c_k c_l Σ_ab F_ab ũ_ak ũ_bk ũ_al ũ_bl with the
    divided differences of x^{-1/2}, F_ab = -1/(s_a s_b (s_a + s_b)).

    Where the optimum is c = 0 (large γ) φ is not smooth there and Newton cannot certify it;
    that case is certified first: 0 is optimal iff λWᵀw ∈ γ ∂φ(0) = {γ diag(WᵀZ) : ‖Z‖₂ ≤ 1},
    and Z₀ = W Diag(λ w_kᵀw / ‖w_k‖²) (kept k) satisfies diag(WᵀZ₀) = λWᵀw, so ‖Z₀‖₂ ≤ γ is a
    sufficient condition (exact when the kept w_k are orthogonal).

    Returns c, the gradient norm (0 at a certified zero), whether c is certified, Newton's
    steps and, for a certified zero, the subgradient Z₀/γ of φ at 0 (d, m; else 0).
    """
    d = W.shape[0]
    WtW = W.T @ W
    target = W.T @ w_target
    sq = jnp.diag(WtW)
    Z0 = W * (keep * lam * target / jnp.where(sq > 0, sq, 1.0))[None, :]

    def gram(c):  # M = W Diag(c²) Wᵀ over the kept entries
        return (W * (keep * c**2)[None, :]) @ W.T

    def spectrum(c):
        return jnp.linalg.eigh(gram(c))

    def value(c):
        mu = jnp.linalg.eigvalsh(gram(c))
        return (0.5 * lam * jnp.sum((w_target - W @ (keep * c)) ** 2)
                + gamma * jnp.sum(jnp.sqrt(jnp.maximum(mu, 0.0))))

    def gradient_parts(c):  # gradient, M's spectrum and the ingredients of the Hessian
        c = keep * c
        mu, U = spectrum(c)
        s = jnp.sqrt(jnp.maximum(mu, 1e-300))
        Ut = U.T @ W  # (d, m): column k is ũ_k
        diag = jnp.sum(Ut**2 / s[:, None], axis=0)
        g = keep * (lam * (WtW @ c - target) + gamma * c * diag)
        return g, mu, s, Ut, diag

    def direction(c):
        g, mu, s, Ut, diag = gradient_parts(c)
        c = keep * c
        F = -1.0 / (s[:, None] * s[None, :] * (s[:, None] + s[None, :]))
        G = Ut[:, None, :] * Ut[None, :, :]  # (d, d, m)
        H2 = jnp.einsum("abk,abl->kl", G * F[:, :, None], G)
        H = lam * WtW + gamma * (jnp.diag(diag) + 2.0 * jnp.outer(c, c) * H2)
        H = keep[:, None] * H * keep[None, :] + jnp.diag(1.0 - keep)
        delta, slope = _newton_direction(g, H)
        # heading for a singular M (a sparse optimum, where φ is not smooth and Newton cannot
        # certify), or a certified zero: no direction (a NaN slope stops damped_newton)
        return delta, jnp.where(_smooth(mu) & ~zero, slope, jnp.nan)

    # start at c0 if its M is non-singular, else at the ridge point (λWᵀW + γ Diag(‖w_k‖))⁻¹λWᵀw
    # (the trace Lasso's ℓ2 end), which is dense. (A threshold of 1e-8 on M's eigenvalue ratio
    # sent dense previous optima with small eigenvalues, common in the flat valleys of λ ≥ 1,
    # to the ridge point: 8 Newton steps instead of 3 on the Landmine-sized binary fit.)
    # (the batched LAPACK calls one after the other: see solvers.after)
    mu0 = spectrum(c0)[0]
    ridge = jnp.linalg.solve(after(keep[:, None] * (lam * WtW) * keep[None, :]
                                   + jnp.diag(gamma * jnp.sqrt(jnp.diag(WtW)) * keep + 1.0 - keep
                                              + 1e-12), mu0), keep * lam * target)
    z_norm = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(after(Z0 @ Z0.T, ridge))[-1], 0.0))
    zero = z_norm <= gamma
    start = after(jnp.where(mu0[0] > 1e-14 * mu0[d - 1], keep * c0, ridge), z_norm)
    c, steps, converged = damped_newton(value, direction, start, max_iter=max_newton,
                                        tol=1e-13, full=True)
    g, mu = gradient_parts(c)[:2]
    ok = converged & _smooth(mu) & jnp.all(jnp.isfinite(c))
    return (jnp.where(zero, 0.0, keep * c), jnp.where(zero, 0.0, jnp.linalg.norm(g)),
            ok | zero, steps, jnp.where(zero, Z0 / gamma, 0.0))


@jax.jit(static_argnames=("max_newton",))
def _c_step_newton(W, C0, lam, gamma, rho, max_newton=12):
    """Newton's method on every column of the C-step (:func:`_column_newton`), vmapped.

    Returns C (m, m), per-column gradient norms (m,), whether each column is certified
    (m,), Newton steps (m,) and the ADMM state that this C is the fixed point of:
    J_i = W Diag(c_i), u_i = (γ/ρ) Z_i with Z_i the trace norm's (sub)gradient: M_i^{-1/2} J_i
    where M_i ≻ 0, Z₀/γ of :func:`_column_newton` at a certified zero column.
    """
    m = W.shape[1]
    sq = jnp.sum(W**2, axis=0)
    keep = (1.0 - jnp.eye(m, dtype=W.dtype)) * (sq > 0)[:, None]  # column i: keep_i
    C, grad, ok, steps, Z0 = jax.vmap(
        _column_newton, in_axes=(None, 1, 1, 1, None, None, None),
        out_axes=(1, 0, 0, 0, 0))(W, keep, W, C0, lam, gamma, max_newton)
    J = jnp.moveaxis(W[:, :, None] * after(C, ok)[None], 2, 0)  # (m, d, m); eigh after ok's

    def dual(Ji):
        mu, U = jnp.linalg.eigh(Ji @ Ji.T)
        inv_sqrt = jnp.where(mu > 0, 1.0 / jnp.sqrt(jnp.where(mu > 0, mu, 1.0)), 0.0)
        return (U * inv_sqrt[None, :]) @ U.T @ Ji

    U = gamma / rho * (jax.vmap(dual)(J) * ok[:, None, None] + Z0)
    return C, grad, ok, steps, J, U


# ----------------------------------------------------------------------------- W-step


class PaddedTasks(NamedTuple):
    """The logistic data term task by task: Xa (m, n, d+1) rows with the ones column,
    y (m, n), wts (m, n) row weights; n is the largest task's row count rounded up to
    :func:`~bayesmtl.inference.stats.bucket_size` (padding has weight 0), so folds of one
    data set share compiled steps. A pytree."""

    Xa: jax.Array
    y: jax.Array
    wts: jax.Array


def _padded_rows(task, m):
    """(m, n) row index of each task's j-th row and its (m, n) validity mask, n the largest
    row count rounded up to a bucket."""
    counts = np.bincount(task, minlength=m)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    j = np.arange(bucket_size(int(counts.max())))[None, :]
    mask = j < counts[:, None]
    return np.where(mask, starts[:, None] + j, 0), mask.astype(np.float64)


def _data_term(data, loss, loss_scale):
    """GAMTL's data loss Σ_i L_i: a :class:`GaussianTerm` from the per-task moments for the
    squared loss (L_i = Σ_j c_j (y_j - f_j)², c_j = 1/n_i or 1, i.e. σ = 1/√2), the padded
    rows (:class:`PaddedTasks`) for the logistic loss."""
    weights = task_loss_weights(data.n_per_task, loss_scale)
    if loss == "squared":
        return gaussian_term(task_moments(data), weights, PAPER_SQUARED_LOSS_NOISE)
    rows, mask = _padded_rows(data.task, data.n_tasks)
    Xa = np.concatenate([data.X, np.ones((len(data.y), 1))], axis=1)
    return PaddedTasks(jnp.asarray(Xa[rows]), jnp.asarray(data.y[rows]),
                       jnp.asarray(weights[:, None] * mask))


def _term_loss(term, W, b):
    """Σ_i L_i(w_i, b_i) of a GAMTL data term (W (d, m), b (m,))."""
    if isinstance(term, GaussianTerm):
        return data_loss(term, W, b)
    f = jnp.einsum("mnk,mk->mn", term.Xa, jnp.concatenate([W.T, b[:, None]], axis=1))
    return jnp.sum(term.wts * LOSSES["logistic"](f, term.y))


@jax.jit
def _objective(term, W, b, C, lam, gamma):
    """Objective (1) from a GAMTL data term (compiled once per problem shape)."""
    return (_term_loss(term, W, b) + 0.5 * lam * jnp.sum(reconstruction_residual(W, C) ** 2)
            + gamma * jnp.sum(trace_lasso_columns(W, C)))


def _task_quadratic(term: GaussianTerm, anchor, curvature):
    """Per-task minimiser of ½θᵀH_iθ - r_iᵀθ + (curvature_i/2)‖w_i - anchor_i‖² (θ = (w, b),
    the intercept not anchored): one (d+1)-dimensional Cholesky solve per task, all tasks at
    once. anchor (m, d), curvature (m,) > 0; returns θ (m, d+1)."""
    m, D = term.rhs.shape
    w_part = jnp.concatenate([jnp.ones(D - 1), jnp.zeros(1)])
    A = term.H + curvature[:, None, None] * jnp.diag(w_part)[None]
    rhs = term.rhs + curvature[:, None] * jnp.concatenate([anchor, jnp.zeros((m, 1))], axis=1)
    return jax.vmap(lambda a, r: jax.scipy.linalg.cho_solve(
        (jnp.linalg.cholesky(a), True), r))(A, rhs)


def _task_prox(term, anchor, curvature, theta0):
    """The W-step's per-task proximal step for either data term (θ (m, d+1))."""
    if isinstance(term, GaussianTerm):
        return _task_quadratic(term, anchor, curvature)
    return _task_newton(term.Xa, term.y, term.wts, "logistic", anchor, curvature, theta0)


def _task_newton(Xa, y, wts, loss, anchor, curvature, theta0, tol=1e-14, max_newton=50):
    """Per-task proximal step of the loss, all tasks at once (vmapped damped Newton).

    For every task i minimises over θ_i = (w_i, b_i) (d+1,)

        φ_i(θ_i) = Σ_j wts_ij ℓ(x̃_ijᵀ θ_i, y_ij) + (curvature_i / 2) ‖w_i - anchor_i‖²

    (x̃ = (x, 1); the intercept is not anchored) by Newton's method with Armijo backtracking,
    stopping when half the Newton decrement is ≤ ``tol · max(1, |φ_i|)``.

    Xa (m, n, d+1) padded rows, y (m, n), wts (m, n) row weights (0 on padding), anchor (m, d),
    curvature (m,) > 0, theta0 (m, d+1) starting point. Returns θ (m, d+1).
    """
    row_loss = LOSSES[loss]
    d1 = Xa.shape[2]
    slope_fn = jax.grad(lambda f, t: row_loss(f, t))
    dl = jax.vmap(slope_fn)
    d2l = jax.vmap(jax.grad(slope_fn))
    w_part = jnp.concatenate([jnp.ones(d1 - 1), jnp.zeros(1)])

    def one(Xa, y, wts, anchor, q, th0):
        a = jnp.concatenate([anchor, jnp.zeros(1)])

        def phi(th):
            return (jnp.sum(wts * row_loss(Xa @ th, y))
                    + 0.5 * q * jnp.sum(w_part * (th - a) ** 2))

        def direction(th):
            fx = Xa @ th
            g = Xa.T @ (wts * dl(fx, y)) + q * w_part * (th - a)
            H = (Xa.T * (wts * d2l(fx, y))) @ Xa
            jitter = 1e-10 * (1.0 + jnp.trace(H) / d1)
            H = H + jnp.diag(q * w_part + jitter)
            p = -jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), g)
            return p, jnp.vdot(g, p)

        return damped_newton(phi, direction, th0, max_iter=max_newton, tol=tol)

    return jax.vmap(one)(Xa, y, wts, anchor, curvature, theta0)


def w_step(term, W0, b0, C, lam, gamma, warm: AdmmWarmStart | None = None, *, abs_tol=1e-9,
           rel_tol=1e-7, max_iter=5000, relaxation=1.6):
    """W-step (4): argmin over (W, b) of Σ L_i + (λ/2)‖W - WC‖²_F + γ Σ_i ‖W Diag(c_i)‖_*, by
    ADMM.

    Consensus splitting: the split variable is z = (V, Z) with V = αW (d, m) carrying the
    reconstruction term and Z_i = W Diag(zero_diag(C)[:, i]) (stacked (m, d, m)) the trace
    Lasso terms. Then every ADMM step is exact and cheap:

    * (W, b)-update: separable over tasks — each task's loss plus an isotropic quadratic in
      w_i: one (d+1)-dimensional solve per task for the squared loss (from the moments), a
      batched damped Newton method for the logistic loss (:func:`_task_newton`);
    * V-update: (λ/2)‖V(I - C)‖² + (ρ/2)‖V - ·‖² in closed form, with one eigendecomposition
      of (I - C)(I - C)ᵀ per W-step serving every ρ;
    * Z-update: singular-value soft-thresholding, vmapped over tasks.

    Parameters
    ----------
    term : the data term (``_data_term``: GaussianTerm or PaddedTasks).
    W0 (d, m), b0 (m,) : starting point; C (m, m) : fixed combination; lam, gamma : λ, γ.
    loss : "squared" or "logistic".
    warm : z = (V, Z), u (same structure), rho () from a previous W-step; default V = W0,
        Z_i = W0 Diag(c_i), U = 0, ρ = λ.
    abs_tol, rel_tol, max_iter, relaxation : ADMM settings (see ``admm``).

    Returns
    -------
    W (d, m), b (m,), and the ``AdmmResult``.
    """
    W0 = jnp.asarray(W0, dtype=jnp.float64)
    if warm is None:
        Z0 = jnp.moveaxis(W0[:, :, None] * zero_diagonal(C)[None], 2, 0)
        z0 = (W0, Z0)
        warm = AdmmWarmStart(z0, jax.tree_util.tree_map(jnp.zeros_like, z0),
                             _first_rho(lam))
    return _w_step(term, W0, b0, *warm, C, lam, gamma, abs_tol, rel_tol, max_iter, relaxation)


def _w_step_certified(term, W0, b0, C, lam, gamma, warm, abs_tol, rel_tol, max_iter, relaxation,
                      newton):
    """The W-step by Newton's method (:func:`_w_step_newton`) when ``newton`` and it certifies
    the optimum, else by ADMM (:func:`w_step`, from Newton's point). Returns W, b, an
    ``AdmmResult`` (for Newton: z = (W, W Diag(c_k) stacked), u = 0, n_iter its steps,
    dual_residual its gradient norm) and whether Newton certified the step."""
    W0 = jnp.asarray(W0, dtype=jnp.float64)
    if newton:
        W, b, ok, steps, grad = _w_step_newton(term, W0, b0, C, lam, gamma)
        if bool(ok):
            z = (W, jnp.moveaxis(W[:, :, None] * zero_diagonal(C)[None], 2, 0))
            u = jax.tree_util.tree_map(jnp.zeros_like, z)
            rho = _first_rho(lam) if warm is None else warm.rho
            return W, b, AdmmResult(jnp.concatenate([W.T, b[:, None]], axis=1), z, u, rho,
                                    steps, jnp.asarray(True), jnp.zeros((), W.dtype),
                                    grad), True
        if bool(jnp.all(jnp.isfinite(W))):
            W0, b0 = W, b
    return (*w_step(term, W0, b0, C, lam, gamma, warm, abs_tol=abs_tol, rel_tol=rel_tol,
                    max_iter=max_iter, relaxation=relaxation), False)


@jax.jit(static_argnames=("max_iter",))
def _w_step(term, W0, b0, z0, u0, rho0, C, lam, gamma, abs_tol, rel_tol, max_iter, relaxation):
    d, m = W0.shape
    Ct = zero_diagonal(C)
    split_diag = jnp.sum(Ct**2, axis=1)  # Σ_k C_ik²: weight of w_i in Σ_k ‖W Diag(c_k)‖²
    # The V-constraint is written αW = V with α = ½ rms_i(Σ_k C_ik²)^½ (in [0.05, 1]), which
    # gives it a per-task weight α² comparable to the Z-constraints' Σ_k C_ik² under the one
    # penalty ρ (5× fewer ADMM iterations than α = 1 on the 100-task Synthetic set). V and
    # its dual are passed in and returned in the units of W.
    alpha = jnp.clip(0.5 * jnp.sqrt(jnp.mean(split_diag)), 0.05, 1.0)
    z0 = (alpha * z0[0], z0[1])
    u0 = (alpha * u0[0], u0[1])
    R = jnp.eye(m) - Ct
    kappa, Q = jnp.linalg.eigh(R @ R.T)

    def unpack(theta):  # theta (m, d+1) = [Wᵀ, b]
        return theta[:, :d].T, theta[:, d]

    def A(theta):
        W = unpack(theta)[0]
        return alpha * W, W[None, :, :] * Ct.T[:, None, :]  # V = αW, Z_k = W Diag(c_k)

    def At(z):
        V, Z = z
        Wg = alpha * V + jnp.sum(Z * Ct.T[:, None, :], axis=0)  # a reduction: Z not transposed
        return jnp.concatenate([Wg.T, jnp.zeros((m, 1), Wg.dtype)], axis=1)

    def x_update(theta, v, rho):
        # (ρ/2)‖A θ - v‖² = Σ_i (ρ q_i/2)‖w_i - At(v)_i / q_i‖² + const, q_i = 1 + Σ_k C_ik²
        q = alpha**2 + split_diag
        anchor = At(v)[:, :d] / q[:, None]
        return _task_prox(term, anchor, rho * q, theta)

    def z_update(v, rho):
        V, Z = v
        V = (V @ Q) * (rho / (lam / alpha**2 * kappa + rho))[None, :] @ Q.T
        return V, jax.vmap(prox_trace_norm_gram, in_axes=(0, None))(Z, gamma / rho)

    theta0 = jnp.concatenate([W0.T, b0[:, None]], axis=1)
    res = admm(x_update, z_update, A, At, theta0, z0, u0, rho0=rho0, max_iter=max_iter,
               abs_tol=abs_tol, rel_tol=rel_tol, relaxation=relaxation)
    W, b = unpack(res.x)
    res = res._replace(z=(res.z[0] / alpha, res.z[1]), u=(res.u[0] / alpha, res.u[1]))
    return W, b, res


def _data_grad_hess(term, theta):
    """Per-task gradient (m, D) and Hessian blocks (m, D, D) of the data loss at θ (m, D)."""
    if isinstance(term, GaussianTerm):
        return jnp.einsum("mij,mj->mi", term.H, theta) - term.rhs, term.H
    f = jnp.einsum("mnk,mk->mn", term.Xa, theta)
    p = jax.nn.sigmoid(f)
    g = jnp.einsum("mnk,mn->mk", term.Xa, term.wts * (p - term.y))
    H = jnp.einsum("mnk,mn,mnl->mkl", term.Xa, term.wts * p * (1 - p), term.Xa)
    return g, H


#: largest cost of one Newton direction of the C-step (:func:`_c_newton_flops`) for which
#: ``fit_gamtl`` tries it. Landmine's size (29 tasks, 9 features) costs 2e6 and Newton cut
#: its CV 2–3×; at 100 tasks × 30 features (9e8) a Newton C-step took 2.4 s against ADMM's
#: 0.5 s, and 15 sweeps took 47 s against 27 s with ADMM only (``benchmarks/README.md``).
C_NEWTON_MAX_FLOPS = 1e8


def _c_newton_flops(m, d):
    """Flops of one Newton direction of :func:`_c_step_newton`: per column the Hessian's
    trace-norm part (d²m²) and the Cholesky factor of the m × m Hessian, for m columns."""
    return m * (d**2 * m**2 + m**3 / 3)


#: largest cost of one Newton direction of the W-step (:func:`_w_newton_flops`) for which
#: ``fit_gamtl`` tries it: ≈ 0.1–0.3 s on a 2-core machine. Landmine's size (29 tasks, 9
#: features) costs 4e7; 100 tasks × 30 features cost 4e10 (over a minute per W-step there).
W_NEWTON_MAX_FLOPS = 2e9


def _w_newton_flops(m, d):
    """Flops of one Newton direction of :func:`_w_step_newton`: the Cholesky factor of the
    (m(d+1))² Hessian and the two GEMMs of its trace-norm part (d³m³ each)."""
    return (m * (d + 1)) ** 3 / 3 + 2.0 * d**3 * m**3


@jax.jit(static_argnames=("max_newton",))
def _w_step_newton(term, W0, b0, C, lam, gamma, max_newton=30):
    """The W-step (4) by Newton's method on (W, b), where every trace-norm term is smooth.

    φ_k(W) = ‖W Diag(c_k)‖_* = tr(M_k^{1/2}), M_k = W D_k² Wᵀ (D_k = Diag(c_k)), is twice
    differentiable where M_k ≻ 0: with M_k = U Diag(μ) Uᵀ, s = √μ, Ŵ = UᵀW D_k² and the
    divided differences F_ab = -1/(s_a s_b (s_a + s_b)) of x^{-1/2}, its gradient is
    M_k^{-1/2} W D_k² and its Hessian, in U's coordinates,
    δ_ab δ_jl (D_k²)_j / s_a + δ_ab Σ_q F_aq Ŵ_ql Ŵ_qj + F_ab Ŵ_al Ŵ_bj
    (rows (a, j), columns (b, l)), summed over k as two GEMMs. With the data term's per-task
    Hessian blocks and λ (I - C)(I - C)ᵀ ⊗ I_d this is the full (m(d+1))² Hessian, solved by
    Cholesky. Returns W, b, whether the optimum is certified (:func:`damped_newton` converged:
    half the Newton decrement ≤ 1e-13 max(1, |F|) before its last full step, every M_k ≻ 0
    at the returned point), the steps and the gradient norm.
    """
    d, m = W0.shape
    D = d + 1
    Ct = zero_diagonal(C)
    R = jnp.eye(m) - Ct
    RRt = R @ R.T
    sq = Ct.T ** 2  # (m, m): row k = c_k² over tasks j

    def unpack(x):
        th = x.reshape(m, D)
        return th[:, :d].T, th[:, d]

    def value(x):
        return _objective(term, *unpack(x), C, lam, gamma)

    def spectra(W):  # M_k = W D_k² Wᵀ = U Diag(μ) Uᵀ, s = √μ, Ŵ_k D_k² (k, d, m), gradient
        mu, U = jnp.linalg.eigh(jnp.einsum("dj,kj,ej->kde", W, sq, W))
        s = jnp.sqrt(jnp.maximum(mu, 1e-300))
        Ws = jnp.einsum("kda,dj,kj->kaj", U, W, sq)
        grad = jnp.einsum("kpa,kaj->pj", U / s[:, None, :], Ws)
        return mu, U, s, Ws, grad

    def trace_hessian(U, s, Ws):  # Σ_k φ_k's Hessian (m, d, m, d)
        F = -1.0 / (s[:, :, None] * s[:, None, :] * (s[:, :, None] + s[:, None, :]))
        Minv = jnp.einsum("kpa,kqa->kpq", U / s[:, None, :], U)
        H1 = jnp.einsum("kj,kpq->jpq", sq, Minv)
        T = jnp.einsum("kaq,kql,kqj->kajl", F, Ws, Ws)
        UU = jnp.einsum("kpa,kqa->kapq", U, U).reshape(-1, d * d)
        H2 = (UU.T @ T.reshape(UU.shape[0], m * m)).reshape(d, d, m, m)  # p q j l
        Y = jnp.einsum("kpa,kal,kab->kbpl", U, Ws, F).reshape(-1, d * m)  # ((k,b), (p,l))
        Z = jnp.einsum("kqb,kbj->kbqj", U, Ws).reshape(-1, d * m)  # ((k,b), (q,j))
        H3 = (Y.T @ Z).reshape(d, m, d, m)  # p l q j
        return (jnp.einsum("jpq,jl->jplq", H1, jnp.eye(m)) + jnp.einsum("pqjl->jplq", H2)
                + jnp.einsum("plqj->jplq", H3))

    def gradient(x, grad_trace):
        W, _ = unpack(x)
        g_data, H_data = _data_grad_hess(term, x.reshape(m, D))
        gW = lam * W @ RRt + gamma * grad_trace  # (d, m)
        return (g_data + jnp.concatenate([gW.T, jnp.zeros((m, 1))], axis=1)), H_data

    def direction(x):
        _, U, s, Ws, grad_trace = spectra(unpack(x)[0])
        g, H_data = gradient(x, grad_trace)
        # Hessian over (task j, coord p) with coord D-1 the intercept
        HW = lam * jnp.einsum("jl,pq->jplq", RRt, jnp.eye(d)) + gamma * trace_hessian(U, s, Ws)
        H = (jnp.pad(HW, ((0, 0), (0, 1), (0, 0), (0, 1)))
             + jnp.einsum("jl,jpq->jplq", jnp.eye(m), H_data))
        return _newton_direction(g.reshape(-1), H.reshape(m * D, m * D))

    x0 = jnp.concatenate([W0.T, b0[:, None]], axis=1).reshape(-1)
    x, steps, converged = damped_newton(value, direction, x0, max_iter=max_newton, tol=1e-13,
                                        full=True)
    mu, *_, grad_trace = spectra(unpack(x)[0])
    ok = converged & jnp.all(_smooth(mu)) & jnp.all(jnp.isfinite(x))
    W, b = unpack(x)
    return W, b, ok, steps, jnp.linalg.norm(gradient(x, grad_trace)[0])


@jax.jit
def _single_task(term, lam):
    """(W (d, m), b (m,)) minimising each task's L_i + (λ/2)‖w_i‖² (objective (1) at C = 0)."""
    m, D = (term.rhs.shape if isinstance(term, GaussianTerm) else
            (term.Xa.shape[0], term.Xa.shape[2]))
    zeros = jnp.zeros((m, D - 1))
    theta = _task_prox(term, zeros, jnp.full((m,), lam, zeros.dtype), jnp.zeros((m, D)))
    return theta[:, :-1].T, theta[:, -1]


# ----------------------------------------------------------------------------- task groups


def _normalised_laplacian(affinity):
    deg = affinity.sum(axis=1)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    lap = np.eye(len(deg)) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    lap[deg == 0, deg == 0] = 0.0  # an isolated task is its own connected component
    return lap


def task_groups(C, max_groups=None, seed=0, n_groups=None):
    """Task clusters read off C: spectral clustering of ``|C| + |C|ᵀ``.

    The number of groups k maximises the relative eigengap ``λ_{k+1} / λ_k`` of the symmetric
    normalised Laplacian over 2 ≤ k ≤ ``max_groups`` (default ``max(2, round(√m))``). With k
    groups joined by weak edges of total weight ε, λ_1, …, λ_k are O(ε) and λ_{k+1} is set by
    the connectivity inside the groups; the grouping is stable when λ_{k+1} ≫ λ_k (Davis–Kahan:
    the k-eigenvector space moves by ~ε / gap), a ratio. The absolute gap ``λ_{k+1} - λ_k``
    instead grows with k as the spectrum spreads, and on the 100-task Synthetic fit it chose
    the cap k = 10 (within-group structure; ARI 0.66) where the ratio chooses 6 (ARI 0.93,
    true k = 5). k tasks in k disconnected components give λ_k = 0, so that k is chosen.
    Tasks are then clustered by k-means on the row-normalised k smallest eigenvectors (Ng,
    Jordan & Weiss).

    Parameters
    ----------
    C : (m, m) combination matrix. max_groups : largest k considered. seed : k-means seed.
    n_groups : use this k instead of the eigengap choice (when the number of groups is known).

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
    if n_groups is None:
        k_max = min(m - 1, max(2, round(m**0.5)) if max_groups is None else max_groups)
        floor = 1e-12 * max(1.0, evals[-1])
        if k_max < 2:  # two tasks: one group unless they are disconnected
            k = 1 + int(evals[1] <= floor)
        else:
            ratio = evals[2: k_max + 1] / np.maximum(evals[1:k_max], floor)  # λ_{k+1}/λ_k
            k = int(np.argmax(ratio)) + 2
    elif not 1 <= n_groups <= m:
        raise ValueError(f"n_groups must lie in [1, {m}]; got {n_groups}")
    else:
        k = int(n_groups)
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
        step.
    c_iterations, w_iterations : (n_outer,) ADMM iterations of each step.
    admm_converged : (n_outer, 2) whether the C-step and the W-step met Boyd et
        al.'s stopping rule.
    extrapolated : (n_outer,) whether the outer iteration kept its Anderson point.
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
    extrapolated: np.ndarray
    task_names: tuple
    feature_names: tuple


def _check(data, lam, gamma, loss):
    require_data(data, "GAMTL", statistics=True)
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


def _arrays(data, loss_scale, loss=None):
    """``(term,)``: the data term of ``data`` for :func:`w_step` and :func:`_single_task`."""
    return (_data_term(data, _check(data, 1.0, None, loss), loss_scale),)


def fit_single_task(data: MultiTaskData, lam: float = 1.0, loss=None, *,
                    loss_scale: str = "mean"):
    """Single-task learning: each task minimises L(w_i, D_i) + (λ/2)‖w_i‖² on its own.

    This is objective (1) at C = 0 and GAMTL's initialisation. Returns ``(W (d, m), b (m,))``.
    """
    loss = _check(data, lam, None, loss)
    W, b = _single_task(_data_term(data, loss, loss_scale), lam)
    return np.asarray(W), np.asarray(b)


class _NewtonSchedule:
    """When to try a step's Newton method: every outer iteration while it certifies; after a
    failure it waits 1, 2, 4, … 16 outer iterations before the next try."""

    def __init__(self):
        self.wait = self.skip = 0

    def due(self) -> bool:
        return self.wait == 0

    def record(self, tried: bool, certified: bool) -> None:
        if tried:
            self.skip = 0 if certified else min(16, max(1, 2 * self.skip))
            self.wait = self.skip
        else:
            self.wait = max(0, self.wait - 1)


def fit_gamtl(data: MultiTaskData, lam: float = 1.0, gamma: float = 1.0, loss=None, *,
              max_outer: int = 300, tol: float = 1e-6, loss_scale: str = "mean",
              admm_abs_tol: float = 1e-9, admm_rel_tol: float = 1e-6,
              admm_max_iter: int = 5000, relaxation: float = 1.6, init=None, max_groups=None,
              seed: int = 0, anderson: int = 5, callback=None,
              deadline: float | None = None) -> GAMTLResult:
    """MAP of GAMTL (objective (1)) by the paper's alternating ADMM scheme (Algorithm 1).

    Parameters
    ----------
    data : MultiTaskData with m ≥ 2 tasks.
    lam : λ > 0, reconstruction precision; gamma : γ > 0, trace-Lasso weight.
    loss : "squared" or "logistic" (default from ``data.kind``).
    max_outer, tol : outer-iteration cap; converged when the relative change of (1) is ≤ tol
        over an inexact sweep and then again over a certifying sweep whose C- and W-steps
        both meet the ADMM stopping rule at ``admm_rel_tol`` (if one stops at
        ``admm_max_iter`` instead, the next sweep certifies again).
    loss_scale : "mean" (paper: per-task mean loss) or "sum".
    admm_abs_tol, admm_rel_tol, admm_max_iter, relaxation : ADMM settings of both steps
        (Boyd et al.'s stopping rule, over-relaxation). Each step starts from the previous
        outer iteration's C, W and the split variables, duals and ρ of its previous solve,
        and is solved to the relative tolerance
        ``max(admm_rel_tol, min(1e-3, last relative decrease of (1)))`` (``admm_rel_tol`` in
        the certifying sweep); a step is kept only if it does not increase (1), so
        ``history`` is monotone.
    init : optional ``(W, b, C)`` warm start (default: single-task W, C = 0).
    max_groups, seed : passed to :func:`task_groups`.
    anderson : memory of the Anderson acceleration
        (:func:`~bayesmtl.inference.solvers.anderson_point`) of the sweep
        (W, b) ↦ W-step(C-step(W)); the mixed point gets its own exact C-step and is kept
        only if it lowers (1) below the sweep's result (a rejection restarts the memory);
        0 gives the plain Algorithm 1. On the Landmine-sized binary problem at λ = 10,
        γ = 0.01 (a flat valley along which ‖W‖ grows slowly) the sweep with a one-step
        extrapolation stopped at its 300-iteration cap with F = 11.2038; with Anderson the
        fit meets ``tol`` after 62 outer iterations at F = 11.1985 (``benchmarks/README.md``).
    deadline : optional ``time.monotonic()`` value: stop (unconverged) after the first outer
        iteration that ends past it.
    callback : optional ``callback(history, W, b, C)`` called after every outer iteration
        (progress reports, monitoring held-out error).
    """
    loss = _check(data, lam, gamma, loss)
    if isinstance(anderson, bool) or not isinstance(anderson, (int, np.integer)) or anderson < 0:
        raise ValueError(f"anderson (memory) must be an integer ≥ 0; got {anderson!r}")
    term = _data_term(data, loss, loss_scale)
    m = data.n_tasks
    if init is None:
        W, b = _single_task(term, lam)
        C = jnp.zeros((m, m))
    else:
        W, b, C = (jnp.asarray(a, dtype=jnp.float64) for a in init)
        C = zero_diagonal(C)

    def objective(W, b, C):
        return float(_objective(term, W, b, C, lam, gamma))

    w_newton_affordable = _w_newton_flops(m, data.n_features) <= W_NEWTON_MAX_FLOPS
    c_newton_affordable = _c_newton_flops(m, data.n_features) <= C_NEWTON_MAX_FLOPS

    history = [objective(W, b, C)]
    c_res, w_res, c_it, w_it, ok, jumped = [], [], [], [], [], []
    c_warm = w_warm = None
    c_newton, w_newton = _NewtonSchedule(), _NewtonSchedule()
    converged = certifying = False
    change = 1.0
    xs, txs = [], []  # Anderson memory: iterates (W, b) and their sweeps, flattened
    pending = None  # the C-step already taken at the current W (an accepted Anderson point)

    def solve_c(W, C, tols):  # the C-step at W (Newton first, on its schedule, if affordable)
        try_newton = c_newton.due() and c_newton_affordable
        C_new, cr, certified = _c_step_certified(W, C, lam, gamma, c_warm, newton=try_newton,
                                                 **tols)
        c_newton.record(try_newton, certified)
        return C_new, cr

    for _ in range(max_outer):
        # inexact alternation: each step solved to a relative tolerance equal to the last
        # relative decrease of (1) (a tighter factor, 0.01, gave the same objective path at
        # 5–20× the ADMM iterations); the certifying sweep uses admm_rel_tol
        rel_tol = admm_rel_tol if certifying else max(admm_rel_tol, min(1e-3, change))
        tols = dict(abs_tol=admm_abs_tol, rel_tol=rel_tol, max_iter=admm_max_iter,
                    relaxation=relaxation)
        # both steps warm-started from the previous outer iteration's split variable, dual
        # and penalty ρ (W and C move little late in the fit, so the old duals are close);
        # Newton's C-step certifies dense optima in a few steps; after it fails (a sparse
        # optimum) it is retried after 1, 2, 4, … 16 outer iterations
        value = history[-1]  # (1) at (W, b, C)
        if pending is None or certifying:
            C_new, cr = solve_c(W, C, tols)
            value_c = objective(W, b, C_new)
            if value_c <= value:  # keep a step only if (1) does not rise
                C, value = C_new, value_c
        else:
            cr = pending
        c_warm = AdmmWarmStart(cr.z, cr.u, cr.rho)
        # Newton's W-step only where ADMM's is expensive (the logistic loss: a Newton solve per
        # task in every ADMM iteration), where its dense Hessian is affordable, and only if
        # each c_k has ≥ d non-zeros (else some M_k = W Diag(c_k²) Wᵀ is singular and the
        # trace norm not smooth)
        try_w_newton = (w_newton.due() and loss == "logistic" and w_newton_affordable
                        and bool(np.all(np.sum(np.asarray(C) != 0, axis=0) >= W.shape[0])))
        W_new, b_new, wr, certified = _w_step_certified(term, W, b, C, lam, gamma, w_warm,
                                                        newton=try_w_newton, **tols)
        w_newton.record(try_w_newton, certified)
        w_warm = AdmmWarmStart(wr.z, wr.u, wr.rho)
        value_new = objective(W_new, b_new, C)
        stepped = value_new <= value
        # Anderson acceleration of the sweep (W, b) ↦ W-step(C-step(W)): the mixed point
        # gets its own exact C-step and is kept only if (1) there is not above the sweep's
        # result, so (1) never rises; a rejection restarts the memory
        took, pending = False, None
        if anderson and stepped:
            x, unravel = ravel_pytree((W, b))
            xs = xs[-anderson:] + [np.asarray(x)]
            txs = txs[-anderson:] + [np.asarray(ravel_pytree((W_new, b_new))[0])]
            if len(xs) > 1:
                W_a, b_a = unravel(jnp.asarray(anderson_point(np.stack(xs), np.stack(txs))))
                C_a, cr_a = solve_c(W_a, C, tols)
                value_a = objective(W_a, b_a, C_a)
                took = bool(np.isfinite(value_a)) and value_a <= value_new
                if took:
                    W, b, C, value, pending = W_a, b_a, C_a, value_a, cr_a
                else:
                    xs, txs = xs[-1:], txs[-1:]
        if stepped and not took:
            W, b, value = W_new, b_new, value_new
        history.append(value)
        jumped.append(took)
        c_res.append([float(cr.primal_residual), float(cr.dual_residual)])
        w_res.append([float(wr.primal_residual), float(wr.dual_residual)])
        c_it.append(int(cr.n_iter))
        w_it.append(int(wr.n_iter))
        ok.append([bool(cr.converged), bool(wr.converged)])
        change = abs(history[-2] - history[-1]) / max(1.0, abs(history[-1]))
        if callback is not None:
            callback(np.asarray(history), W, b, C)
        if change <= tol and certifying and bool(cr.converged) and bool(wr.converged):
            converged = True
            break
        # a small change after inexact steps is confirmed by one sweep with both steps
        # solved to admm_rel_tol (exact steps); otherwise the alternation goes on
        certifying = change <= tol
        if deadline is not None and time.monotonic() > deadline:
            break
    if not converged:
        warnings.warn(f"GAMTL stopped unconverged after {len(c_it)} outer iterations"
                      f"{' (time limit)' if len(c_it) < max_outer else ''}; last relative "
                      f"change of (1) {change:.2e} (tol {tol})", ConvergenceWarning,
                      stacklevel=2)
    C = np.asarray(C)
    groups, n_groups = task_groups(C, max_groups, seed)
    return GAMTLResult(np.asarray(W), np.asarray(b), C, groups, n_groups, history[-1],
                       np.asarray(history), len(c_it), converged, np.asarray(c_res),
                       np.asarray(w_res), np.asarray(c_it), np.asarray(w_it), np.asarray(ok),
                       np.asarray(jumped, dtype=bool), data.task_names, data.feature_names)


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
    task), ``b`` (task) and ``combination`` (source_task, target_task), ``observed_data``
    and ``log_likelihood``.
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
                     attrs={"model": "gamtl", "inference": "nuts"}, data=data,
                     likelihood=likelihood)
