"""Priors on the task covariance Ω, as small declarative objects.

Each prior is called inside a NumPyro model as ``omega = prior(n_tasks, n_features)``: it
registers its own sample sites (all named ``omega…``) and returns Ω (m, m). Priors validate
their arguments when called with the problem size (``prior.check(m)``), so a wrong-sized or
non-PSD matrix fails with a clear message before any inference starts.

The matrix-normal prior on W contributes ``(d/2) log|Ω|``; priors that reproduce a published
objective without that term say so (``MTRL``) and are built so that the joint density of
(W, Ω) equals the paper's objective up to a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from .errors import PriorError

__all__ = ["OmegaPrior", "Fixed", "InverseWishart", "LKJ", "MTRL",
           "check_covariance"]


def check_covariance(omega, m: int | None = None, name: str = "omega",
                     definite: bool = True) -> np.ndarray:
    """Validate a user-supplied task covariance: square, size m, symmetric, PSD (or PD).

    Returns it as a float64 array; raises :class:`PriorError` naming the problem.
    """
    a = np.asarray(omega, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise PriorError(f"{name} must be a square matrix; got shape {a.shape}")
    if m is not None and a.shape[0] != m:
        raise PriorError(f"{name} is {a.shape[0]}×{a.shape[0]} but there are {m} tasks")
    if not np.all(np.isfinite(a)):
        raise PriorError(f"{name} holds NaN or inf")
    asym = np.max(np.abs(a - a.T)) if a.size else 0.0
    if asym > 1e-8 * max(1.0, np.max(np.abs(a))):
        raise PriorError(f"{name} is not symmetric (max |A - A^T| = {asym:.3g})")
    eig_min = np.linalg.eigvalsh((a + a.T) / 2).min()
    tol = 1e-10 * max(1.0, np.abs(a).max())
    if eig_min < -tol:
        raise PriorError(f"{name} is not positive semidefinite (smallest eigenvalue "
                         f"{eig_min:.3g})")
    if definite and eig_min <= tol:
        raise PriorError(f"{name} is singular (smallest eigenvalue {eig_min:.3g}); a "
                         "positive definite matrix is needed here")
    return (a + a.T) / 2


def positive_scalar(value, name):
    """A finite positive scalar, or :class:`PriorError` naming ``name``."""
    if not (np.isscalar(value) and np.isfinite(value) and value > 0):
        raise PriorError(f"{name} must be a positive number; got {value!r}")


def nonnegative_scalar(value, name):
    """A finite non-negative scalar, or :class:`PriorError` naming ``name``."""
    if not (np.isscalar(value) and np.isfinite(value) and value >= 0):
        raise PriorError(f"{name} must be a non-negative number; got {value!r}")


def log_det(omega):
    """log|Ω| of a positive definite Ω by Cholesky (NaN when Ω is not positive definite)."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(omega))))


def _positive(value, name):
    if not np.all(np.asarray(value) > 0):
        raise PriorError(f"{name} must be positive; got {value!r}")


class OmegaPrior:
    """Base class. Subclasses implement ``check(m)`` and ``__call__(m, d) -> Ω``."""

    name = "omega prior"

    def check(self, m: int) -> None:  # pragma: no cover - trivial default
        del m

    def __call__(self, m: int, d: int):
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(OmegaPrior):
    """Ω fixed: ``"identity"`` (independent tasks) or a given positive definite (m, m) matrix.

    With Ω fixed the log-determinant term is a constant and the model is eq. (1) of L2MT with
    ``g(Ω) = 0 if Ω = Ω₀ else +∞`` (e.g. Ω₀ = L⁻¹ of a task graph: regularised MTL).
    """

    omega: object = "identity"
    name = "fixed"

    def matrix(self, m: int):
        if isinstance(self.omega, str):
            if self.omega != "identity":
                raise PriorError(f"Fixed(omega) takes 'identity' or a matrix; got {self.omega!r}")
            return np.eye(m)
        return check_covariance(self.omega, m)

    def check(self, m: int) -> None:
        self.matrix(m)

    def __call__(self, m: int, d: int):
        del d
        return numpyro.deterministic("omega", jnp.asarray(self.matrix(m)))


@dataclass(frozen=True)
class InverseWishart(OmegaPrior):
    """Ω ~ InverseWishart(df, scale · I) (or a given scale matrix).

    ``df`` defaults to m + 2 (so E[Ω] = scale · I); it must exceed m - 1.
    Conjugate to the matrix-normal prior on W: Ω | W ~ IW(df + d, Ψ + λ WᵀW).
    """

    df: float | None = None
    scale: object = 1.0
    name = "inverse_wishart"

    def _df(self, m):
        return m + 2.0 if self.df is None else float(self.df)

    def _scale(self, m):
        if np.ndim(self.scale) == 0:
            _positive(self.scale, "InverseWishart scale")
            return float(self.scale) * np.eye(m)
        return check_covariance(self.scale, m, "InverseWishart scale")

    def check(self, m: int) -> None:
        if not np.isfinite(self._df(m)) or self._df(m) <= m - 1:
            raise PriorError(f"InverseWishart df must exceed m - 1 = {m - 1} (and be finite); "
                             f"got {self.df}")
        self._scale(m)

    def __call__(self, m: int, d: int):
        del d
        return numpyro.sample(
            "omega", dist.InverseWishart(self._df(m), scale_matrix=jnp.asarray(self._scale(m)))
        )

    # MAP interface of the alternating loop (bayesmtl.inference.alternation): the joint MAP
    # minimises L + (λ/2) tr(W Ω⁻¹ Wᵀ) + ((ν + m + 1 + d)/2) log|Ω| + ½ tr(Ψ Ω⁻¹), whose
    # Ω-step given G = WᵀW is the closed form (Ψ + λG) / (ν + m + 1 + d).
    def initial_state(self, m):
        return jnp.asarray(self._scale(m)) / (self._df(m) + m + 1)

    def precision(self, state):
        return jnp.linalg.inv(state)

    def covariance(self, state):
        return state

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        del state, previous_gram
        m = gram.shape[0]
        return (jnp.asarray(self._scale(m)) + lam * gram) / (self._df(m) + m + 1 + d)

    def penalty(self, state, lam, d):
        del lam
        m = state.shape[0]
        return (0.5 * (self._df(m) + m + 1 + d) * log_det(state)
                + 0.5 * jnp.trace(jnp.linalg.solve(state, jnp.asarray(self._scale(m)))))


@dataclass(frozen=True)
class LKJ(OmegaPrior):
    """Ω = diag(s) C diag(s) with C ~ LKJ(eta) and s_i ~ HalfNormal(scale).

    Sites: ``omega_corr_chol`` (Cholesky factor of C), ``omega_scale`` (m,), and Ω as the
    deterministic ``omega``.
    """

    eta: float = 2.0
    scale: float = 1.0
    name = "lkj"

    def check(self, m: int) -> None:
        del m
        _positive(self.eta, "LKJ eta")
        _positive(self.scale, "LKJ scale")

    def __call__(self, m: int, d: int):
        del d
        L = numpyro.sample("omega_corr_chol", dist.LKJCholesky(m, self.eta))
        s = numpyro.sample("omega_scale", dist.HalfNormal(self.scale).expand([m]).to_event(1))
        Ls = s[:, None] * L
        return numpyro.deterministic("omega", Ls @ Ls.T)


@dataclass(frozen=True)
class MTRL(OmegaPrior):
    """MTRL's task covariance set {Ω ⪰ 0, tr Ω = 1} (Zhang & Yeung 2010).

    Bayesian reading. The prior density on the spectraplex is ``p(Ω) ∝ |Ω|^{d/2}``: it cancels
    the ``(d/2) log|Ω|`` of the matrix-normal prior on W, so the joint
    ``-log p(W, Ω) = (λ/2) tr(W Ω⁻¹ Wᵀ) + const`` on the set — MTRL's objective. It is proper
    (a bounded density on a compact set). It is realised by parameter expansion:
    ``S ~ Wishart(d + m + 1, I)`` (site ``omega_raw``) and ``Ω = S / tr S``; because the Wishart
    density factorises into a function of ``tr S`` times ``|Ω|^{(ν - m - 1)/2}``, Ω has exactly
    the density above and MAP over (W, S) gives MAP over (W, Ω). MAP uses the dedicated
    solvers in :func:`bayesmtl.models.matrix_normal.fit_mtrl`.
    """

    name = "mtrl"

    def __call__(self, m: int, d: int):
        S = numpyro.sample("omega_raw", dist.Wishart(d + m + 1.0, scale_matrix=jnp.eye(m)))
        return numpyro.deterministic("omega", S / jnp.trace(S))
