"""Tasks reconstructed from the other tasks: the structure shared by AMTL and GAMTL.

A relation matrix ``B (m, m)`` with zero diagonal maps task parameters to reconstructions:
column t of ``W @ B`` is ``sum_s B[s, t] w_s`` (AMTL's ``W b_t``, GAMTL's ``W_{-t} c_t``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ..inference.omega_steps import reconstruction_step
from ..priors import OmegaPrior, positive_scalar


def zero_diagonal(B):
    """B with its diagonal set to zero (a task never reconstructs itself)."""
    return B * (1.0 - jnp.eye(B.shape[0], dtype=B.dtype))


def reconstruction(W, B):
    """(d, m) reconstructions ``W @ B`` with B's diagonal ignored."""
    return W @ zero_diagonal(B)


def reconstruction_residual(W, B):
    """(d, m) ``W - W @ B``: what each task's parameters keep beyond the other tasks."""
    return W - reconstruction(W, B)


#: I - A counts as numerically singular below this ratio of its extreme singular values
SINGULAR_SPAN = 1e-8


def singular_span_hint(A, symbol: str = "A") -> str:
    """Hint for the unconverged warning of a fit with the prior (λ/2)‖W - WA‖²_F whose I - A
    (A (m, m) as given: zero AMTL's diagonal first) is numerically singular, "" otherwise.

    With more tasks than features most columns of W lie in the span (AMTL: the cone) of the
    others, so W ≈ WA costs little ℓ1 mass; where I - A turns singular, the W-step's Hessian
    is singular on {V : X̃_t v_t = 0 for every t, V(I - A) = 0}, directions that no training
    row sees and the prior does not penalise, and the fit drifts into them (School: AMTL's
    ‖W‖ 4.9e3 → 8.8e5 over 20 → 250 outer iterations, test RMSE 10.25 → 23.3; the
    reconstruction member's with zero diagonal 10.37 → 11.72 over 20 → 300;
    benchmarks/README.md).
    """
    A = np.asarray(A)
    sigma = np.linalg.svd(np.eye(A.shape[0]) - A, compute_uv=False)
    ratio = sigma[-1] / sigma[0]
    if not ratio <= SINGULAR_SPAN:
        return ""
    return (f"; I - {symbol} is numerically singular (smallest singular value {ratio:.1e} of "
            "the largest), so the reconstruction prior no longer holds W in directions that the "
            "training rows leave open and ‖W‖ may keep growing: raise λ or read this fit as "
            "early stopping")


@dataclass(frozen=True)
class SparseReconstruction(OmegaPrior):
    r"""Sparse linear span (table row [19], supplement eq. (9)): Ω⁻¹ = (I - A)(I - A)ᵀ,
    λ₂ g = λ₂‖A‖₁, A (m, m) real (negative entries allowed).

    ``(λ/2) tr(W Ω⁻¹ Wᵀ) = (λ/2)‖W - WA‖²_F``: column a_i reconstructs task i from the
    others (A[s, i] = weight of source task s for target task i). The diagonal is free and
    shrunk by the ℓ1 term (the paper's choice, avoiding A = I), or fixed at 0 with
    ``zero_diagonal=True`` (AMTL's convention).

    A-step (exact): a lasso in A with Gram G = WᵀW, solved by ADMM in G's eigenbasis.

    Sampling: A_st ~ Laplace(0, 1/λ₂) (proper) with the Gibbs coupling of the module
    docstring; integrating W gives |det(I - A)|^{-d}, so the joint prior is improper and the
    posterior is proper when the likelihood alone identifies W (Gaussian likelihood, every
    task's design of full column rank). Site ``reconstruction`` with dims
    (``source_task``, ``target_task``).

    Existence of the MAP: with the free diagonal, A_ii → 1 switches task i's coupling off at
    an ℓ1 cost of only λ₂. For a logistic task whose classes are linearly separable, the path
    ‖w_i‖ → ∞, (1 - A_ii)‖w_i‖ → 0 sends the task's loss and coupling to 0 at ℓ1 cost → λ₂,
    so for small λ₂ the MAP need not exist and the alternation drifts (as on the MNIST
    one-vs-rest tasks at λ₂ = 1e-3). Use ``zero_diagonal=True`` or a larger λ₂ there. With
    the squared loss and more tasks than features, I - A drifts towards singular while ‖W‖
    grows (School, λ = 1, λ₂ = 0.1: test RMSE 10.37 → 11.72 over 20 → 300 outer iterations
    with zero diagonal; :func:`singular_span_hint`, which an unconverged fit's warning
    appends).
    """

    lam2: float = 1.0
    zero_diagonal: bool = False
    name = "reconstruction"

    def check(self, m: int) -> None:
        del m
        positive_scalar(self.lam2, "SparseReconstruction lam2 (λ₂)")

    def _mask(self, m):
        return 1.0 - jnp.eye(m) if self.zero_diagonal else jnp.ones((m, m))

    def initial_state(self, m):
        return jnp.zeros((m, m))

    def precision(self, state):
        R = jnp.eye(state.shape[0]) - state
        return R @ R.T

    def covariance(self, state):
        return jnp.linalg.pinv(self.precision(state), hermitian=True)

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        del previous_gram
        return reconstruction_step(gram, lam, self.lam2, state, self._mask(gram.shape[0]),
                                   rank=d)

    def drift_hint(self, state) -> str:
        """The unconverged warning's hint (:func:`singular_span_hint`) for state A."""
        return singular_span_hint(state)

    def penalty(self, state, lam, d):
        del lam, d
        return self.lam2 * jnp.sum(jnp.abs(state))

    def sample_state(self, m, d, lam):
        del d, lam
        A = numpyro.sample("reconstruction", dist.Laplace(0.0, 1.0 / self.lam2)
                           .expand([m, m]).to_event(2))
        return A * self._mask(m)

    def state_from_samples(self, flat, m):
        """(n, m, m) A of n flat NUTS draws (site ``reconstruction``, diagonal masked)."""
        return flat["reconstruction"] * np.asarray(self._mask(m))
