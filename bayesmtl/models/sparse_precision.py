r"""glMTL: a sparse task precision, the graphical lasso on the task weights."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.linalg
from numpyro.distributions import constraints

from ..inference.omega_steps import (
    graphical_lasso,
    graphical_lasso_residual,
    graphical_lasso_sensitivity,
)
from ..priors import OmegaPrior, log_det, positive_scalar

#: the most non-zeros of P* for which :meth:`SparsePrecision.reduced_curvature` forms its
#: (n_A, n_A) system
SUPPORT_MAX = 8000


@dataclass(frozen=True)
class SparsePrecision(OmegaPrior):
    r"""glMTL (table row [32, 27]): g(Ω) = (λd / 2λ₂) ln|Ω| + ‖Ω⁻¹‖₁.

    In the precision P = Ω⁻¹: ``λ₂ g = -(λd/2) ln|P| + λ₂ Σ_st |P_st|`` (all entries,
    diagonal included), so the joint is the graphical lasso on the task weights:
    ``(λ/2) tr(P WᵀW) - (λd/2) ln|P| + λ₂‖P‖₁``, i.e. the matrix-normal prior raised to the
    power λ times a Laplace prior on the precision entries.

    Ω-step (exact): graphical lasso with S = WᵀW / d and penalty α = 2λ₂ / (λd), solved by
    projected Newton on its box-constrained dual (:func:`graphical_lasso`), which stops on
    a relative duality gap of 1e-11, at a relative KKT residual of 1e-9 (or the looser
    ``accuracy`` that ``fit_family`` passes early in a fit), at round-off or after 200 Newton
    steps;
    :meth:`omega_residual` certifies the final Ω-step (relative KKT residual), so a fit whose
    last step did not reach its optimum is reported unconverged. :meth:`reduced_curvature`
    (the derivative of that Ω-step) lets ``fit_family`` finish a Gaussian fit by Newton's
    method on the reduced objective min_P F (:mod:`bayesmtl.inference.reduced_newton`).

    Sampling: Gibbs joint with Lebesgue measure on P (site ``omega_inv``, positive definite);
    integrating W leaves |P|^{(λ-1)d/2} e^{-λ₂‖P‖₁}, which is proper iff λ > 1 - 2/d.
    """

    lam2: float = 1.0
    name = "glmtl"

    def check(self, m: int) -> None:
        del m
        positive_scalar(self.lam2, "SparsePrecision lam2 (λ₂)")

    def initial_state(self, m):
        return jnp.eye(m)

    def precision(self, state):
        return state

    def covariance(self, state):
        return jnp.linalg.inv(state)

    #: ``omega_step`` takes ``accuracy``: a relative KKT residual to stop at (the alternation's
    #: early steps need not be exact)
    inexact_omega_step = True

    def omega_step(self, gram, lam, d, state, previous_gram=None, accuracy=None):
        S0 = None if previous_gram is None else previous_gram / d
        return graphical_lasso(gram / d, 2.0 * self.lam2 / (lam * d), state, S0,
                               residual_stop=accuracy)

    def omega_residual(self, gram, lam, d, state):
        """Relative KKT residual of ``state`` as the Ω-step's solution for this Gram matrix
        (0 at the exact Ω-step; :func:`~.omega_steps.graphical_lasso_residual`)."""
        return graphical_lasso_residual(gram / d, 2.0 * self.lam2 / (lam * d), state)

    def reduced_curvature(self, W, lam, state):
        r"""(m·d, m·d) negative semidefinite part of the reduced objective's Hessian in W.

        With P*(W) the exact Ω-step, φ(W) = min_P F has gradient ∇L + λ W P* (envelope
        theorem) and Hessian ∇²L + λ P* ⊗ I + C, where C·vec V = λ W dP* for the change
        dS = (VᵀW + WᵀV)/d of S = WᵀW/d. On P*'s support (sign pattern kept,
        :func:`~bayesmtl.inference.omega_steps.graphical_lasso_sensitivity`)
        dP*_A = -K⁻¹ dS_A, and λ W dP* = (λd/2) Jᵀ dP*_A with J the map vec V ↦ dS_A, so
        C = -(λd/2) Jᵀ K⁻¹ J (the graphical lasso's value is concave in S). vec V is
        task-major: entry t·d + k is V[k, t]. ``state`` is P* for this W. None where P* has
        more than ``SUPPORT_MAX`` non-zeros (K alone would take over 0.5 GB).
        """
        W = np.asarray(W)
        d, m = W.shape
        if np.count_nonzero(np.asarray(state)) > SUPPORT_MAX:
            return None
        pairs, (factor, lower) = graphical_lasso_sensitivity(state)
        s, t = pairs[:, 0], pairs[:, 1]
        rows = np.arange(len(pairs))[:, None]
        k = np.arange(d)[None, :]
        J = np.zeros((len(pairs), m * d))
        np.add.at(J, (rows, t[:, None] * d + k), W[:, s].T / d)  # v_t's entries of dS_st
        np.add.at(J, (rows, s[:, None] * d + k), W[:, t].T / d)  # v_s's (twice where s = t)
        X = scipy.linalg.solve_triangular(factor, J, lower=lower, trans="N" if lower else "T")
        return -(lam * d / 2) * (X.T @ X)

    def penalty(self, state, lam, d):
        return -0.5 * lam * d * log_det(state) + self.lam2 * jnp.sum(jnp.abs(state))

    def sample_state(self, m, d, lam):
        P = numpyro.sample("omega_inv", dist.ImproperUniform(constraints.positive_definite, (),
                                                             (m, m)))
        numpyro.factor("omega_penalty", -self.penalty(P, lam, d))
        return P

    def state_from_samples(self, flat, m):
        """(n, m, m) states of n flat NUTS draws (site ``omega_inv``)."""
        del m
        return flat["omega_inv"]
