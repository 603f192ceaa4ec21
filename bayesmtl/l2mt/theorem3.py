"""Test-time task covariance of L2MT (Zhang, Wei & Yang, NeurIPS 2018): Theorem 3, Algorithm 1.

At test time L2MT picks the task covariance of a new multitask problem by solving problem (7),

    min_Ω  ρ tr(Ω²) + tr(ΦΩ)   s.t.  Ω ⪰ 0,  tr(Ω) = 1,                          (7)

with Φ = γ1(α1 ẼᵀẼ + α2 K̃) and ρ = γ1 α4 (:func:`phi_and_rho`). Theorem 3 solves it in the
eigenbasis of Φ = U diag(κ) Uᵀ; for ρ > 0 it reduces to the simplex-constrained QP

    min_μ  ρ ‖μ‖² + μᵀκ   s.t.  μ ≥ 0,  1ᵀμ = 1,                                 (8)

whose dual (supplement, eq. (14)) is the one-dimensional convex problem

    min_τ  4ρτ + Σ_{i: τ ≤ −κ_i} (τ + κ_i)²,                                   (14)

and μ_i = max(0, −(κ_i + τ)/(2ρ)) (eq. (13)). :func:`solve_problem8` is the supplement's
Algorithm 1 (corrected, see there); :func:`omega_tilde` is Theorem 3 in all three cases.

Pure NumPy, float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["phi_and_rho", "problem7_objective", "problem8_objective", "problem14_objective",
           "solve_problem8", "solve_problem14", "omega_tilde"]

#: relative tolerance of the symmetry check on Φ: max|Φ − Φᵀ| ≤ _SYM_RTOL · max(1, max|Φ|)
_SYM_RTOL = 1e-8
#: tolerance of the tr(Ω) = 1 check on the returned Ω̃
_TRACE_ATOL = 1e-8


# ----------------------------------------------------------------------------- validation

def _finite_scalar(x, name: str) -> float:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 0 or not np.isfinite(arr):
        raise ValueError(f"{name} must be a finite real scalar, got {x!r}")
    return float(arr)


def _check_kappa_rho(kappa, rho) -> tuple[np.ndarray, float]:
    kappa = np.asarray(kappa, dtype=float)
    if kappa.ndim != 1 or kappa.size == 0:
        raise ValueError(f"kappa must be a non-empty 1-D array, got shape {kappa.shape}")
    if not np.all(np.isfinite(kappa)):
        raise ValueError("kappa must be finite (no NaN/inf)")
    rho = _finite_scalar(rho, "rho")
    if rho <= 0:
        raise ValueError(f"problem (8) needs rho > 0 (Theorem 3 handles rho <= 0 in closed "
                         f"form, see omega_tilde), got rho = {rho}")
    return kappa, rho


def _check_phi(phi) -> np.ndarray:
    phi = np.asarray(phi, dtype=float)
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1] or phi.shape[0] == 0:
        raise ValueError(f"phi must be a non-empty square (m, m) matrix, got shape {phi.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("phi must be finite (no NaN/inf)")
    asym = np.max(np.abs(phi - phi.T))
    if asym > _SYM_RTOL * max(1.0, np.max(np.abs(phi))):
        raise ValueError(f"phi must be symmetric: max|phi - phi.T| = {asym:.3g}")
    return 0.5 * (phi + phi.T)


# ----------------------------------------------------------------------------- model → (Φ, ρ)

def phi_and_rho(E, alpha, gamma) -> tuple[np.ndarray, float]:
    """Φ (m, m) and ρ of problem (7) from the task embeddings and the learned (α, γ).

    E: (d̂, m) task embedding matrix Ẽ, column j = ẽ_j; alpha = (α1, α2, α3, α4);
    gamma = (γ1, γ2). K̃_jk = exp(−‖α3 (ẽ_j − ẽ_k)‖²), Φ = γ1(α1 ẼᵀẼ + α2 K̃), ρ = γ1 α4
    (γ2 does not enter). γ1 = 0, which the paper excludes, gives Φ = 0, ρ = 0.
    """
    E = np.asarray(E, dtype=float)
    if E.ndim != 2 or E.shape[1] == 0:
        raise ValueError(f"E must be a (d_hat, m) matrix with m >= 1, got shape {E.shape}")
    if not np.all(np.isfinite(E)):
        raise ValueError("E must be finite (no NaN/inf)")
    alpha = np.asarray(alpha, dtype=float)
    gamma = np.asarray(gamma, dtype=float)
    if alpha.shape != (4,) or not np.all(np.isfinite(alpha)):
        raise ValueError(f"alpha must be 4 finite reals (α1, α2, α3, α4), got {alpha!r}")
    if gamma.shape != (2,) or not np.all(np.isfinite(gamma)):
        raise ValueError(f"gamma must be 2 finite reals (γ1, γ2), got {gamma!r}")
    a1, a2, a3, a4 = alpha
    g1 = gamma[0]
    gram = E.T @ E
    sq = np.diag(gram)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)  # ‖ẽ_j − ẽ_k‖²
    np.fill_diagonal(dist2, 0.0)
    K = np.exp(-(a3 * a3) * dist2)
    phi = g1 * (a1 * gram + a2 * K)
    return 0.5 * (phi + phi.T), float(g1 * a4)


# ----------------------------------------------------------------------------- objectives

def problem7_objective(omega, phi, rho) -> float:
    """ρ tr(Ω²) + tr(ΦΩ) for Ω, Φ (m, m); feasibility of Ω is not checked."""
    omega = np.asarray(omega, dtype=float)
    phi = np.asarray(phi, dtype=float)
    if omega.shape != phi.shape or omega.ndim != 2:
        raise ValueError(f"omega {omega.shape} and phi {phi.shape} must be the same (m, m)")
    return float(rho * np.sum(omega * omega.T) + np.sum(phi * omega.T))


def problem8_objective(mu, kappa, rho) -> float:
    """ρ ‖μ‖² + μᵀκ for μ, κ (m,); feasibility of μ is not checked."""
    mu = np.asarray(mu, dtype=float)
    kappa = np.asarray(kappa, dtype=float)
    return float(rho * mu @ mu + mu @ kappa)


def problem14_objective(tau, kappa, rho) -> float:
    """The dual (14) at τ: 4ρτ + Σ_{τ ≤ −κ_i} (τ + κ_i)², κ (m,).

    By strong duality the optimum of (8) equals −min(14) / (4ρ) for ρ > 0.
    """
    kappa = np.asarray(kappa, dtype=float)
    return float(4.0 * rho * tau + np.sum(np.minimum(tau + kappa, 0.0) ** 2))


# ----------------------------------------------------------------------------- Algorithm 1

def _algorithm1(kappa_desc: np.ndarray, rho: float) -> tuple[int, np.ndarray, float]:
    """Corrected Algorithm 1 on κ sorted descending (m,), ρ > 0.

    Returns (r, μ sorted like κ, τ) with r the 0-based start of the support {r, …, m−1}.
    Region r = (−κ_{r−1}, −κ_r] (κ_{−1} = +∞) has active set {r, …, m−1} and coefficients
    c2 = m − r, c1 = 2(Σ_{j≥r} κ_j + 2ρ); the derivative of (14) at its right end −κ_r is
    c1 − 2 c2 κ_r = 4ρ − 2 D_r with D_r = Σ_{j≥r} (κ_r − κ_j) = Σ_{l≥r} (m−1−l)(κ_l − κ_{l+1}),
    a sum of non-negative terms (no cancellation). (14) is convex and C¹, so its minimiser lies
    in the first region whose right-end derivative is ≥ 0, i.e. r = min{r : D_r ≤ 2ρ}, and
    there it is the unclipped stationary point τ = −c1/(2 c2).
    """
    m = kappa_desc.size
    gaps = kappa_desc[:-1] - kappa_desc[1:]                 # κ_l − κ_{l+1} ≥ 0, l = 0..m−2
    weighted = gaps * np.arange(m - 1, 0, -1)                # (m−1−l) · gap_l
    D = np.zeros(m)
    D[:-1] = np.cumsum(weighted[::-1])[::-1]                 # D_r, non-increasing, D_{m−1} = 0
    r = int(np.argmax(D <= 2.0 * rho))                       # first region with f'(−κ_r) ≥ 0
    k = m - r                                                # support size = c2 of region r
    mu_r = (1.0 - D[r] / (2.0 * rho)) / k                    # μ at the largest κ of the support
    mu = np.zeros(m)
    # μ_j = μ_r + (κ_r − κ_j)/(2ρ) on the support: both terms ≥ 0, only relative rounding.
    mu[r:] = mu_r + (kappa_desc[r] - kappa_desc[r:]) / (2.0 * rho)
    mu /= mu.sum()                                           # Σμ = 1 to the last ulp
    tau = -kappa_desc[r] - 2.0 * rho * mu_r                  # = −c1/(2 c2) of region r
    return r, mu, float(tau)


def _sorted_solve(kappa, rho):
    kappa, rho = _check_kappa_rho(kappa, rho)
    order = np.argsort(-kappa, kind="stable")                # descending, as in the paper
    return order, _algorithm1(kappa[order], rho)


def solve_problem8(kappa, rho) -> np.ndarray:
    """μ (m,) solving problem (8) exactly for κ (m,) in any order and ρ > 0.

    The supplement's Algorithm 1 (scan of the regions (−∞, −κ1], (−κ_{i−1}, −κ_i] of the dual
    (14) with running coefficients c0, c1, c2), then μ_i = max(0, −(κ_i + τ)/(2ρ)) (13);
    O(m) after an O(m log m) sort, un-sorted back to the input order. Ties in κ and m = 1 are
    handled (tied κ_i always get equal μ_i). Raises ValueError for ρ ≤ 0 or non-finite input.

    Checked against the paper: (13), (14) and the first region's coefficients c2 = m,
    c1 = 2(Σκ_i + 2ρ), c0 = Σκ_i² are right (the Lagrangian minimised over μ ≥ 0 is
    −τ − (1/4ρ) Σ_{τ≤−κ_i}(τ+κ_i)², i.e. −(14)/(4ρ)). Algorithm 1 as printed has an
    off-by-one error: lines 8–9 update the coefficients for the region (−κ_{i−1}, −κ_i] by
    c0 −= κ_i², c1 −= 2κ_i, whereas leaving (−κ_{i−2}, −κ_{i−1}] drops the term of κ_{i−1}
    (on (−κ_{i−1}, −κ_i] the active terms are i, …, m), so it must be c0 −= κ_{i−1}²,
    c1 −= 2κ_{i−1}. As printed it is wrong in general (in five draws of 7 standard-normal κ
    with ρ = 1, Σμ ranged over 0.85–2.09). With that fixed, the literal scan is still fragile
    when |κ| ≫ the spread of κ: c0, c1 are updated by subtraction and the regions are
    compared through v = c0 + c1τ + c2τ² (lines 12–16), both of which cancel (κ = 1e8 + N(0, 1),
    m = 50, ρ = 0.1 gives Σμ ≈ 251). So the corrected recursion is kept in closed form and
    the comparison of v is replaced by the equivalent first-order test for this convex C¹
    dual: take the first region whose right-end derivative c1 − 2c2κ_i is ≥ 0, evaluated
    without cancellation, and its stationary point τ = −c1/(2c2) (see ``_algorithm1``).
    """
    order, (_, mu_sorted, _) = _sorted_solve(kappa, rho)
    mu = np.empty_like(mu_sorted)
    mu[order] = mu_sorted
    return mu


def solve_problem14(kappa, rho) -> float:
    """τ minimising the dual (14) for κ (m,) in any order and ρ > 0 (Algorithm 1, corrected).

    With μ = :func:`solve_problem8`, 2ρμ_i + κ_i + τ = 0 on the support and ≥ 0 off it.
    """
    _, (_, _, tau) = _sorted_solve(kappa, rho)
    return tau


# ----------------------------------------------------------------------------- Theorem 3

def omega_tilde(phi, rho, *, tie_tol: float = 1e-10) -> np.ndarray:
    """Ω̃ (m, m) solving problem (7) for symmetric Φ (m, m) and real ρ (Theorem 3).

    With Φ = U diag(κ) Uᵀ (``numpy.linalg.eigh``, κ ascending here; the paper sorts
    descending) and t the multiplicity of the smallest eigenvalue (κ_j counts as tied when
    κ_j ≤ κ_min + tie_tol · max(1, max|κ|)):

    * ρ > 0: Ω̃ = U diag(μ) Uᵀ with μ from problem (8) (:func:`solve_problem8`); unique.
    * ρ = 0: the optimal set is the convex hull of the bottom-t projectors u_j u_jᵀ; we return
      its barycentre (1/t) Σ u_j u_jᵀ, i.e. the projector onto the bottom eigenspace over t.
      It is the minimum-Frobenius-norm optimum, does not depend on the choice of basis in that
      eigenspace and is the limit of the ρ ↓ 0 solutions. The optimal value is κ_min.
    * ρ < 0 (non-convex): any u_j u_jᵀ with u_j in the bottom eigenspace is optimal (value
      κ_min + ρ, as tr(Ω²) ≤ 1 on the feasible set); we return u uᵀ for the first column of
      ``eigh``'s ascending output (deterministic, but with ties which bottom eigenvector
      ``eigh`` returns is arbitrary).

    The output is symmetrised and tr(Ω̃) = 1 is checked. Raises ValueError for a non-square,
    asymmetric (beyond 1e-8 relative) or non-finite Φ, or a non-finite ρ.
    """
    phi = _check_phi(phi)
    rho = _finite_scalar(rho, "rho")
    tie_tol = _finite_scalar(tie_tol, "tie_tol")
    kappa, U = np.linalg.eigh(phi)
    if rho > 0:
        weights = solve_problem8(kappa, rho)
    elif rho == 0:
        bottom = kappa <= kappa[0] + tie_tol * max(1.0, np.max(np.abs(kappa)))
        weights = bottom / np.count_nonzero(bottom)
    else:
        weights = np.zeros_like(kappa)
        weights[0] = 1.0
    omega = (U * weights) @ U.T
    omega = 0.5 * (omega + omega.T)
    trace = np.trace(omega)
    if abs(trace - 1.0) > _TRACE_ATOL:
        raise ArithmeticError(f"tr(Omega) = {trace!r} != 1 (eigendecomposition inaccurate?)")
    return omega
