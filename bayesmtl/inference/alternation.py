"""The alternating MAP loop of L2MT's family: exact W-steps and exact Ω-steps, extrapolated.

:func:`fit_family` minimises F(W, b, Ω) = L(W, b) + (λ/2) tr(W P Wᵀ) + λ₂ g(Ω) for any member
object with ``initial_state``, ``precision``, ``covariance``, ``omega_step`` and ``penalty``
(see :mod:`bayesmtl.models.family`); members with a spectral profile go to
:func:`~bayesmtl.inference.profile.solve_profile` instead.
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..data import MultiTaskData, require_data
from ..errors import ConvergenceWarning
from ..models.likelihoods import PAPER_SQUARED_LOSS_NOISE
from ..priors import OmegaPrior
from .profile import (
    _cached_spectrum,
    _data_loss,
    omega_from_W_spectrum,
    reciprocal_spectrum,
    solve_profile,
    w_step,
)
from .reduced_newton import MAX_STEPS, reduced_newton, stack, unstack
from .solvers import DENSE_SYSTEM_MAX
from .stats import GaussianTerm, data_loss, data_term

#: ``fit_family``'s default switch to Newton on the reduced objective (relative F change of an
#: outer iteration)
NEWTON_AFTER = 1e-5
#: outer iterations before Newton is tried again after it handed back unconverged (doubled
#: after each such try)
NEWTON_RETRY = 20

#: members with ``inexact_omega_step`` (glMTL) solve an Ω-step to a relative KKT residual of
#: OMEGA_ACCURACY × the last relative change of F, clipped to [OMEGA_ACCURACY_MIN,
#: OMEGA_ACCURACY_MAX]: loose while the alternation moves far, exact (1e-9) near the end
OMEGA_ACCURACY, OMEGA_ACCURACY_MIN, OMEGA_ACCURACY_MAX = 0.01, 1e-9, 1e-4

#: a final Ω-step whose relative KKT residual (``member.omega_residual``) exceeds this is not
#: exact, and the fit is reported unconverged (exact steps reach 1e-9 and below on School,
#: SPATS and glMTL alike)
OMEGA_RESIDUAL_TOL = 1e-6


def family_objective(W, b, state, member, X, y, task, weights, lam, classification=False,
                     noise=PAPER_SQUARED_LOSS_NOISE):
    """F(W, b, Ω) of the module docstring (the negative log joint up to a constant)."""
    d = W.shape[0]
    P = member.precision(state)
    return (_data_loss(X, y, task, weights, W, b, classification, noise)
            + 0.5 * lam * jnp.sum(W * (W @ P)) + member.penalty(state, lam, d))


def _objective(term, W, b, state, member, lam):
    """F from the data term (:func:`family_objective` computes it from the rows)."""
    d = W.shape[0]
    return (data_loss(term, W, b) + 0.5 * lam * jnp.sum(W * (W @ member.precision(state)))
            + member.penalty(state, lam, d))


class FamilyResult(NamedTuple):
    """MAP of a family member.

    W (d, m), b (m,), omega (m, m) task covariance (pseudo-inverse of the precision where the
    member is parameterised by it), precision (m, m) = P, state: the member's own parameter
    (Ω, P or A), objective F, history (objective per outer iteration), n_iter, converged,
    residual (relative change of W in the last outer iteration), extrapolated (n_iter,) bool:
    whether each outer iteration kept its extrapolation (empty for solvers without one),
    newton_steps: Newton steps on the reduced objective (:mod:`.reduced_newton`), counted in
    n_iter and history too.
    """

    W: np.ndarray
    b: np.ndarray
    omega: np.ndarray
    precision: np.ndarray
    state: np.ndarray
    objective: float
    history: np.ndarray
    n_iter: int
    converged: bool
    residual: float
    extrapolated: np.ndarray = np.zeros(0, dtype=bool)
    newton_steps: int = 0


def _check_lam(lam):
    if not (np.isscalar(lam) and np.isfinite(lam) and lam > 0):
        raise ValueError(f"lam (λ₁) must be a positive number; got {lam!r}")


def fit_family(data: MultiTaskData, member: OmegaPrior, lam: float = 1.0, *,
               loss_scale: str = "mean", noise: float | None = None, max_iter: int = 500,
               tol: float = 1e-10, init=None, method: str = "auto",
               extrapolation: float = 0.5, newton_after: float | None = NEWTON_AFTER,
               callback=None, deadline: float | None = None) -> FamilyResult:
    """MAP of ``member`` on ``data`` by exact alternating minimisation of F (module docstring).

    lam : λ (the paper's λ₁); the member carries λ₂ and its own constants.
    loss_scale : "mean" (the papers' Σ_i (1/n_i) Σ_j) or "sum".
    noise : Gaussian σ (default 1/√2: the squared loss (y - f)²); ignored for classification.
    init : optional (W, b, state) warm start (e.g. the previous λ of a path).
    extrapolation : initial β of the extrapolated alternation (Ang & Gillis 2019, Neural
        Computation 31(2)); 0 = plain alternation. After each W-step the point
        (Y, b_Y) = (W, b)_k+1 + β ((W, b)_k+1 - (W, b)_k), an extrapolation along the last two
        W-step results, gets the exact Ω-step; it is kept if F(Y, b_Y, Ω(Y)) is not above
        F((W, b)_k+1, Ω_k), so F never increases, and β grows (× 1.2, up to a cap that starts
        at 1 and grows × 1.01); otherwise the plain Ω-step at (W, b)_k+1 is taken (a second
        Ω-step), β shrinks (÷ 1.5) and the cap drops to the failed β. The slow outer
        convergence of glMTL is a W-space drift that the alternation takes in small steps: on
        the first 40 School tasks (λ = 1, λ₂ = 0.1) the plain alternation is still 0.07 above
        the optimum after 3,000 iterations, the extrapolated one meets tol = 1e-10 after 317
        (see ``benchmarks/README.md``).
    newton_after : for a member with ``reduced_curvature`` (glMTL), a Gaussian likelihood and
        at most ``solvers.DENSE_SYSTEM_MAX`` unknowns: once an outer iteration changes F by at
        most this (relative), Newton's method on the reduced objective min_Ω F
        (:func:`~.reduced_newton.reduced_newton`) takes over from the alternation; it stops
        when its Newton decrement is ≤ tol·|F| (converged); where it hands back unconverged
        (an indefinite Hessian: not yet near a minimum; a failed line search) the alternation
        resumes and Newton is tried again 20, then 40, 80, … outer iterations later, and
        whenever the alternation's own stopping rule fires. None: alternation only.
    Members with ``inexact_omega_step`` (glMTL) get early Ω-steps solved only to a relative
    KKT residual of 0.01 × the last relative change of F (between 1e-9, exact, and 1e-4); one
    that raises F is solved again exactly, so F never increases.
    deadline : optional ``time.monotonic()`` value: the alternation stops (unconverged, with
        the warning) after the first outer iteration that ends past it.
    callback : optional ``callback(history, W, b, state)`` after every outer iteration
        (progress reports); not called by the spectral-profile solvers.
    Stops when the relative objective change is ≤ ``tol`` and the relative change of the W-step
    (W_k+1 against the point it started from) is ≤ √tol; warns with
    :class:`ConvergenceWarning` at ``max_iter``. ``history`` holds F after each outer
    iteration and ``extrapolated`` whether its extrapolation was kept.
    Members with a spectral profile (``member.profile``, e.g. :class:`Clustered`) are solved
    by :func:`~bayesmtl.models.matrix_normal.solve_profile` instead (``method`` "auto",
    "admm", "proximal" or "alternating"; ``max_iter`` then counts its iterations, at least
    5000).
    """
    require_data(data, "fit_family", statistics=True)
    _check_lam(lam)
    if not (np.isscalar(extrapolation) and np.isfinite(extrapolation) and extrapolation >= 0):
        raise ValueError(f"extrapolation (initial β) must be a number ≥ 0; got {extrapolation!r}")
    member.check(data.n_tasks)
    if hasattr(member, "profile"):
        return _fit_profile(data, member, lam, loss_scale, noise, method, max(max_iter, 5000),
                            min(tol, 1e-12), init)
    term = data_term(data, loss_scale, noise)
    d, m = data.n_features, data.n_tasks
    spectrum = partial(_cached_spectrum, data, term, d)  # the W-step's block factorisation,
    #                                                      once per data (large systems only)
    if init is None:
        W, b, state = jnp.zeros((d, m)), jnp.zeros(m), member.initial_state(m)
    else:
        W, b, state = (jnp.asarray(v) for v in init)

    def objective(W, b, state):
        return float(_objective(term, W, b, state, member, lam))

    inexact = getattr(member, "inexact_omega_step", False)

    def omega_step(gram_new, state, gram, relative):
        """The Ω-step at G = ``gram_new``, warm-started; for an inexact member to a residual
        that follows the last relative change of F."""
        if not inexact:
            return member.omega_step(gram_new, lam, d, state, gram)
        accuracy = float(np.clip(OMEGA_ACCURACY * relative, OMEGA_ACCURACY_MIN,
                                 OMEGA_ACCURACY_MAX))
        return member.omega_step(gram_new, lam, d, state, gram, accuracy=accuracy)

    fixed = getattr(member, "fixed", False)  # fixed Ω: one exact W-step is the MAP
    newton = None if newton_after is None else _newton_runner(term, member, lam, d, tol, objective,
                                                              inexact)
    newton_steps, newton_from, newton_wait = 0, 0, NEWTON_RETRY
    history, extrapolated, converged, change = [], [], False, np.inf
    f_prev, it, previous, relative = np.inf, 0, None, np.inf
    beta, beta_cap = float(extrapolation), 1.0
    gram = None  # the Gram matrix the current state was computed from (a warm start)
    while it < max_iter:
        it += 1
        W_new, b_new = w_step(term, lam * member.precision(state), W, b, spectrum)
        f_W = None  # F(W_new, b_new, state): F after the W-step, where it is needed
        change = float(jnp.linalg.norm(W_new - W) / jnp.maximum(1.0, jnp.linalg.norm(W_new)))
        took = False
        if beta > 0 and previous is not None and not fixed:
            Y, b_Y = (new + beta * (new - old) for new, old in zip((W_new, b_new), previous,
                                                                    strict=True))
            gram_Y = Y.T @ Y
            state_Y = omega_step(gram_Y, state, gram, relative)
            f_Y = objective(Y, b_Y, state_Y)
            f_W = objective(W_new, b_new, state)
            took = bool(np.isfinite(f_Y)) and f_Y <= f_W
            if took:
                beta, beta_cap = min(1.2 * beta, beta_cap), min(1.0, 1.01 * beta_cap)
            else:
                beta, beta_cap = beta / 1.5, beta
        previous = (W_new, b_new)
        if took:
            W, b, state, f, gram = Y, b_Y, state_Y, f_Y, gram_Y
        else:
            W, b, gram_new = W_new, b_new, W_new.T @ W_new
            state_new = omega_step(gram_new, state, gram, relative)
            f = objective(W, b, state_new)
            # an inexact Ω-step that raised F above F after the W-step is solved again exactly
            if inexact and not f <= (objective(W, b, state) if f_W is None else f_W):
                state_new = member.omega_step(gram_new, lam, d, state, gram)
                f = objective(W, b, state_new)
            state, gram = state_new, gram_new
        history.append(f)
        extrapolated.append(took)
        if callback is not None:
            callback(np.asarray(history), W, b, state)
        relative = abs(f_prev - f) / max(1.0, abs(f))
        stop = relative <= tol and change <= np.sqrt(tol)
        # Newton: once F changes little, and always where the alternation would stop (its
        # rule also fires on a slow stretch: School at λ = 10, λ₂ = 1 stopped 2.7e-6 above
        # the minimum that two Newton steps from there reach)
        if newton is not None and relative <= newton_after and (it >= newton_from or stop):
            r = newton(W, b, state, gram, max_iter - it, deadline)
            if r.n_steps:
                W, b = (jnp.asarray(v) for v in unstack(r.theta, m, d))
                state, gram, f = r.state, r.gram, r.objective
                history.extend(r.history)
                extrapolated.extend([False] * r.n_steps)
                it, newton_steps, previous = it + r.n_steps, newton_steps + r.n_steps, None
                if callback is not None:
                    callback(np.asarray(history), W, b, state)
            if r.converged:
                converged, change = True, r.step
                break
            newton_from, newton_wait = it + newton_wait, 2 * newton_wait
            stop = stop and not r.n_steps  # Newton moved: alternate on from the new point
        if stop or fixed:
            converged = True
            break
        f_prev = f
        if deadline is not None and time.monotonic() > deadline:
            break
    certify = getattr(member, "omega_residual", None)  # members with an iterative Ω-step
    if converged and certify is not None:  # the alternation stopped; is its Ω-step exact?
        omega_residual = float(certify(gram, lam, d, state))
        if not omega_residual <= OMEGA_RESIDUAL_TOL:
            # a warm-started Ω-step can stop at round-off away from its minimiser (glMTL on
            # a Landmine-sized fold: KKT residual 0.28 from the warm start, 7e-15 from the
            # initial state, F equal to 2e-15); solve it again from the initial state and keep
            # that if it is certified and F agrees to round-off
            cold = member.omega_step(gram, lam, d, member.initial_state(m))
            cold_residual, f_cold = float(certify(gram, lam, d, cold)), objective(W, b, cold)
            if (cold_residual <= OMEGA_RESIDUAL_TOL
                    and f_cold <= f + 1e-13 * max(1.0, abs(f))):
                drop = (f - f_cold) / max(1.0, abs(f_cold))
                state, omega_residual, f = cold, cold_residual, f_cold
                history[-1] = f
                if drop > tol:  # W was converged for the inexact Ω only
                    converged = False
                    warnings.warn(f"{member.name}: the last Ω-step was not exact; solved again "
                                  f"from the initial state it lowered F by {drop:.2e} "
                                  f"(relative, > tol {tol:g}): the alternation had not "
                                  "converged", ConvergenceWarning, stacklevel=2)
        if converged and not omega_residual <= OMEGA_RESIDUAL_TOL:
            converged = False
            warnings.warn(f"{member.name}: the alternation stopped, but its last Ω-step is not "
                          f"exact (relative KKT residual {omega_residual:.2e} > "
                          f"{OMEGA_RESIDUAL_TOL:g}; its solver stopped at its cap or at "
                          "round-off): the result is not the MAP", ConvergenceWarning,
                          stacklevel=2)
    elif not converged:
        why = f"after {it} outer iterations" + (" (time limit)" if it < max_iter else "")
        # the last Ω-step need not be exact here (an early, inexact one; or one stopped at
        # round-off, which a converged fit would solve again): say how far it is
        last = ("" if certify is None or gram is None else
                f", last Ω-step's relative KKT residual {float(certify(gram, lam, d, state)):.2e}")
        drift = getattr(member, "drift_hint", None)  # members whose MAP may drift
        last += "" if drift is None else drift(state)
        warnings.warn(f"{member.name}: alternating MAP stopped unconverged {why}; relative W "
                      f"change {change:.2e}, last relative change of F {relative:.2e}{last}",
                      ConvergenceWarning,
                      stacklevel=2)
    P = member.precision(state)
    return FamilyResult(np.asarray(W), np.asarray(b), np.asarray(member.covariance(state)),
                        np.asarray(P), np.asarray(state), history[-1], np.asarray(history),
                        it, converged, change, np.asarray(extrapolated, dtype=bool),
                        newton_steps)


def _newton_runner(term, member, lam, d, tol, objective, inexact):
    """``run(W, b, state, gram, max_steps, deadline)`` -> :class:`~.reduced_newton.NewtonResult`
    from that point (at most ``reduced_newton.MAX_STEPS`` steps), or None where Newton on the
    reduced objective does not apply: the member has no ``reduced_curvature``, the likelihood
    is not Gaussian, or the m·D unknowns exceed ``DENSE_SYSTEM_MAX``. ``inexact``: the
    member's Ω-steps may be inexact, so the starting one is solved again exactly."""
    curvature = getattr(member, "reduced_curvature", None)
    if (curvature is None or not isinstance(term, GaussianTerm)
            or term.rhs.size > DENSE_SYSTEM_MAX):
        return None
    D = term.rhs.shape[1]

    def run(W, b, state, gram, max_steps, deadline):
        if inexact:  # Newton needs the exact P*(W)
            state = member.omega_step(gram, lam, d, state, gram)
        return reduced_newton(
            term, lam, d, stack(W, b, D), state, gram,
            omega_step=lambda G, s, G0: member.omega_step(G, lam, d, s, G0),
            precision=member.precision, curvature=lambda W, s: curvature(W, lam, s),
            objective=objective, tol=tol, max_steps=max(0, min(MAX_STEPS, max_steps)),
            deadline=deadline)

    return run


def _fit_profile(data, member, lam, loss_scale, noise, method, max_iter, tol, init):
    prox, penalty, args, spectrum = member.profile(lam)
    r = solve_profile(data, name=member.name, method=method, prox=prox, penalty=penalty,
                      args=args, omega_spectrum=spectrum,
                      omega0=np.asarray(member.initial_state(data.n_tasks)), lam=lam,
                      loss_scale=loss_scale, noise=noise, max_iter=max_iter, tol=tol,
                      init=None if init is None else init[:2])
    omega = np.asarray(r.omega)
    # P = Ω⁻¹ from the same spectral decomposition (O(m d²) for m > d, not an m × m inverse)
    precision = np.asarray(omega_from_W_spectrum(jnp.asarray(r.W),
                                                 reciprocal_spectrum(spectrum), args))
    return FamilyResult(r.W, r.b, omega, precision, omega, r.objective, r.history,
                        r.n_iter, r.converged, r.residual)
