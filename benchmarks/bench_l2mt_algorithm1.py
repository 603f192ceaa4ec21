"""L2MT test-time Ω: Algorithm 1 (closed form for problem (8)) vs cvxpy/Clarabel, and Theorem 3.

Problem (8): min_μ ρ‖μ‖² + μᵀκ s.t. μ ≥ 0, 1ᵀμ = 1, with κ ~ N(0, 1) of size m. Prints, per ρ,
the support size, median/min wall time of ``solve_problem8`` and of a cvxpy solve (Clarabel
with the test suite's 1e-10 tolerances; time of ``Problem.solve``, i.e. with canonicalisation,
and Clarabel's own solve time), max |μ diff|, the objective gap (Algorithm 1 − cvxpy; < 0:
Algorithm 1 lower), cvxpy's infeasibility max(|Σμ − 1|, Σ max(−μ_i, 0)) (its μ is feasible only
to its tolerance, so it can be slightly below the true minimum) and the time ratio. Then
``omega_tilde`` on a random symmetric (m, m) Φ next to the bare ``numpy.linalg.eigh`` (timed
interleaved with it), which dominates it: the rest is O(m) Algorithm 1 plus one m × m product.

    .venv/bin/python benchmarks/bench_l2mt_algorithm1.py --m 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import time

import cvxpy as cp
import numpy as np

from bayesmtl.l2mt.theorem3 import omega_tilde, problem8_objective, solve_problem8


def timed(fn, repeats: int):
    """(last result, median s, min s) over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, float(np.median(times)), float(np.min(times))


def cvxpy_problem8(kappa: np.ndarray, rho: float):
    mu = cp.Variable(kappa.size)
    problem = cp.Problem(cp.Minimize(rho * cp.sum_squares(mu) + kappa @ mu),
                         [mu >= 0, cp.sum(mu) == 1])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10,
                  max_iter=500)
    assert problem.status == cp.OPTIMAL, problem.status
    return mu.value, problem.solver_stats.solve_time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rhos", default="1e-3,0.1,10")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    kappa = rng.normal(size=args.m)
    A = rng.normal(size=(args.m, args.m))
    phi = (A + A.T) / 2
    rhos = [float(r) for r in args.rhos.split(",")]

    print(f"problem (8), m = {args.m}, κ ~ N(0, 1), {args.repeats} repeats (median / min)\n")
    print("| ρ | support | Algorithm 1 (ms) | cvxpy solve() (ms) | Clarabel only (ms) "
          "| max abs μ diff | objective gap | cvxpy infeasibility "
          "| time ratio (cvxpy / Alg. 1, medians) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rho in rhos:
        mu, t_alg, t_alg_min = timed(lambda rho=rho: solve_problem8(kappa, rho), args.repeats)
        (mu_ref, t_clar), t_cvx, t_cvx_min = timed(lambda rho=rho: cvxpy_problem8(kappa, rho),
                                                   args.repeats)
        infeasible = max(abs(mu_ref.sum() - 1), -np.minimum(mu_ref, 0).sum())
        gap = problem8_objective(mu, kappa, rho) - problem8_objective(mu_ref, kappa, rho)
        print(f"| {rho:g} | {np.count_nonzero(mu)} | {1e3 * t_alg:.3f} / {1e3 * t_alg_min:.3f} "
              f"| {1e3 * t_cvx:.1f} / {1e3 * t_cvx_min:.1f} | {1e3 * t_clar:.1f} "
              f"| {np.abs(mu - mu_ref).max():.1e} | {gap:.1e} | {infeasible:.1e} "
              f"| {t_cvx / t_alg:,.0f}× |",
              flush=True)

    print(f"\nTheorem 3, random symmetric Φ ({args.m} × {args.m}), {args.repeats} repeats "
          "(median / min)\n")
    print("| ρ | omega_tilde (ms) | numpy.linalg.eigh alone (ms) | eigh share (medians) |")
    print("|---|---|---|---|")
    for rho in (-1.0, 0.0, *rhos):
        t_om, t_eigh = [], []                            # interleaved: same machine load
        for _ in range(args.repeats):
            t_eigh.append(timed(lambda: np.linalg.eigh(phi), 1)[1])
            t_om.append(timed(lambda rho=rho: omega_tilde(phi, rho), 1)[1])
        t_om, t_om_min = float(np.median(t_om)), min(t_om)
        t_eigh, t_eigh_min = float(np.median(t_eigh)), min(t_eigh)
        print(f"| {rho:g} | {1e3 * t_om:.1f} / {1e3 * t_om_min:.1f} "
              f"| {1e3 * t_eigh:.1f} / {1e3 * t_eigh_min:.1f} | {t_eigh / t_om:.0%} |",
              flush=True)


if __name__ == "__main__":
    main()
