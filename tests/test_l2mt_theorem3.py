"""L2MT test-time Ω (Theorem 3, supplement Algorithm 1): problem (8) vs cvxpy, KKT, the
printed Algorithm 1's off-by-one, problem (7) for ρ > 0 / = 0 / < 0, (Φ, ρ), bad input."""

import cvxpy as cp
import numpy as np
import pytest
from conftest import solve_cvxpy
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmtl.l2mt.theorem3 import (
    omega_tilde,
    phi_and_rho,
    problem7_objective,
    problem8_objective,
    problem14_objective,
    solve_problem8,
    solve_problem14,
)

RNG = np.random.default_rng


def _random_phi(m, seed):
    A = RNG(seed).normal(size=(m, m))
    return (A + A.T) / 2


def _phi_with_spectrum(kappa, seed):
    Q, _ = np.linalg.qr(RNG(seed).normal(size=(len(kappa), len(kappa))))
    return Q @ np.diag(kappa) @ Q.T, Q


def _cvxpy_problem8(kappa, rho):
    mu = cp.Variable(len(kappa))
    value = solve_cvxpy(rho * cp.sum_squares(mu) + kappa @ mu, [mu >= 0, cp.sum(mu) == 1])
    return mu.value, value


def _kkt_residuals(mu, kappa, rho, tau):
    """(primal feasibility, stationarity on the support, dual feasibility off it)."""
    support = mu > 0
    grad = 2 * rho * mu + kappa + tau
    return (max(-mu.min(), abs(mu.sum() - 1)),
            np.abs(grad[support]).max(),
            max(0.0, -grad[~support].min()) if (~support).any() else 0.0)


# ---------------------------------------------------------------- problem (8), Algorithm 1

CASES8 = {
    "m1": ([0.3], 1.0),
    "m1_negative": ([-5.0], 1e-3),
    "m2": ([0.2, -0.4], 0.5),
    "m2_tie": ([1.0, 1.0], 0.1),
    "m7": (RNG(1).normal(size=7), 1.0),
    "m7_small_rho": (RNG(2).normal(size=7), 1e-6),
    "m7_large_rho": (RNG(3).normal(size=7), 1e6),
    "m50": (RNG(4).normal(size=50), 0.3),
    "m50_small_rho": (RNG(5).normal(size=50), 1e-4),
    "m50_large_rho": (RNG(6).normal(size=50), 1e4),
    "all_negative": (-np.abs(RNG(7).normal(size=9)) - 2.0, 0.7),
    "ties_in_support": ([3.0, 1.0, 1.0, 1.0, 0.0, 0.0], 2.0),
    "ties_next_to_support": ([2.0, 0.5, 0.5, 0.0, 0.0, 0.0], 0.6),  # support: the three 0s
    "ties_unsorted": ([0.5, -1.0, 2.0, -1.0, 0.5, -1.0, 2.0], 0.9),
    "all_equal": ([0.7] * 6, 0.2),
    "offset_large": (1e3 + RNG(8).normal(size=12), 0.05),
}
# strict complementarity fails (μ = 0 and κ + τ = 0 for the two 0.5s): an interior-point
# solver only gets μ to ~1e-6 there, so these are checked by KKT only
DEGENERATE8 = {
    "degenerate_boundary": ([2.0, 0.5, 0.5, 0.0, 0.0, 0.0], 0.75),
    "degenerate_m2": ([1.0, 0.0], 0.5),
}


@pytest.mark.parametrize("name", list(CASES8))
def test_problem8_matches_cvxpy(name):
    kappa, rho = CASES8[name]
    kappa = np.asarray(kappa, dtype=float)
    mu = solve_problem8(kappa, rho)
    mu_ref, value_ref = _cvxpy_problem8(kappa, rho)
    value = problem8_objective(mu, kappa, rho)
    scale = max(1.0, abs(value_ref))
    assert value <= value_ref + 1e-9 * scale            # no worse than the solver
    assert value == pytest.approx(value_ref, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-7)


@pytest.mark.parametrize("name", list(CASES8) + list(DEGENERATE8))
def test_problem8_kkt_and_duality(name):
    kappa, rho = {**CASES8, **DEGENERATE8}[name]
    kappa = np.asarray(kappa, dtype=float)
    mu, tau = solve_problem8(kappa, rho), solve_problem14(kappa, rho)
    scale = 1.0 + np.abs(kappa).max() + abs(tau)
    feas, stat, dual = _kkt_residuals(mu, kappa, rho, tau)
    assert mu.min() >= 0 and feas <= 1e-14
    assert stat <= 1e-12 * scale and dual <= 1e-12 * scale
    # strong duality: min (8) = −min (14) / (4ρ); and τ beats its neighbours in (14)
    f14 = problem14_objective(tau, kappa, rho)
    assert problem8_objective(mu, kappa, rho) == pytest.approx(-f14 / (4 * rho), rel=1e-9,
                                                               abs=1e-12 * scale)
    for step in (1e-6, 1e-3, 1.0):
        assert f14 <= problem14_objective(tau + step * scale, kappa, rho)
        assert f14 <= problem14_objective(tau - step * scale, kappa, rho)
    # (13): μ_i = max(0, −(κ_i + τ)/(2ρ))
    np.testing.assert_allclose(mu, np.maximum(0, -(kappa + tau) / (2 * rho)), atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(kappa=st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0]), min_size=1,
                      max_size=12),
       rho=st.sampled_from([1e-3, 0.1, 0.5, 1.0, 7.0, 1e3]))
def test_problem8_kkt_with_ties_property(kappa, rho):
    kappa = np.asarray(kappa)
    mu, tau = solve_problem8(kappa, rho), solve_problem14(kappa, rho)
    feas, stat, dual = _kkt_residuals(mu, kappa, rho, tau)
    assert mu.min() >= 0 and feas <= 1e-14 and stat <= 1e-11 and dual <= 1e-11
    for value in np.unique(kappa):                       # tied κ get the same μ
        assert np.ptp(mu[kappa == value]) <= 1e-15


def test_problem8_order_invariant_and_extreme_offsets():
    kappa = RNG(9).normal(size=40)
    perm = RNG(10).permutation(40)
    np.testing.assert_allclose(solve_problem8(kappa, 0.4)[perm], solve_problem8(kappa[perm], 0.4),
                               atol=1e-15)
    # κ = offset + spread: μ depends on the spread only (the printed scan's v-comparison and
    # subtractive updates cancel here; the closed form does not)
    base = RNG(11).normal(size=50)
    for offset in (1e3, 1e6, 1e8):
        np.testing.assert_allclose(solve_problem8(base + offset, 0.1), solve_problem8(base, 0.1),
                                   atol=1e-6)
        mu = solve_problem8(base + offset, 0.1)
        assert mu.sum() == pytest.approx(1.0, abs=1e-14)


def _paper_algorithm1(kappa_desc, rho, *, corrected):
    """Algorithm 1 of the supplement, line by line; ``corrected`` removes κ_{i−1} (not κ_i)."""
    m = len(kappa_desc)
    c0, c1, c2 = np.sum(kappa_desc**2), 2 * (np.sum(kappa_desc) + 2 * rho), m
    tau = min(-kappa_desc[0], -c1 / (2 * c2))
    v = c0 + c1 * tau + c2 * tau**2
    for i in range(1, m):                                 # paper's i = 2..m
        removed = kappa_desc[i - 1] if corrected else kappa_desc[i]
        c0, c1, c2 = c0 - removed**2, c1 - 2 * removed, c2 - 1
        tau0 = min(-kappa_desc[i], max(-kappa_desc[i - 1], -c1 / (2 * c2)))
        v0 = c0 + c1 * tau0 + c2 * tau0**2
        if v0 < v:
            tau, v = tau0, v0
    return tau


@pytest.mark.parametrize("seed", range(5))
def test_printed_algorithm1_off_by_one(seed):
    kappa = np.sort(RNG(100 + seed).normal(size=7))[::-1]
    rho = 1.0
    tau_fixed = _paper_algorithm1(kappa, rho, corrected=True)
    assert tau_fixed == pytest.approx(solve_problem14(kappa, rho), abs=1e-12)
    tau_printed = _paper_algorithm1(kappa, rho, corrected=False)
    mu_printed = np.maximum(0, -(kappa + tau_printed) / (2 * rho))
    assert abs(mu_printed.sum() - 1) > 0.1                # infeasible as printed


@pytest.mark.parametrize("rho", [0.0, -1.0, np.nan, np.inf])
def test_problem8_rejects_rho(rho):
    with pytest.raises(ValueError, match="rho"):
        solve_problem8([0.1, 0.2], rho)


@pytest.mark.parametrize("kappa", [[], [[0.1, 0.2]], [0.1, np.nan], [np.inf, 0.0]])
def test_problem8_rejects_kappa(kappa):
    with pytest.raises(ValueError, match="kappa"):
        solve_problem8(kappa, 1.0)


# ---------------------------------------------------------------- problem (7), Theorem 3

def _cvxpy_problem7(phi, rho):
    m = phi.shape[0]
    omega = cp.Variable((m, m), PSD=True)
    value = solve_cvxpy(rho * cp.sum_squares(omega) + cp.trace(phi @ omega),
                        [cp.trace(omega) == 1])
    return omega.value, value


@pytest.mark.parametrize("m", range(3, 9))
def test_theorem3_positive_rho_matches_sdp(m):
    phi, rho = _random_phi(m, seed=m), 0.05 * m
    omega = omega_tilde(phi, rho)
    omega_ref, value_ref = _cvxpy_problem7(phi, rho)
    value = problem7_objective(omega, phi, rho)
    assert value <= value_ref + 1e-8
    assert value == pytest.approx(value_ref, abs=1e-7)
    np.testing.assert_allclose(omega, omega_ref, atol=1e-5)
    assert np.allclose(omega, omega.T) and np.trace(omega) == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.eigvalsh(omega).min() >= -1e-12


def test_theorem3_zero_rho():
    phi = _random_phi(6, seed=20)
    omega = omega_tilde(phi, 0.0)
    lam = np.linalg.eigvalsh(phi)
    assert problem7_objective(omega, phi, 0.0) == pytest.approx(lam[0], abs=1e-12)
    assert np.linalg.matrix_rank(omega, tol=1e-9) == 1
    assert _cvxpy_problem7(phi, 0.0)[1] == pytest.approx(lam[0], abs=1e-7)


def test_theorem3_zero_rho_ties_gives_barycentre():
    phi, Q = _phi_with_spectrum([-1.0, -1.0, -1.0, 0.5, 2.0], seed=21)
    omega = omega_tilde(phi, 0.0)
    barycentre = Q[:, :3] @ Q[:, :3].T / 3
    np.testing.assert_allclose(omega, barycentre, atol=1e-12)
    assert problem7_objective(omega, phi, 0.0) == pytest.approx(-1.0, abs=1e-12)
    # the barycentre is the ρ ↓ 0 limit of the ρ > 0 solutions
    np.testing.assert_allclose(omega_tilde(phi, 1e-9), barycentre, atol=1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_theorem3_negative_rho(ties):
    m, rho = 6, -0.7
    if ties:
        phi, Q = _phi_with_spectrum([-0.3, -0.3, 0.1, 0.4, 0.4, 1.2], seed=22)
    else:
        phi = _random_phi(m, seed=23)
    omega = omega_tilde(phi, rho)
    value = problem7_objective(omega, phi, rho)
    kappa, U = np.linalg.eigh(phi)
    assert value == pytest.approx(kappa[0] + rho, abs=1e-12)
    # every feasible rank one vvᵀ: ρ ‖v‖⁴ + vᵀΦv = ρ + vᵀΦv
    V = RNG(24).normal(size=(2000, m))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    assert value <= (rho + np.einsum("ni,ij,nj->n", V, phi, V)).min() + 1e-12
    for j in range(m):
        assert value <= problem7_objective(np.outer(U[:, j], U[:, j]), phi, rho) + 1e-12
    # tr Ω² ≤ 1 on the feasible set, so min (7) = min_{ρ=0} (7) + ρ = λ_min + ρ
    value0 = _cvxpy_problem7(phi, 0.0)[1]
    assert value <= value0 + rho + 1e-7
    assert value == pytest.approx(value0 + rho, abs=1e-7)
    assert np.linalg.matrix_rank(omega, tol=1e-9) == 1
    if ties:                                            # in the bottom eigenspace
        P = Q[:, :2] @ Q[:, :2].T
        np.testing.assert_allclose(P @ omega @ P, omega, atol=1e-12)


def test_theorem3_m1():
    for rho in (-1.0, 0.0, 2.0):
        np.testing.assert_allclose(omega_tilde([[3.5]], rho), [[1.0]])


@pytest.mark.parametrize("phi, match", [
    (np.zeros((2, 3)), "square"),
    (np.zeros(3), "square"),
    (np.zeros((0, 0)), "square"),
    (np.array([[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite"),
    (np.array([[np.inf, 0.0], [0.0, 1.0]]), "finite"),
])
def test_omega_tilde_rejects_bad_phi(phi, match):
    with pytest.raises(ValueError, match=match):
        omega_tilde(phi, 0.1)


def test_omega_tilde_rejects_bad_rho():
    with pytest.raises(ValueError, match="rho"):
        omega_tilde(np.eye(2), np.nan)


# ---------------------------------------------------------------- (Φ, ρ) from (E, α, γ)

def test_phi_and_rho_double_loop():
    E = RNG(30).normal(size=(4, 6))
    alpha, gamma = (0.7, -1.3, 0.9, 0.25), (-1.5, 0.3)
    phi, rho = phi_and_rho(E, alpha, gamma)
    m = E.shape[1]
    ref = np.empty((m, m))
    for j in range(m):
        for k in range(m):
            K = np.exp(-np.sum((alpha[2] * (E[:, j] - E[:, k])) ** 2))
            ref[j, k] = gamma[0] * (alpha[0] * E[:, j] @ E[:, k] + alpha[1] * K)
    np.testing.assert_allclose(phi, ref, rtol=1e-12, atol=1e-12)
    assert rho == pytest.approx(gamma[0] * alpha[3])
    assert np.array_equal(phi, phi.T)
    omega = omega_tilde(phi, rho)                        # ρ < 0 here: rank one
    assert np.trace(omega) == pytest.approx(1.0)


@pytest.mark.parametrize("E, alpha, gamma", [
    (np.zeros(3), (1, 1, 1, 1), (1, 0)),
    (np.full((2, 2), np.nan), (1, 1, 1, 1), (1, 0)),
    (np.zeros((2, 2)), (1, 1, 1), (1, 0)),
    (np.zeros((2, 2)), (1, 1, 1, 1), (1, np.inf)),
])
def test_phi_and_rho_rejects_bad_input(E, alpha, gamma):
    with pytest.raises(ValueError):
        phi_and_rho(E, alpha, gamma)
