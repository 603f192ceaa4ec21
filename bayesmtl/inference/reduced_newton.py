r"""Newton's method on the reduced objective of an alternating family member (Gaussian loss).

For a member whose exact Ω-step P*(W) has a derivative (``member.reduced_curvature``: glMTL),
the MAP minimises the reduced objective

    φ(θ) = min_Ω F(W, b, Ω),   θ_t = (w_t, b_t) (task-major, D = d + 1 entries per task),

with gradient ∇φ = ∇L + λ (W P*, 0) (envelope theorem) and Hessian H₀ + C:
H₀ = blockdiag(H_t) + λ P* ⊗ E (E on w, not b) is the W-step's own system and C the curvature
the Ω-step adds (negative semidefinite for glMTL, whose prior part is concave in WᵀW). One exact
W-step from θ is θ - H₀⁻¹∇φ, so the alternation is a gradient method on φ preconditioned by
H₀; it crawls where C nearly cancels H₀ (a long valley: glMTL on School). Newton uses H₀ + C
where that is positive definite, with an Armijo search on φ (each trial point gets its exact
Ω-step), and converges quadratically once the support of P* settles; where H₀ + C is
indefinite it hands back to the alternation (the point is not in the basin where it converges
fast). Shifted steps H₀ + C + μI (μ = 1.1|λ_min|) were tried there: 5–7 s each on School, no
faster than the alternation, and at λ = 10, λ₂ = 1 a fit that took them needed 140 s where
alternating to the stopping rule and then Newton take 34 s (``benchmarks/README.md``).

Dense in θ (m·D unknowns, at most ``solvers.DENSE_SYSTEM_MAX``) and NumPy: the support of P*
changes between steps, so JAX would compile a new shape for each.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import scipy.linalg

from .stats import GaussianTerm

#: Armijo's sufficient-decrease constant, and the step-halvings tried before giving up
ARMIJO = 1e-4
MAX_HALVINGS = 40
#: Newton steps per call unless told fewer
MAX_STEPS = 50


def stack(W, b, D):
    """θ (m·D,) task-major from W (d, m), b (m,): (w_t, b_t) per task, or w_t where D = d."""
    W = np.asarray(W)
    if D == W.shape[0]:
        return W.T.ravel()
    return np.concatenate([W.T, np.asarray(b)[:, None]], axis=1).ravel()


def unstack(theta, m, d):
    """(W (d, m), b (m,)) from θ (b = 0 where θ has no intercept entries)."""
    T = theta.reshape(m, -1)
    return T[:, :d].T, (T[:, d] if T.shape[1] > d else np.zeros(m))


def reduced_gradient(term: GaussianTerm, lam, theta, P, d):
    """∇φ (m·D,) at θ for the exact Ω-step's precision P (m, m): ∇L + λ (W P, 0)."""
    H, rhs = np.asarray(term.H), np.asarray(term.rhs)
    m, D = rhs.shape
    T = theta.reshape(m, D)
    g = np.einsum("tij,tj->ti", H, T) - rhs
    g[:, :d] += lam * (np.asarray(P) @ T[:, :d])  # (W P)ᵀ = P Wᵀ
    return g.ravel()


def reduced_hessian(term: GaussianTerm, lam, P, C, d):
    """H₀ + C (m·D, m·D): blockdiag(H_t) + λ P ⊗ E on the w entries, plus the Ω-step's
    curvature C (m·d, m·d, task-major in w) placed on the w entries."""
    H = np.asarray(term.H)
    m, D = np.shape(term.rhs)
    out = scipy.linalg.block_diag(*H)
    w = (np.arange(m)[:, None] * D + np.arange(d)[None, :]).ravel()  # θ index of w_t[k]
    out[np.ix_(w, w)] += np.kron(lam * np.asarray(P), np.eye(d)) + C
    return out


def newton_direction(H, g):
    """-H⁻¹g by Cholesky, or None where H is not positive definite."""
    try:
        return -scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), g)
    except np.linalg.LinAlgError:
        return None


class NewtonResult(NamedTuple):
    """theta, state, gram (WᵀW of theta), objective, history (φ after each step), converged
    (the Newton decrement ½|gᵀΔ| ≤ tol·max(1, |φ|)), n_steps,
    decrement (the last one), step (the last direction's ‖Δ‖ / max(1, ‖θ‖)), failed (a line
    search found no decrease, or the curvature was not available), indefinite (stopped at an
    indefinite Hessian)."""

    theta: np.ndarray
    state: object
    gram: object
    objective: float
    history: list
    converged: bool
    n_steps: int
    decrement: float
    step: float
    failed: bool
    indefinite: bool


def reduced_newton(term: GaussianTerm, lam, d, theta, state, gram, *, omega_step, precision,
                   curvature, objective, tol=1e-10, max_steps=MAX_STEPS,
                   deadline=None) -> NewtonResult:
    """Newton's method on φ (module docstring) from θ (m·D,) with its exact Ω-step ``state``
    and Gram matrix ``gram`` = WᵀW.

    omega_step(gram, state, previous_gram) -> the exact Ω-step (warm-started);
    curvature(W, state) -> C (m·d, m·d), the Ω-step's part of the Hessian, or None where it
    is too large to form (then ``failed``);
    precision(state) -> P (m, m); objective(W, b, state) -> F (float).
    Stops when the decrement ½|∇φᵀΔ| is ≤ tol·max(1, |φ|) (converged), when a line search
    finds no decrease in ``MAX_HALVINGS`` halvings (failed), at an indefinite Hessian, after
    ``max_steps`` steps, or past ``deadline`` (``time.monotonic()``).
    """
    m = np.shape(term.rhs)[0]
    f = objective(*unstack(theta, m, d), state)
    history, converged, failed, decrement, size, k = [], False, False, np.inf, np.inf, 0
    indefinite = False
    while k < max_steps:
        P = precision(state)
        g = reduced_gradient(term, lam, theta, P, d)
        C = curvature(unstack(theta, m, d)[0], state)
        if C is None:  # too large a support to factor
            failed = True
            break
        step = newton_direction(reduced_hessian(term, lam, P, C, d), g)
        if step is None:  # indefinite: not (yet) in Newton's basin
            indefinite = True
            break
        slope = float(g @ step)
        decrement = 0.5 * abs(slope)
        size = float(np.linalg.norm(step) / max(1.0, np.linalg.norm(theta)))
        if decrement <= tol * max(1.0, abs(f)):
            converged = True
            break
        if not slope < 0:  # no descent direction left at round-off
            failed = True
            break
        t = 1.0
        for _ in range(MAX_HALVINGS):
            trial = theta + t * step
            W_t, b_t = unstack(trial, m, d)
            gram_t = W_t.T @ W_t
            state_t = omega_step(gram_t, state, gram)
            f_t = objective(W_t, b_t, state_t)
            if np.isfinite(f_t) and f_t <= f + ARMIJO * t * slope:
                break
            t /= 2
        else:
            failed = True
            break
        k += 1
        theta, state, gram, f = trial, state_t, gram_t, f_t
        history.append(f)
        if deadline is not None and time.monotonic() > deadline:
            break
    return NewtonResult(theta, state, gram, f, history, converged, k, decrement, size, failed,
                        indefinite)
