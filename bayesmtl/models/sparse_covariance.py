r"""SPATS: a sparse task covariance ‖Ω‖₁ (jointly convex in (W, Ω))."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..inference.omega_steps import sparse_covariance_residual, sparse_covariance_step
from ..priors import OmegaPrior, nonnegative_scalar, positive_scalar


@dataclass(frozen=True)
class SparseCovariance(OmegaPrior):
    r"""SPATS (Zhang & Yang; table row [33]): g(Ω) = ‖Ω‖₁ (all entries), Ω ≻ 0.

    Jointly convex in (W, Ω). When WᵀW is singular (e.g. d < m) the infimum over Ω is
    approached with Ω singular; to keep Ω ≻ 0 we add the barrier ``(λε/2) tr(Ω⁻¹)``, i.e.
    ``λ₂ g_ε(Ω) = λ₂‖Ω‖₁ + (λε/2) tr(Ω⁻¹)`` (``eps`` = ε, default 1e-8; the reported
    objective includes it, and ε = 0 is the paper's g). Equivalently, W gains a fixed row
    block √ε I.

    Ω-step: with ‖Ω‖₁ over all entries the minimiser is diagonal, ω_i = √(λ G_ii / 2λ₂)
    (G = WᵀW + εI; the off-diagonal KKT conditions hold by Cauchy–Schwarz, see
    :func:`~bayesmtl.inference.omega_steps.sparse_covariance_step`). So this prior's MAP
    learns per-task scales, not relations between tasks. The step is computed by
    diagonal-metric proximal gradient started there, which certifies it in one step;
    :meth:`omega_residual` certifies the final Ω-step, and the MAP fit is reported unconverged
    when it is not exact.

    Sampling: Gibbs joint with Lebesgue measure on Ω (site ``omega``, positive definite);
    integrating W leaves |Ω|^{d/2} e^{-λ₂‖Ω‖₁ - …}, which is integrable: proper.
    """

    lam2: float = 1.0
    eps: float = 1e-8
    name = "spats"

    def check(self, m: int) -> None:
        del m
        positive_scalar(self.lam2, "SparseCovariance lam2 (λ₂)")
        nonnegative_scalar(self.eps, "SparseCovariance eps")

    def initial_state(self, m):
        return jnp.eye(m)

    def precision(self, state):
        return jnp.linalg.inv(state)

    def covariance(self, state):
        return state

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        del d, previous_gram
        m = gram.shape[0]
        return sparse_covariance_step(gram + self.eps * jnp.eye(m), lam, self.lam2, state)[0]

    def omega_residual(self, gram, lam, d, state):
        """Relative KKT residual of ``state`` as the Ω-step's solution for this Gram matrix
        (0 at the exact Ω-step; :func:`~.omega_steps.sparse_covariance_residual`)."""
        del d
        m = gram.shape[0]
        return sparse_covariance_residual(gram + self.eps * jnp.eye(m), lam, self.lam2, state)

    def penalty(self, state, lam, d):
        del d
        return (self.lam2 * jnp.sum(jnp.abs(state))
                + 0.5 * lam * self.eps * jnp.trace(jnp.linalg.inv(state)))

    def sample_state(self, m, d, lam):
        omega = numpyro.sample("omega", dist.ImproperUniform(constraints.positive_definite,
                                                             (), (m, m)))
        numpyro.factor("omega_penalty", -self.penalty(omega, lam, d))
        return omega

    def state_from_samples(self, flat, m):
        """(n, m, m) states of n flat NUTS draws (site ``omega``)."""
        del m
        return flat["omega"]
