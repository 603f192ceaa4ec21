r"""Blocked Gibbs sampler for the matrix-normal model with a Gaussian likelihood and an
inverse-Wishart prior on Ω — the conjugate fast path of
:func:`~bayesmtl.models.matrix_normal.mtl_model`.

Model (exactly ``mtl_model`` with ``omega_prior=InverseWishart(ν, Ψ)``, ``likelihood=Gaussian``)
-----------------------------------------------------------------------------------------------
    Ω ~ IW(ν, Ψ)                         density ∝ |Ω|^{-(ν+m+1)/2} exp(-tr(Ψ Ω⁻¹)/2)
    W | Ω ~ MatrixNormal(0, I_d, Ω/λ)    rows of W (d, m) ~ N(0, Ω/λ)
                                         (optional ridge ρ: × exp(-ρ‖W‖²/2))
    b_i ~ flat, or N(0, s_b²)
    σ: fixed, σ ~ HalfNormal(s_σ) ("shared"), or σ_i ~ HalfNormal(s_σ) per task ("task")
    y_j | W, b, σ ~ N(x_jᵀ w_{t_j} + b_{t_j}, σ_{t_j}²), row log-likelihood tempered by w_j

One sweep draws, in turn, from the three full conditionals:

1. θ = (W, b) | Ω, σ, y ~ N(Q⁻¹ r, Q⁻¹), with, for θ stacked task-major (task i: (w_i, b_i)),
       Q = blockdiag_i(H_i) + (λ Ω⁻¹) ⊗ E + ρ E_m + s_b⁻² F,   H_i = Σ_{j∈i} c_j x̃_j x̃_jᵀ,
       r_i = Σ_{j∈i} c_j y_j x̃_j,   c_j = w_j / σ_{t_j}²,   x̃ = (x, 1),
   E = diag(1,…,1,0) picks the weights and F = I - E the intercept. Drawn by
   perturb-and-solve: z = Σ_j √c_j ε_j x̃_j + (√λ G ⊗ I) e + √ρ e' + s_b⁻¹ e'' has
   Cov z = Q (G Gᵀ = Ω⁻¹ from the Ω-step), so θ = Q⁻¹(r + z) ~ N(Q⁻¹ r, Q⁻¹) exactly.
   ``solver="cholesky"`` factorises the dense ((d+1)m)² matrix Q; ``solver="cg"`` eliminates
   the intercepts and solves for W by Kronecker-preconditioned conjugate gradients to a
   relative residual of 1e-10 (the draw is then exact up to that solve tolerance).
2. Ω | W ~ IW(ν + d, Ψ + λ WᵀW), by the Bartlett decomposition of Ω⁻¹ ~ Wishart.
3. σ² | W, b, y (noise "shared"/"task"): with n = Σ w_j and R = Σ w_j (y_j - f_j)² over the
   rows sharing σ, the density is ∝ u^{-(n+1)/2} exp(-R/(2u)) exp(-u/(2 s_σ²)) — a generalised
   inverse Gaussian, not conjugate to the HalfNormal prior. It is drawn by rejection from the
   proposal IG((n-1)/2, R/2) with acceptance exp(-u/(2 s_σ²)) ≤ 1, using up to 64 proposals;
   if all are rejected σ is kept. The fall-back probability does not depend on the current
   state, so the step is a mixture of an exact draw and the identity and leaves the conditional
   invariant. Needs n > 1 for every σ.

4. (``scale_moves=True``; off by default) m joint rescalings (W, Ω) ↦ (W T_c, T_c Ω T_c),
   T_c = I + (c - 1) v vᵀ, one per column v of a fixed orthonormal basis of task space, c
   drawn exactly from its conditional by slice sampling (:func:`scale_moves`; a generalised
   Gibbs step, Liu & Sabatti 2000). The three blocks alone move along such a direction only
   by a random walk, because W's scale and Ω's scale explain each other. On School they
   double the median ESS of Ω per sweep at twice the cost per sweep, and do not fix its
   slowest direction, hence off by default.

Every step leaves the posterior invariant, but mixing can still be slow: see
``benchmarks/results_sampling.md`` for School. Check R-hat before trusting Ω.

Row weights (``loss_scale="mean"`` → 1/n_i) temper the likelihood exactly as ``mtl_model``'s
``weights`` do. Draws are returned with ``mtl_model``'s site names, so
:func:`bayesmtl.inference.export.to_datatree` turns them into an ArviZ DataTree.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ..data import MultiTaskData, require_data
from ..errors import PriorError
from ..models.likelihoods import Gaussian
from ..models.losses import row_weights
from ..priors import InverseWishart

__all__ = ["run_gibbs", "GibbsResult", "GibbsState", "coefficient_precision", "sample_coefficients",
           "sample_inverse_wishart", "sample_noise_variance"]

_NOISE_TRIES = 64
_CG_TOL = 1e-10


class GibbsState(NamedTuple):
    """State of one chain.

    theta : (m, d+1) per-task (w_i, b_i).
    omega : (m, m) task covariance Ω.
    precision_factor : (m, m) G with G Gᵀ = Ω⁻¹ (from the Bartlett draw; no inverse needed).
    sigma : (m,) noise standard deviation of each task (all equal unless noise="task").
    """

    theta: jax.Array
    omega: jax.Array
    precision_factor: jax.Array
    sigma: jax.Array


# ----------------------------------------------------------------------------- Ω-step


def sample_inverse_wishart(key, df, scale):
    """Ω ~ IW(df, scale) (density ∝ |Ω|^{-(df+m+1)/2} exp(-tr(scale Ω⁻¹)/2)).

    Bartlett: with scale = C Cᵀ and A lower triangular (A_kk² ~ χ²(df - k), k = 0…m-1,
    A_kl ~ N(0, 1) below the diagonal), Ω⁻¹ = C⁻ᵀ A Aᵀ C⁻¹ ~ Wishart(df, scale⁻¹).
    Returns ``(Ω, G)`` with G = C⁻ᵀ A, so G Gᵀ = Ω⁻¹ and Ω = (C A⁻ᵀ)(C A⁻ᵀ)ᵀ.
    """
    m = scale.shape[0]
    k_diag, k_off = jax.random.split(key)
    chi2 = 2.0 * jax.random.gamma(k_diag, (df - jnp.arange(m)) / 2.0)
    A = jnp.tril(jax.random.normal(k_off, (m, m)), -1) + jnp.diag(jnp.sqrt(chi2))
    C = jnp.linalg.cholesky(scale)
    G = solve_triangular(C.T, A, lower=False)  # C⁻ᵀ A
    B = solve_triangular(A, C.T, lower=True).T  # (A⁻¹ Cᵀ)ᵀ = C A⁻ᵀ
    return B @ B.T, G


# ----------------------------------------------------------------------------- (W, b)-step


class _Design(NamedTuple):
    """Data of the (W, b)-step: Xa (N, d+1) = (X, 1), y (N,), task (N,), weights (N,),
    gram (m, d+1, d+1) = Σ w_j x̃ x̃ᵀ and moment (m, d+1) = Σ w_j y_j x̃ per task."""

    Xa: jax.Array
    y: jax.Array
    task: jax.Array
    weights: jax.Array
    gram: jax.Array
    moment: jax.Array


def _design(X, y, task, weights, m):
    Xa = jnp.concatenate([X, jnp.ones((X.shape[0], 1))], axis=1)
    gram = jax.ops.segment_sum(weights[:, None, None] * Xa[:, :, None] * Xa[:, None, :],
                               task, m)
    moment = jax.ops.segment_sum((weights * y)[:, None] * Xa, task, m)
    return _Design(Xa, y, task, weights, gram, moment)


def _prior_diagonal(d, ridge, intercept_precision):
    """(d+1,) diagonal prior precision of (w_i, b_i) outside the Ω coupling."""
    return jnp.concatenate([jnp.full(d, ridge), jnp.full(1, intercept_precision)])


def coefficient_precision(design, sigma, omega_precision, ridge, intercept_precision):
    """Dense precision Q ((d+1)m, (d+1)m) and linear term r ((d+1)m,) of θ | Ω, σ, y
    (θ stacked task-major, task i = (w_i, b_i)); ``omega_precision`` is λ Ω⁻¹ (m, m)."""
    m, p = design.moment.shape
    d = p - 1
    H = design.gram / sigma[:, None, None] ** 2
    E = jnp.diag(jnp.concatenate([jnp.ones(d), jnp.zeros(1)]))
    Q = (omega_precision[:, None, :, None] * E[None, :, None, :]
         + jnp.eye(m)[:, None, :, None] * H[:, :, None, :]).reshape(m * p, m * p)
    Q = Q + jnp.diag(jnp.tile(_prior_diagonal(d, ridge, intercept_precision), m))
    return Q, (design.moment / sigma[:, None] ** 2).reshape(-1)


def _perturbation(key, design, sigma, precision_factor, lam, ridge, intercept_precision):
    """(m, d+1) draw z ~ N(0, Q) (see module docstring)."""
    m, p = design.moment.shape
    k_lik, k_omega, k_diag = jax.random.split(key, 3)
    eps = jax.random.normal(k_lik, design.y.shape)
    scale = jnp.sqrt(design.weights) / sigma[design.task]
    z = jax.ops.segment_sum((scale * eps)[:, None] * design.Xa, design.task, m)
    coupled = jnp.sqrt(lam) * precision_factor @ jax.random.normal(k_omega, (m, p - 1))
    z = z + jnp.pad(coupled, ((0, 0), (0, 1)))
    diag = jnp.sqrt(_prior_diagonal(p - 1, ridge, intercept_precision))
    return z + diag * jax.random.normal(k_diag, (m, p))


def _solve_cholesky(design, sigma, omega_precision, ridge, intercept_precision, rhs):
    Q, _ = coefficient_precision(design, sigma, omega_precision, ridge, intercept_precision)
    L = jnp.linalg.cholesky(Q)
    theta = cho_solve((L, True), rhs.reshape(-1)).reshape(rhs.shape)
    return theta, jnp.zeros((), jnp.int32)


def _solve_cg(design, sigma, omega_precision, ridge, intercept_precision, rhs):
    """Q θ = rhs by eliminating the intercepts, then preconditioned CG on the weights.

    With H_i + s_b⁻² F = [[A_i, h_i], [h_iᵀ, c_i]], b_i = (rhs_b,i - h_iᵀ w_i)/c_i and the
    weights solve (H̃_i + ρ I) w_i + Σ_j P_ij w_j = rhs_w,i - h_i rhs_b,i / c_i with the
    Schur complements H̃_i = A_i - h_i h_iᵀ / c_i, P = λΩ⁻¹. Preconditioner: H̃_i ≈ α_i S
    (α_i = tr H̃_i, S = Σ H̃_i / Σ α_i); in the eigenbasis S = U diag(s) Uᵀ the approximate
    system splits into d exact m × m solves (s_k diag(α) + P + ρ I). It is exact for
    features constant within every task (School's school-level columns) and for S-shaped
    tasks; CG runs to a relative residual of 1e-10.
    """
    m, p = rhs.shape
    d = p - 1
    H = design.gram / sigma[:, None, None] ** 2
    c = H[:, d, d] + intercept_precision
    h = H[:, :d, d]
    Ht = H[:, :d, :d] - h[:, :, None] * h[:, None, :] / c[:, None, None]
    r = rhs[:, :d] - h * (rhs[:, d] / c)[:, None]

    def matvec(w):  # w (m, d): task i's weights in row i
        return jnp.einsum("mij,mj->mi", Ht, w) + omega_precision @ w + ridge * w

    alpha = jnp.maximum(jnp.trace(Ht, axis1=1, axis2=2), 1e-300)
    s, U = jnp.linalg.eigh(jnp.sum(Ht, axis=0) / jnp.sum(alpha))
    blocks = (jnp.clip(s, 0.0)[:, None, None] * jnp.diag(alpha)[None] + omega_precision[None]
              + ridge * jnp.eye(m)[None])
    chol = jnp.linalg.cholesky(blocks)  # (d, m, m)

    def precond(v):
        coords = jax.vmap(lambda L, x: cho_solve((L, True), x), in_axes=(0, 1),
                          out_axes=1)(chol, v @ U)
        return coords @ U.T

    bound = _CG_TOL * jnp.linalg.norm(r)

    def body(st):
        x, res, z, direction, rz, k = st
        Ad = matvec(direction)
        step = rz / jnp.vdot(direction, Ad)
        x, res = x + step * direction, res - step * Ad
        z = precond(res)
        rz_new = jnp.vdot(res, z)
        return x, res, z, z + (rz_new / rz) * direction, rz_new, k + 1

    def cond(st):
        return (jnp.linalg.norm(st[1]) > bound) & (st[5] < 10 * m * d)

    z0 = precond(r)
    w, *_, iters = jax.lax.while_loop(
        cond, body, (jnp.zeros_like(r), r, z0, z0, jnp.vdot(r, z0), jnp.zeros((), jnp.int32)))
    b = (rhs[:, d] - jnp.sum(h * w, axis=1)) / c
    return jnp.concatenate([w, b[:, None]], axis=1), iters


_SOLVERS = {"cholesky": _solve_cholesky, "cg": _solve_cg}


def sample_coefficients(key, design, sigma, precision_factor, lam, ridge,
                        intercept_precision, solver="cholesky"):
    """One exact draw of θ = (W, b) | Ω, σ, y as an (m, d+1) array, by perturb-and-solve,
    and the number of CG iterations (0 for the Cholesky solver).

    ``precision_factor`` is G with G Gᵀ = Ω⁻¹; ``sigma`` (m,) the per-task noise sd;
    ``intercept_precision`` is 0 for flat intercepts, else 1/s_b². ``key=None`` returns the
    conditional mean Q⁻¹ r instead of a draw.
    """
    omega_precision = lam * precision_factor @ precision_factor.T
    rhs = design.moment / sigma[:, None] ** 2
    if key is not None:
        rhs = rhs + _perturbation(key, design, sigma, precision_factor, lam, ridge,
                                  intercept_precision)
    return _SOLVERS[solver](design, sigma, omega_precision, ridge, intercept_precision, rhs)


# ----------------------------------------------------------------------------- σ-step


def sample_noise_variance(key, rss, n_eff, noise_scale, current):
    """σ² | rest for σ ~ HalfNormal(noise_scale), elementwise over the noise groups.

    ``rss`` = Σ w_j r_j², ``n_eff`` = Σ w_j per group (> 1), ``current`` the present σ².
    Rejection from IG((n-1)/2, rss/2) with acceptance exp(-u/(2 s²)); keeps ``current`` if
    all of the 64 proposals are rejected (state-independent, so the step stays invariant).
    """
    k_gamma, k_unif = jax.random.split(key)
    shape = (_NOISE_TRIES,) + jnp.shape(rss)
    u = (rss / 2.0) / jax.random.gamma(k_gamma, (n_eff - 1.0) / 2.0, shape)
    accept = jnp.log(jax.random.uniform(k_unif, shape)) < -u / (2.0 * noise_scale**2)
    first = jnp.argmax(accept, axis=0)
    chosen = jnp.take_along_axis(u, first[None], axis=0)[0]
    return jnp.where(jnp.any(accept, axis=0), chosen, current)


# ----------------------------------------------------------------------------- one sweep


class GibbsResult(NamedTuple):
    """Draws of :func:`run_gibbs`.

    samples : dict of (chain, draw, ...) arrays with ``mtl_model``'s site names — ``W``
        (d, m), ``b`` (m,), ``omega`` (m, m) and, for unknown noise, ``noise`` (() or (m,)).
    sample_stats : ``{"cg_iterations": (chain, draw)}`` (zeros for the Cholesky solver).
    """

    samples: dict
    sample_stats: dict


class _Config(NamedTuple):
    """Static settings of the sampler."""

    m: int
    d: int
    noise: str  # "fixed", "shared" or "task"
    solver: str
    scale_moves: bool


def _sweep(config, key, state, design, lam, ridge, intercept_precision, df, scale,
           noise_scale, basis):
    k_theta, k_noise, k_omega = jax.random.split(key, 3)
    theta, iters = sample_coefficients(k_theta, design, state.sigma, state.precision_factor,
                                       lam, ridge, intercept_precision, config.solver)
    sigma = state.sigma
    if config.noise != "fixed":
        resid = design.y - jnp.sum(design.Xa * theta[design.task], axis=1)
        wr2, w = design.weights * resid**2, design.weights
        if config.noise == "shared":
            var = sample_noise_variance(k_noise, jnp.sum(wr2), jnp.sum(w), noise_scale,
                                        sigma[0] ** 2)
            sigma = jnp.full(config.m, jnp.sqrt(var))
        else:
            var = sample_noise_variance(k_noise, jax.ops.segment_sum(wr2, design.task, config.m),
                                        jax.ops.segment_sum(w, design.task, config.m),
                                        noise_scale, sigma**2)
            sigma = jnp.sqrt(var)
    W = theta[:, : config.d].T
    omega, G = sample_inverse_wishart(k_omega, df + config.d, scale + lam * W.T @ W)
    state = GibbsState(theta, omega, G, sigma)
    if config.scale_moves:
        state = scale_moves(jax.random.fold_in(k_omega, 1), state, design, basis, ridge, df,
                            scale)
    return state, iters


# ----------------------------------------------------------------------------- scale moves


def _slice_sample(key, logp, x0, width, max_steps=32):
    """One slice-sampling update (Neal 2003: stepping out, then shrinkage) of a scalar with
    log density ``logp`` from ``x0``; leaves the density invariant."""
    k_level, k_place, k_shrink = jax.random.split(key, 3)
    level = logp(x0) + jnp.log(jax.random.uniform(k_level, dtype=x0.dtype))
    left = x0 - width * jax.random.uniform(k_place, dtype=x0.dtype)
    right = left + width

    def out(edge, direction):
        def cond(c):
            return (c[1] < max_steps) & (logp(c[0]) > level)

        return jax.lax.while_loop(cond, lambda c: (c[0] + direction * width, c[1] + 1),
                                  (edge, 0))[0]

    left, right = out(left, -1.0), out(right, 1.0)

    def shrink_cond(c):
        return ~c[3]

    def shrink(c):
        lo, hi, key, _, _ = c
        key, sub = jax.random.split(key)
        x = lo + (hi - lo) * jax.random.uniform(sub, dtype=x0.dtype)
        ok = logp(x) > level
        lo = jnp.where(~ok & (x < x0), x, lo)
        hi = jnp.where(~ok & (x >= x0), x, hi)
        return lo, hi, key, ok | (hi - lo < 1e-12), jnp.where(ok, x, x0)

    return jax.lax.while_loop(shrink_cond, shrink, (left, right, k_shrink, False, x0))[4]


def scale_moves(key, state, design, basis, ridge, df, scale):
    """Joint rescalings of W and Ω along fixed task-space directions (a generalised Gibbs
    step, Liu & Sabatti 2000), one per column v of the orthonormal ``basis`` (m, m).

    For T_c = I + (c - 1) v vᵀ, c > 0, the move (W, Ω) ↦ (W T_c, T_c Ω T_c) leaves
    tr(W Ω⁻¹ Wᵀ) unchanged and scales |Ω| by c²; with the Jacobian c^{d+m+1} and the Haar
    measure dc/c, s = ln c has log density
        -½ Σ_j c_j (r_j - (c - 1) g_j)² - ν s - (ρ/2) c² ‖W v‖²
        - ½ tr(Ψ T_c⁻¹ Ω⁻¹ T_c⁻¹),
    with residuals r, g_j = v_{t_j} x_jᵀ W v and row precisions c_j = w_j / σ²; it is
    sampled exactly by slice sampling, so each move leaves the posterior invariant. The
    basis must not depend on the chain's state (``run_gibbs`` uses the eigenvectors of
    Ψ + λ W̄ᵀW̄ for the conditional mean W̄ at Ω = I). These moves shift the scale of W and Ω
    together along a direction — the ridge on which the W/Ω alternation otherwise random-walks.
    """
    m, p = state.theta.shape
    d = p - 1
    X = design.Xa[:, :d]
    prec_rows = design.weights / state.sigma[design.task] ** 2
    resid = design.y - jnp.sum(design.Xa * state.theta[design.task], axis=1)

    def move(k, carry):
        theta, omega, G, resid, key = carry
        key, sub = jax.random.split(key)
        v = basis[:, k]
        u = theta[:, :d].T @ v  # W v (d,)
        g = v[design.task] * (X @ u)
        a, b = jnp.sum(prec_rows * g * g), jnp.sum(prec_rows * g * resid)
        Gv = G.T @ v  # vᵀΩ⁻¹v = ‖Gᵀv‖²
        omega_inv_v = G @ Gv
        v_psi_v, q = v @ scale @ v, Gv @ Gv
        cross = omega_inv_v @ scale @ v  # vᵀ Ω⁻¹ Ψ v
        uu = u @ u

        def logp(t):
            c = jnp.exp(t)
            delta = 1.0 / c - 1.0
            return ((c - 1.0) * b - 0.5 * (c - 1.0) ** 2 * a - df * t
                    - 0.5 * ridge * c**2 * uu
                    - 0.5 * (2.0 * delta * cross + delta**2 * v_psi_v * q))

        curvature = a + 2.0 * ridge * uu + 2.0 * v_psi_v * q + jnp.abs(b) + 1.0
        t = _slice_sample(sub, logp, jnp.zeros((), resid.dtype),
                          2.0 * jnp.minimum(1.0, 1.0 / jnp.sqrt(curvature)))
        c = jnp.exp(t)
        theta = theta.at[:, :d].add((c - 1.0) * v[:, None] * u[None, :])
        Tv = omega @ v
        omega = (omega + (c - 1.0) * (jnp.outer(v, Tv) + jnp.outer(Tv, v))
                 + (c - 1.0) ** 2 * (v @ Tv) * jnp.outer(v, v))
        G = G + (1.0 / c - 1.0) * jnp.outer(v, Gv)
        return theta, omega, G, resid - (c - 1.0) * g, key

    theta, omega, G, _, _ = jax.lax.fori_loop(
        0, basis.shape[1], move, (state.theta, state.omega, state.precision_factor, resid, key))
    return GibbsState(theta, omega, G, state.sigma)


def _record(config, state):
    out = {"W": state.theta[:, : config.d].T, "b": state.theta[:, config.d],
           "omega": state.omega}
    if config.noise == "shared":
        out["noise"] = state.sigma[0]
    elif config.noise == "task":
        out["noise"] = state.sigma
    return out


@partial(jax.jit, static_argnames=("config", "num_warmup", "num_samples"))
def _run_chain(config, key, design, lam, ridge, intercept_precision, df, scale, noise_scale,
               sigma0, basis, num_warmup, num_samples):
    """One chain: Ω from a prior draw, ``num_warmup`` discarded sweeps, ``num_samples`` kept."""
    k_init, k_warm, k_draw = jax.random.split(key, 3)
    omega, G = sample_inverse_wishart(k_init, df, scale)
    state = GibbsState(jnp.zeros((config.m, config.d + 1)), omega, G, sigma0)
    step = partial(_sweep, config, design=design, lam=lam, ridge=ridge,
                   intercept_precision=intercept_precision, df=df, scale=scale,
                   noise_scale=noise_scale, basis=basis)
    state, _ = jax.lax.scan(lambda s, k: (step(k, s)[0], None), state,
                            jax.random.split(k_warm, num_warmup))

    def draw(s, k):
        s, iters = step(k, s)
        return s, (_record(config, s), iters)

    _, out = jax.lax.scan(draw, state, jax.random.split(k_draw, num_samples))
    return out


# ----------------------------------------------------------------------------- public API


def _move_basis(design, hyper, solver, m):
    """(m, m) eigenvectors of Ψ + λ W̄ᵀW̄, W̄ the conditional mean of W at Ω = I and the
    initial σ: a data-dependent but state-independent basis for :func:`scale_moves`."""
    lam, ridge, intercept_precision, _, scale, _, sigma0 = hyper
    theta, _ = sample_coefficients(None, design, sigma0, jnp.eye(m), lam, ridge,
                                   intercept_precision, solver)
    W = theta[:, :-1].T
    return jnp.linalg.eigh(scale + lam * W.T @ W)[1]


def _validate(data, prior, likelihood, lam, ridge, intercept_scale, num_warmup, num_samples,
              num_chains, solver):
    require_data(data, "run_gibbs")
    if data.kind != "regression":
        raise ValueError("the Gibbs sampler needs a regression data set (Gaussian likelihood);"
                         f" got kind={data.kind!r}. Use run_nuts for classification")
    if not isinstance(likelihood, Gaussian):
        raise ValueError("the conjugate Gibbs sampler supports the Gaussian likelihood only; got "
                         f"{type(likelihood).__name__}. Use run_nuts on mtl_model instead")
    likelihood.check()
    if not isinstance(prior, InverseWishart):
        raise PriorError("the conjugate Gibbs sampler needs an InverseWishart prior on Ω; got "
                         f"{type(prior).__name__}. Use run_nuts on mtl_model for other priors")
    prior.check(data.n_tasks)
    if not lam > 0:
        raise ValueError(f"lam (λ) must be positive; got {lam}")
    if not ridge >= 0:
        raise ValueError(f"ridge (ρ) must be non-negative; got {ridge}")
    if intercept_scale is not None and not intercept_scale > 0:
        raise ValueError(f"intercept_scale must be positive or None; got {intercept_scale}")
    if solver not in ("auto",) + tuple(_SOLVERS):
        raise ValueError(f"solver must be 'auto', 'cholesky' or 'cg'; got {solver!r}")
    for name, v, low in (("num_warmup", num_warmup, 0), ("num_samples", num_samples, 1),
                         ("num_chains", num_chains, 1)):
        if not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an integer ≥ {low}; got {v!r}")


def run_gibbs(data: MultiTaskData, prior: InverseWishart, *, lam: float = 1.0,
              likelihood: Gaussian | None = None, ridge: float = 0.0,
              intercept_scale: float | None = None, loss_scale: str = "sum",
              num_warmup: int = 500, num_samples: int = 500, num_chains: int = 2, seed: int = 0,
              solver: str = "auto", scale_moves: bool = False) -> GibbsResult:
    """Blocked Gibbs sampling of ``mtl_model`` under an InverseWishart prior and a Gaussian
    likelihood (see the module docstring for the model and the three conditional draws).
    With ``scale_moves=True`` each sweep ends with m joint rescalings of (W, Ω) along a fixed
    orthonormal basis of task space (:func:`scale_moves`).

    Parameters mirror :func:`~bayesmtl.models.matrix_normal.mtl_model`: ``prior`` is an
    ``InverseWishart``, ``likelihood`` a ``Gaussian`` (default ``Gaussian(1.0)``; noise a float,
    "shared" or "task" with the HalfNormal(noise_scale) prior), ``lam`` λ, ``ridge`` ρ,
    ``intercept_scale`` None (flat) or s_b, ``loss_scale`` "sum" (proper likelihood) or "mean"
    (rows tempered by 1/n_i). Chains run one after another; each starts from Ω drawn from
    the prior and σ = sd(y) and runs ``num_warmup`` discarded sweeps, then ``num_samples``
    kept sweeps.
    ``solver`` is "cholesky" (dense factorisation of the (d+1)m × (d+1)m precision, O((dm)³)
    per sweep), "cg" (intercepts eliminated, Kronecker-preconditioned CG on the weights) or
    "auto" (Cholesky up to (d+1)m = 1000 unknowns, else CG).

    Returns a :class:`GibbsResult`; ``to_datatree(result.samples, task_names=data.task_names,
    feature_names=data.feature_names, sample_stats=result.sample_stats)`` exports it.
    """
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    _validate(data, prior, likelihood, lam, ridge, intercept_scale, num_warmup, num_samples,
              num_chains, solver)
    m, d = data.n_tasks, data.n_features
    weights = row_weights(data.task, m, loss_scale)
    noise = likelihood.noise if isinstance(likelihood.noise, str) else "fixed"
    if noise != "fixed":
        n_eff = (np.bincount(data.task, weights, minlength=m) if noise == "task"
                 else np.array([weights.sum()]))
        if np.any(n_eff <= 1.0):
            raise ValueError(
                f"noise={noise!r} with loss_scale={loss_scale!r} leaves a noise scale with "
                f"effective sample size Σ w_j = {n_eff.min():.3g} ≤ 1; the σ-step needs > 1. "
                "Use loss_scale='sum', noise='shared' or a fixed noise")
        sigma0 = np.full(m, np.std(data.y) if np.std(data.y) > 0 else 1.0)
    else:
        sigma0 = np.full(m, float(likelihood.noise))
    design = _design(jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task),
                     jnp.asarray(weights), m)
    if solver == "auto":
        solver = "cholesky" if (d + 1) * m <= 1000 else "cg"
    config = _Config(m, d, noise, solver, bool(scale_moves))
    hyper = (float(lam), float(ridge),
             0.0 if intercept_scale is None else float(intercept_scale) ** -2,
             prior._df(m), jnp.asarray(prior._scale(m)), float(likelihood.noise_scale),
             jnp.asarray(sigma0))
    basis = _move_basis(design, hyper, solver, m)
    chains = []
    for key in jax.random.split(jax.random.PRNGKey(seed), num_chains):
        # chains run one after another (one compiled kernel; a vmapped batch was much slower
        # on CPU), each chain as a single lax.scan
        chains.append(jax.device_get(_run_chain(config, key, design, *hyper, basis,
                                                int(num_warmup), int(num_samples))))
    samples = {k: np.stack([c[0][k] for c in chains]) for k in chains[0][0]}
    return GibbsResult(samples, {"cg_iterations": np.stack([c[1] for c in chains])})
