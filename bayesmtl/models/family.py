r"""The task-relation family of L2MT (Table 1): members whose Ω-step is not spectral.

Every member instantiates objective (1) of L2MT,

    F(W, b, Ω) = Σ_i (1/n_i) Σ_j l(w_iᵀx_ij + b_i, y_ij) + (λ/2) tr(W P Wᵀ) + λ₂ g(Ω),

with the task precision P = Ω⁻¹ (or a pseudo-inverse/precision parameterisation where the paper
defines one), W (d, m), λ = the paper's λ₁ (argument ``lam``) and λ₂ a field of the member.

Bayesian reading (one for all members)
--------------------------------------
The members define the joint ("Gibbs") density

    p(W, b, Ω | y) ∝ exp(-F(W, b, Ω)),

i.e. a flat reference measure on W and b, the coupling factor exp(-(λ/2) tr(W P Wᵀ)), the
factor exp(-λ₂ g(Ω)) on the member's Ω-parameter (Lebesgue measure in the coordinates named
by each member), and the likelihood tempered by 1/n_i ("mean" scaling, Gaussian σ = 1/√2 for
the squared loss). MAP of this density is the paper's estimator by construction. Integrating W
gives ``c·|λP|^{-d/2}``, so the joint prior on (W, Ω) is proper exactly when
``∫ |P|^{-d/2} exp(-λ₂ g) dΩ < ∞``; each member's docstring says whether it is. NUTS samples
this density with :func:`family_model` (see :func:`sample_family`).

MAP (:func:`fit_family`) alternates exact block minimisations: the W-step is a
quadratic-coupled regression (exact linear solve by PCG for the Gaussian likelihood,
Newton–CG for the logistic one) and each member's ``omega_step(gram, lam, d, state,
previous_gram)`` is the exact minimiser of ``(λ/2) tr(P G) + λ₂ g`` given the Gram matrix
G = WᵀW (``state`` and ``previous_gram``, the Gram matrix ``state`` was computed from, only
warm-start it). For the jointly convex members (graph, clustered, SPATS) this block coordinate
descent reaches the global optimum; for glMTL and the reconstruction form it reaches a
stationary point of a biconvex problem. The alternation is extrapolated in W (Ang & Gillis
2019), with F kept monotone.

Members here: :class:`GraphLaplacian` (RMTL, mean-regularised MTL), :class:`Clustered`
(Jacob et al.'s convex clustered MTL), :class:`SparsePrecision` (glMTL),
:class:`SparseCovariance` (SPATS), :class:`SparseReconstruction` (the sparse linear-span form
of [19], supplement eq. (9)), plus the STL and pooled baselines. MTRL is
:class:`bayesmtl.priors.MTRL` with :func:`bayesmtl.models.matrix_normal.fit_mtrl`, and the
Schatten members live in :mod:`bayesmtl.models.schatten`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import MultiTaskData
from ..errors import ConvergenceWarning, PriorError
from ..inference.solvers import admm, newton_cg, projected_newton, prox_l1
from ..priors import OmegaPrior
from .likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from .losses import linear_predictor
from .matrix_normal import (
    _data_loss,
    _inputs,
    _task_blocks,
    gaussian_w_step,
    profile_admm,
    solve_profile,
    task_rows,
)
from .schatten import _log_det

__all__ = ["GraphLaplacian", "mean_regularised", "Clustered", "SparsePrecision",
           "SparseCovariance", "SparseReconstruction", "FamilyResult", "fit_family",
           "fit_pooled", "pooled_model", "family_objective", "family_model", "sample_family",
           "graph_laplacian"]


def _positive(value, name):
    if not (np.isscalar(value) and np.isfinite(value) and value > 0):
        raise PriorError(f"{name} must be a positive number; got {value!r}")


def _nonnegative(value, name):
    if not (np.isscalar(value) and np.isfinite(value) and value >= 0):
        raise PriorError(f"{name} must be a non-negative number; got {value!r}")


# ----------------------------------------------------------------------------- graph (RMTL)


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
        _nonnegative(self.ridge, "ridge")

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


def mean_regularised(m: int, ridge: float = 0.0) -> GraphLaplacian:
    """Mean-regularised MTL (Evgeniou & Pontil 2004) as the complete graph with weights 1/m:
    ``(λ/2) tr(W L Wᵀ) = (λ/2) Σ_i ‖w_i - w̄‖²``."""
    S = np.full((m, m), 1.0 / m)
    return GraphLaplacian(S, ridge)


# ----------------------------------------------------------------------------- clustered


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
            _positive(v, f"Clustered {n}")
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


def clustered_spectrum(g, a, b, c):
    """σ (k,) minimising Σ g_i / σ_i over {Σ σ_i = a, b ≤ σ_i ≤ c} for g (k,) ≥ 0:
    σ_i = clip(√g_i / θ, b, c), θ > 0 by bisection on log θ (MALSAR's CMTL projection)."""
    s = jnp.sqrt(jnp.clip(g, 0.0))
    s = s + 1e-14 * jnp.max(s) + 1e-300  # ties at s = 0 broken harmlessly

    def total(log_theta):
        return jnp.sum(jnp.clip(s / jnp.exp(log_theta), b, c))

    # Σ clip(s/θ) decreases from k·c (θ small) to k·b (θ large)
    lo = jnp.log(jnp.min(s) / c) - 1.0
    hi = jnp.log(jnp.max(s) / b) + 1.0

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        big = total(mid) > a
        return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 200, body, (lo, hi))
    return jnp.clip(s / jnp.exp(0.5 * (lo + hi)), b, c)


@jax.jit
def clustered_omega_step(gram, a, b, c):
    """argmin_Ω tr(Ω⁻¹ G) over {tr Ω = a, bI ⪯ Ω ⪯ cI} for G (m, m) ⪰ 0."""
    evals, U = jnp.linalg.eigh(gram)
    return (U * clustered_spectrum(evals, a, b, c)) @ U.T


def _clustered_omega_spectrum(g, args):
    lam, a, b, c = args
    del lam
    return clustered_spectrum(g, a, b, c)


def _padded_singular_values(W):
    s = jnp.linalg.svd(W, compute_uv=False)
    return jnp.concatenate([s, jnp.zeros(max(W.shape[1] - s.shape[0], 0), s.dtype)])


def clustered_penalty(W, args):
    """Profile penalty R(W) = min_Ω (λ/2) tr(W Ω⁻¹ Wᵀ) over the clustered set (spectral)."""
    lam, a, b, c = args
    s2 = _padded_singular_values(W) ** 2
    return 0.5 * lam * jnp.sum(s2 / clustered_spectrum(s2, a, b, c))


def clustered_prox(V, step, args):
    """argmin_Z R(Z) + ‖Z - V‖²/(2 step) for the clustered profile penalty R.

    On singular values v (padded with zeros to m): minimising over Z first gives
    Σ λ v_i² / (2(σ_i + λt)), so σ' = σ + λt solves the same clustered problem on the
    shifted set {Σ σ' = a + mλt, b + λt ≤ σ' ≤ c + λt}; then z_i = v_i σ_i / (σ_i + λt).
    """
    lam, a, b, c = args
    m = V.shape[1]
    U, v, Vt = jnp.linalg.svd(V, full_matrices=False)
    k = v.shape[0]
    shift = lam * step
    v_pad = jnp.concatenate([v, jnp.zeros(m - k, v.dtype)])
    sigma_shifted = clustered_spectrum(v_pad**2, a + m * shift, b + shift, c + shift)[:k]
    return (U * (v * (sigma_shifted - shift) / sigma_shifted)) @ Vt


# ----------------------------------------------------------------------------- glMTL


@dataclass(frozen=True)
class SparsePrecision(OmegaPrior):
    r"""glMTL (table row [32, 27]): g(Ω) = (λd / 2λ₂) ln|Ω| + ‖Ω⁻¹‖₁.

    In the precision P = Ω⁻¹: ``λ₂ g = -(λd/2) ln|P| + λ₂ Σ_st |P_st|`` (all entries,
    diagonal included), so the joint is the graphical lasso on the task weights:
    ``(λ/2) tr(P WᵀW) - (λd/2) ln|P| + λ₂‖P‖₁``, i.e. the matrix-normal prior raised to the
    power λ times a Laplace prior on the precision entries.

    Ω-step (exact): graphical lasso with S = WᵀW / d and penalty α = 2λ₂ / (λd), solved by
    projected Newton on its box-constrained dual (:func:`graphical_lasso`).

    Sampling: Gibbs joint with Lebesgue measure on P (site ``omega_inv``, positive definite);
    integrating W leaves |P|^{(λ-1)d/2} e^{-λ₂‖P‖₁}, which is proper iff λ > 1 - 2/d.
    """

    lam2: float = 1.0
    name = "glmtl"

    def check(self, m: int) -> None:
        del m
        _positive(self.lam2, "SparsePrecision lam2 (λ₂)")

    def initial_state(self, m):
        return jnp.eye(m)

    def precision(self, state):
        return state

    def covariance(self, state):
        return jnp.linalg.inv(state)

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        S0 = None if previous_gram is None else previous_gram / d
        return graphical_lasso(gram / d, 2.0 * self.lam2 / (lam * d), state, S0)

    def penalty(self, state, lam, d):
        return -0.5 * lam * d * _log_det(state) + self.lam2 * jnp.sum(jnp.abs(state))

    def sample_state(self, m, d, lam):
        P = numpyro.sample("omega_inv", dist.ImproperUniform(constraints.positive_definite, (),
                                                             (m, m)))
        numpyro.factor("omega_penalty", -self.penalty(P, lam, d))
        return P


@partial(jax.jit, static_argnames=("max_iter",))
def graphical_lasso(S, alpha, P0, S0=None, max_iter=200, tol=1e-11):
    r"""argmin_{P ≻ 0} tr(S P) - ln|P| + α Σ_st |P_st|; S (m, m) ⪰ 0 (may be singular), α > 0.

    Solved through the dual (Banerjee et al. 2008), a smooth problem on a box:

        max_{U = Uᵀ, |U_st| ≤ α} ln|S + U| + m,   P = (S + U)⁻¹,

    by two-metric projected Newton (:func:`~bayesmtl.inference.solvers.projected_newton`):
    the ε-binding entries (on a bound, gradient pointing out) keep the scaled gradient step,
    which the projection cancels; the free entries take the Newton step of the Hessian P ⊗ P,
    ``Π_F(P Δ P) = Π_F(P)``, by Jacobi-preconditioned CG with a forcing tolerance that
    tightens as the projected gradient vanishes. Warm start: of U0 = α sign(P0) (the optimal
    U for P0's sign pattern by complementary slackness), αI and, when S0 (the S that P0
    solved) is given, P0's own dual point clip(P0⁻¹ - S0, ±α), the one with the largest
    ln|S + U0| (-inf where S + U0 is not positive definite; clip(P0⁻¹ - S, ±α) with the new S
    rarely is). Late in a glMTL fit, where S changes little between outer iterations, P0's
    dual point cuts the Newton steps from 30–40 to 6–16 on School. Stops when the duality
    gap α‖P‖₁ - ⟨U, P⟩ ≤ tol·max(1, |ln|S+U||) or when a Newton step no longer decreases
    ln|S+U| (round-off).

    Why the dual: with a singular S and a small α (School: rank 18 of 139, α ≈ 0.0074) the
    solution is ill-conditioned (cond P ≈ 7e3). Primal first-order methods crawl (the former
    ADMM did not finish the first School Ω-step in 1500 s; this solver takes ~10 s, see
    benchmarks/README.md). So does QUIC (Hsieh et al. 2014; proximal Newton, coordinate
    descent on the model with Hessian P⁻¹ ⊗ P⁻¹): on a 20 × 20 rank-3 problem with α = 0.01 it
    was still 1 % above the optimum after 200 Newton steps, where this solver needs ~12. An
    orthant-wise primal Newton–CG stalled there as well (zero crossings cut its steps). In the
    dual the sign pattern is the set of active bounds, which projection finds.

    Returns P = (S + U)⁻¹ with the entries that are not binding set to exact zeros
    (complementary slackness: U_st inside (-α, α) forces P_st = 0; they are round-off at
    convergence), unless that raises the objective or breaks positive definiteness (a stop
    at round-off on a badly conditioned S + U). Its KKT residual is
    :func:`graphical_lasso_subgradient`.
    """
    m = S.shape[0]
    S = (S + S.T) / 2
    eye = jnp.eye(m, dtype=S.dtype)

    def factor(U):
        L = jnp.linalg.cholesky(S + U)
        return L, jnp.all(jnp.isfinite(L))

    def precision(U):
        L, _ = factor(U)
        P = jax.scipy.linalg.cho_solve((L, True), eye)
        return (P + P.T) / 2

    def neg_log_det(U):  # the dual objective, minimised; inf outside S + U ≻ 0
        L, ok = factor(U)
        return jnp.where(ok, -2.0 * jnp.sum(jnp.log(jnp.where(ok, jnp.diag(L), 1.0))), jnp.inf)

    def project(U):
        return jnp.clip(U, -alpha, alpha)

    def binding(U, P):
        """ε-binding entries: within ε of a bound with the gradient -P pointing out."""
        distance = jnp.max(jnp.abs(project(U + P) - U))  # projected-gradient step
        eps = jnp.minimum(1e-3 * alpha, distance)
        return ((U >= alpha - eps) & (P > 0)) | ((U <= -alpha + eps) & (P < 0)), distance

    def direction(U):
        P = precision(U)
        g = -P
        fixed, distance = binding(U, P)
        diag_hessian = jnp.outer(jnp.diag(P), jnp.diag(P)) + P**2
        forcing = 1e-2 * jnp.minimum(0.1, jnp.sqrt(distance / alpha))
        D, _ = jax.scipy.sparse.linalg.cg(lambda V: jnp.where(fixed, 0.0, P @ V @ P),
                                          jnp.where(fixed, 0.0, P),
                                          M=lambda R: jnp.where(fixed, 0.0, R / diag_hessian),
                                          tol=forcing, maxiter=5 * m)
        return jnp.where(fixed, -g, (D + D.T) / 2), g

    def gap(U):
        P = precision(U)
        return jnp.sum(alpha * jnp.abs(P) - U * P)

    def stop(U):
        return gap(U) <= tol * jnp.maximum(1.0, jnp.abs(neg_log_det(U)))

    U0 = alpha * jnp.sign(P0 + P0.T)
    U0 = jnp.where(neg_log_det(U0) < neg_log_det(alpha * eye), U0, alpha * eye)
    if S0 is not None:
        P0_inverse = jnp.linalg.inv(P0)
        dual = project((P0_inverse + P0_inverse.T) / 2 - (S0 + S0.T) / 2)
        U0 = jnp.where(neg_log_det(dual) < neg_log_det(U0), dual, U0)
    U, _, _ = projected_newton(neg_log_det, direction, project, U0, stop=stop,
                               max_iter=max_iter)
    P = precision(U)
    sparse = jnp.where(binding(U, P)[0], P, 0.0)

    def primal(Q):  # the graphical-lasso objective, inf unless Q ≻ 0
        return neg_log_det(Q - S) + jnp.sum(S * Q) + alpha * jnp.sum(jnp.abs(Q))

    return jnp.where(primal(sparse) <= primal(P), sparse, P)


@jax.jit
def graphical_lasso_subgradient(S, alpha, P):
    """Minimum-norm subgradient (m, m) of tr(SP) - ln|P| + α Σ|P_st| at P ≻ 0.

    With G = S - P⁻¹: G_st + α sign(P_st) where P_st ≠ 0, else soft(G_st, α). Zero exactly at
    the minimiser; its norm is the KKT residual.
    """
    G = S - jnp.linalg.inv(P)
    return jnp.where(P != 0, G + alpha * jnp.sign(P), prox_l1(G, alpha))


# ----------------------------------------------------------------------------- SPATS


@dataclass(frozen=True)
class SparseCovariance(OmegaPrior):
    r"""SPATS (Zhang & Yang; table row [33]): g(Ω) = ‖Ω‖₁ (all entries), Ω ≻ 0.

    Jointly convex in (W, Ω). When WᵀW is singular (e.g. d < m) the infimum over Ω is
    approached with Ω singular; to keep Ω ≻ 0 we add the barrier ``(λε/2) tr(Ω⁻¹)``, i.e.
    ``λ₂ g_ε(Ω) = λ₂‖Ω‖₁ + (λε/2) tr(Ω⁻¹)`` (``eps`` = ε, default 1e-8; the reported
    objective includes it, and ε = 0 is the paper's g). Equivalently, W gains a fixed row
    block √ε I.

    Ω-step (exact): proximal gradient on Ω with Barzilai–Borwein steps and backtracking that
    keeps Ω ≻ 0 (the smooth part is +∞ outside the cone), stopping on the prox-gradient
    residual.

    Sampling: Gibbs joint with Lebesgue measure on Ω (site ``omega``, positive definite);
    integrating W leaves |Ω|^{d/2} e^{-λ₂‖Ω‖₁ - …}, which is integrable: proper.
    """

    lam2: float = 1.0
    eps: float = 1e-8
    name = "spats"

    def check(self, m: int) -> None:
        del m
        _positive(self.lam2, "SparseCovariance lam2 (λ₂)")
        _nonnegative(self.eps, "SparseCovariance eps")

    def initial_state(self, m):
        return jnp.eye(m)

    def precision(self, state):
        return jnp.linalg.inv(state)

    def covariance(self, state):
        return state

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        del d, previous_gram
        m = gram.shape[0]
        return sparse_covariance_step(gram + self.eps * jnp.eye(m), lam, self.lam2, state)

    def penalty(self, state, lam, d):
        del d
        return (self.lam2 * jnp.sum(jnp.abs(state))
                + 0.5 * lam * self.eps * jnp.trace(jnp.linalg.inv(state)))

    def sample_state(self, m, d, lam):
        omega = numpyro.sample("omega", dist.ImproperUniform(constraints.positive_definite,
                                                             (), (m, m)))
        numpyro.factor("omega_penalty", -self.penalty(omega, lam, d))
        return omega


def _inv_quad(omega, gram):
    """tr(Ω⁻¹ G) via Cholesky; +inf when Ω is not positive definite."""
    L = jnp.linalg.cholesky(omega)
    Linv_G = jax.scipy.linalg.solve_triangular(L, gram, lower=True)
    val = jnp.trace(jax.scipy.linalg.solve_triangular(L, Linv_G.T, lower=True))
    return jnp.where(jnp.all(jnp.isfinite(L)) & jnp.isfinite(val), val, jnp.inf)


@partial(jax.jit, static_argnames=("max_iter",))
def sparse_covariance_step(gram, lam, lam2, omega0, max_iter=20000, tol=1e-9):
    """argmin_{Ω ≻ 0} (λ/2) tr(Ω⁻¹ G) + λ₂‖Ω‖₁ for G ≻ 0 (m, m), from Ω₀ ≻ 0."""

    def smooth(omega):
        return 0.5 * lam * _inv_quad(omega, gram)

    def full(omega):
        return smooth(omega) + lam2 * jnp.sum(jnp.abs(omega))

    def grad(omega):
        inv = jnp.linalg.inv(omega)
        g = -0.5 * lam * inv @ gram @ inv
        return (g + g.T) / 2

    def try_step(omega, g, f, t):
        z = prox_l1(omega - t * g, t * lam2)
        z = (z + z.T) / 2
        dz = z - omega
        # sufficient decrease for composite problems (quadratic upper bound)
        bound = smooth(omega) + jnp.vdot(g, dz) + jnp.vdot(dz, dz) / (2 * t) \
            + lam2 * jnp.sum(jnp.abs(z))
        fz = full(z)
        return z, fz, (fz <= bound + 1e-14 * jnp.abs(f)) & jnp.isfinite(fz)

    def body(s):
        omega, g, f, t, _, it = s

        def bt_cond(c):
            _, _, ok, t = c
            return ~ok & (t > 1e-30)

        def bt_body(c):
            t = c[3] * 0.5
            z, fz, ok = try_step(omega, g, f, t)
            return z, fz, ok, t

        z, fz, ok = try_step(omega, g, f, t)
        z, fz, ok, t = jax.lax.while_loop(bt_cond, bt_body, (z, fz, ok, t))
        g_new = grad(z)
        ds, dg = z - omega, g_new - g
        bb = jnp.vdot(ds, ds) / jnp.maximum(jnp.vdot(ds, dg), 1e-300)
        t_next = jnp.where(jnp.vdot(ds, dg) > 0, jnp.clip(bb, 1e-12, 1e12), 2 * t)
        residual = jnp.linalg.norm(ds) / t / jnp.maximum(1.0, jnp.linalg.norm(g))
        return z, g_new, fz, t_next, residual, it + 1

    def cond(s):
        return (s[5] < max_iter) & (s[4] > tol)

    g0 = grad(omega0)
    t0 = 1.0 / jnp.maximum(jnp.linalg.norm(g0), 1e-12) * jnp.linalg.norm(omega0)
    s = jax.lax.while_loop(cond, body, (omega0, g0, full(omega0), t0, jnp.inf, 0))
    return s[0]


# ----------------------------------------------------------------------------- reconstruction


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
    one-vs-rest tasks at λ₂ = 1e-3). Use ``zero_diagonal=True`` or a larger λ₂ there.
    """

    lam2: float = 1.0
    zero_diagonal: bool = False
    name = "reconstruction"

    def check(self, m: int) -> None:
        del m
        _positive(self.lam2, "SparseReconstruction lam2 (λ₂)")

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

    def penalty(self, state, lam, d):
        del lam, d
        return self.lam2 * jnp.sum(jnp.abs(state))

    def sample_state(self, m, d, lam):
        del d, lam
        A = numpyro.sample("reconstruction", dist.Laplace(0.0, 1.0 / self.lam2)
                           .expand([m, m]).to_event(2))
        return A * self._mask(m)


@partial(jax.jit, static_argnames=("rank", "max_iter"))
def reconstruction_step(gram, lam, lam2, A0, mask, rank=None, max_iter=50000):
    """argmin_A (λ/2) tr((I - A)ᵀ G (I - A)) + λ₂‖A‖₁ over A with A = A ∘ mask, by ADMM
    (A = Z split; the Z-update is the masked soft-threshold). The A-update
    (λG + ρI)A = λG + ρV is V + Q diag(λe/(λe + ρ)) Qᵀ(I - V) with G = Q diag(e) Qᵀ
    restricted to G's ``rank`` leading eigenvectors (G = WᵀW has rank ≤ d, so with
    ``rank`` = min(d, m) each iteration costs O(m² d) instead of O(m³); exact)."""
    m = gram.shape[0]
    evals, Q = jnp.linalg.eigh(gram)
    k = m if rank is None else min(rank, m)
    evals, Q = jnp.clip(evals[m - k:], 0.0), Q[:, m - k:]
    eye = jnp.eye(m)

    def x_update(A, V, rho):
        del A
        return V + Q @ ((lam * evals / (lam * evals + rho))[:, None] * (Q.T @ (eye - V)))

    def z_update(V, rho):
        return prox_l1(V, lam2 / rho) * mask

    ident = lambda x: x  # noqa: E731
    rho0 = jnp.maximum(lam * jnp.sum(evals) / m, 1e-8)
    A0 = A0 * mask
    # dual warm start: the scaled dual at a fixed point with A = Z = A0 is λG(I - A0)/ρ
    U0 = lam * gram @ (eye - A0) / rho0
    res = admm(x_update, z_update, ident, ident, A0, A0, U0, rho0=rho0,
               max_iter=max_iter, abs_tol=1e-11, rel_tol=1e-9, relaxation=1.6)
    return res.z


# ----------------------------------------------------------------------------- objective


def family_objective(W, b, state, member, X, y, task, weights, lam, classification=False,
                     noise=PAPER_SQUARED_LOSS_NOISE):
    """F(W, b, Ω) of the module docstring (the negative log joint up to a constant)."""
    d = W.shape[0]
    P = member.precision(state)
    return (_data_loss(X, y, task, weights, W, b, classification, noise)
            + 0.5 * lam * jnp.sum(W * (W @ P)) + member.penalty(state, lam, d))


# ----------------------------------------------------------------------------- W-step


@partial(jax.jit, static_argnames=("m",))
def _logistic_w_step(X, y, task, weights, precision, W0, b0, m):
    """Exact (Newton–CG) minimiser over (W, b) of the weighted logistic loss + ½tr(W P Wᵀ)."""
    d = X.shape[1]
    Xa = jnp.concatenate([X, jnp.ones((X.shape[0], 1))], axis=1)
    pen = jnp.diag(jnp.concatenate([jnp.ones(d), jnp.zeros(1)]))

    def fun(theta):
        W, b = theta[:, :d].T, theta[:, d]
        return (_data_loss(X, y, task, weights, W, b, True, 1.0)
                + 0.5 * jnp.sum(W * (W @ precision)))

    def blocks(theta):
        f = jnp.sum(Xa * theta[task], axis=1)
        s = jax.nn.sigmoid(f)
        c = weights * s * (1 - s)
        H = jax.ops.segment_sum(c[:, None, None] * Xa[:, :, None] * Xa[:, None, :], task, m)
        return H + jnp.diag(precision)[:, None, None] * pen[None] + 1e-10 * jnp.eye(d + 1)

    theta = newton_cg(fun, jnp.concatenate([W0.T, b0[:, None]], axis=1), blocks)
    return theta[:, :d].T, theta[:, d]


def _w_step(X, y, task, weights, precision, W0, b0, m, classification, noise, rows=None):
    if classification:
        return _logistic_w_step(X, y, task, weights, precision, W0, b0, m)
    return _gaussian_w_step(X, y, task, weights, noise, precision, W0, b0, m, rows)


def quadratic_penalty(W, args):
    """(1/2) tr(W M Wᵀ) for M = Q diag(e) Qᵀ given as ``args = (Q, e)``."""
    Q, e = args
    return 0.5 * jnp.sum(e * jnp.sum((W @ Q) ** 2, axis=0))


def quadratic_prox(V, step, args):
    """argmin_Z (1/2) tr(Z M Zᵀ) + ‖Z - V‖²/(2 step) = V Q diag(1/(1 + step·e)) Qᵀ."""
    Q, e = args
    return ((V @ Q) / (1.0 + step * e)) @ Q.T


def _gaussian_w_step(X, y, task, weights, noise, precision, W0, b0, m, rows):
    """Exact Gaussian W-step: per-task solves when the precision is diagonal; otherwise the
    profile ADMM of :mod:`~bayesmtl.models.matrix_normal` with the quadratic coupling as its
    penalty (eigen-factored per-task W-solves, the coupling's prox in P's eigenbasis,
    Anderson acceleration), warm-started at the previous W, solved to 1e-14; when the ADMM
    does not converge within its cap (a badly conditioned P) block-Jacobi PCG finishes from
    its iterate."""
    P = np.asarray(precision)
    if np.array_equal(P, np.diag(np.diag(P))):
        return gaussian_diagonal_solve(X, y, task, weights, noise, jnp.diag(precision), m)
    e, Q = jnp.linalg.eigh((precision + precision.T) / 2)
    W, b, info = profile_admm(X, y, task, weights, noise, 0.0, quadratic_prox,
                              quadratic_penalty, (Q, jnp.clip(e, 0.0)), W0, b0, m, 20000, 1e-14,
                              True, rows)
    if not bool(info[3]):  # ill-conditioned coupling: finish by PCG from the ADMM iterate
        W, b = gaussian_w_step(X, y, task, weights, noise, precision, 0.0, W, b, m, 1e-13,
                               True, rows)
    return W, b


@partial(jax.jit, static_argnames=("m",))
def gaussian_diagonal_solve(X, y, task, weights, noise, precision_diag, m):
    """The Gaussian W-step for a diagonal task precision: m independent (d+1)² solves."""
    d = X.shape[1]
    H, rhs = _task_blocks(X, y, task, weights, noise, m)
    E = jnp.diag(jnp.concatenate([jnp.ones(d), jnp.zeros(1)]))
    theta = jnp.linalg.solve(H + precision_diag[:, None, None] * E, rhs[..., None])[..., 0]
    return theta[:, :d].T, theta[:, d]


# ----------------------------------------------------------------------------- MAP


class FamilyResult(NamedTuple):
    """MAP of a family member.

    W (d, m), b (m,), omega (m, m) task covariance (pseudo-inverse of the precision where the
    member is parameterised by it), precision (m, m) = P, state: the member's own parameter
    (Ω, P or A), objective F, history (objective per outer iteration), n_iter, converged,
    residual (relative change of W in the last outer iteration), extrapolated (n_iter,) bool:
    whether each outer iteration kept its extrapolation (empty for solvers without one).
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


def _check_lam(lam):
    if not (np.isscalar(lam) and np.isfinite(lam) and lam > 0):
        raise ValueError(f"lam (λ₁) must be a positive number; got {lam!r}")


def fit_family(data: MultiTaskData, member: OmegaPrior, lam: float = 1.0, *,
               loss_scale: str = "mean", noise: float | None = None, max_iter: int = 500,
               tol: float = 1e-10, init=None, method: str = "auto",
               extrapolation: float = 0.5, callback=None,
               deadline: float | None = None) -> FamilyResult:
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
    _check_lam(lam)
    if not (np.isscalar(extrapolation) and np.isfinite(extrapolation) and extrapolation >= 0):
        raise ValueError(f"extrapolation (initial β) must be a number ≥ 0; got {extrapolation!r}")
    member.check(data.n_tasks)
    if hasattr(member, "profile"):
        return _fit_profile(data, member, lam, loss_scale, noise, method, max(max_iter, 5000),
                            min(tol, 1e-12), init)
    X, y, task, weights, classification, noise = _inputs(data, loss_scale, noise)
    d, m = data.n_features, data.n_tasks
    if init is None:
        W, b, state = jnp.zeros((d, m)), jnp.zeros(m), member.initial_state(m)
    else:
        W, b, state = (jnp.asarray(v) for v in init)

    def objective(W, b, state):
        return float(family_objective(W, b, state, member, X, y, task, weights, lam,
                                      classification, noise))

    rows = jnp.asarray(task_rows(data.task, m))
    fixed = getattr(member, "fixed", False)  # fixed Ω: one exact W-step is the MAP
    history, extrapolated, converged, change = [], [], False, np.inf
    f_prev, it, previous = np.inf, 0, None
    beta, beta_cap = float(extrapolation), 1.0
    gram = None  # the Gram matrix the current state was computed from (a warm start)
    while it < max_iter:
        it += 1
        W_new, b_new = _w_step(X, y, task, weights, lam * member.precision(state), W, b, m,
                               classification, noise, rows)
        change = float(jnp.linalg.norm(W_new - W) / jnp.maximum(1.0, jnp.linalg.norm(W_new)))
        took = False
        if beta > 0 and previous is not None and not fixed:
            Y, b_Y = (new + beta * (new - old) for new, old in zip((W_new, b_new), previous,
                                                                    strict=True))
            gram_Y = Y.T @ Y
            state_Y = member.omega_step(gram_Y, lam, d, state, gram)
            f_Y = objective(Y, b_Y, state_Y)
            took = bool(np.isfinite(f_Y)) and f_Y <= objective(W_new, b_new, state)
            if took:
                beta, beta_cap = min(1.2 * beta, beta_cap), min(1.0, 1.01 * beta_cap)
            else:
                beta, beta_cap = beta / 1.5, beta
        previous = (W_new, b_new)
        if took:
            W, b, state, f, gram = Y, b_Y, state_Y, f_Y, gram_Y
        else:
            W, b, gram_new = W_new, b_new, W_new.T @ W_new
            state = member.omega_step(gram_new, lam, d, state, gram)
            f, gram = objective(W, b, state), gram_new
        history.append(f)
        extrapolated.append(took)
        if callback is not None:
            callback(np.asarray(history), W, b, state)
        relative = abs(f_prev - f) / max(1.0, abs(f))
        if (relative <= tol and change <= np.sqrt(tol)) or fixed:
            converged = True
            break
        f_prev = f
        if deadline is not None and time.monotonic() > deadline:
            break
    if not converged:
        why = f"after {it} outer iterations" + (" (time limit)" if it < max_iter else "")
        warnings.warn(f"{member.name}: alternating MAP stopped unconverged {why}; relative W "
                      f"change {change:.2e}, last relative change of F {relative:.2e}",
                      ConvergenceWarning,
                      stacklevel=2)
    P = member.precision(state)
    return FamilyResult(np.asarray(W), np.asarray(b), np.asarray(member.covariance(state)),
                        np.asarray(P), np.asarray(state), history[-1], np.asarray(history),
                        it, converged, change, np.asarray(extrapolated, dtype=bool))


def _fit_profile(data, member, lam, loss_scale, noise, method, max_iter, tol, init):
    prox, penalty, args, spectrum = member.profile(lam)
    r = solve_profile(data, name=member.name, method=method, prox=prox, penalty=penalty,
                      args=args, omega_spectrum=spectrum,
                      omega0=np.asarray(member.initial_state(data.n_tasks)), lam=lam,
                      loss_scale=loss_scale, noise=noise, max_iter=max_iter, tol=tol,
                      init=None if init is None else init[:2])
    omega = np.asarray(r.omega)
    return FamilyResult(r.W, r.b, omega, np.linalg.inv(omega), omega, r.objective, r.history,
                        r.n_iter, r.converged, r.residual)


def fit_pooled(data: MultiTaskData, lam: float = 1.0, *, loss_scale: str = "mean",
               noise: float | None = None) -> FamilyResult:
    """Pooled baseline: one shared (w, b) for all tasks (Ω → 11ᵀ), with the ridge prior
    (λ/2)‖w‖² and the same per-task loss scaling. Columns of W are identical."""
    _check_lam(lam)
    X, y, task, weights, classification, noise = _inputs(data, loss_scale, noise)
    zeros = jnp.zeros(X.shape[0], dtype=task.dtype)
    W, b = _w_step(X, y, zeros, weights, lam * jnp.eye(1), jnp.zeros((X.shape[1], 1)),
                   jnp.zeros(1), 1, classification, noise)
    m = data.n_tasks
    W, b = jnp.tile(W, (1, m)), jnp.tile(b, m)
    f = float(_data_loss(X, y, task, weights, W, b, classification, noise)
              + 0.5 * lam * jnp.sum(W[:, 0] ** 2))
    ones = np.ones((m, m))
    return FamilyResult(np.asarray(W), np.asarray(b), ones, np.full((m, m), np.nan), ones, f,
                        np.asarray([f]), 1, True, 0.0)


def pooled_model(X, task, n_tasks, y=None, *, lam, likelihood=None, weights=None):
    """The pooled baseline as a NumPyro model: one shared w ~ N(0, I/λ) (site ``w``, (d,)) and
    one flat intercept (site ``b_shared``), copied to every task (deterministic ``W`` (d, m),
    ``b`` (m,)). Its negative log joint is fit_pooled's objective up to a constant."""
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    d = X.shape[1]
    w = numpyro.sample("w", dist.Normal(0.0, lam ** -0.5).expand([d]).to_event(1))
    b0 = numpyro.sample("b_shared", dist.ImproperUniform(constraints.real, (), ()))
    W = numpyro.deterministic("W", jnp.tile(w[:, None], (1, n_tasks)))
    b = numpyro.deterministic("b", jnp.full((n_tasks,), b0))
    return likelihood(linear_predictor(X, task, W, b), task, n_tasks, y, weights)


# ----------------------------------------------------------------------------- sampling


def family_model(X, task, n_tasks, y=None, *, member, lam, likelihood=None, weights=None,
                 intercept_scale=None):
    """The Gibbs joint exp(-F) of ``member`` as a NumPyro model (module docstring).

    Sites: the member's Ω-parameter (``omega_raw``/``omega``/``omega_inv``/``reconstruction``),
    ``omega`` (deterministic where not a site), ``W`` (d, m) with flat reference measure and
    the factor ``w_coupling`` = -(λ/2) tr(W P Wᵀ), ``b`` (m,), ``y``.
    """
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    d = X.shape[1]
    state = member.sample_state(n_tasks, d, lam)
    P = member.precision(state)
    W = numpyro.sample("W", dist.ImproperUniform(constraints.real, (), (d, n_tasks)))
    numpyro.factor("w_coupling", -0.5 * lam * jnp.sum(W * (W @ P)))
    if intercept_scale is None:
        b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), (n_tasks,)))
    else:
        b = numpyro.sample("b", dist.Normal(0.0, intercept_scale).expand([n_tasks]).to_event(1))
    return likelihood(linear_predictor(X, task, W, b), task, n_tasks, y, weights)


def sample_family(data: MultiTaskData, member: OmegaPrior, lam: float = 1.0, *,
                  loss_scale: str = "mean", noise: float | None = None, num_warmup=500,
                  num_samples=500, num_chains=2, seed=0, init=None, **nuts_kwargs):
    """NUTS on :func:`family_model`; returns an ArviZ DataTree with task-named coordinates.

    ``init`` (a :class:`FamilyResult`) starts the chains at the MAP. The posterior holds W,
    b, the member's parameter, ``omega`` and ``omega_corr``.
    """
    from ..inference.export import to_datatree
    from ..inference.mcmc import run_nuts

    _check_lam(lam)
    member.check(data.n_tasks)
    X, y, task, weights, classification, noise = _inputs(data, loss_scale, noise)
    likelihood = BernoulliLogit() if classification else Gaussian(noise)
    init_params = None
    if init is not None:
        init_params = {"W": jnp.asarray(init.W), "b": jnp.asarray(init.b)}
    mcmc = run_nuts(family_model, X, task, data.n_tasks, num_warmup=num_warmup,
                    num_samples=num_samples, num_chains=num_chains, seed=seed,
                    init_params=init_params, y=y, member=member, lam=lam,
                    likelihood=likelihood, weights=weights, **nuts_kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    samples = {k: np.asarray(v) for k, v in samples.items()}
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in samples.items()}
    state = _state_from_samples(member, flat, data.n_tasks)
    omega = np.asarray(jax.vmap(member.covariance)(jnp.asarray(state)))
    samples["omega"] = omega.reshape(samples["W"].shape[:2] + omega.shape[1:])
    samples.pop("omega_raw", None)
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return to_datatree(samples, task_names=data.task_names, feature_names=data.feature_names,
                       dims={"reconstruction": ["source_task", "target_task"]},
                       sample_stats={"diverging": diverging},
                       attrs={"member": member.name, "lam": lam})


def _state_from_samples(member, flat, m):
    """Recompute the member's MAP-state parameter from flat NUTS draws."""
    if isinstance(member, GraphLaplacian):
        n = next(iter(flat.values())).shape[0]
        return np.broadcast_to(member.precision_matrix(m), (n, m, m))
    if isinstance(member, Clustered):
        S = flat["omega_raw"]
        tr = np.trace(S, axis1=1, axis2=2)[:, None, None]
        return member.b * np.eye(m) + (member.a - m * member.b) * S / tr
    key = {"glmtl": "omega_inv", "spats": "omega", "reconstruction": "reconstruction"}
    state = flat[key[member.name]]
    if isinstance(member, SparseReconstruction):
        state = state * np.asarray(member._mask(m))
    return state

