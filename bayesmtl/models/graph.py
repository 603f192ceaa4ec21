r"""Graph-regularised MTL (RMTL): the task precision is a graph Laplacian (L2MT Table 1)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import PriorError
from ..priors import OmegaPrior, nonnegative_scalar


def graph_laplacian(similarity) -> np.ndarray:
    """L = D - S for a symmetric non-negative similarity S (m, m); the diagonal of S is ignored."""
    S = np.asarray(similarity, dtype=np.float64)
    S = S - np.diag(np.diag(S))
    return np.diag(S.sum(axis=1)) - S


@dataclass(frozen=True, eq=False)
class GraphLaplacian(OmegaPrior):
    r"""Graph-regularised MTL (RMTL, Evgeniou et al.): Ω = L_S⁻¹ (table row [14, 13]).

    ``-log p ∝ (λ/2) tr(W (L + ρI) Wᵀ) = (λ/4) Σ_{s,t} S_st ‖w_s - w_t‖² + (λρ/2)‖W‖²_F``
    with L = D - S the Laplacian of the task-similarity graph S (m, m), symmetric, ≥ 0.

    L is always singular (L 1 = 0), so Ω = L⁻¹ is read as the precision P = L (the
    pseudo-inverse covariance): the prior penalises differences between connected tasks and
    leaves the mean of each connected component's weights unpenalised. With ``ridge`` ρ = 0 that
    direction is improper (flat): MAP is still unique when the data identify each component's
    mean (e.g. Gaussian likelihood with full-rank designs), and sampling then needs such a
    likelihood; ``ridge`` > 0 makes the prior a proper Gaussian. A disconnected graph has one
    flat direction per component (reported by :meth:`n_components`).
    """

    similarity: object = None
    ridge: float = 0.0
    name = "graph"
    fixed = True

    def _matrix(self):
        if self.similarity is None:
            raise PriorError("GraphLaplacian needs a similarity matrix S (m, m)")
        S = np.asarray(self.similarity, dtype=np.float64)
        if S.ndim != 2 or S.shape[0] != S.shape[1]:
            raise PriorError(f"similarity must be a square matrix; got shape {S.shape}")
        if not np.all(np.isfinite(S)):
            raise PriorError("similarity holds NaN or inf")
        if np.max(np.abs(S - S.T), initial=0.0) > 1e-10 * max(1.0, np.abs(S).max()):
            raise PriorError("similarity must be symmetric (an undirected task graph)")
        if np.any(S < 0):
            raise PriorError("similarity must be non-negative (edge weights ≥ 0)")
        return S

    def check(self, m: int) -> None:
        S = self._matrix()
        if S.shape[0] != m:
            raise PriorError(f"similarity is {S.shape[0]}×{S.shape[0]} but there are {m} tasks")
        nonnegative_scalar(self.ridge, "ridge")

    def n_components(self) -> int:
        """Number of connected components of the graph (flat prior directions when ρ = 0)."""
        L = graph_laplacian(self._matrix())
        evals = np.linalg.eigvalsh(L)
        return int(np.sum(evals <= 1e-10 * max(1.0, evals.max())))

    def precision_matrix(self, m: int) -> np.ndarray:
        self.check(m)
        return graph_laplacian(self._matrix()) + self.ridge * np.eye(m)

    # MAP interface: Ω is fixed, so the "state" is the precision itself.
    def initial_state(self, m):
        return jnp.asarray(self.precision_matrix(m))

    def precision(self, state):
        return state

    def covariance(self, state):
        if not isinstance(state, jax.core.Tracer):
            P = np.asarray(state)
            diag = np.diag(P)
            if not np.any(P - np.diag(diag)):  # diagonal (STL): no m × m decomposition
                return jnp.diag(np.where(diag > 0, 1.0 / np.where(diag > 0, diag, 1.0), 0.0))
        return jnp.linalg.pinv(state, hermitian=True)

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        del gram, lam, d, previous_gram
        return state

    def penalty(self, state, lam, d):
        del state, lam, d
        return 0.0

    def sample_state(self, m, d, lam):
        del d, lam
        return jnp.asarray(self.precision_matrix(m))

    def state_from_samples(self, flat, m):
        """(n, m, m) states of n flat NUTS draws (the fixed precision, repeated)."""
        n = next(iter(flat.values())).shape[0]
        return np.broadcast_to(self.precision_matrix(m), (n, m, m))


def mean_regularised(m: int, ridge: float = 0.0) -> GraphLaplacian:
    """Mean-regularised MTL (Evgeniou & Pontil 2004) as the complete graph with weights 1/m:
    ``(λ/2) tr(W L Wᵀ) = (λ/2) Σ_i ‖w_i - w̄‖²``."""
    S = np.full((m, m), 1.0 / m)
    return GraphLaplacian(S, ridge)
