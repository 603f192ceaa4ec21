r"""Convex clustered MTL (Jacob et al. 2008): Ω in {tr Ω = a, bI ⪯ Ω ⪯ cI}."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ..errors import PriorError
from ..inference.omega_steps import clustered_omega_step
from ..inference.prox import clustered_prox, clustered_spectrum
from ..priors import OmegaPrior, positive_scalar


@dataclass(frozen=True)
class Clustered(OmegaPrior):
    r"""Convex clustered MTL (Jacob et al. 2008; table row [16]).

    g(Ω) = 0 on {tr Ω = a, bI ⪯ Ω ⪯ cI}, +∞ elsewhere (0 < b < c, m b ≤ a ≤ m c), so MAP
    minimises L + (λ/2) tr(W Ω⁻¹ Wᵀ) jointly over (W, b, Ω) — a convex problem.

    Ω-step (exact): with WᵀW = U diag(s²) Uᵀ the minimiser is Ω = U diag(σ) Uᵀ with
    σ_i = clip(s_i / θ, b, c) and θ > 0 found by bisection so that Σ σ_i = a (MALSAR's CMTL
    projection). Minimising over Ω leaves a convex spectral penalty R(W) of the singular
    values of W whose prox is again a clipped-bisection (:func:`clustered_prox`), so MAP is
    solved as a profile problem (ADMM with exact W-steps for the Gaussian likelihood, FISTA
    for the logistic one) instead of alternating — the same loops as MTRL.

    Sampling counterpart: the Gibbs joint of the module docstring, with Lebesgue (uniform)
    reference measure on the compact set; proper. Realised as Ω = bI + (a - mb) S / tr S with
    S ~ Wishart(m + 1, I) (site ``omega_raw``; the trace-normalised S is uniform on the
    spectraplex) and a hard factor for Ω ⪯ cI.
    """

    a: float = 1.0
    b: float = 1e-3
    c: float = 1.0
    name = "clustered"

    def check(self, m: int) -> None:
        for v, n in ((self.a, "a"), (self.b, "b"), (self.c, "c")):
            positive_scalar(v, f"Clustered {n}")
        if not self.b < self.c:
            raise PriorError(f"Clustered needs b < c; got b={self.b}, c={self.c}")
        if not m * self.b <= self.a <= m * self.c:
            raise PriorError(f"Clustered needs m·b ≤ a ≤ m·c for a non-empty set; got m={m}, "
                             f"a={self.a}, b={self.b}, c={self.c}")

    def initial_state(self, m):
        return jnp.eye(m) * (self.a / m)

    def precision(self, state):
        return jnp.linalg.inv(state)

    def covariance(self, state):
        return state

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        del lam, d, state, previous_gram
        return clustered_omega_step(gram, self.a, self.b, self.c)

    def profile(self, lam):
        """The convex profile problem min_W L + R(W), R spectral: (prox, penalty, args,
        Ω-spectrum) for :func:`bayesmtl.models.matrix_normal.solve_profile`."""
        args = jnp.asarray([lam, self.a, self.b, self.c], dtype=jnp.float64)
        return clustered_prox, clustered_penalty, args, _clustered_omega_spectrum

    def penalty(self, state, lam, d):
        del state, lam, d
        return 0.0

    def sample_state(self, m, d, lam):
        del d, lam
        S = numpyro.sample("omega_raw", dist.Wishart(m + 1.0, scale_matrix=jnp.eye(m)))
        omega = self.b * jnp.eye(m) + (self.a - m * self.b) * S / jnp.trace(S)
        top = jnp.linalg.eigvalsh(omega)[-1]
        # the set is closed: Ω on its boundary (a MAP with eigenvalues clipped at c) counts
        numpyro.factor("omega_upper", jnp.where(top <= self.c * (1 + 1e-10), 0.0, -jnp.inf))
        return omega

    def state_from_samples(self, flat, m):
        """(n, m, m) Ω of n flat NUTS draws of ``omega_raw``."""
        S = flat["omega_raw"]
        tr = np.trace(S, axis1=1, axis2=2)[:, None, None]
        return self.b * np.eye(m) + (self.a - m * self.b) * S / tr


def _clustered_omega_spectrum(g, args):
    lam, a, b, c = args
    del lam
    return clustered_spectrum(g, a, b, c)


def padded_singular_values(W):
    """The m singular values of W (d, m), zeros appended when d < m."""
    s = jnp.linalg.svd(W, compute_uv=False)
    return jnp.concatenate([s, jnp.zeros(max(W.shape[1] - s.shape[0], 0), s.dtype)])


def clustered_penalty(W, args):
    """Profile penalty R(W) = min_Ω (λ/2) tr(W Ω⁻¹ Wᵀ) over the clustered set (spectral)."""
    lam, a, b, c = args
    s2 = padded_singular_values(W) ** 2
    return 0.5 * lam * jnp.sum(s2 / clustered_spectrum(s2, a, b, c))
