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

from typing import NamedTuple

import jax
import jax.numpy as jnp


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


def prox_l1(x, threshold):
    """Soft-thresholding: prox of ``threshold * ||x||_1``."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)


def prox_nonneg_l1(x, threshold):
    """Prox of ``threshold * ||x||_1`` plus the constraint x >= 0 (threshold may be an array)."""
    return jnp.maximum(x - threshold, 0.0)


def prox_trace_norm(W, threshold):
    """Singular-value soft-thresholding: prox of ``threshold * ||W||_*`` for W (d, m)."""
    U, s, Vt = jnp.linalg.svd(W, full_matrices=False)
    return (U * jnp.maximum(s - threshold, 0.0)) @ Vt


def prox_squared_l1_nonneg(s, tau):
    """Prox of ``(tau / 2) (sum_k s_k)^2`` over s >= 0 for a non-negative vector s.

    The solution is ``max(s - theta, 0)`` with ``theta = tau * sum(max(s - theta, 0))``; theta
    is found exactly from the sorted values.
    """
    u = jnp.sort(s)[::-1]
    k = jnp.arange(1, s.shape[0] + 1, dtype=s.dtype)
    thetas = tau * jnp.cumsum(u) / (1.0 + tau * k)  # theta if the top-k entries stay positive
    valid = u > thetas
    kstar = jnp.sum(valid)  # valid is a prefix of True values
    theta = jnp.where(kstar > 0, thetas[jnp.maximum(kstar - 1, 0)], 0.0)
    return jnp.maximum(s - theta, 0.0)


def prox_squared_trace_norm(W, tau):
    """Prox of ``(tau / 2) ||W||_*^2`` (the MTRL / squared-Schatten-1 penalty) for W (d, m)."""
    U, s, Vt = jnp.linalg.svd(W, full_matrices=False)
    return (U * prox_squared_l1_nonneg(s, tau)) @ Vt
