"""The proximal solver loop: accelerated proximal gradient (FISTA) with backtracking.

A non-smooth penalty enters as one prox function ``prox(x, step) -> x`` and its value
``penalty(x)``; the loop is the same for every penalty (trace norm, squared trace norm, ℓ1 on a
transfer graph …). Written with ``lax.while_loop`` so callers can ``jax.jit`` the whole solve.

Stopping rule: relative objective change ``|F_k - F_{k-1}| <= tol * max(1, |F_k|)`` together
with a small relative proximal-gradient residual
``||x_k - prox(y - step grad(y))|| / step / max(1, ||grad(y)||)``: the KKT residual of the
composite problem (zero exactly at a minimiser), reported with the result.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SolverResult(NamedTuple):
    """Outcome of an iterative solve.

    x : solution (flat array)
    objective : final objective value
    history : (max_iter,) objective per iteration, NaN after the last one
    n_iter : iterations run
    converged : whether the stopping rule fired before max_iter
    residual : final proximal-gradient (KKT) residual norm
    """

    x: jax.Array
    objective: jax.Array
    history: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    residual: jax.Array


class _FistaState(NamedTuple):
    x: jax.Array  # current iterate
    y: jax.Array  # extrapolated point
    t: jax.Array  # momentum scalar
    step: jax.Array  # current step size (1 / Lipschitz estimate)
    objective: jax.Array
    previous: jax.Array
    residual: jax.Array
    history: jax.Array
    it: jax.Array


def fista(smooth, prox, penalty, x0, *, step0=1.0, max_iter=5000, tol=1e-12, rtol=1e-6):
    """Minimise ``smooth(x) + penalty(x)`` by FISTA with backtracking and adaptive restart.

    Parameters
    ----------
    smooth : x -> scalar, differentiable part.
    prox : (x, step) -> argmin_z penalty(z) + ||z - x||^2 / (2 step).
    penalty : x -> scalar, the non-smooth part (for the objective value only).
    x0 : (p,) starting point.
    step0 : initial step; backtracking halves it until the quadratic upper bound holds, and
        each iteration first tries a step 1.25 times longer.
    max_iter, tol, rtol : iteration cap; relative objective change and relative residual
        tolerances (both must hold).
    """
    value_and_grad = jax.value_and_grad(smooth)
    x0 = jnp.asarray(x0)
    f0 = smooth(x0) + penalty(x0)

    def backtrack(y, step):
        fy, gy = value_and_grad(y)

        def cond(s):
            step, z = s
            d = z - y
            bound = fy + jnp.vdot(gy, d) + jnp.vdot(d, d) / (2.0 * step)
            return (smooth(z) > bound + 1e-12 * jnp.abs(fy)) & (step > 1e-20)

        def body(s):
            step = s[0] * 0.5
            return step, prox(y - step * gy, step)

        step = step * 1.25
        step, z = jax.lax.while_loop(cond, body, (step, prox(y - step * gy, step)))
        return step, z, jnp.linalg.norm(gy)

    def body(s: _FistaState):
        step, z, gnorm = backtrack(s.y, s.step)
        fz = smooth(z) + penalty(z)
        # gradient-mapping norm, relative to the scale of the smooth gradient
        residual = jnp.linalg.norm(z - s.y) / step / jnp.maximum(1.0, gnorm)
        # adaptive restart (O'Donoghue & Candès): keep the step, drop momentum when the
        # objective rises
        restart = fz > s.objective
        t_next = jnp.where(restart, 1.0, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s.t**2)))
        y_next = jnp.where(restart, z, z + ((s.t - 1.0) / t_next) * (z - s.x))
        return _FistaState(z, y_next, t_next, step, fz, s.objective, residual,
                           s.history.at[s.it].set(fz), s.it + 1)

    def converged(s: _FistaState):
        change = jnp.abs(s.previous - s.objective) <= tol * jnp.maximum(1.0, jnp.abs(s.objective))
        small = s.residual <= rtol
        return change & small

    def cond(s: _FistaState):
        return (s.it < max_iter) & ~converged(s)

    history = jnp.full((max_iter,), jnp.nan, dtype=f0.dtype)
    init = _FistaState(x0, x0, jnp.asarray(1.0, f0.dtype), jnp.asarray(step0, f0.dtype), f0,
                       jnp.asarray(jnp.inf, f0.dtype), jnp.asarray(jnp.inf, f0.dtype), history,
                       jnp.asarray(0))
    s = jax.lax.while_loop(cond, body, init)
    return SolverResult(s.x, s.objective, s.history, s.it, converged(s), s.residual)


# ----------------------------------------------------------------------------- prox operators


# ----------------------------------------------------------------------------- ADMM
#
# Scaled-form ADMM (Boyd et al. 2011, sections 3.1.1, 3.3 and 3.4.1) for
#
#     min_x f(x) + g(z)   subject to   A x = z,
#
# with the problem entering only through ``x_update`` (the f-step), ``z_update`` (the prox of
# g) and the linear map A with its adjoint. x and z may be arrays or pytrees of arrays.


class AdmmState(NamedTuple):
    """State carried between ADMM iterations.

    x : primal variable (pytree)
    z : split variable, same structure as ``A(x)``
    u : scaled dual variable (dual / rho), same structure as z
    rho : penalty parameter (changed by residual balancing)
    primal_residual : ``||A x - z||`` after the last iteration
    dual_residual : ``rho ||A^T (z - z_previous)||`` after the last iteration
    eps_primal, eps_dual : Boyd et al.'s stopping tolerances at the last iterate
    it : iterations run
    """

    x: object
    z: object
    u: object
    rho: jax.Array
    primal_residual: jax.Array
    dual_residual: jax.Array
    eps_primal: jax.Array
    eps_dual: jax.Array
    it: jax.Array


class AdmmResult(NamedTuple):
    """Outcome of :func:`admm`.

    x, z, u : final primal, split and scaled dual variables
    rho : final penalty parameter
    n_iter : iterations run
    converged : both residuals met their tolerances before ``max_iter``
    primal_residual, dual_residual : final residual norms (see :class:`AdmmState`)
    """

    x: object
    z: object
    u: object
    rho: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    primal_residual: jax.Array
    dual_residual: jax.Array


def _tree_norm(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in leaves))


def _tree_size(tree):
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))


def _tree_add(a, b, scale=1.0):
    return jax.tree_util.tree_map(lambda p, q: p + scale * q, a, b)


def _tree_scale(a, scale):
    return jax.tree_util.tree_map(lambda p: p * scale, a)


def admm(x_update, z_update, A, At, x0, z0, u0=None, *, rho0=1.0, max_iter=1000,
         abs_tol=1e-8, rel_tol=1e-6, balance=True, mu=10.0, tau=2.0,
         relaxation=1.0) -> AdmmResult:
    """Scaled-form ADMM for ``min f(x) + g(z)`` subject to ``A x = z``.

    Parameters
    ----------
    x_update : (x, v, rho) -> argmin_x f(x) + (rho/2) ||A x - v||^2 with ``v = z - u``;
        x is the previous iterate (a warm start for inexact inner solvers).
    z_update : (v, rho) -> argmin_z g(z) + (rho/2) ||z - v||^2 with ``v = A x + u``.
    A, At : the linear map x -> A x and its adjoint.
    x0, z0 : starting points; u0 : starting scaled dual (default zeros).
    rho0 : initial penalty.
    max_iter, abs_tol, rel_tol : iteration cap and Boyd et al.'s absolute and relative
        tolerances: stop when ``||A x - z|| <= sqrt(p) abs_tol + rel_tol max(||A x||, ||z||)``
        and ``rho ||A^T (z - z_prev)|| <= sqrt(n) abs_tol + rel_tol ||A^T (rho u)||``
        (p = size of z, n = size of x).
    balance, mu, tau : residual balancing (Boyd et al. 3.4.1): multiply rho by tau when the
        primal residual exceeds mu times the dual one, divide when the reverse holds, and
        rescale u so that the unscaled dual rho u is unchanged.
    relaxation : over-relaxation factor alpha in (0, 2) (Boyd et al. 3.4.3): the z- and
        u-updates see ``alpha A x + (1 - alpha) z_prev`` instead of ``A x``; 1.5–1.8 often
        converges faster than plain ADMM (alpha = 1). Residuals use the unrelaxed ``A x``.

    Written with ``lax.while_loop``: jit-able, and ``vmap``-able over independent problems.
    """
    u0 = jax.tree_util.tree_map(jnp.zeros_like, z0) if u0 is None else u0
    sqrt_p = jnp.sqrt(float(_tree_size(z0)))
    sqrt_n = jnp.sqrt(float(_tree_size(x0)))
    dtype = jax.tree_util.tree_leaves(z0)[0].dtype

    def body(s: AdmmState):
        x = x_update(s.x, _tree_add(s.z, s.u, -1.0), s.rho)
        Ax = A(x)
        Ax_hat = _tree_add(_tree_scale(Ax, relaxation), s.z, 1.0 - relaxation)
        z = z_update(_tree_add(Ax_hat, s.u), s.rho)
        u = _tree_add(s.u, _tree_add(Ax_hat, z, -1.0))
        primal = _tree_norm(_tree_add(Ax, z, -1.0))
        dual = s.rho * _tree_norm(At(_tree_add(z, s.z, -1.0)))
        eps_primal = sqrt_p * abs_tol + rel_tol * jnp.maximum(_tree_norm(Ax), _tree_norm(z))
        eps_dual = sqrt_n * abs_tol + rel_tol * s.rho * _tree_norm(At(u))
        factor = jnp.where(primal > mu * dual, tau, jnp.where(dual > mu * primal, 1.0 / tau,
                                                              1.0))
        factor = jnp.where(balance, factor, 1.0)
        return AdmmState(x, z, _tree_scale(u, 1.0 / factor), s.rho * factor, primal, dual,
                         eps_primal, eps_dual, s.it + 1)

    def done(s: AdmmState):
        return (s.primal_residual <= s.eps_primal) & (s.dual_residual <= s.eps_dual)

    def cond(s: AdmmState):
        return (s.it < max_iter) & ~done(s)

    inf = jnp.asarray(jnp.inf, dtype)
    init = AdmmState(x0, z0, u0, jnp.asarray(rho0, dtype), inf, inf, jnp.asarray(0.0, dtype),
                     jnp.asarray(0.0, dtype), jnp.asarray(0))
    s = jax.lax.while_loop(cond, body, init)
    return AdmmResult(s.x, s.z, s.u, s.rho, s.it, done(s), s.primal_residual, s.dual_residual)


# ----------------------------------------------------------------------------- Newton–CG


def after(x, *done):
    """``x`` unchanged, but computed only once ``done`` (arrays) are: sequences computations
    that XLA would otherwise run at the same time.

    Needed between batched LAPACK calls (``eigh``, ``solve``, ``cholesky`` under ``vmap``):
    above a small batch cost (2e5 flops) jaxlib splits a batch over XLA's intra-op thread pool
    and blocks until the pieces are done, so two such calls running at once on a 2-thread pool
    each hold a thread while waiting for the other, a deadlock (GAMTL's C-step at m = 100 hung
    this way; ``benchmarks/README.md``). XLA's CPU compiler removes ``optimization_barrier``
    without ordering anything, so the dependence is arithmetic: x + 0·tanh(v) with v the first
    entry of each of ``done``, which XLA does not fold for floating point (0·NaN is NaN). It is
    x exactly unless that entry is NaN.
    """
    x = jnp.asarray(x)
    zero = sum((0.0 * jnp.tanh(jnp.ravel(d)[0]) for d in done), jnp.zeros((), x.dtype))
    return x + zero.astype(x.dtype)


def damped_newton(value, direction, x0, *, max_iter=50, tol=1e-14, full=False, first=None):
    """Damped Newton loop with Armijo backtracking: the package's unconstrained Newton loop
    (:func:`projected_newton` is its counterpart on a set with an easy projection).

    ``direction(x) -> (δ, g·δ)`` gives a descent step (exact Newton, Newton–CG, …) and its
    slope; the step length halves until ``value(x + aδ) ≤ value(x) + 1e-4 a g·δ``. The loop
    stops at the first x whose half Newton decrement ``-g·δ / 2`` is ≤ ``tol · max(1, |value|)``
    (converged), when no step length decreases ``value`` or the slope is not finite (stalled),
    or after ``max_iter`` steps. A converged x then takes its full Newton step if that does not
    raise ``value`` (so the decrement that certified x also bounds the returned point's
    error, and the point is as accurate as one more step makes it). Exact in one step for a
    quadratic. Jit- and vmap-able. ``full=True`` returns ``(x, n_steps, converged)``.
    ``first``: ``direction(x0)`` where the caller has it already.
    """

    def small(f, slope):
        return 0.5 * -slope <= tol * jnp.maximum(1.0, jnp.abs(f))

    def step(s):
        x, f, delta, slope, it, _ = s

        def not_enough(c):
            a, fa = c
            return ~(fa <= f + 1e-4 * a * slope) & (a > 1e-12)

        a, fa = jax.lax.while_loop(not_enough, lambda c: (0.5 * c[0], value(x + 0.5 * c[0]
                                                                            * delta)),
                                   (jnp.asarray(1.0, f.dtype), value(x + delta)))
        ok = fa <= f
        x = jnp.where(ok, x + a * delta, x)
        delta, slope = direction(x)
        return x, jnp.where(ok, fa, f), delta, slope, it + 1, ~ok

    def cond(s):
        _, f, _, slope, it, stalled = s
        return (it < max_iter) & ~stalled & jnp.isfinite(slope) & ~small(f, slope)

    f0 = value(x0)
    # value and direction may both factor (after)
    delta0, slope0 = direction(after(x0, f0)) if first is None else first
    x, f, delta, slope, n_steps, stalled = jax.lax.while_loop(
        cond, step, (x0, f0, delta0, slope0, jnp.asarray(0), jnp.asarray(False)))
    converged = ~stalled & jnp.isfinite(slope) & jnp.isfinite(f) & small(f, slope)
    polished = x + delta
    keep = converged & (value(polished) <= f)
    x = jnp.where(keep, polished, x)
    if full:
        return x, n_steps + keep, converged
    return x


def newton_cg(fun, theta0, blocks, max_newton=30, tol=1e-14):
    """Minimise a smooth convex ``fun`` over theta (m, p) by Newton–CG (:func:`damped_newton`).

    ``blocks(theta) -> (m, p, p)`` gives positive definite diagonal blocks of the Hessian
    (block-Jacobi preconditioner for CG; the preconditioned gradient is the fallback step).
    """
    grad = jax.grad(fun)

    def direction(theta):
        g = grad(theta)
        chol = jnp.linalg.cholesky(blocks(theta))

        def precond(r):
            return jax.vmap(lambda L, ri: jax.scipy.linalg.cho_solve((L, True), ri))(chol, r)

        def hvp(v):
            return jax.jvp(grad, (theta,), (v,))[1]

        p, _ = jax.scipy.sparse.linalg.cg(hvp, -g, M=precond, tol=1e-11,
                                          maxiter=20 * theta.shape[1])
        # CG failure: the preconditioned gradient (its solves after CG's: see after)
        p = jnp.where(jnp.vdot(g, p) < 0, p, -precond(after(g, p)))
        return p, jnp.vdot(g, p)

    return damped_newton(fun, direction, theta0, max_iter=max_newton, tol=tol)


# ----------------------------------------------------------------------------- coupled blocks
#
# The W-steps of the coupled models (the family's Gaussian W-step given a task precision,
# AMTL's Newton steps) solve systems blockdiag(H_1..H_m) + K ⊗ diag(e): per-task (D, D) blocks
# plus an (m, m) task coupling on the penalised coordinates e. Block-Jacobi preconditioned CG
# never forms the (mD, mD) matrix; when the coupling is badly conditioned (a nearly singular
# task precision) CG crawls, and for small systems the dense Cholesky is cheap.

DENSE_SYSTEM_MAX = 6000  # systems up to this size (m·D, 288 MB) may be factored densely
CG_BEFORE_FACTORING = 250  # ... when block-Jacobi CG has not solved them in this many steps
CG_MORE = 3  # ... unless its rate so far reaches the tolerance within CG_MORE times as many


def coupled_block_system(blocks, coupling, selector):
    """(mD, mD) matrix ``blockdiag(blocks) + coupling ⊗ diag(selector)``.

    blocks (m, D, D); coupling (m, m); selector (D,) 1 on the coupled coordinates. Row/column
    index t·D + k (x (m, D) raveled).
    """
    m, D, _ = blocks.shape
    H = jnp.kron(coupling, jnp.diag(selector)).reshape(m, D, m, D)
    tasks = jnp.arange(m)
    return H.at[tasks, :, tasks, :].add(blocks).reshape(m * D, m * D)


def coupled_block_matvec(blocks, coupling, selector, x):
    """``(blockdiag(blocks) + coupling ⊗ diag(selector)) x`` for x (m, D), blocks (m, D, D),
    coupling (m, m): the operator of :func:`coupled_block_solve`."""
    return jnp.einsum("tij,tj->ti", blocks, x) + (coupling @ (x * selector)) * selector


def coupled_block_solve(blocks, coupling, selector, rhs, x0=None, *, tol=1e-12,
                        solve="auto", cg_steps=CG_BEFORE_FACTORING, max_cg=None,
                        dense_max=DENSE_SYSTEM_MAX, jitter=0.0, accept_tol=None):
    """x (m, D) solving ``(blockdiag(blocks) + coupling ⊗ diag(selector)) x = rhs``.

    The matrix must be symmetric positive definite (``jitter`` is added to its diagonal).
    Block-Jacobi preconditioned CG (the diagonal blocks with the coupling's diagonal,
    factored once) to relative residual ``tol``. With ``solve="auto"`` and m·D ≤
    ``dense_max``, a system CG has not solved to relative residual ``accept_tol`` (default
    ``tol``) in ``cg_steps`` steps is factored instead (Cholesky of
    :func:`coupled_block_system`), unless CG's rate over those steps (the relative residual
    from x0 to its iterate, as a geometric rate) reaches ``accept_tol`` within ``CG_MORE``
    times as many more: CG then goes on for up to that many, and the system is factored only
    if it is still unsolved. (glMTL's W-step on School, m·D = 4,031, with cond P ≈ 1e4: CG
    is at 1e-11 after 250 steps and at 1e-13 after 300–400, 0.05 s, where factoring takes
    0.39 s. Where CG crawls, as with the reconstruction member's nearly singular P, the
    prediction fails and the system is factored after the first ``cg_steps`` as before.)
    Larger systems get ``max_cg`` CG steps (default 20 mD).
    ``solve="cg"`` / ``"factor"`` force one method. A failed factorisation (non-finite)
    returns the CG iterate. Jit-able (``solve``, ``cg_steps``, ``max_cg`` and ``dense_max``
    must be static). :func:`coupled_block_attempt` and :func:`coupled_block_factor` are its
    two halves, for a caller that solves several systems with one matrix.
    """
    m, D, _ = blocks.shape
    if solve not in ("auto", "cg", "factor"):
        raise ValueError(f"solve must be 'auto', 'cg' or 'factor'; got {solve!r}")
    if solve == "cg" or solve == "auto" and m * D > dense_max:
        return _block_cg(blocks, coupling, selector, rhs, x0, tol, jitter,
                         20 * m * D if max_cg is None else max_cg)
    if solve == "factor":
        x = _block_preconditioner(blocks, coupling, selector, rhs, jitter)(rhs) if x0 is None \
            else x0
        solved = jnp.asarray(False)
    else:
        x, solved = coupled_block_attempt(blocks, coupling, selector, rhs, x0, tol=tol,
                                          cg_steps=cg_steps, jitter=jitter,
                                          accept_tol=accept_tol)

    def factored(fallback):
        L = coupled_block_factor(after(blocks, fallback), coupling, selector, jitter)
        return factor_solve(L, rhs, fallback)

    return jax.lax.cond(solved, lambda x: x, factored, x)


def _block_preconditioner(blocks, coupling, selector, rhs, jitter):
    """r ↦ the block-Jacobi solve (the diagonal blocks with the coupling's diagonal)."""
    D = blocks.shape[1]
    diag = blocks + jnp.diag(coupling)[:, None, None] * jnp.diag(selector)[None]
    # factored after rhs: blocks that do not change inside a caller's loop (squared loss) would
    # be hoisted out of it, next to the caller's other factorisations (see after)
    chol = jnp.linalg.cholesky(after(diag, rhs) + jitter * jnp.eye(D))
    return lambda r: jax.vmap(lambda L, ri: jax.scipy.linalg.cho_solve((L, True), ri))(chol, r)


def _block_operator(blocks, coupling, selector, jitter):
    """x ↦ the matrix of :func:`coupled_block_solve` (jitter included) times x."""
    return lambda x: coupled_block_matvec(blocks, coupling, selector, x) + jitter * x


def _block_cg(blocks, coupling, selector, rhs, x0, tol, jitter, steps, precond=None):
    precond = precond or _block_preconditioner(blocks, coupling, selector, rhs, jitter)
    x0 = precond(rhs) if x0 is None else x0
    return jax.scipy.sparse.linalg.cg(_block_operator(blocks, coupling, selector, jitter), rhs,
                                      x0=x0, M=precond, tol=tol, maxiter=steps)[0]


def coupled_block_attempt(blocks, coupling, selector, rhs, x0=None, *, tol=1e-12,
                          cg_steps=CG_BEFORE_FACTORING, jitter=0.0, accept_tol=None):
    """CG's half of :func:`coupled_block_solve`: (x (m, D), solved), ``solved`` where the
    relative residual reached ``accept_tol`` (default ``tol``) in ``cg_steps`` steps, or in
    up to ``CG_MORE`` times as many more where CG's rate so far predicted it would."""
    precond = _block_preconditioner(blocks, coupling, selector, rhs, jitter)
    scale = jnp.maximum(jnp.linalg.norm(rhs), 1e-300)
    accept = tol if accept_tol is None else accept_tol

    matvec = _block_operator(blocks, coupling, selector, jitter)

    def residual(x):  # relative
        return jnp.linalg.norm(matvec(x) - rhs) / scale

    def cg(x, steps):
        return _block_cg(blocks, coupling, selector, rhs, x, tol, jitter, steps, precond)

    def go_on(x):
        x = cg(x, CG_MORE * cg_steps)
        return x, residual(x)

    x0 = precond(rhs) if x0 is None else x0
    start = residual(x0)
    x = cg(x0, cg_steps)
    reached = residual(x)
    # steps still needed at the rate so far (reached / start per cg_steps, geometric)
    needed = cg_steps * jnp.log(reached / accept) / jnp.log(start / jnp.maximum(reached, 1e-300))
    more = (reached > accept) & (reached < start) & (needed <= CG_MORE * cg_steps)
    x, reached = jax.lax.cond(more, go_on, lambda x: (x, reached), x)
    return x, reached <= accept


def coupled_block_factor(blocks, coupling, selector, jitter=0.0):
    """Lower Cholesky factor (mD, mD) of :func:`coupled_block_system` + jitter·I (non-finite
    where the matrix is not numerically positive definite)."""
    m, D, _ = blocks.shape
    H = coupled_block_system(blocks, coupling, selector) + jitter * jnp.eye(m * D)
    return jnp.linalg.cholesky(H)


def factor_solve(L, rhs, fallback):
    """x (m, D) with L Lᵀ vec x = vec rhs, or ``fallback`` where that is not finite."""
    x = jax.scipy.linalg.cho_solve((L, True), rhs.ravel()).reshape(rhs.shape)
    return jnp.where(jnp.all(jnp.isfinite(x)), x, fallback)


# ----------------------------------------------------------------------------- projected Newton


def projected_newton(value, direction, project, x0, *, stop, max_iter=200, merit=None):
    """Projected Newton loop with Armijo backtracking along the projection arc (Bertsekas 1982).

    Minimises ``value`` over a convex set with an easy projection (a box, for the two-metric
    projected Newton method). ``direction(x) -> (δ, g)`` gives a step and the gradient at x;
    ``project`` maps onto the feasible set. The step length a halves from 1 until
    ``value(x_a) ≤ value(x) + 1e-4 g·(x_a - x)`` with ``x_a = project(x + aδ)`` (``value``
    may be ``inf`` outside its domain). Stops when ``stop(x)`` holds, when no step length down
    to 1e-12 decreases ``value`` (the decrease is below round-off), or after ``max_iter``
    steps. Returns (x, n_iter, stalled). Jit-able.

    ``merit`` (optional, x -> scalar ≥ 0, e.g. a KKT residual) takes over where ``value`` is
    flat to round-off: a full step that does not strictly decrease ``value`` by the Armijo
    test is still taken if it raises ``value`` by at most 1e-13 relative and lowers
    ``merit``. Near an ill-conditioned optimum the predicted decrease falls below the
    round-off of ``value`` long before the iterate is accurate, and backtracking then only
    picks among round-off changes.
    """

    def step(s):
        x, f, it, _ = s
        delta, g = direction(x)

        def not_enough(c):
            a, xa, fa = c
            return ~(fa <= f + 1e-4 * jnp.vdot(g, xa - x)) & (a > 1e-12)

        def halve(c):
            a = 0.5 * c[0]
            xa = project(x + a * delta)
            return a, xa, value(xa)

        x1 = project(x + delta)
        f1 = value(x1)
        flat_step = jnp.asarray(False)
        if merit is not None:
            decrease = (f1 <= f + 1e-4 * jnp.vdot(g, x1 - x)) & (f1 < f)
            flat_step = ~decrease & (f1 <= f + 1e-13 * jnp.maximum(1.0, jnp.abs(f)))
            flat_step = jax.lax.cond(flat_step, lambda: merit(x1) < merit(x),
                                     lambda: jnp.asarray(False))
        start = (jnp.asarray(1.0, f.dtype), x1, f1)
        _, xa, fa = jax.lax.cond(flat_step, lambda c: c,
                                 lambda c: jax.lax.while_loop(not_enough, halve, c), start)
        ok = (fa < f) | flat_step
        return jnp.where(ok, xa, x), jnp.where(ok, fa, f), it + 1, ~ok

    def cond(s):
        x, _, it, stalled = s
        return (it < max_iter) & ~stalled & ~stop(x)

    f0 = value(x0)
    x, _, it, stalled = jax.lax.while_loop(cond, step, (x0, f0, jnp.asarray(0),
                                                        jnp.asarray(False)))
    return x, it, stalled


# ------------------------------------------------------------------- non-negative active set


def _face_step(H, C, B, free, size):
    """Min-norm Newton step (p, k) on each column's free set F: δ_F = -H_FF⁺ (HB + C)_F (an
    eigen pseudo-inverse, so a singular face gives its least-norm step), zero elsewhere; F of
    more than ``size`` entries gets no step (flagged)."""
    p, k = B.shape
    cols = jnp.arange(k)[None, :]
    idx = jnp.argsort(~free, axis=0, stable=True)[:size]  # (size, k): the free entries first
    on = free[idx, cols]
    Hs = jnp.where(on.T[:, :, None] & on.T[:, None, :], H[idx.T[:, :, None], idx.T[:, None, :]],
                   0.0)
    gs = jnp.where(on, (H @ B + C)[idx, cols], 0.0).T  # (k, size)
    evals, vecs = jnp.linalg.eigh(Hs)
    cutoff = 1e-11 * jnp.maximum(jnp.max(jnp.abs(evals), axis=-1, keepdims=True), 1e-300)
    inverse = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0), 0.0)
    step = -jnp.einsum("kij,kj->ki", vecs, inverse * jnp.einsum("kji,kj->ki", vecs, gs))
    too_many = jnp.sum(free, axis=0) > size
    delta = jnp.zeros_like(B).at[idx, cols].add(jnp.where(on & ~too_many, step.T, 0.0))
    return delta, too_many


def _column_kkt(H, C, B, mask):
    """(k,) largest KKT violation of each column of min ½bᵀHb + cᵀb, b ≥ 0 (b = b ∘ mask)."""
    g = H @ B + C
    return jnp.max(jnp.where(B > 0, jnp.abs(g), jnp.maximum(-g, 0.0)) * mask, axis=0)


def nonnegative_active_set(H, C, B0, mask, max_support, max_iter=None):
    """Primal active-set method (Lawson–Hanson style) for min_{b ≥ 0} ½bᵀHb + cᵀb on every
    column of C (p, k) at once, shared H (p, p) ⪰ 0, entries outside ``mask`` held at 0,
    started from B0 ≥ 0 (an interior point's solution with its zeros set: then a few steps).

    Each step solves the QP on the column's face (its free entries F, initially B0 > 0) by a
    min-norm Newton step; a step that leaves the orthant stops at the first bound it meets,
    which leaves F; a feasible one is taken, and the zero entry with the most negative
    gradient (below -1e-10 · max(1, max |∇|)) joins F, else the column is done. Faces of more
    than ``max_support`` entries (static; H_FF is singular beyond rank H, so pass it, e.g. d
    for H = 2λWᵀW) stop the column. A column whose result has a larger KKT violation than its
    start keeps its start. On School's AMTL B-step (λ = 1, μ = 0.1) the interior point's zeros
    can be misread under jit (KKT violation 0.16); this reaches 1e-11 where coordinate
    descent alone needed 922 to > 1,000 sweeps. Returns B (p, k). Jit-able.
    """
    p, k = B0.shape
    size = min(max_support, p)
    if size < 1:
        return B0 * mask
    max_iter = 3 * size if max_iter is None else max_iter
    cols = jnp.arange(k)
    mask = mask.astype(bool)

    def body(state):
        B, free, done, it = state
        delta, too_many = _face_step(H, C, B, free, size)
        new = B + delta
        feasible = jnp.all(jnp.where(free, new >= 0, True), axis=0)
        falling = free & (delta < 0)
        ratios = jnp.where(falling, B / jnp.where(falling, -delta, 1.0), jnp.inf)
        first = jnp.argmin(ratios, axis=0)
        alpha = jnp.clip(ratios[first, cols], 0.0, 1.0)
        blocked = jnp.maximum(B + alpha[None, :] * delta, 0.0).at[first, cols].set(0.0)
        B_new = jnp.where(feasible[None, :], new, blocked)
        free_new = jnp.where(feasible[None, :], free, free.at[first, cols].set(False))
        g = H @ B_new + C
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(g) * mask, axis=0))
        candidate = jnp.where(~free_new & mask, g, jnp.inf)
        entering = jnp.argmin(candidate, axis=0)
        add = feasible & (candidate[entering, cols] < -1e-10 * scale)
        free_new = free_new.at[entering, cols].set(free_new[entering, cols] | add)
        active = ~done & ~too_many
        B = jnp.where(active[None, :], B_new, B)
        free = jnp.where(active[None, :], free_new, free)
        done = done | too_many | (feasible & ~add)
        return B, free, done, it + 1

    def cond(state):
        return ~jnp.all(state[2]) & (state[3] < max_iter)

    B0 = B0 * mask
    B, _, _, _ = jax.lax.while_loop(cond, body, (B0, (B0 > 0) & mask, jnp.zeros(k, bool),
                                                 jnp.asarray(0)))
    B = B * mask
    better = _column_kkt(H, C, B, mask) <= _column_kkt(H, C, B0, mask)
    return jnp.where(better[None, :], B, B0)


# ----------------------------------------------------------------------- row coordinate descent


def row_coordinate_descent(H, C, B0, mask, prox, certificate, *, max_sweeps=1000, tol=1e-8):
    """min_B Σ_t ½b_tᵀHb_t + c_tᵀb_t + φ(b_t) over B (p, k) with B = B ∘ mask, for a shared
    H (p, p) ⪰ 0 and a separable φ: exact cyclic coordinate descent, one row s of B for every
    column at once, b_s ← prox(b_s - g_s/H_ss, 1/H_ss) with the gradient G = HB + C kept up
    to date by rank-one updates (a sweep costs O(p²k), independent of the data).

    prox(v, step) (v (k,), step scalar): the prox of step·φ_s (a projection, a soft
    threshold); certificate(B, G) -> scalar, 0 at the optimum (a relative KKT violation or
    duality gap); rows with H_ss = 0 stay at 0. Stops when the certificate is ≤ tol or after
    ``max_sweeps``. Returns B, G, the certificate and the sweeps run. Fast from a nearly
    optimal start (the interior point's, with its zeros set); alone it crawls on degenerate
    problems (H singular). Jit-able.
    """
    p = H.shape[0]
    diag = jnp.diag(H)
    step = jnp.where(diag > 0, 1.0 / jnp.where(diag > 0, diag, 1.0), 0.0)

    def row(s, state):
        B, G = state
        new = prox(B[s] - G[s] * step[s], step[s]) * mask[s]
        new = jnp.where(diag[s] > 0, new, 0.0)
        return B.at[s].set(new), G + jnp.outer(H[:, s], new - B[s])

    def body(state):
        B, G, _, it = state
        B, G = jax.lax.fori_loop(0, p, row, (B, G))
        G = H @ B + C  # refresh: no drift from the rank-one updates
        return B, G, certificate(B, G), it + 1

    B0 = B0 * mask
    G0 = H @ B0 + C
    return jax.lax.while_loop(lambda s: (s[3] < max_sweeps) & (s[2] > tol), body,
                              (B0, G0, certificate(B0, G0), 0))


# ----------------------------------------------------------------------------- interior point


class NonnegativeQPResult(NamedTuple):
    """Outcome of :func:`nonnegative_qp`.

    multiplier : (p, k) the multipliers s = Qx + c of the bounds x ≥ 0 (≥ 0 at the optimum)
    n_iter : interior-point iterations run (the slowest column's)
    converged : the certificate met ``tol``
    residual : the certificate, max over columns of the duality gap xᵀs and of the dual
        residual ‖Qx + c - s‖_∞, relative to max(1, max |Q_ii|, max |c|)
    """

    multiplier: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    residual: jax.Array


def _mehrotra(times_Q, factorize, solve, C, free, scale, max_iter, tol):
    """Mehrotra's predictor-corrector loop for min ½xᵀQx + cᵀx, x ≥ 0, on k columns at once
    (C, free (p, k); entries outside ``free`` stay 0). The linear algebra is the caller's:
    ``times_Q(x)`` (p, k) ↦ Qx per column, ``factorize(D)`` with D = S/X + δ (p, k) the
    barrier's diagonal (1 off ``free``), and ``solve(factors, rhs)`` ↦ (Q + D)⁻¹ rhs on the
    free entries; one factorization per iteration serves the predictor and the corrector.
    Returns x, s (the bounds' multipliers), the iterations run and the certificate (duality
    gap and dual residual, relative to ``scale``)."""
    p, k = C.shape
    count = jnp.maximum(jnp.sum(free, axis=0), 1)
    delta = 1e-12 * scale  # primal regularisation of the Newton systems (not of the problem)

    def newton(factors, x, s, dual_residual, complementarity):
        """Newton step of Qx + c - s = 0, x∘s = target: (Q + S/X) Δx = -r_d - r_c/x."""
        rhs = jnp.where(free, -dual_residual - complementarity / x, 0.0)
        dx = jnp.where(free, solve(factors, rhs), 0.0)
        return dx, jnp.where(free, (-complementarity - s * dx) / x, 0.0)

    def longest_step(v, dv):  # (k,) the largest a ≤ 1 with v + a dv ≥ 0 on the free entries
        ratio = jnp.where(free & (dv < 0), -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
        return jnp.minimum(1.0, jnp.min(ratio, axis=0))

    def certificate(x, s):
        gap = jnp.max(jnp.sum(jnp.where(free, x * s, 0.0), axis=0))
        dual = jnp.max(jnp.abs(jnp.where(free, times_Q(x) + C - s, 0.0)))
        return jnp.maximum(gap, dual) / scale

    def body(state):
        x, s, it, _ = state
        dual_residual = jnp.where(free, times_Q(x) + C - s, 0.0)
        xs = jnp.where(free, x * s, 0.0)
        mu = jnp.sum(xs, axis=0) / count
        factors = factorize(jnp.where(free, s / x + delta, 1.0))
        dx, ds = newton(factors, x, s, dual_residual, xs)  # affine-scaling predictor
        a_primal, a_dual = longest_step(x, dx), longest_step(s, ds)
        mu_affine = jnp.sum(jnp.where(free, (x + a_primal * dx) * (s + a_dual * ds), 0.0),
                            axis=0) / count
        sigma = (mu_affine / jnp.maximum(mu, jnp.finfo(x.dtype).tiny)) ** 3
        dx, ds = newton(factors, x, s, dual_residual,
                        jnp.where(free, xs - sigma * mu + dx * ds, 0.0))  # corrector
        a = 0.99 * jnp.minimum(longest_step(x, dx), longest_step(s, ds))
        x, s = jnp.where(free, x + a * dx, 0.0), jnp.where(free, s + a * ds, 1.0)
        return x, s, it + 1, certificate(x, s)

    def cond(state):
        return (state[2] < max_iter) & (state[3] > tol)

    x0 = jnp.where(free, 1.0, 0.0)
    s0 = jnp.where(free, scale, 1.0)
    x, s, it, residual = jax.lax.while_loop(cond, body, (x0, s0, 0, certificate(x0, s0)))
    return x, s, it, residual


def _nonnegative_qp_columns(V, C, free, scale, max_iter, tol):
    """The interior-point loop of :func:`nonnegative_qp` on k columns at once (C, free (p, k)),
    Q = VᵀV with V (r, p): Newton systems by the Woodbury identity."""
    V_free = V[None, :, :] * free.T[:, None, :]  # (k, r, p): Q restricted to the free entries

    def times_Q(x):
        return V.T @ (V @ x)

    def factorize(D):
        """D⁻¹ and the Cholesky factors of I + V D⁻¹ Vᵀ (k, r, r) (two concurrent batched
        LAPACK calls deadlocked XLA's CPU runtime on this 2-core machine, hence one)."""
        inv = 1.0 / D
        scaled = V_free * inv.T[:, None, :]  # V D⁻¹ (k, r, p)
        chol = jnp.linalg.cholesky(jnp.eye(V.shape[0]) + scaled @ jnp.swapaxes(V_free, 1, 2))
        return inv, scaled, chol

    def solve(factors, rhs):  # Woodbury: (D + VᵀV)⁻¹ = D⁻¹ - D⁻¹Vᵀ(I + V D⁻¹ Vᵀ)⁻¹ V D⁻¹
        inv, scaled, chol = factors
        t = (scaled @ rhs.T[:, :, None])[:, :, 0]  # V D⁻¹ rhs (k, r)
        u = jax.vmap(lambda L, r: jax.scipy.linalg.cho_solve((L, True), r))(chol, t)
        return inv * (rhs - (jnp.swapaxes(V_free, 1, 2) @ u[:, :, None])[:, :, 0].T)

    return _mehrotra(times_Q, factorize, solve, C, free, scale, max_iter, tol)


def nonnegative_qp(V, C, fixed=None, *, max_iter=100, tol=1e-12, max_entries=2**24):
    """min_x ½xᵀQx + cᵀx subject to x ≥ 0 (and x_j = 0 where ``fixed``), for every column c of
    C (p, k) at once; Q = VᵀV (p, p) positive semidefinite, possibly singular, given by its
    factor V (r, p) (e.g. √(2λ) W for the Gram matrix of W; r ≤ p for a thin factor).

    Mehrotra's predictor-corrector primal-dual interior-point method on the optimality
    conditions Qx + c = s, x∘s = 0, x, s ≥ 0. Each iteration solves with Q + diag(s/x)
    (positive definite even where Q is singular, so rank-deficient problems converge in the
    same ~10-20 iterations) for each column, by the Woodbury identity: one r × r Cholesky
    per iteration, O(r²p) per column, shared by the predictor and the corrector. Columns go
    through the loop together, in batches of at most
    ``max_entries`` entries of the (batch, r, p) array. The
    certificate is the duality gap xᵀs with the dual residual (:class:`NonnegativeQPResult`);
    the result is interior (no exact zeros): entries with x < s are at their bound to the
    certificate's accuracy. Bounded below unless some v ≥ 0 has Qv = 0 and cᵀv < 0 (then the
    method does not converge). Jit-able.

    Returns x (p, k) and a :class:`NonnegativeQPResult`.
    """
    C = jnp.asarray(C)
    p, k = C.shape
    fixed = jnp.zeros((p, k), bool) if fixed is None else jnp.asarray(fixed, bool)
    V = jnp.asarray(V)
    scale = jnp.maximum(1.0, jnp.maximum(jnp.max(jnp.sum(V**2, axis=0)), jnp.max(jnp.abs(C))))
    batch = max(1, min(k, max_entries // max(p * V.shape[0], 1)))
    if batch >= k:
        x, s, it, residual = _nonnegative_qp_columns(V, C, ~fixed, scale, max_iter, tol)
    else:
        def column(c_free):
            c, free = c_free
            x, s, it, residual = _nonnegative_qp_columns(V, c[:, None], free[:, None], scale,
                                                         max_iter, tol)
            return x[:, 0], s[:, 0], it, residual

        x, s, it, residual = jax.lax.map(column, (C.T, ~fixed.T), batch_size=batch)
        x, s, it, residual = x.T, s.T, jnp.max(it), jnp.max(residual)
    return x, NonnegativeQPResult(s, it, residual <= tol, residual)


def _small_lassos(H, c, free, lam2, max_iter=100, tol=1e-12):
    """min_a ½aᵀH_j a + c_jᵀa + λ₂‖a‖₁ for k small problems at once: H (k, K, K) ⪰ 0 (possibly
    singular), c and free (K, k), a_j = 0 off ``free``.

    :func:`_mehrotra` on the split a = u - v, (u, v) ≥ 0, Q = [[H, -H], [-H, H]]. Its Newton
    systems [[H + D_u, -H], [-H, H + D_v]] (Δu, Δv) = (r_u, r_v) reduce to K × K: with
    E = D_u⁻¹ + D_v⁻¹, δ = Δu - Δv = E^½ y where (I + E^½ H E^½) y = E^-½ (D_u⁻¹r_u - D_v⁻¹r_v),
    then Δu = D_u⁻¹(r_u - Hδ), Δv = D_v⁻¹(r_v + Hδ) (one K × K Cholesky per problem and
    iteration). Entries with u ≤ its multiplier (or v ≤ its) are set to zero. Returns a (K, k)
    and the certificate (relative to max(1, max H_ii, max |c| + λ₂)).
    """
    K, k = c.shape
    on = free.T[:, :, None] & free.T[:, None, :]
    H = jnp.where(on, H, 0.0)
    free2 = jnp.concatenate([free, free])

    def times_H(a):
        return jnp.einsum("kij,jk->ik", H, a)

    def times_Q(x):
        h = times_H(x[:K] - x[K:])
        return jnp.concatenate([h, -h])

    def factorize(D):
        inv = jnp.where(free2, 1.0 / D, 0.0)
        E = inv[:K] + inv[K:]
        root = jnp.sqrt(E)
        M = jnp.eye(K) + root.T[:, :, None] * H * root.T[:, None, :]
        return inv, E, root, jnp.linalg.cholesky(M)

    def solve(factors, rhs):
        inv, E, root, chol = factors
        t = inv[:K] * rhs[:K] - inv[K:] * rhs[K:]
        t = jnp.where(E > 0, t / jnp.where(E > 0, root, 1.0), 0.0)
        y = jax.vmap(lambda L, r: jax.scipy.linalg.cho_solve((L, True), r))(chol, t.T).T
        h = times_H(root * y)
        return jnp.concatenate([inv[:K] * (rhs[:K] - h), inv[K:] * (rhs[K:] + h)])

    C = jnp.concatenate([lam2 + c, lam2 - c])
    diag = jnp.diagonal(H, axis1=1, axis2=2)
    scale = jnp.maximum(1.0, jnp.maximum(jnp.max(diag), jnp.max(jnp.abs(C))))
    x, s, _, residual = _mehrotra(times_Q, factorize, solve, C, free2, scale, max_iter, tol)
    x = jnp.where(x > s, x, 0.0)
    return x[:K] - x[K:], residual


@partial(jax.jit, static_argnames=("size",))
def _working_set_round(H, C, lam2, mask, B, grad, size):
    """One round of :func:`column_lassos` from B and its gradient HB + C: each column's
    working set (its support, then the entries whose |∇| - λ₂ is largest, ``size`` in all),
    the restricted lassos solved by :func:`_small_lassos`, and the outcome (B, its gradient,
    entries outside the sets that violate the KKT conditions |∇| ≤ λ₂, the largest support,
    the interior point's certificate)."""
    p, k = B.shape
    cols = jnp.arange(k)[None, :]
    score = jnp.where(B != 0, jnp.inf, jnp.where(mask, jnp.abs(grad) - lam2, -jnp.inf))
    top, idx = jax.lax.top_k(score.T, size)  # (k, size) each column's set
    free = (top > -jnp.inf).T  # (size, k): slots past the column's masked entries are empty
    a, certificate = _small_lassos(H[idx[:, :, None], idx[:, None, :]], C[idx.T, cols], free,
                                   lam2)
    B = jnp.zeros_like(B).at[idx.T, cols].set(jnp.where(free, a, 0.0))
    outside = mask & ~jnp.zeros(B.shape, bool).at[idx.T, cols].set(free)
    grad = H @ B + C
    violations = jnp.sum(outside & (jnp.abs(grad) > lam2 * (1.0 + 1e-9)))
    return B, grad, violations, jnp.max(jnp.sum(B != 0, axis=0)), certificate


def column_lassos(H, C, lam2, mask, B0=None, *, size=32, max_size=None, max_rounds=50):
    """min_B Σ_t ½b_tᵀHb_t + c_tᵀb_t + λ₂‖b_t‖₁ over B (p, k) with B = B ∘ mask, for a shared
    H (p, p) ⪰ 0 (possibly singular) and λ₂ > 0, by working sets (the strategy of Blitz,
    Celer and skglm): each column's lasso is solved exactly on a set of ``size`` entries (its
    support, then its largest KKT violations |∇_s| - λ₂), the sets are refreshed from the new
    gradient, and it stops when no entry outside them violates |∇_s| ≤ λ₂ (to 1e-9
    relative). The support of ``B0`` seeds the first sets (a warm start); a set grows
    (doubles) when a column's support nearly fills it. Per round: one product HB, O(p²k),
    and k small interior points, O(k size³) each iteration — against O(p²r²) per iteration
    for the interior point on all p entries (:func:`nonnegative_qp` on the split) when
    H = FᵀF has rank r.

    Not jit-able (the set size is static and may grow). Returns B, whether it stopped
    (``False``: ``max_rounds`` ran out, an interior point missed its certificate, or the sets
    would have to grow past ``max_size``, where a caller's solver on all entries is cheaper)
    and the rounds run.
    """
    p, k = C.shape
    mask = jnp.asarray(mask, bool)
    B = jnp.zeros((p, k)) if B0 is None else jnp.where(mask, jnp.asarray(B0), 0.0)
    max_size = p if max_size is None else min(max_size, p)

    def fitting(support):  # the set size for a support: a power-of-two multiple of ``size``
        grown = size
        while support > grown - max(grown // 4, 1) and grown < p:
            grown *= 2
        return min(grown, p)

    size = fitting(int(jnp.max(jnp.sum(B != 0, axis=0))))
    grad = H @ B + C
    for rounds in range(1, max_rounds + 1):
        if size > max_size:
            return B, False, rounds - 1
        B, grad, violations, support, certificate = _working_set_round(H, C, lam2, mask, B,
                                                                       grad, size)
        if not bool(certificate <= 1e-10):
            return B, False, rounds
        if int(violations) == 0:
            return B, True, rounds
        size = max(size, fitting(int(support)))
    return B, False, max_rounds


# ----------------------------------------------------------------------------- outer loops


def anderson_point(xs, txs):
    """Type-II Anderson mixing of a fixed-point map T (Walker & Ni 2011), for outer loops.

    xs (k+1, n): past iterates x_j and, in the last row, the current x_k; txs (k+1, n): their
    images T(x_j). With g_j = T(x_j) - x_j, returns T(x_k) + Σ_j β_j (T(x_j) - T(x_k)),
    β = argmin ‖g_k + Σ_j β_j (g_j - g_k)‖, the minimum-norm least-squares solution (SVD), so
    a rank-deficient history is fine. With no past rows it is T(x_k), the plain step. For a
    linear T it is GMRES's iterate; for an alternation it extrapolates along the directions
    of its past steps at once, where a one-step extrapolation follows the latest only.
    """
    xs, txs = np.asarray(xs), np.asarray(txs)
    if xs.shape[0] < 2:
        return txs[-1]
    g = txs - xs
    beta = np.linalg.lstsq((g[:-1] - g[-1]).T, -g[-1], rcond=None)[0]
    return txs[-1] + (txs[:-1] - txs[-1]).T @ beta
