r"""The (squared) Schatten members of L2MT's task-relation family g(Ω) (Table 1, Theorems 1–2).

Objective (1) of L2MT, W (d, m):

    min_{W,b,Ω}  Σ_i (1/n_i) Σ_j l(w_iᵀx_ij + b_i, y_ij) + (λ1/2) tr(W Ω⁻¹ Wᵀ) + λ2 g(Ω).

Schatten norm regularisation, g(Ω) = tr(Ω^r), r > 0 (Theorem 1)
    For fixed W the Ω-step has the closed form Ω = (λ1/(2 λ2 r))^{1/(r+1)} (WᵀW)^{1/(r+1)}
    and the profile problem is  L(W, b) + λ_r ‖W‖_{S_p}^p  with

        p = r̂ = 2r/(r+1) ∈ (0, 2),   λ_r = (1 + 1/r) (λ1^r λ2 r / 2^r)^{1/(r+1)}

    (derivation: per eigenvalue a of WᵀW, min_ω (λ1/2) a/ω + λ2 ω^r is attained at
    ω = c a^{1/(r+1)}, c = (λ1/(2λ2 r))^{1/(r+1)}, with value (λ1/(2c))(1 + 1/r) a^{r/(r+1)};
    λ1/(2c) = (λ1^r λ2 r / 2^r)^{1/(r+1)} — the paper's constant). r = 1 is the trace norm
    with weight λ_r = 2 √(λ1 λ2 / 2) = √(2 λ1 λ2); p ≥ 1 (convex) iff r ≥ 1.

Squared Schatten norm regularisation, g(Ω) = 0 if tr(Ω^r) ≤ 1 else +∞ (Theorem 2)
    The Ω-step is Ω = (WᵀW)^{1/(r+1)} / (tr (WᵀW)^{r/(r+1)})^{1/r} and the profile problem
    is  L(W, b) + (λ1/2) ‖W‖_{S_p}^2,  p = 2r/(r+1). (The paper writes λ1‖W‖², absorbing the
    ½ of (1) into λ1; here λ1 is the λ1 of (1) throughout.) r = 1 is MTRL without ridge.

Generative models (Bayesian reading)
------------------------------------
Both members are priors on Ω for :func:`bayesmtl.models.matrix_normal.mtl_model`, whose
matrix-normal prior W | Ω ~ MN(0, I_d, Ω/λ1) gives (λ1/2) tr(WΩ⁻¹Wᵀ) + (d/2) log|Ω|. The
priors carry a factor |Ω|^{d/2} that cancels that log-determinant, so with "mean" loss scaling
and Gaussian noise σ = 1/√2 the negative log joint is objective (1) up to a constant:

* :class:`Schatten`:  p(Ω) ∝ |Ω|^{d/2} exp(-λ2 tr(Ω^r)) on the positive definite cone. It is
  proper for every r > 0, λ2 > 0 (in eigen-coordinates the integrand is
  Π_k ω_k^{d/2} e^{-λ2 ω_k^r} times the polynomial Vandermonde factor Π_{i<j}|ω_i - ω_j|).
  Ω is sampled directly (site ``omega``, an improper-uniform site on the PD cone plus the log
  density as a factor ``omega_log_prior``), so NUTS targets exactly this density.
* :class:`SquaredSchatten`:  p(Ω) ∝ |Ω|^{d/2} on K = {Ω ≻ 0 : tr(Ω^r) ≤ 1} (bounded density
  on a bounded set: proper). Realised by polar parameter expansion: S ~ p(S) ∝
  |S|^{d/2} exp(-tr S^r) (site ``omega_raw``), t ~ Beta(md/2 + m(m+1)/2, 1) (site
  ``omega_radius``) and Ω = t S / (tr S^r)^{1/r}. With the degree-1 gauge γ(S) = (tr S^r)^{1/r},
  dS = γ^{D-1} dγ dσ(S/γ) (D = m(m+1)/2), so S/γ(S) has density ∝ |·|^{d/2} with respect to
  the cone measure σ on {γ = 1}, and t · (S/γ) has exactly the density |Ω|^{d/2} on K. In
  (W, S, t) the joint factorises as [p(W|Ω)|Ω|^{d/2}] · f(γ(S)) · t^{D-1}; both t-factors grow
  with t, so its MAP has t = 1 and Ω = S/γ(S) equal to the MAP of (1).

MAP (:func:`fit_schatten`) solves the profile problem with the loops of
:mod:`bayesmtl.models.matrix_normal`: ADMM with an exact W-step (Gaussian) or FISTA (any
likelihood) with the prox of λ_r‖·‖_{S_p}^p (scalar prox per singular value; p = 1:
soft-thresholding) or of (λ1/2)‖·‖²_{S_p} (a vector prox on the singular values). For r < 1
(p < 1) the profile is non-convex and MAP returns a stationary point, not necessarily the
global minimum: by default FISTA with the exact (global) non-convex prox — generalised
thresholding of the singular values for λ_r‖·‖_{S_p}^p, a per-support-size search for
(λ1/2)‖·‖²_{S_p} — for any likelihood. The alternating W-step / closed-form Ω-step scheme
(``method="alternating"``, Gaussian) is also available, but when the stationary point is
rank-deficient it stalls once a singular value is pinned at the ε floor (the singular
subspaces then rotate very slowly): its answer is a block-coordinate stationary point of the
ε-smoothed objective, not a verified stationary point of the profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import MultiTaskData
from ..errors import PriorError
from ..inference.profile import MTRLResult, omega_from_W_spectrum, solve_profile
from ..inference.prox import prox_schatten_pp, prox_squared_schatten
from ..priors import OmegaPrior, log_det
from .matrix_normal import _check_hyper

__all__ = ["Schatten", "SquaredSchatten", "fit_schatten", "schatten_p", "schatten_lambda",
           "schatten_omega", "squared_schatten_omega", "trace_power"]


# ----------------------------------------------------------------------------- math


def schatten_p(r: float) -> float:
    """p = r̂ = 2r/(r+1): the Schatten index of the profile penalty."""
    return 2.0 * r / (r + 1.0)


def schatten_lambda(r: float, lam1: float, lam2: float) -> float:
    """λ_r = (1 + 1/r) (λ1^r λ2 r / 2^r)^{1/(r+1)} of Theorem 1."""
    return (1.0 + 1.0 / r) * (lam1**r * lam2 * r / 2.0**r) ** (1.0 / (r + 1.0))


def trace_power(omega, r):
    """tr(Ω^r) for symmetric positive (semi)definite Ω (m, m)."""
    if float(r).is_integer() and r >= 1:
        return jnp.trace(jnp.linalg.matrix_power(omega, int(r)))
    return jnp.sum(jnp.clip(jnp.linalg.eigvalsh(omega), 0.0) ** r)


def _singular_values(W):
    return jnp.linalg.svd(W, compute_uv=False)


def schatten_omega(W, r, lam1, lam2):
    """Theorem 1's Ω-step (m, m): (λ1/(2λ2 r))^{1/(r+1)} (WᵀW)^{1/(r+1)}."""
    return omega_from_W_spectrum(jnp.asarray(W), _schatten_spectrum, _schatten_args(r, lam1, lam2))


def squared_schatten_omega(W, r):
    """Theorem 2's Ω-step (m, m): (WᵀW)^{1/(r+1)} / (tr (WᵀW)^{r/(r+1)})^{1/r}."""
    return omega_from_W_spectrum(jnp.asarray(W), _squared_spectrum, _squared_args(r, 1.0))


# ----------------------------------------------------------------------------- prox operators


# --- profile penalties, proxes and Ω-spectra in the (prox, penalty, args) form of
# matrix_normal.solve_profile. args = (coefficient, p, Ω-scale, r) as traced scalars.


def _schatten_args(r, lam1, lam2):
    c = (lam1 / (2.0 * lam2 * r)) ** (1.0 / (r + 1.0))
    return tuple(jnp.asarray(float(v)) for v in
                 (schatten_lambda(r, lam1, lam2), schatten_p(r), c, r))


def _schatten_value(s, args):
    """λ_r Σ σ_k^p from the singular values s."""
    coef, p, _, _ = args
    return coef * jnp.sum(s**p)


def _schatten_penalty(W, args):
    return _schatten_value(_singular_values(W), args)


def _schatten_prox(V, step, args):
    """(prox, the penalty at it) (the profile loops' protocol, see inference.profile)."""
    coef, p, _, _ = args
    Z, s = prox_schatten_pp(V, step * coef, p, values=True)
    return Z, _schatten_value(s, args)


def _schatten_spectrum(a, args):
    _, _, c, r = args
    return c * a ** (1.0 / (r + 1.0))


def _squared_args(r, lam1):
    return tuple(jnp.asarray(float(v)) for v in (lam1, schatten_p(r), 1.0, r))


def _squared_value(s, args):
    """(λ1/2)(Σ σ_k^p)^{2/p} from the singular values s."""
    lam1, p, _, _ = args
    return 0.5 * lam1 * jnp.sum(s**p) ** (2.0 / p)


def _squared_penalty(W, args):
    return _squared_value(_singular_values(W), args)


def _squared_prox(V, step, args):
    """(prox, the penalty at it) (the profile loops' protocol, see inference.profile)."""
    lam1, p, _, _ = args
    Z, s = prox_squared_schatten(V, step * lam1, p, values=True)
    return Z, _squared_value(s, args)


def _squared_spectrum(a, args):
    _, _, _, r = args
    root = a ** (1.0 / (r + 1.0))
    total = jnp.sum(a ** (r / (r + 1.0)))
    m = a.shape[0]
    return jnp.where(total > 0, root / jnp.maximum(total, 1e-300) ** (1.0 / r),
                     m ** (-1.0 / r))  # W = 0: every Ω in the set is optimal; take I m^{-1/r}


# ----------------------------------------------------------------------------- priors


def _check_r(r, who):
    if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)):
        raise PriorError(f"{who} r must be a positive number; got {r!r}")
    if not (math.isfinite(r) and r > 0):
        raise PriorError(f"{who} r must be a finite positive number (g(Ω) = tr(Ω^r)); got {r}")


def _check_tasks(m):
    if not (isinstance(m, (int, np.integer)) and m >= 1):
        raise PriorError(f"number of tasks must be a positive integer; got {m!r}")




@dataclass(frozen=True)
class Schatten(OmegaPrior):
    """g(Ω) = tr(Ω^r) with weight λ2 (``lam2``): p(Ω) ∝ |Ω|^{d/2} exp(-λ2 tr(Ω^r)), Ω ≻ 0.

    λ1 is the ``lam`` of :func:`mtl_model` / :func:`fit_schatten` (precision scale of
    W | Ω). MAP profile: λ_r ‖W‖_{S_p}^p, p = 2r/(r+1), λ_r = :func:`schatten_lambda`.
    Sites: ``omega`` (m, m) and the factor ``omega_log_prior``. See the module docstring.
    """

    r: float = 1.0
    lam2: float = 1.0
    name = "schatten"

    def check(self, m: int) -> None:
        _check_r(self.r, "Schatten")
        if isinstance(self.lam2, bool) or not (np.isscalar(self.lam2) and
                                               math.isfinite(self.lam2) and self.lam2 > 0):
            raise PriorError(f"Schatten lam2 (λ2) must be a finite positive number; got "
                             f"{self.lam2!r}")
        _check_tasks(m)

    def __call__(self, m: int, d: int):
        self.check(m)
        omega = numpyro.sample(
            "omega", dist.ImproperUniform(constraints.positive_definite, (), (m, m)))
        numpyro.factor("omega_log_prior",
                       0.5 * d * log_det(omega) - self.lam2 * trace_power(omega, self.r))
        return omega


@dataclass(frozen=True)
class SquaredSchatten(OmegaPrior):
    """g(Ω) = indicator of tr(Ω^r) ≤ 1: p(Ω) ∝ |Ω|^{d/2} on {Ω ≻ 0, tr(Ω^r) ≤ 1}.

    No λ2 (a constraint). MAP profile: (λ1/2)‖W‖²_{S_p}, p = 2r/(r+1), λ1 = ``lam``;
    r = 1 is MTRL. Sites: ``omega_raw`` (m, m) with factor ``omega_raw_log_density``,
    ``omega_radius`` (scalar in (0, 1)), deterministic ``omega``. See the module docstring.
    """

    r: float = 1.0
    name = "squared_schatten"

    def check(self, m: int) -> None:
        _check_r(self.r, "SquaredSchatten")
        _check_tasks(m)

    def __call__(self, m: int, d: int):
        self.check(m)
        S = numpyro.sample(
            "omega_raw", dist.ImproperUniform(constraints.positive_definite, (), (m, m)))
        numpyro.factor("omega_raw_log_density", 0.5 * d * log_det(S) - trace_power(S, self.r))
        t = numpyro.sample("omega_radius", dist.Beta(m * d / 2.0 + m * (m + 1) / 2.0, 1.0))
        gauge = trace_power(S, self.r) ** (1.0 / self.r)
        return numpyro.deterministic("omega", t * S / gauge)


# ----------------------------------------------------------------------------- MAP


def fit_schatten(data: MultiTaskData, prior: Schatten | SquaredSchatten, lam: float = 1.0, *,
                 ridge: float = 0.0, loss_scale: str = "mean", noise: float | None = None,
                 fit_intercept: bool = True, method: str = "auto", max_iter: int = 5000,
                 tol: float = 1e-12, init=None) -> MTRLResult:
    """MAP of objective (1) with a (squared) Schatten g(Ω); ``lam`` = λ1.

    Solves the profile problem L(W, b) + (ρ/2)‖W‖² + R(W), R = λ_r‖W‖_{S_p}^p (Schatten) or
    (λ1/2)‖W‖²_{S_p} (SquaredSchatten), and returns Ω from the closed-form Ω-step.
    ``noise`` is the Gaussian σ (default 1/√2: loss (y - f)²), ignored for classification;
    ``loss_scale`` "mean" (the paper's Σ_i 1/n_i Σ_j) or "sum"; ``ridge`` an optional extra
    (ρ/2)‖W‖²_F; ``init`` an optional (W, b) warm start.

    Methods: ``"admm"`` (Gaussian, :func:`profile_admm`; r ≥ 1), ``"proximal"`` (FISTA, any
    likelihood; for r < 1 with the exact non-convex prox), ``"alternating"`` (W-step /
    Ω-step, Gaussian), ``"auto"`` (the first of admm, proximal, alternating that applies).
    For r < 1 the profile is non-convex and a stationary point is returned (see the module
    docstring).
    ``objective`` is the profile objective, equal to the minimum of (1) over Ω at W.
    """
    if not isinstance(prior, (Schatten, SquaredSchatten)):
        raise TypeError(f"fit_schatten takes a Schatten or SquaredSchatten prior; got "
                        f"{type(prior).__name__}")
    _check_hyper(lam, ridge)
    m = data.n_tasks
    prior.check(m)
    r = float(prior.r)
    methods = ("admm", "proximal", "alternating")
    if r < 1.0:  # non-convex profile: FISTA with the exact non-convex prox, or alternating
        methods = ("proximal", "alternating")
    if isinstance(prior, Schatten):
        kw = dict(name=f"Schatten(r={r:g})", prox=_schatten_prox, penalty=_schatten_penalty,
                  args=_schatten_args(r, lam, prior.lam2), omega_spectrum=_schatten_spectrum,
                  omega0=np.eye(m))
    else:
        kw = dict(name=f"SquaredSchatten(r={r:g})", prox=_squared_prox,
                  penalty=_squared_penalty, args=_squared_args(r, lam),
                  omega_spectrum=_squared_spectrum, omega0=np.eye(m) * m ** (-1.0 / r))
    return solve_profile(data, method=method, lam=lam, ridge=ridge, loss_scale=loss_scale,
                         noise=noise, fit_intercept=fit_intercept, max_iter=max_iter, tol=tol,
                         init=init, methods=methods, **kw)
