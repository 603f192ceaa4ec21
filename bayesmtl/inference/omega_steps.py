"""Exact Ω-steps of the alternating members of L2MT's family (given the Gram matrix G = WᵀW).

* :func:`clustered_omega_step` — clustered MTL: eigenvalue clipping with bisection.
* :func:`graphical_lasso` — glMTL: the graphical lasso, by projected Newton on its dual;
  :func:`graphical_lasso_subgradient` is its KKT residual.
* :func:`sparse_covariance_step` — SPATS: proximal gradient in the metric of the Hessian's
  diagonal, with Barzilai–Borwein steps.
* :func:`reconstruction_step` — the sparse linear-span form: a lasso in A by working sets
  (an interior point on each column's small set), finished by coordinate descent.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from .prox import clustered_spectrum, prox_l1
from .solvers import (
    column_lassos,
    nonnegative_qp,
    projected_newton,
    row_coordinate_descent,
)


@jax.jit
def clustered_omega_step(gram, a, b, c):
    """argmin_Ω tr(Ω⁻¹ G) over {tr Ω = a, bI ⪯ Ω ⪯ cI} for G (m, m) ⪰ 0."""
    evals, U = jnp.linalg.eigh(gram)
    return (U * clustered_spectrum(evals, a, b, c)) @ U.T


def graphical_lasso(S, alpha, P0, S0=None, max_iter=200, tol=1e-11, residual_stop=None):
    r"""argmin_{P ≻ 0} tr(S P) - ln|P| + α Σ_st |P_st|; S (m, m) ⪰ 0 (may be singular), α > 0.

    Solved through the dual (Banerjee et al. 2008), a smooth problem on a box:

        max_{U = Uᵀ, |U_st| ≤ α} ln|S + U| + m,   P = (S + U)⁻¹,

    by two-metric projected Newton (:func:`~bayesmtl.inference.solvers.projected_newton`):
    the ε-binding entries (on a bound, gradient pointing out) keep the scaled gradient step,
    which the projection cancels; the free entries take the Newton step of the Hessian P ⊗ P,
    ``Π_F(P Δ P) = Π_F(P)``, by Jacobi-preconditioned CG, inexact Newton in two phases: the
    CG's relative tolerance is min(0.3, √(δ/α)) (δ the largest projected-gradient step), and
    only if that phase ends without meeting the stop (a step no longer decreases the
    objective) does a second one continue from its point with the tight tolerance
    min(1e-3, 1e-2 √(δ/α)). Early on the free set is most of the matrix, the Hessian is badly
    conditioned, and tight CG solves are wasted on directions the next projection changes:
    with the tight tolerance throughout, the first Ω-step at m = 300 (d = 100, α = 0.02) took
    29 Newton steps, 12 of them at the 5m CG cap, 30 s; in two phases 0.8 s, the same
    objective to 1e-14 and KKT residual 3e-13 (benchmarks/README.md). If the tight phase
    also stalls short of the stop (round-off on a badly conditioned S + U) with a relative KKT
    residual (:func:`graphical_lasso_residual`) above 1e-7, a tenth of what a glMTL fit
    accepts, the tight phase alone runs from U0 as well and the P with the lower objective is
    returned (School at λ = 10, λ₂ = 0.01, cond P ≈ 4e7: the two phases stop 2e-7 above the
    one-phase solver's objective, relative, both at a residual of ≈ 8e-6).

    Round-off end game: near an ill-conditioned optimum (cond P ≈ 2e4 at m = 300, 6e4 at
    m = 1,000 on ``bench_scale.py``'s problem) ln|S + U| is flat to round-off while the KKT
    residual of P is still 1e-4 to 1e-6, so the Armijo search only picks among round-off
    changes. The KKT residual of the finished P (exact zeros off the binding entries) is
    therefore the phases' merit there: a full step that fails Armijo is still taken when it
    changes the dual by round-off only and lowers that residual; and the phases also stop
    once that residual is ≤ 1e-9. On the m = 300 fit this took the Ω-steps from 1–20 s
    (mostly the fallback from U0) to 1–3 s, the same objectives.

    Warm start: of U0 = α sign(P0) (the optimal U for P0's sign pattern by complementary
    slackness), αI and, when S0 (the S that P0 solved) is given, P0's own dual point
    clip(P0⁻¹ - S0, ±α), the one with the largest ln|S + U0| (-inf where S + U0 is not positive
    definite; clip(P0⁻¹ - S, ±α) with the new S rarely is). Late in a glMTL fit, where S changes
    little between outer iterations, P0's dual point cuts the Newton steps from 30–40 to 6–16 on
    School. Stops when the duality gap α‖P‖₁ - ⟨U, P⟩ ≤ tol·max(1, |ln|S+U||), when the finished
    P's relative KKT residual is ≤ 1e-9, or when no step makes progress (round-off).

    Why the dual: with a singular S and a small α (School: rank 18 of 139, α ≈ 0.0074) the
    solution is ill-conditioned (cond P ≈ 7e3). Primal first-order methods crawl (the former
    ADMM did not finish the first School Ω-step in 1500 s; this solver takes 0.3 s, see
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

    ``residual_stop``: the relative KKT residual at which the phases stop (default
    ``RESIDUAL_STOP``, 1e-9, the exact step); an alternation passes a looser one for its
    early Ω-steps (a traced value: no recompiling).
    """
    # S0 as an array with a traced flag (None would be a second pytree structure, so the
    # first Ω-step of every fit compiled the solver a second time)
    residual_stop = RESIDUAL_STOP if residual_stop is None else residual_stop
    return _graphical_lasso(S, alpha, P0, S if S0 is None else S0, jnp.asarray(S0 is not None),
                            max_iter, tol, jnp.asarray(residual_stop, dtype=S.dtype))


#: the graphical lasso also stops once the relative KKT residual of its finished P (exact
#: zeros off the binding entries) is this small (unless told a looser ``residual_stop``)
RESIDUAL_STOP = 1e-9


@partial(jax.jit, static_argnames=("max_iter",))
def _graphical_lasso(S, alpha, P0, S0, has_S0, max_iter, tol, residual_stop):
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

    def direction(U, loose):
        P = precision(U)
        g = -P
        fixed, distance = binding(U, P)
        diag_hessian = jnp.outer(jnp.diag(P), jnp.diag(P)) + P**2
        root = jnp.sqrt(distance / alpha)
        forcing = jnp.where(loose, jnp.minimum(0.3, root), 1e-2 * jnp.minimum(0.1, root))
        D, _ = jax.scipy.sparse.linalg.cg(lambda V: jnp.where(fixed, 0.0, P @ V @ P),
                                          jnp.where(fixed, 0.0, P),
                                          M=lambda R: jnp.where(fixed, 0.0, R / diag_hessian),
                                          tol=forcing, maxiter=5 * m)
        return jnp.where(fixed, -g, (D + D.T) / 2), g

    def sparse(U, P):  # P = (S + U)⁻¹ with exact zeros where U is not binding
        return jnp.where(binding(U, P)[0], P, 0.0)

    def sparse_residual(U):  # the certificate of the finished P
        return graphical_lasso_residual(S, alpha, sparse(U, precision(U)))

    def stop(U):  # one P for the duality gap and the certificate
        P = precision(U)
        gap = jnp.sum(alpha * jnp.abs(P) - U * P)
        return ((gap <= tol * jnp.maximum(1.0, jnp.abs(neg_log_det(U))))
                | (graphical_lasso_residual(S, alpha, sparse(U, P)) <= residual_stop))

    U0 = alpha * jnp.sign(P0 + P0.T)
    U0 = jnp.where(neg_log_det(U0) < neg_log_det(alpha * eye), U0, alpha * eye)

    def previous_dual(U0):  # the dual of P0 for the previous S0, if it is a better start
        P0_inverse = jnp.linalg.inv(P0)
        dual = project((P0_inverse + P0_inverse.T) / 2 - (S0 + S0.T) / 2)
        return jnp.where(neg_log_det(dual) < neg_log_det(U0), dual, U0)

    U0 = jax.lax.cond(has_S0, previous_dual, lambda U: U, U0)  # no inverse without S0

    def primal(Q):  # the graphical-lasso objective, inf unless Q ≻ 0
        return neg_log_det(Q - S) + jnp.sum(S * Q) + alpha * jnp.sum(jnp.abs(Q))

    def finish(U):  # (P, its objective): exact zeros where U is not binding, if not worse
        P = precision(U)
        zeroed = sparse(U, P)
        f_sparse, f_full = primal(zeroed), primal(P)
        keep = f_sparse <= f_full
        return jnp.where(keep, zeroed, P), jnp.where(keep, f_sparse, f_full)

    def phase(U, loose):
        return projected_newton(neg_log_det, partial(direction, loose=loose), project, U,
                                stop=stop, max_iter=max_iter, merit=sparse_residual)[0]

    U = phase(U0, loose=True)
    # the tight phase where the loose one stalled on its line search short of the stop
    U = jax.lax.cond(stop(U), lambda U: U, partial(phase, loose=False), U)
    P, value = finish(U)

    def from_start(P, value):  # still short of the certificate: also the tight phase alone
        # from U0, and the better P
        P_tight, value_tight = finish(phase(U0, loose=False))
        return jnp.where(value_tight < value, P_tight, P)

    certified = jax.lax.cond(stop(U), lambda P: jnp.asarray(True),
                             lambda P: graphical_lasso_residual(S, alpha, P) <= 1e-7, P)
    return jax.lax.cond(certified, lambda P, _: P, from_start, P, value)


@jax.jit
def graphical_lasso_subgradient(S, alpha, P):
    """Minimum-norm subgradient (m, m) of tr(SP) - ln|P| + α Σ|P_st| at P ≻ 0.

    With G = S - P⁻¹: G_st + α sign(P_st) where P_st ≠ 0, else soft(G_st, α). Zero exactly at
    the minimiser; its norm is the KKT residual.
    """
    G = S - jnp.linalg.inv(P)
    return jnp.where(P != 0, G + alpha * jnp.sign(P), prox_l1(G, alpha))


@jax.jit
def graphical_lasso_residual(S, alpha, P):
    """Relative KKT residual of P for :func:`graphical_lasso`: the Frobenius norm of
    :func:`graphical_lasso_subgradient` over max(1, ‖P⁻¹‖_F). Zero exactly at the minimiser;
    +inf where P is not positive definite."""
    inverse = jnp.linalg.inv(P)
    G = S - inverse
    sub = jnp.where(P != 0, G + alpha * jnp.sign(P), prox_l1(G, alpha))
    res = jnp.linalg.norm(sub) / jnp.maximum(1.0, jnp.linalg.norm(inverse))
    positive = jnp.all(jnp.isfinite(jnp.linalg.cholesky(P)))
    return jnp.where(positive & jnp.isfinite(res), res, jnp.inf)


def graphical_lasso_sensitivity(P):
    """How the graphical lasso's solution P (m, m) moves with S, on its support.

    Where the sign pattern of P is kept, stationarity on the support A = {(s, t): P_st ≠ 0}
    reads (P⁻¹)_A = (S + α sign P)_A with P zero off A, so a change dS gives the dP (zero
    off A) with (P⁻¹ dP P⁻¹)_A = -dS_A. Returns (pairs (n_A, 2), the ordered pairs of A
    row-major, and the Cholesky factor of K = (P⁻¹ ⊗ P⁻¹)_AA, K[(s,t),(u,v)] = Σ_su Σ_vt
    with Σ = P⁻¹), so dP_A = -K⁻¹ dS_A (``scipy.linalg.cho_solve``). K is a principal block
    of a positive definite matrix, hence positive definite; it takes 8·n_A² bytes. NumPy, not
    JAX: A changes from call to call and would compile a new shape each time.
    """
    P = np.asarray(P)
    sigma = np.linalg.inv(P)
    sigma = (sigma + sigma.T) / 2
    pairs = np.argwhere(P != 0)
    K = sigma[np.ix_(pairs[:, 0], pairs[:, 0])] * sigma[np.ix_(pairs[:, 1], pairs[:, 1])]
    return pairs, scipy.linalg.cho_factor(K)


def _inverse_and_value(omega, gram):
    """(Ω⁻¹, tr(Ω⁻¹G)) from one Cholesky factor; (nan, +inf) when Ω is not positive definite."""
    L = jnp.linalg.cholesky(omega)
    inverse = jax.scipy.linalg.cho_solve((L, True), jnp.eye(omega.shape[0], dtype=omega.dtype))
    inverse = (inverse + inverse.T) / 2
    val = jnp.sum(inverse * gram)
    return inverse, jnp.where(jnp.all(jnp.isfinite(L)) & jnp.isfinite(val), val, jnp.inf)


def sparse_covariance_residual(gram, lam, lam2, omega):
    """Relative KKT residual of Ω for min_{Ω ≻ 0} (λ/2) tr(Ω⁻¹G) + λ₂‖Ω‖₁: the minimum-norm
    subgradient (entries: ∇_st + λ₂ sign Ω_st where Ω_st ≠ 0, else soft(∇_st, λ₂)), in
    Frobenius norm over max(1, ‖∇‖_F), ∇ = -(λ/2) Ω⁻¹GΩ⁻¹. Zero exactly at the minimiser."""
    inverse = jnp.linalg.inv(omega)
    grad = -0.5 * lam * inverse @ gram @ inverse
    grad = (grad + grad.T) / 2
    sub = jnp.where(omega != 0, grad + lam2 * jnp.sign(omega), prox_l1(grad, lam2))
    return jnp.linalg.norm(sub) / jnp.maximum(1.0, jnp.linalg.norm(grad))


def _entry_curvature(inverse, C, lam):
    """(m, m) diagonal of the Hessian of (λ/2) tr(Ω⁻¹G) in Ω's entries, with A = Ω⁻¹ and
    C = Ω⁻¹GΩ⁻¹: λ A_ii C_ii on the diagonal, (λ/2)(A_ii C_jj + A_jj C_ii + 2 A_ij C_ij) off it
    (per entry of the symmetric pair). Non-negative (Cauchy–Schwarz and AM–GM); floored at
    1e-12 of its largest entry."""
    a, c = jnp.diag(inverse), jnp.diag(C)
    h = 0.5 * lam * (jnp.outer(a, c) + jnp.outer(c, a) + 2.0 * inverse * C)
    h = h.at[jnp.diag_indices(h.shape[0])].set(lam * a * c)
    return jnp.maximum(h, 1e-12 * jnp.max(h))


@partial(jax.jit, static_argnames=("max_iter", "refresh"))
def sparse_covariance_step(gram, lam, lam2, omega0, max_iter=20000, tol=1e-9, refresh=10):
    """argmin_{Ω ≻ 0} (λ/2) tr(Ω⁻¹ G) + λ₂‖Ω‖₁ for G ≻ 0 (m, m), from Ω₀ ≻ 0.

    Proximal gradient in a diagonal metric: the step is soft(Ω - t ∇/h, t λ₂/h) entrywise,
    h the diagonal of the smooth part's Hessian (:func:`_entry_curvature`), refreshed every
    ``refresh`` steps (the step length t then restarts at 1, a Newton step in that metric);
    between refreshes t follows Barzilai–Borwein in the metric, ⟨Δ, hΔ⟩ / ⟨Δ, Δ∇⟩, with
    backtracking (a trial point outside the cone has value +inf). One Cholesky factor per
    trial point gives both its value and, once accepted, its gradient. Stops when the
    prox-gradient residual ‖h(Ω⁺ - Ω)‖/(t max(1, ‖∇‖)) ≤ ``tol`` or after ``max_iter`` steps.
    It starts from the better of Ω₀ and the diagonal Ω with ω_i = √(λ G_ii / 2λ₂), which is
    the minimiser whenever every G_ii > 0: off the diagonal the gradient is
    -(λ/2) G_ij/(ω_i ω_j) = -λ₂ G_ij/√(G_ii G_jj), inside [-λ₂, λ₂] by Cauchy–Schwarz, so the
    KKT conditions hold with Ω_ij = 0 (the problem is convex). The loop then stops after one
    step with its certificate; the iteration matters only when that point is not positive
    definite (ε = 0 and some G_ii = 0, where no minimiser need exist) and the residual then
    reports how far the cap left it. Before the closed-form start, the solver from Ω₀ = I took
    122 steps (33 s) at m = 1,000, and on School at λ = 0.1, λ₂ = 0.01 stopped at its cap at
    F = 98.53, where the optimum is 80.43. Returns (Ω, its
    :func:`sparse_covariance_residual`, steps run).

    Why the metric: the entries' curvatures differ by orders of magnitude (at a diagonal
    optimum h_ii = 2λ₂/ω_i, School: ω from 4e-4 to 44). Without the closed-form start, a
    warm-started School Ω-step at λ = 10, λ₂ = 1 took 3,041 scalar Barzilai–Borwein steps
    (11 s) and 8–12 in the metric (0.1 s), to the same objective.
    """

    def try_step(omega, g, h, smooth_omega, f, t):
        z = prox_l1(omega - t * g / h, t * lam2 / h)
        z = (z + z.T) / 2
        dz = z - omega
        inverse, value = _inverse_and_value(z, gram)
        smooth_z = 0.5 * lam * value
        l1 = lam2 * jnp.sum(jnp.abs(z))
        # sufficient decrease for composite problems (quadratic upper bound in the metric)
        bound = smooth_omega + jnp.vdot(g, dz) + jnp.vdot(dz, h * dz) / (2 * t) + l1
        fz = smooth_z + l1
        return z, inverse, smooth_z, fz, (fz <= bound + 1e-14 * jnp.abs(f)) & jnp.isfinite(fz)

    def gradient(inverse):
        C = inverse @ gram @ inverse
        C = (C + C.T) / 2
        return -0.5 * lam * C, C

    def body(s):
        omega, g, h, smooth_omega, f, t, _, it = s

        def bt_cond(c):
            return ~c[4] & (c[5] > 1e-30)

        def bt_body(c):
            t = c[5] * 0.5
            return (*try_step(omega, g, h, smooth_omega, f, t), t)

        c = jax.lax.while_loop(bt_cond, bt_body, (*try_step(omega, g, h, smooth_omega, f, t),
                                                  t))
        z, inverse, smooth_z, fz, _, t = c
        g_new, C = gradient(inverse)
        ds, dg = z - omega, g_new - g
        residual = jnp.linalg.norm(h * ds) / t / jnp.maximum(1.0, jnp.linalg.norm(g))
        bb = jnp.vdot(ds, h * ds) / jnp.maximum(jnp.vdot(ds, dg), 1e-300)
        t_next = jnp.where(jnp.vdot(ds, dg) > 0, jnp.clip(bb, 1e-12, 1e12), 2 * t)
        renew = (it + 1) % refresh == 0
        h = jax.lax.cond(renew, lambda: _entry_curvature(inverse, C, lam), lambda: h)
        return z, g_new, h, smooth_z, fz, jnp.where(renew, 1.0, t_next), residual, it + 1

    def cond(s):
        return (s[7] < max_iter) & (s[6] > tol)

    def start(omega):  # (Ω, Ω⁻¹, smooth part, objective) from one Cholesky factor
        inverse, value = _inverse_and_value(omega, gram)
        smooth = 0.5 * lam * value
        return omega, inverse, smooth, smooth + lam2 * jnp.sum(jnp.abs(omega))

    # start from the better of Ω₀ and the diagonal minimiser ω_i = √(λ G_ii / 2λ₂)
    diagonal = start(jnp.diag(jnp.sqrt(jnp.maximum(lam * jnp.diag(gram) / (2.0 * lam2), 0.0))))
    given = start(omega0)
    omega0, inverse0, smooth0, f0 = jax.tree.map(partial(jnp.where, diagonal[3] < given[3]),
                                                 diagonal, given)
    g0, C0 = gradient(inverse0)
    one = jnp.asarray(1.0, gram.dtype)
    s = jax.lax.while_loop(cond, body, (omega0, g0, _entry_curvature(inverse0, C0, lam), smooth0,
                                        f0, one, jnp.inf * one, 0))
    return s[0], sparse_covariance_residual(gram, lam, lam2, s[0]), s[7]


def reconstruction_step(gram, lam, lam2, A0, mask, rank=None, max_sweeps=1000, tol=1e-6):
    """argmin_A (λ/2) tr((I - A)ᵀ G (I - A)) + λ₂‖A‖₁ over A with A = A ∘ mask, G (m, m).

    Column i is a lasso with Gram matrix G: (λ/2)aᵀGa - λg_iᵀa + λ₂‖a‖₁, the same λG for
    every column. Where m·rank² ≥ 32³ it is solved by working sets
    (:func:`~bayesmtl.inference.solvers.column_lassos`: each column's lasso exactly on its
    support and its largest KKT violations, seeded by the support of ``A0``, the previous
    step's A), which needs O(m²) memory and O(m³) work per round; smaller problems, and any
    whose working sets do not stop, go to the interior point on all m entries of every
    column (:func:`_reconstruction_interior_point`, O(m²d²) per iteration). At m = 1,000,
    d = 100 the first step takes ≈ 3 s where the interior point took 51 s. Coordinate
    descent from there, with the entries below their multiplier set to zero
    (:func:`~bayesmtl.inference.solvers.row_coordinate_descent`, soft-thresholding), stops
    when the lassos' summed duality gap (dual point: the scaled residual) is ≤ ``tol``
    relative to their summed objective, or after ``max_sweeps``; from the working sets'
    point it usually runs no sweep. That gap is a bound that shrinks only like the square
    root of the objective's error: on a School A-step (139 tasks, rank 27) it is 1e-5 after
    10 sweeps, when the objective is already within 3e-12 of the optimum.
    ``rank``: rank of G (d for G = WᵀW), for the interior point's thin factor.
    """
    mask = jnp.asarray(mask)
    H = lam * jnp.asarray(gram)
    m = H.shape[0]
    r = m if rank is None else min(rank, m)
    stopped = False
    if m * r * r >= _WORKING_SET_MIN_WORK:
        # sets past (m r²/2)^⅓ entries cost about what the interior point on all entries does
        A, stopped, _ = column_lassos(H, -H, lam2, mask != 0, A0, size=_WORKING_SET_SIZE,
                                      max_size=int((m * r * r / 2) ** (1 / 3)))
    if not stopped:
        A = _reconstruction_interior_point(gram, lam, lam2, mask, rank)
    return _reconstruction_polish(H, lam2, A, mask, max_sweeps, tol)


#: first working-set size of :func:`reconstruction_step`, and the size m·r² (r = rank G) from
#: which working sets beat the interior point on every entry: their rounds cost ≈ m·size³,
#: the interior point m²r² per iteration. Measured (median A-step, λ = 1, λ₂ = 0.1, random
#: W): m = 29, r = 9: 5.4 ms against 1.3 ms; m = 60, r = 9: 15 against 4.3 ms; m = 100,
#: r = 20: 17 against 32 ms; School (m = 139, r = 27): 99 against 137 ms.
_WORKING_SET_SIZE = 32
_WORKING_SET_MIN_WORK = _WORKING_SET_SIZE**3


@partial(jax.jit, static_argnames=("rank",))
def _reconstruction_interior_point(gram, lam, lam2, mask, rank=None):
    """:func:`reconstruction_step`'s lassos by the interior point on every entry: with
    G = FᵀF, F = diag(√e) Qᵀ from G's ``rank`` leading eigenpairs (``rank`` = min(d, m) is
    exact for G = WᵀW), the split a = a⁺ - a⁻ ≥ 0 is a non-negative QP with factor
    √λ [F, -F], solved for every column by
    :func:`~bayesmtl.inference.solvers.nonnegative_qp` (~16 iterations, to a duality gap of
    1e-12); entries below their multiplier are set to zero."""
    m = gram.shape[0]
    evals, Q = jnp.linalg.eigh(gram)
    k = m if rank is None else min(rank, m)
    evals, Q = jnp.clip(evals[m - k:], 0.0), Q[:, m - k:]
    factor = jnp.sqrt(evals)[:, None] * Q.T  # (k, m), factorᵀ factor = G (rank k)
    H = lam * (factor.T @ factor)  # λG in the rank-k form the QP solves
    x, qp = nonnegative_qp(jnp.sqrt(lam) * jnp.concatenate([factor, -factor], axis=1),
                           jnp.concatenate([lam2 - H, lam2 + H]), jnp.tile(mask == 0, (2, 1)))
    x = jnp.where(x > qp.multiplier, x, 0.0)
    return x[:m] - x[m:]


@partial(jax.jit, static_argnames=("max_sweeps",))
def _reconstruction_polish(H, lam2, A, mask, max_sweeps, tol):
    """Coordinate descent for :func:`reconstruction_step` (H = λG) from A, to its duality
    gap."""
    eye = jnp.eye(H.shape[0])

    def duality_gap(A, grad):
        """Σ_i (primal - dual) / max(1, Σ_i primal) of the column lassos, at the dual point
        θ_i = c_i F̃(e_i - a_i), c_i = min(1, λ₂/max_s|∇_si|) (masked), F̃ᵀF̃ = λG; grad =
        λG(A - I), so (e_i - a_i)ᵀλG(e_i - a_i) = -Σ_s (I - A)_si ∇_si and
        (e_i - a_i)ᵀλG e_i = -∇_ii."""
        q = -jnp.sum((eye - A) * grad, axis=0)
        primal = 0.5 * q + lam2 * jnp.sum(jnp.abs(A), axis=0)
        c = jnp.minimum(1.0, lam2 / jnp.maximum(jnp.max(jnp.abs(grad) * mask, axis=0), 1e-300))
        dual = -c * jnp.diag(grad) - 0.5 * c**2 * q
        return jnp.sum(primal - dual) / jnp.maximum(1.0, jnp.sum(primal))

    A, *_ = row_coordinate_descent(H, -H, A, mask,
                                   lambda v, step: prox_l1(v, lam2 * step), duality_gap,
                                   max_sweeps=max_sweeps, tol=tol)
    return A
