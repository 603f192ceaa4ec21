"""The MAP loops over W: the profile problem of the spectral members and the W-steps.

Every member of the g(Ω) family whose Ω-step is a closed-form spectral function of WᵀW (MTRL,
Schatten, squared Schatten, clustered) reduces, after minimising over Ω, to a profile problem
``min_{W,b} L(W, b) + (ρ/2)‖W‖²_F + R(W)`` with a spectral penalty R. The loops here take R
through ``prox(V, step, args)`` = argmin_Z R(Z) + ‖Z - V‖²/(2 step) and ``penalty(W, args)`` =
R(W); ``args`` is a pytree of the penalty's hyperparameters (traced, so changing λ does not
recompile). prox and penalty must be module-level functions (static arguments of the jitted
loops). A prox may return the pair (Z, R(Z)) when it has R(Z) for free (the spectral proxes
know Z's singular values): the ADMM loop then needs no second decomposition per iteration.
:func:`solve_profile` dispatches to ADMM with exact per-task W-solves
(:func:`profile_admm`), FISTA (:func:`profile_proximal`) or the alternating W/Ω scheme
(:func:`profile_alternating`).

The W-steps of the alternating members (:func:`w_step`: exact Gaussian solve, Newton–CG for
the logistic likelihood) live here too.
"""

from __future__ import annotations

import warnings
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..data import require_data
from ..errors import ConvergenceWarning
from ..models.losses import linear_predictor, row_weights
from .prox import quadratic_prox
from .solvers import (
    CG_BEFORE_FACTORING,
    DENSE_SYSTEM_MAX,
    coupled_block_matvec,
    coupled_block_solve,
    fista,
    newton_cg,
)
from .stats import (
    GaussianTerm,
    LogisticTerm,
    data_loss,
    data_term,
    resolve_noise,
    stacked_parameters,
)


def _prox_value(prox, penalty, V, step, args):
    """(prox(V, step, args), R at it), whichever of the two forms ``prox`` returns."""
    out = prox(V, step, args)
    return out if isinstance(out, tuple) else (out, penalty(out, args))


@partial(jax.jit, static_argnames=("spectrum",))
def omega_from_W_spectrum(W, spectrum, args=(), eps=0.0):
    """Ω (m, m) = V diag(spectrum(a, args)) Vᵀ where WᵀW + εI = V diag(a) Vᵀ.

    Every closed-form Ω-step of the g(Ω) family (MTRL, Schatten, squared Schatten) is a
    spectral function of WᵀW; ``spectrum`` maps its eigenvalues a (m,) to Ω's.
    """
    d, m = W.shape
    if m <= d:
        evals, evecs = jnp.linalg.eigh(W.T @ W + eps * jnp.eye(m))
        return (evecs * spectrum(jnp.clip(evals, 0.0), args)) @ evecs.T
    # more tasks than features: WᵀW = V diag(s²) Vᵀ has rank ≤ d, so from the thin SVD
    # (O(m d²), not an m × m eigendecomposition) Ω = e₀ I + V diag(e - e₀) Vᵀ, e₀ the value
    # of the spectrum on the (m - d)-fold eigenvalue ε
    _, s, Vt = jnp.linalg.svd(W, full_matrices=False)
    a = jnp.concatenate([s**2 + eps, jnp.full(m - d, eps, s.dtype)])
    e = spectrum(a, args)
    return e[-1] * jnp.eye(m) + (Vt.T * (e[:d] - e[-1])) @ Vt


@cache
def reciprocal_spectrum(spectrum):
    """a ↦ 1 / spectrum(a, args): the precision's eigenvalues (one function object per
    spectrum, so the jitted :func:`omega_from_W_spectrum` compiles it once)."""
    def reciprocal(a, args):
        return 1.0 / spectrum(a, args)
    return reciprocal


class MTRLResult(NamedTuple):
    """MAP of MTRL (or another profile model): W (d, m), b (m,), omega (m, m), objective,
    history, n_iter, converged, residual (KKT residual of the proximal solve, max of the ADMM
    primal/dual residuals, or relative W change for alternating)."""

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


def profile_objective(W, b, X, y, task, weights, ridge, penalty, args, classification=False,
                      noise=1.0):
    """L(W, b) + (ρ/2)‖W‖²_F + penalty(W, args)."""
    return (_data_loss(X, y, task, weights, W, b, classification, noise)
            + 0.5 * ridge * jnp.sum(W**2) + penalty(W, args))


def _inputs(data, loss_scale, noise):
    """The rows as JAX arrays (for the samplers and the row-based reference objectives)."""
    classification = data.kind == "classification"
    weights = row_weights(data.task, data.n_tasks, loss_scale)
    return (jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task),
            jnp.asarray(weights), classification, resolve_noise(noise))


def solve_profile(data, *, name, method, prox, penalty, args, omega_spectrum, omega0,
                  lam, ridge=0.0, loss_scale="mean", noise=None, fit_intercept=True,
                  max_iter=5000, tol=1e-12, init=None,
                  methods=("admm", "proximal", "alternating")) -> MTRLResult:
    """MAP of a profile model: dispatch to ADMM, FISTA or the alternating W/Ω scheme.

    prox, penalty, args : the profile penalty R (see the comment above).
    omega_spectrum(a, args) : Ω's eigenvalues from those of WᵀW (the closed-form Ω-step).
    omega0 : (m, m) Ω for the first W-step of the alternating scheme.
    lam : λ (precision scale of the matrix-normal prior), used by the alternating scheme.
    methods : the methods valid for this penalty (a non-convex R excludes "admm"); "auto"
        takes the first valid one of admm, proximal, alternating (proximal for
        classification).
    """
    require_data(data, name, statistics=True)
    term = data_term(data, loss_scale, noise, fit_intercept)
    classification = isinstance(term, LogisticTerm)
    d, m = data.n_features, data.n_tasks
    W0, b0 = (jnp.zeros((d, m)), jnp.zeros(m)) if init is None else map(jnp.asarray, init)
    if not fit_intercept:
        b0 = jnp.zeros(m)
    if method == "auto":
        order = ("proximal",) if classification else ("admm", "proximal", "alternating")
        method = next((m_ for m_ in order if m_ in methods), "unavailable")
        if method == "unavailable":
            raise ValueError(f"{name}: no method for classification with this non-convex "
                             f"penalty (valid: {methods}, Gaussian likelihood only)")
    if method in ("admm", "alternating") and classification:
        raise ValueError(f"method={method!r} has an exact W-step for the Gaussian likelihood "
                         "only; use method='proximal' for classification")
    if method in ("admm", "proximal", "alternating") and method not in methods:
        raise ValueError(f"method={method!r} is not available for {name}: its profile "
                         f"penalty is non-convex; use one of {methods}")
    if method == "admm":
        W, b, res = profile_admm(term, ridge, prox, penalty, args, W0, b0, max_iter, tol,
                                 spectrum=_cached_spectrum(data, term, d))
    elif method == "proximal":
        W, b, res = profile_proximal(term, ridge, prox, penalty, args, W0, b0, max_iter, tol,
                                     fit_intercept)
    elif method == "alternating":
        W, b, res = profile_alternating(term, ridge, lam, omega_spectrum, penalty, args,
                                        jnp.asarray(omega0), W0, b0, max_iter, tol)
    else:
        raise ValueError(f"method must be 'auto', 'admm', 'proximal' or 'alternating'; got "
                         f"{method!r}")
    objective, history, n_iter, converged, residual = res
    history = np.asarray(history)
    history = history[~np.isnan(history)]
    if not bool(converged):
        warnings.warn(f"{name} {method} solver stopped after {int(n_iter)} iterations without "
                      f"meeting tol={tol} (residual {float(residual):.2e})",
                      ConvergenceWarning, stacklevel=3)
    omega = omega_from_W_spectrum(W, omega_spectrum, args)
    return MTRLResult(np.asarray(W), np.asarray(b), np.asarray(omega), float(objective),
                      history, int(n_iter), bool(converged), float(residual))


@jax.jit(static_argnames=("prox", "penalty", "max_iter", "fit_intercept"))
def profile_proximal(term, ridge, prox, penalty, args, W0, b0, max_iter, tol,
                     fit_intercept=True):
    """FISTA on L(W, b) + (ρ/2)‖W‖² + R(W) (any likelihood: ``term`` from
    :func:`~bayesmtl.inference.stats.data_term`). Returns W, b and
    ``(objective, history, n_iter, converged, residual)``."""
    d, m = W0.shape

    def unpack(x):
        W = x[: d * m].reshape(d, m)
        return W, (x[d * m:] if fit_intercept else jnp.zeros(m, x.dtype))

    def smooth(x):
        W, b = unpack(x)
        return data_loss(term, W, b) + 0.5 * ridge * jnp.sum(W**2)

    def prox_x(x, step):
        W = _prox_value(prox, penalty, x[: d * m].reshape(d, m), step, args)[0].ravel()
        return jnp.concatenate([W, x[d * m:]])

    x0 = jnp.concatenate([W0.ravel(), b0]) if fit_intercept else W0.ravel()
    out = fista(smooth, prox_x, lambda x: penalty(unpack(x)[0], args), x0, max_iter=max_iter,
                tol=tol)
    W, b = unpack(out.x)
    return W, b, (out.objective, out.history, out.n_iter, out.converged, out.residual)


@partial(jax.jit, static_argnames=("d",))
def centred_spectrum(term: GaussianTerm, d: int):
    """(s (m, d), Q (m, d, d)): S_i = Q_i diag(s_i) Q_iᵀ for the centred Gram blocks of
    :func:`centred_blocks`, the factorisation behind the ADMM W-step (:func:`_eigen_w_solver`).
    """
    return jnp.linalg.eigh(centred_blocks(term, d)[0])


def _cached_spectrum(data, term: GaussianTerm, d: int):
    """:func:`centred_spectrum` of ``term``, kept on ``data`` for the term it was computed
    from (the one :func:`~bayesmtl.inference.stats.data_term` caches there), so a λ path or
    grid on the same data factors the blocks once: at m = 1,000, d = 100 the batched eigh
    takes ≈ 1.1 s of a 3 s MTRL fit; on School (139 blocks of 28 × 28) 4 ms of 25 ms."""
    hit = data._cache.get("centred_spectrum")
    if hit is None or hit[0] is not term:
        hit = (term, centred_spectrum(term, d))
        data._cache["centred_spectrum"] = hit
    return hit[1]


def _eigen_w_solver(term: GaussianTerm, ridge, d: int, spectrum=None):
    """Exact solver of the ADMM W-step for every penalty ρ_a, O(m d²) per call.

    The W-step minimises Σ_i [½θ_iᵀH_iθ_i - r_iᵀθ_i] + (ρ/2)‖W‖² + (ρ_a/2)‖W - V‖²
    (θ_i = (w_i, b_i)). The intercept is eliminated exactly (Schur complement
    S_i = H_ww - h hᵀ/h_bb, the task's centred Gram matrix), and S_i = Q_i diag(s_i) Q_iᵀ is
    factored once, so w_i = Q_i diag(1/(s_i + ρ + ρ_a)) Q_iᵀ (r̃_i + ρ_a v_i) for any ρ_a.
    Returns ``solve(V, rho_a) -> (W, b)``; a term without intercept (D = d) gives b = 0.
    ``spectrum``: the blocks' (s, Q) when already computed (:func:`centred_spectrum`).
    """
    _, r, intercept = centred_blocks(term, d)
    s, Q = centred_spectrum(term, d) if spectrum is None else spectrum
    s = jnp.clip(s, 0.0) + ridge
    Qr = jnp.einsum("mji,mj->mi", Q, r)  # Q_iᵀ r̃_i

    def solve(V, rho):
        t = (Qr + rho * jnp.einsum("mji,jm->mi", Q, V)) / (s + rho)
        W = jnp.einsum("mij,mj->im", Q, t)
        return W, intercept(W)

    return solve


def centred_blocks(term: GaussianTerm, d: int):
    """The Gaussian loss with the unpenalised intercepts minimised out: (S (m, d, d), r̃ (m, d),
    intercept) with min_b L(W, b) = Σ_i ½w_iᵀS_iw_i - r̃_iᵀw_i + const, S_i = H_ww - h hᵀ/h_bb
    (the task's centred Gram matrix, a Schur complement) and ``intercept(W)`` (m,) the
    minimising b. A term without intercept (d × d blocks) gives S = H and b = 0."""
    H, rhs = term.H, term.rhs
    m = rhs.shape[0]
    if rhs.shape[1] != d + 1:
        return H, rhs, lambda W: jnp.zeros(m, W.dtype)
    h, hbb = H[:, :d, d], H[:, d, d]
    safe = jnp.where(hbb > 0, hbb, 1.0)  # a task without rows keeps b = 0
    S = H[:, :d, :d] - h[:, :, None] * h[:, None, :] / safe[:, None, None]
    r = rhs[:, :d] - h * (rhs[:, d] / safe)[:, None]
    return S, r, lambda W: (rhs[:, d] - jnp.einsum("mi,im->m", h, W)) / safe


class _AdmmState(NamedTuple):
    x: jax.Array  # accepted point (Z, U) flattened
    tx: jax.Array  # ADMM map at x (or, in warm-up, the next point)
    W: jax.Array
    b: jax.Array
    primal: jax.Array
    dual: jax.Array
    rho: jax.Array
    dX: jax.Array  # (memory, 2dm) Anderson differences of points (a ring buffer)
    dG: jax.Array  # (memory, 2dm) and of fixed-point residuals
    gram: jax.Array  # (memory, memory) dG dGᵀ, kept up to date row by row
    pushes: jax.Array  # rows written since the last reset: the next row is pushes mod
    #                    memory, the valid ones the first min(pushes, memory)
    f_prev: jax.Array
    f: jax.Array
    hist: jax.Array
    n_eval: jax.Array
    it: jax.Array


@jax.jit(static_argnames=("prox", "penalty", "max_iter", "memory", "warmup"))
def profile_admm(term: GaussianTerm, ridge, prox, penalty, args, W0, b0, max_iter, tol, *,
                 relaxation=1.5, memory=10, warmup=10, spectrum=None):
    """ADMM for the Gaussian profile problem  min L(W, b) + (ρ/2)‖W‖² + R(Z)  s.t.  W = Z,
    L from the sufficient statistics ``term`` (no intercept when its blocks are d × d).

    One ADMM map T: (Z, U) ↦ (Z⁺, U⁺) with ρ_a the ADMM penalty:
      W, b = exact per-task solve with V = Z - U (:func:`_eigen_w_solver`),
      Ŵ = α W + (1 - α) Z (over-relaxation, α = ``relaxation``),
      Z⁺ = ``prox(Ŵ + U, 1/ρ_a, args)``,  U⁺ = U + Ŵ - Z⁺.
    The first ``warmup`` iterations are plain ADMM with residual balancing of ρ_a (Boyd et
    al. 3.4.1); then ρ_a is frozen and the fixed-point iteration of T is accelerated by
    safeguarded type-II Anderson acceleration (``memory`` past steps; a step is kept only if
    it lowers the fixed-point residual ‖T(x) - x‖, else the plain step is taken and the
    memory cleared; ``memory=0`` gives plain balanced ADMM). Stops when the primal
    ‖W - Z⁺‖ and dual ρ_a‖Z⁺ - Z‖ residuals meet Boyd et al.'s tolerances (absolute 1e-12,
    relative √tol) and the objective at Z⁺ changed by at most ``tol`` relatively.
    ``spectrum``: :func:`centred_spectrum` of ``term`` when the caller has it (computed here
    otherwise). Returns Z⁺, b and ``(objective, history, n_iter, converged, residual)``;
    n_iter counts evaluations of T.
    """
    d, m = W0.shape
    n = d * m
    solve = _eigen_w_solver(term, ridge, d, spectrum)
    H = term.H
    abs_tol, rel_tol = 1e-12, jnp.sqrt(tol)
    alpha = relaxation
    flat = lambda Z, U: jnp.concatenate([Z.ravel(), U.ravel()])  # noqa: E731
    unflat = lambda v: (v[:n].reshape(d, m), v[n:].reshape(d, m))  # noqa: E731

    def smooth(W, b):
        return data_loss(term, W, b) + 0.5 * ridge * jnp.sum(W**2)

    def objective(W, b):
        return smooth(W, b) + penalty(W, args)

    def admm_map(x, rho):
        Z, U = unflat(x)
        W, b = solve(Z - U, rho)
        W_hat = alpha * W + (1.0 - alpha) * Z
        Z_new, r_new = _prox_value(prox, penalty, W_hat + U, 1.0 / rho, args)
        U_new = U + W_hat - Z_new
        primal = jnp.linalg.norm(W - Z_new)
        dual = rho * jnp.linalg.norm(Z_new - Z)
        return flat(Z_new, U_new), W, b, primal, dual, smooth(Z_new, b) + r_new  # F(Z⁺, b)

    def body(s: _AdmmState):
        plain = (s.it < warmup) | (memory == 0)
        g = s.tx - s.x
        k = s.gram.shape[0]
        count = jnp.minimum(s.pushes, memory)
        mask = jnp.arange(k) < count
        gram = jnp.where(mask[:, None] & mask[None, :], s.gram, jnp.eye(k))
        gram = gram + 1e-10 * jnp.trace(gram) / k * jnp.eye(k)
        gamma = jnp.linalg.solve(gram, jnp.where(mask, s.dG @ g, 0.0))
        anderson = s.tx - gamma @ s.dX - gamma @ s.dG  # not dX.T @ γ: no transposed copy
        candidate = jnp.where(plain | (count == 0), s.tx, anderson)
        tx, W, b, primal, dual, f_new = admm_map(candidate, s.rho)
        g_new = tx - candidate
        accept = plain | (count == 0) | (jnp.linalg.norm(g_new) <= jnp.linalg.norm(g))

        def keep(_):
            return candidate, tx, W, b, primal, dual, f_new

        def fallback(_):  # the plain ADMM step from the accepted point
            return (s.tx, *admm_map(s.tx, s.rho))

        x, tx, W, b, primal, dual, f_new = jax.lax.cond(accept, keep, fallback, None)
        push = accept & ~plain & (s.it > warmup)
        # one row of the ring buffer and of its Gram matrix changes (in place: copying the
        # (memory, 2dm) buffers every iteration cost more than the ADMM map on School)
        row = s.pushes % k
        dX = s.dX.at[row].set(jnp.where(push, candidate - s.x, s.dX[row]))
        dG = s.dG.at[row].set(jnp.where(push, g_new - g, s.dG[row]))
        cross = jnp.where(push, dG @ dG[row], s.gram[row])
        gram = s.gram.at[row].set(cross).at[:, row].set(cross)
        pushes = jnp.where(accept, s.pushes + push, 0)
        # residual balancing while plain; U is the scaled dual, so rescale it
        scale = jnp.where(primal > 10 * dual, 2.0, jnp.where(dual > 10 * primal, 0.5, 1.0))
        scale = jnp.where(plain, scale, 1.0)
        tx = tx.at[n:].divide(scale)
        return _AdmmState(x, tx, W, b, primal, dual, s.rho * scale, dX, dG, gram, pushes, s.f,
                          f_new, s.hist.at[s.it].set(f_new),
                          s.n_eval + 1 + (~accept).astype(s.n_eval.dtype), s.it + 1)

    def cond(s: _AdmmState):
        Z, U = unflat(s.tx)
        eps_pri = jnp.sqrt(n) * abs_tol + rel_tol * jnp.maximum(jnp.linalg.norm(s.W),
                                                               jnp.linalg.norm(Z))
        eps_dual = jnp.sqrt(n) * abs_tol + rel_tol * s.rho * jnp.linalg.norm(U)
        stalled = jnp.abs(s.f_prev - s.f) <= tol * jnp.maximum(1.0, jnp.abs(s.f))
        return (s.it < max_iter) & ~((s.primal <= eps_pri) & (s.dual <= eps_dual) & stalled)

    rho0 = jnp.maximum(1e-3, jnp.mean(jnp.trace(H, axis1=1, axis2=2)) / H.shape[-1])
    x0 = flat(W0, jnp.zeros_like(W0))
    k = max(memory, 1)
    inf = jnp.asarray(jnp.inf)
    init = _AdmmState(x0, x0, W0, b0, inf, inf, rho0, jnp.zeros((k, 2 * n)),
                      jnp.zeros((k, 2 * n)), jnp.zeros((k, k)), jnp.asarray(0), inf,
                      objective(W0, b0),
                      jnp.full((max_iter,), jnp.nan), jnp.asarray(0), jnp.asarray(0))
    s = jax.lax.while_loop(cond, body, init)
    Z, _ = unflat(s.tx)
    return Z, s.b, (objective(Z, s.b), s.hist, s.n_eval, s.it < max_iter,
                    jnp.maximum(s.primal, s.dual))


@partial(jax.jit, static_argnames=("max_cg",))
def gaussian_w_step(term: GaussianTerm, precision, ridge, W0, b0, tol=1e-13, max_cg=None):
    """Exact minimiser over (W, b) of L(W, b) + ½ tr(W P Wᵀ) + (ρ/2)‖W‖² for the Gaussian
    ``term`` and a task precision P (m, m): the linear system blockdiag(H_i) + (P + ρI) ⊗ E
    (E on w, not b) by :func:`~bayesmtl.inference.solvers.coupled_block_solve` (block-Jacobi
    CG to relative residual ``tol``; a small system that CG does not solve in 250 steps, nor
    at its rate so far within 750 more, e.g. with a nearly singular P, is factored, a large
    one gets 20 steps per unknown; with
    ``max_cg``, CG alone for at most that many steps). Without intercept (d × d blocks) b is
    zero."""
    d, m = W0.shape
    H, rhs = term.H, term.rhs
    theta = coupled_block_solve(H, precision + ridge * jnp.eye(m), _prior_selector(term, d),
                                rhs, stacked_parameters(term, W0, b0), tol=tol,
                                solve="auto" if max_cg is None else "cg", max_cg=max_cg)
    b = theta[:, d] if H.shape[-1] == d + 1 else jnp.zeros(m, theta.dtype)
    return theta[:, :d].T, b


def _prior_selector(term: GaussianTerm, d: int):
    """(D,) 1 on the entries of θ_i the task prior acts on (w_i), 0 on the intercept."""
    return jnp.ones(term.H.shape[-1]).at[d:].set(0.0)


@jax.jit
def gaussian_w_residual(term: GaussianTerm, precision, W, b):
    """‖Aθ - r‖/‖r‖ of the W-step's normal equations A = blockdiag(H_i) + P ⊗ E at (W, b)
    (:func:`gaussian_w_step` with ρ = 0): 0 at the exact W-step."""
    theta = stacked_parameters(term, W, b)
    lhs = coupled_block_matvec(term.H, precision, _prior_selector(term, W.shape[0]), theta)
    return jnp.linalg.norm(lhs - term.rhs) / jnp.maximum(jnp.linalg.norm(term.rhs), 1e-300)


@jax.jit(static_argnames=("omega_spectrum", "penalty", "max_iter"))
def profile_alternating(term: GaussianTerm, ridge, lam, omega_spectrum, penalty, args,
                        omega0, W0, b0, max_iter, tol, eps_decay=0.9):
    """Alternate the exact W-step (precision λΩ⁻¹, :func:`gaussian_w_step`) and the
    closed-form Ω-step Ω = V diag(omega_spectrum(a)) Vᵀ of WᵀW + ε_k I = V diag(a) Vᵀ,
    ε_k = max(ε, eps_decay^k ‖W‖²_F/m) decreasing to ε = 1e-10 max(1, ‖W0‖²), which keeps Ω
    invertible. The first W-step uses ``omega0``. Once ε_k = ε each step decreases the
    ε-smoothed joint objective, so the scheme reaches a stationary point of it (the global
    minimum when the profile is convex; slow when that optimum is rank-deficient). Returns
    W, b and ``(objective, history, n_iter, converged, relative W change)``, the objective
    being the profile one."""
    m = W0.shape[1]
    eps = 1e-10 * jnp.maximum(1.0, jnp.sum(W0**2))
    e0, v0 = jnp.linalg.eigh(omega0)
    precision0 = lam * (v0 / e0) @ v0.T

    def precision_of(W, it):
        # ε-continuation (as in iteratively reweighted rank minimisation): a large floor
        # early avoids freezing small singular values, then it decays to ε
        floor = jnp.maximum(eps, eps_decay ** it * jnp.sum(W**2) / m)
        evals, evecs = jnp.linalg.eigh(W.T @ W + floor * jnp.eye(m))
        omega_evals = omega_spectrum(jnp.clip(evals, 0.0) + 0.0, args)
        return lam * (evecs / omega_evals) @ evecs.T  # λ Ω⁻¹

    def objective(W, b):
        return data_loss(term, W, b) + 0.5 * ridge * jnp.sum(W**2) + penalty(W, args)

    def body(s):
        W, b, prev, _, hist, it = s
        precision = jnp.where(it == 0, precision0, precision_of(W, it))
        W_new, b_new = gaussian_w_step(term, precision, ridge, W, b)
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


@jax.jit
def _logistic_w_step(term: LogisticTerm, precision, W0, b0):
    """Exact (Newton–CG) minimiser over (W, b) of the weighted logistic loss + ½tr(W P Wᵀ)."""
    d, m = W0.shape
    X, task, weights = term.X, term.task, term.weights
    Xa = jnp.concatenate([X, jnp.ones((X.shape[0], 1))], axis=1)
    pen = jnp.diag(jnp.concatenate([jnp.ones(d), jnp.zeros(1)]))

    def fun(theta):
        W, b = theta[:, :d].T, theta[:, d]
        return data_loss(term, W, b) + 0.5 * jnp.sum(W * (W @ precision))

    def blocks(theta):
        f = jnp.sum(Xa * theta[task], axis=1)
        s = jax.nn.sigmoid(f)
        c = weights * s * (1 - s)
        H = jax.ops.segment_sum(c[:, None, None] * Xa[:, :, None] * Xa[:, None, :], task, m)
        return H + jnp.diag(precision)[:, None, None] * pen[None] + 1e-10 * jnp.eye(d + 1)

    theta = newton_cg(fun, jnp.concatenate([W0.T, b0[:, None]], axis=1), blocks)
    return theta[:, :d].T, theta[:, d]


def w_step(term, precision, W0, b0, spectrum=None):
    """The exact W-step argmin_{W, b} L(W, b) + ½ tr(W P Wᵀ) for a data term from
    :func:`~bayesmtl.inference.stats.data_term` and a task precision P (m, m). ``spectrum``:
    optionally a function returning the term's :func:`centred_spectrum` (e.g. the one cached
    on the data, :func:`_cached_spectrum`), called only by the large-system path."""
    if isinstance(term, LogisticTerm):
        return _logistic_w_step(term, precision, W0, b0)
    return _gaussian_w_step(term, precision, W0, b0, spectrum)


def quadratic_penalty(W, args):
    """(1/2) tr(W M Wᵀ) for M = Q diag(e) Qᵀ given as ``args = (Q, e)``."""
    Q, e = args
    return 0.5 * jnp.sum(e * jnp.sum((W @ Q) ** 2, axis=0))


def _gaussian_w_step(term, precision, W0, b0, spectrum=None):
    """Exact Gaussian W-step: per-task solves when the precision is diagonal; for a system
    of at most ``solvers.DENSE_SYSTEM_MAX`` unknowns (m·(d+1)), :func:`gaussian_w_step`
    (block-Jacobi CG, factored when CG is slow: a nearly singular P, as the reconstruction
    member's on School, kept the ADMM below at its cap for ~30 s per W-step; the Cholesky
    of the 3,892 × 3,892 system takes < 1 s). A larger system gets the same block-Jacobi CG
    for ``CG_BEFORE_FACTORING`` steps from the previous W, kept when its relative residual
    is ≤ 1e-12 (:func:`gaussian_w_residual`; m = 1,000, n = 1,000, d = 100: 0.25 s where the
    ADMM took 1.9 s; m = 300 with 100 rows per task for 101 coefficients, singular blocks:
    0.14 s where the ADMM ran 20,000 iterations, 150 s). Otherwise the profile ADMM with the
    quadratic coupling as its penalty (eigen-factored per-task W-solves, the coupling's prox
    in P's eigenbasis, Anderson acceleration) continues from there to 1e-14, and when it
    does not converge within its cap block-Jacobi CG finishes from its iterate.
    ``spectrum``: a function returning the blocks' :func:`centred_spectrum`, so that an
    alternation factors them once (at m = 1,000, d = 100 the batched eigh is ≈ 1 s per
    W-step otherwise)."""
    P = np.asarray(precision)
    if np.array_equal(P, np.diag(np.diag(P))):
        return gaussian_diagonal_solve(term, jnp.diag(precision))
    if term.rhs.size <= DENSE_SYSTEM_MAX:
        return gaussian_w_step(term, precision, 0.0, W0, b0, 1e-13)
    W0, b0 = gaussian_w_step(term, precision, 0.0, W0, b0, 1e-13, CG_BEFORE_FACTORING)
    if float(gaussian_w_residual(term, precision, W0, b0)) <= 1e-12:
        return W0, b0
    e, Q = jnp.linalg.eigh((precision + precision.T) / 2)
    W, b, info = profile_admm(term, 0.0, quadratic_prox, quadratic_penalty,
                              (Q, jnp.clip(e, 0.0)), W0, b0, 20000, 1e-14,
                              spectrum=None if spectrum is None else spectrum())
    if not bool(info[3]):  # ill-conditioned coupling: finish by PCG from the ADMM iterate
        W, b = gaussian_w_step(term, precision, 0.0, W, b, 1e-13)
    return W, b


@jax.jit
def gaussian_diagonal_solve(term: GaussianTerm, precision_diag):
    """The Gaussian W-step for a diagonal task precision (m,): m independent D × D solves."""
    H, rhs = term.H, term.rhs
    D = H.shape[-1]
    d = D - 1  # the W-steps of the family always carry the intercept
    E = jnp.diag(jnp.concatenate([jnp.ones(d), jnp.zeros(1)]))
    theta = jnp.linalg.solve(H + precision_diag[:, None, None] * E, rhs[..., None])[..., 0]
    return theta[:, :d].T, theta[:, d]
