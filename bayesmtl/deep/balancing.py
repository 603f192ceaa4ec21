r"""Loss-balancing strategies: one interface, each strategy a few lines.

A strategy maps the per-task mean losses L (m,) of a batch — L_i = (1/n_i) Σ_j l(f_i(x_ij), y_ij)
— to the scalar objective it minimises and the task weights it applies now. Tasks absent from
the batch (``ctx.present[i]`` false) contribute nothing and get weight 0.

Bayesian reading (the model in :mod:`bayesmtl.deep.model` multiplies the prior by
exp(-η · objective), η = 1 for MAP):

=============  =======================================  =======================================
strategy       objective                                reading
=============  =======================================  =======================================
DS             Σ L_i                                    product of task likelihoods, each
                                                        tempered by 1/n_i (mean loss)
fixed          Σ w_i L_i                                task i's likelihood tempered by w_i/n_i
SVD            Σ α_i L_i, α_i = ‖θ_iᵀU_r‖, θ_i = Xᵀy_i  fixed weights from the data (Wu, Zhang
               (Algorithm 2; tasks share X)             & Ré 2020): tempered likelihoods
DWA            Σ w_i L_i, w = m·softmax(r/T),           tempered likelihoods, weights from the
               r_i = L̄_i(t-1)/L̄_i(t-2) (epoch means)    loss history (Liu et al. 2019)
Max            max_i L_i = max_{w ∈ Δ} Σ w_i L_i        minimax over the simplex (Mehta 2012)
sMAX           log Σ exp L_i                            soft maximum (paper Section 3.3)
CL             Σ w_i L_i, w = m·softmax(-L/T) (fixed    self-paced, easy tasks first
               at the current losses)                   (Murugesan & Carbonell 2017)
MGDA           Σ α_i L_i, α = argmin_{α ∈ Δ} ‖Σ α g_i‖  min-norm element of the hull of the
               (g_i = ∂L_i/∂shared parameters)          shared gradients (Sener & Koltun 2018)
BMTL           Σ h(L_i), h(z) = exp(z/T) or any h       generalised (Gibbs) posterior
               admissible by Theorem 1                  exp(-Σ h(L_i)) p(Θ): problem (8)
uncertainty    Σ exp(-s_i) L_i + s_i, s_i = log σ_i²    learned per-task noise (Kendall et al.
               (flat prior on s)                        2018): weights 1/σ_i²
=============  =======================================  =======================================

Weights are ∂objective/∂L_i for the smooth objectives (BMTL: h'(L_i), eq. (9); sMAX: softmax(L);
Max: the one-hot subgradient) and the applied weights otherwise (DWA, CL sum to the number of
present tasks; MGDA's α to 1). DWA, CL and MGDA recompute their weights at every step from state
outside Θ (history, current losses, gradients): each step is a tempered posterior, not one fixed
target, so they are marked ``fixed_target = False``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from ..errors import HyperparameterError

__all__ = ["Context", "Balanced", "Strategy", "DS", "Fixed", "SVD", "DWA", "Max", "SMax", "CL",
           "MGDA", "BMTL", "Uncertainty", "Transform", "exp_transform", "polynomial_transform",
           "callable_transform", "make_transform", "min_norm_weights", "make_strategy",
           "STRATEGIES"]


class Context(NamedTuple):
    """What a strategy may read besides the losses.

    present : (m,) bool — tasks with rows in the batch.
    history : epoch-mean training losses, each (m,) array, oldest first (DWA).
    shared_grads : () -> (m, P) tensor of ∂L_i/∂(shared parameters) (MGDA), or None.
    params : the strategy's own sites, name → value (uncertainty: ``balance.log_var`` (m,)).
    """

    present: torch.Tensor
    history: tuple = ()
    shared_grads: Callable | None = None
    params: dict = {}


class Balanced(NamedTuple):
    """objective : () tensor; weights : (m,) detached task weights (0 for absent tasks)."""

    objective: torch.Tensor
    weights: torch.Tensor


def _mask(present, like):
    return present.to(like.dtype)


def _softmax_present(v, present):
    """softmax over the present entries, 0 elsewhere."""
    return torch.softmax(v.masked_fill(~present, -math.inf), dim=0).nan_to_num(0.0)


class Strategy(abc.ABC):
    """Base: ``__call__(L, ctx) -> Balanced``; ``sites(m)`` names the strategy's own parameters
    (flat priors) and their shapes."""

    name = "strategy"
    fixed_target = True   # objective is a fixed function of (L, own parameters)
    needs_grads = False

    def sites(self, m: int) -> dict:
        del m
        return {}

    @abc.abstractmethod
    def __call__(self, L, ctx: Context) -> Balanced:
        """L (m,) mean task losses → the objective and the task weights."""

    def to_json(self) -> dict:
        return {"name": self.name}


@dataclass(frozen=True)
class DS(Strategy):
    """Direct sum, problem (1)."""

    name = "ds"

    def __call__(self, L, ctx):
        w = _mask(ctx.present, L)
        return Balanced((w * L).sum(), w)


@dataclass(frozen=True)
class Fixed(Strategy):
    """Weighted sum with fixed weights w (m,), problem (2)."""

    weights: tuple = ()
    name = "fixed"

    def __call__(self, L, ctx):
        w = torch.as_tensor(self.weights, dtype=L.dtype, device=L.device) * _mask(ctx.present, L)
        return Balanced((w * L).sum(), w)

    def to_json(self):
        return {"name": self.name, "weights": list(self.weights)}


@dataclass(frozen=True)
class SVD(Fixed):
    """Algorithm 2 of Wu, Zhang & Ré: fixed weights α_i = ‖θ_iᵀU_r‖ (θ_i = Xᵀy_i, U_r the top-r
    left singular vectors of [θ_1 … θ_m]; mean 1) computed once from data whose tasks share X
    (:func:`bayesmtl.transfer.svd_task_weights`); then the weighted sum of problem (2)."""

    rank: int = 1
    name = "svd"

    @classmethod
    def from_data(cls, data, rank: int = 1) -> SVD:
        from ..transfer.reweighting import svd_task_weights

        return cls(tuple(svd_task_weights(data, rank).tolist()), int(rank))

    def to_json(self):
        return {"name": self.name, "rank": self.rank, "weights": list(self.weights)}


@dataclass(frozen=True)
class DWA(Strategy):
    """Dynamic weight average (Liu et al. 2019), temperature T; weights sum to the number of
    present tasks (m); 1 during the first two epochs."""

    T: float = 2.0
    name = "dwa"
    fixed_target = False

    def __call__(self, L, ctx):
        k = ctx.present.sum()
        if len(ctx.history) < 2:
            w = _mask(ctx.present, L)
        else:
            r = torch.as_tensor(np.asarray(ctx.history[-1]) / np.asarray(ctx.history[-2]),
                                dtype=L.dtype, device=L.device)
            w = k * _softmax_present(r / self.T, ctx.present)
        return Balanced((w * L).sum(), w)

    def to_json(self):
        return {"name": self.name, "T": self.T}


@dataclass(frozen=True)
class Max(Strategy):
    """Maximum approach, problem (3): max_i L_i (a one-hot subgradient weight)."""

    name = "max"

    def __call__(self, L, ctx):
        obj = L.masked_fill(~ctx.present, -math.inf).max()
        w = torch.zeros_like(L)
        w[torch.argmax(L.detach().masked_fill(~ctx.present, -math.inf))] = 1.0
        return Balanced(obj, w)


@dataclass(frozen=True)
class SMax(Strategy):
    """Soft maximum log Σ_i exp L_i (paper Section 3.3)."""

    name = "smax"

    def __call__(self, L, ctx):
        obj = torch.logsumexp(L.masked_fill(~ctx.present, -math.inf), dim=0)
        return Balanced(obj, _softmax_present(L.detach(), ctx.present))


@dataclass(frozen=True)
class CL(Strategy):
    """Self-paced curriculum (eq. (4)): w_i ∝ exp(-L_i/T) at the current (detached) losses,
    scaled to sum to the number of present tasks."""

    T: float = 1.0
    name = "cl"
    fixed_target = False

    def __call__(self, L, ctx):
        w = ctx.present.sum() * _softmax_present(-L.detach() / self.T, ctx.present)
        return Balanced((w * L).sum(), w)

    def to_json(self):
        return {"name": self.name, "T": self.T}


@dataclass(frozen=True)
class MGDA(Strategy):
    """MGDA (Sener & Koltun 2018): α = the min-norm point of the convex hull of the shared-
    parameter gradients (problem (6), solved exactly by :func:`min_norm_weights`); objective
    Σ α_i L_i with α fixed. (Sener & Koltun step each head along its own gradient; under Adam
    the constant factor α_i on a head's gradient is largely normalised away.)"""

    name = "mgda"
    fixed_target = False
    needs_grads = True

    def __call__(self, L, ctx):
        grads = ctx.shared_grads()[ctx.present].double()
        alpha = min_norm_weights((grads @ grads.T).cpu().numpy())
        w = torch.zeros_like(L)
        w[ctx.present] = torch.as_tensor(alpha, dtype=L.dtype, device=L.device)
        return Balanced((w * L).sum(), w)


@dataclass(frozen=True)
class BMTL(Strategy):
    """Balanced MTL, problem (8): Σ_i h(L_i); weights h'(L_i) (problem (9))."""

    h: Transform = None
    name = "bmtl"

    def __call__(self, L, ctx):
        pm = _mask(ctx.present, L)
        return Balanced((self.h.fn(L) * pm).sum(), self.h.grad(L.detach()) * pm)

    def to_json(self):
        return {"name": self.name, "h": self.h.spec}


@dataclass(frozen=True)
class Uncertainty(Strategy):
    """Uncertainty weighting (Kendall et al. 2018): Σ_i exp(-s_i) L_i + s_i with learned
    s_i = log σ_i² (flat prior). For the squared loss this is 2 × the mean negative Gaussian
    log-likelihood N(y | f, σ_i²), up to a constant; weights exp(-s_i) = 1/σ_i²."""

    name = "uncertainty"

    def sites(self, m):
        return {"balance.log_var": (m,)}

    def __call__(self, L, ctx):
        s = ctx.params["balance.log_var"]
        pm = _mask(ctx.present, L)
        return Balanced(((torch.exp(-s) * L + s) * pm).sum(), torch.exp(-s).detach() * pm)


# ----------------------------------------------------------------------------- h transforms


@dataclass(frozen=True)
class Transform:
    """h and h' as elementwise torch functions; ``spec`` is a JSON-able description."""

    fn: Callable
    grad: Callable
    spec: dict = field(default_factory=dict)


def exp_transform(T: float) -> Transform:
    """h(z) = exp(z/T), the paper's choice; admissible for every T > 0 (h'' = exp(z/T)/T² ≥
    1/T² on [0, ∞)). With losses ≈ 1 and T = 50, h(L) ≈ 1 + L/T: DS with r scaled by T."""
    _check_T(T)
    return Transform(lambda z: torch.exp(z / T), lambda z: torch.exp(z / T) / T,
                     {"kind": "exp", "T": float(T)})


def polynomial_transform(coeffs: Sequence[float]) -> Transform:
    """h(z) = Σ_k c_k z^k (coefficients in increasing degree), checked analytically against
    Theorem 1."""
    c = np.asarray(coeffs, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)):
        raise HyperparameterError("h coefficients must be a non-empty 1-D list of finite "
                                  f"numbers; got {coeffs!r}", "h", coeffs)
    _check_polynomial(c)
    dc = np.polynomial.polynomial.polyder(c)
    return Transform(lambda z: _horner(c, z), lambda z: _horner(dc, z),
                     {"kind": "polynomial", "coeffs": c.tolist()})


def _horner(c, z):
    out = torch.zeros_like(z) + float(c[-1])
    for a in c[-2::-1]:
        out = out * z + float(a)
    return out


def callable_transform(h: Callable, z_max: float = 20.0, n_grid: int = 401) -> Transform:
    """h: an elementwise, differentiable torch function; h' by autograd. Theorem 1 is checked
    numerically on a grid of [0, z_max] (strong convexity beyond z_max cannot be checked)."""
    def grad(z):
        with torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            return torch.autograd.grad(h(zz).sum(), zz)[0]

    _check_callable(h, z_max, n_grid)
    return Transform(h, grad, {"kind": "callable", "repr": repr(h)})


def make_transform(h, T: float) -> Transform:
    """None → exp(z/T); a Transform as given; a callable; or polynomial coefficients."""
    if h is None:
        return exp_transform(T)
    if isinstance(h, Transform):
        return h
    if callable(h):
        return callable_transform(h)
    return polynomial_transform(h)


def _check_T(T):
    if isinstance(T, bool) or not isinstance(T, (int, float, np.integer, np.floating)) \
            or not math.isfinite(T) or T <= 0:
        raise HyperparameterError(f"T must be a finite number > 0; got {T!r}", "T", T)


def _inadmissible(condition: str, detail: str, h):
    return HyperparameterError(
        f"h is not admissible (Theorem 1 needs h strongly convex and increasing on [0, ∞) with "
        f"h(0) ≥ 0 and h'(0) ≥ 0): condition '{condition}' fails — {detail}", "h", h)


def _check_polynomial(c: np.ndarray) -> None:
    P = np.polynomial.polynomial
    if c[0] < 0:
        raise _inadmissible("h(0) >= 0", f"h(0) = {c[0]:g}", c.tolist())
    if c.size > 1 and c[1] < 0:
        raise _inadmissible("h'(0) >= 0", f"h'(0) = {c[1]:g}", c.tolist())
    q = np.trim_zeros(P.polyder(c, 2), "b")  # h''
    if q.size == 0 or q[-1] <= 0:
        raise _inadmissible("strongly convex on [0, inf)",
                            "h'' is zero or eventually negative (a polynomial needs a positive "
                            "leading coefficient of degree ≥ 2)", c.tolist())
    candidates = [0.0]  # inf of h'' on [0, ∞): at 0 or at a stationary point of h''
    if q.size > 2:
        candidates += [r.real for r in P.polyroots(P.polyder(q))
                       if abs(r.imag) < 1e-12 and r.real > 0]
    low = min(P.polyval(z, q) for z in candidates)
    if low <= 0:
        raise _inadmissible("strongly convex on [0, inf)", f"inf h'' on [0, ∞) = {low:g}",
                            c.tolist())


def _check_callable(h, z_max, n_grid):
    z = torch.linspace(0.0, z_max, n_grid, dtype=torch.float64, requires_grad=True)
    try:
        v = h(z)
        d1 = torch.autograd.grad(v.sum(), z, create_graph=True)[0]
        d2 = (torch.autograd.grad(d1.sum(), z, allow_unused=True)[0] if d1.requires_grad
              else None)
    except Exception as err:  # any failure means h is unusable
        raise HyperparameterError(f"h must be an elementwise, twice-differentiable torch "
                                  f"function: {err}", "h", repr(h)) from None
    d2 = torch.zeros_like(z) if d2 is None else d2
    v, d1, d2 = (t.detach().numpy() for t in (v, d1, d2))
    if v.shape != (n_grid,) or not np.all(np.isfinite(np.r_[v, d1, d2])):
        raise HyperparameterError(f"h must map a (n,) tensor to finite (n,) values on "
                                  f"[0, {z_max}]", "h", repr(h))
    if v[0] < 0:
        raise _inadmissible("h(0) >= 0", f"h(0) = {v[0]:g}", repr(h))
    if d1[0] < 0:
        raise _inadmissible("h'(0) >= 0", f"h'(0) = {d1[0]:g}", repr(h))
    tol = 1e-10 * max(1.0, float(np.abs(d1).max()))
    if d2.min() <= tol:
        k = int(np.argmin(d2))
        raise _inadmissible("strongly convex on [0, inf)",
                            f"h''({z.detach()[k]:.3g}) = {d2[k]:g} (checked on [0, {z_max}])",
                            repr(h))
    if d1[1:].min() <= 0:
        raise _inadmissible("increasing on [0, inf)", f"min h' on (0, {z_max}] = "
                            f"{d1[1:].min():g}", repr(h))


# ----------------------------------------------------------------------------- MGDA's QP


def min_norm_weights(G: np.ndarray, tol: float = 1e-12, max_iter: int = 1000) -> np.ndarray:
    r"""α = argmin_{α ≥ 0, Σα = 1} αᵀ G α for a PSD Gram matrix G = [⟨g_i, g_j⟩] (m, m).

    Wolfe's (1976) min-norm-point algorithm on the Gram matrix: an active-set method that ends
    after finitely many steps with the exact minimiser (to rounding) for any m. Each minor cycle
    solves the affine min-norm problem on the active set from its KKT system
    [G_SS 1; 1ᵀ 0][μ; ν] = [0; 1]. When G is singular the min-norm point Σα_i g_i is unique but
    α need not be; one minimiser is returned.
    """
    G = np.asarray(G, dtype=np.float64)
    m = G.shape[0]
    if m == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(G)))
    if not np.isfinite(scale):
        raise FloatingPointError("non-finite gradients in MGDA's Gram matrix")
    if scale <= 0:
        return np.full(m, 1.0 / m)
    G = G / scale
    lam = np.zeros(m)
    S = [int(np.argmin(np.diag(G)))]
    lam[S[0]] = 1.0
    for _ in range(max_iter):
        Gl = G @ lam
        j = int(np.argmin(Gl))
        if lam @ Gl - Gl[j] <= tol or j in S:
            break
        S.append(j)
        while True:  # minor cycle: move towards the affine minimiser on S, dropping points
            mu = _affine_min(G[np.ix_(S, S)])
            if np.all(mu > tol):
                lam[:] = 0.0
                lam[S] = mu
                break
            lS = lam[S]
            neg = (mu <= tol) & (lS - mu > 0)
            theta = np.min(lS[neg] / (lS[neg] - mu[neg])) if neg.any() else 1.0
            lS = lS + theta * (mu - lS)
            keep = lS > tol
            if keep.all():  # rounding: drop the entry closest to zero
                keep[np.argmin(lS)] = False
            lam[:] = 0.0
            S = [s for s, k in zip(S, keep, strict=True) if k]
            lam[S] = lS[keep] / lS[keep].sum()
            if len(S) == 1:
                break
    return lam


def _affine_min(G_SS: np.ndarray) -> np.ndarray:
    """argmin μᵀ G_SS μ s.t. Σμ = 1: μ ∝ G_SS⁻¹ 1 when G_SS is positive definite (Cholesky),
    else the least-squares solution of the KKT system."""
    k = G_SS.shape[0]
    try:
        v = scipy.linalg.cho_solve(scipy.linalg.cho_factor(G_SS), np.ones(k))
        if np.all(np.isfinite(v)) and v.sum() > 0:
            return v / v.sum()
    except np.linalg.LinAlgError:
        pass
    A = np.zeros((k + 1, k + 1))
    A[:k, :k], A[:k, k], A[k, :k] = G_SS, 1.0, 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    return np.linalg.lstsq(A, rhs, rcond=None)[0][:k]


# ----------------------------------------------------------------------------- factory

STRATEGIES = ("ds", "fixed", "svd", "dwa", "max", "smax", "cl", "mgda", "bmtl", "uncertainty")


def make_strategy(balancing, *, n_tasks: int, T: float = 50.0, h=None, weights=None,
                  dwa_T: float = 2.0, cl_T: float = 1.0, data=None,
                  svd_rank: int = 1) -> Strategy:
    """A Strategy from its name (or one given as is), every parameter validated. "svd" computes
    its weights from ``data`` (tasks sharing X) at rank ``svd_rank``."""
    if isinstance(balancing, Strategy):
        return balancing
    if balancing not in STRATEGIES:
        raise HyperparameterError(f"balancing must be one of {STRATEGIES} or a Strategy; got "
                                  f"{balancing!r}", "balancing", balancing)
    _check_T(T)
    for name, value in (("dwa_T", dwa_T), ("cl_T", cl_T)):
        try:
            _check_T(value)
        except HyperparameterError:
            raise HyperparameterError(f"{name} must be a finite number > 0; got {value!r}",
                                      name, value) from None
    if h is not None and balancing != "bmtl":
        raise HyperparameterError("h is used by balancing='bmtl' only", "h", repr(h))
    if (weights is not None) != (balancing == "fixed"):
        raise HyperparameterError("weights must be given exactly when balancing='fixed'",
                                  "weights", weights)
    if balancing == "fixed":
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n_tasks,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise HyperparameterError(f"weights must be {n_tasks} finite numbers > 0; got "
                                      f"{weights!r}", "weights", weights)
        return Fixed(tuple(w.tolist()))
    if balancing == "svd":
        if data is None:
            raise HyperparameterError("balancing='svd' (Algorithm 2) computes its weights from "
                                      "the data: pass data= or SVD.from_data(data, rank)",
                                      "balancing", balancing)
        return SVD.from_data(data, svd_rank)
    if balancing == "bmtl":
        return BMTL(make_transform(h, T))
    return {"ds": DS, "max": Max, "smax": SMax, "mgda": MGDA, "uncertainty": Uncertainty,
            "dwa": lambda: DWA(float(dwa_T)), "cl": lambda: CL(float(cl_T))}[balancing]()
