"""Issue 3: the glMTL Ω-step (graphical lasso) on School, and a full glMTL MAP fit.

    .venv/bin/python benchmarks/bench_glasso.py omega-step [--split 1] [--lam 1] [--lam2 0.1]
    .venv/bin/python benchmarks/bench_glasso.py fit [--split 1] [--lam 1] [--lam2 0.1] [--chunk 5]
        [--extrapolation 0.5] [--newton-after 1e-5|none] [--tasks 0] [--max-outer 500]
        [--member glmtl]
        [--synthetic M,N,D]
    .venv/bin/python benchmarks/bench_glasso.py steps [--max-outer 10]
    .venv/bin/python benchmarks/bench_glasso.py points [--member spats] [--lams 0.1,10]
        [--lam2s 0.01,0.1] [--deadline 3600] [--newton-after 1e-5|none]
    .venv/bin/python benchmarks/bench_glasso.py spats-step [--lam 0.1] [--lam2 0.01] [--chunks 4]
        [--after 0]

omega-step: W after the first W-step of :func:`bayesmtl.models.family.fit_family` (glMTL on
the split's training rows, P = I), then the first Ω-step exactly as
``SparsePrecision.omega_step`` calls it: ``graphical_lasso(S = WᵀW/d, α = 2λ₂/(λd), P0 = I)``.
Prints the compile time and the solve time apart, the objective
tr(SP) − ln|P| + α Σ|P_st| and the minimum-norm subgradient (KKT residual) of the result.
fit: the whole glMTL MAP fit (``fit_family``, tol 1e-10) with outer iterations, time and the
test RMSE (over all test rows). steps: W-step and Ω-step times
per outer iteration. points: one ``fit_family`` per (λ, λ₂) on all training rows (tol 1e-8,
the CV tolerance), with the time spent in W-steps and Ω-steps and the final Ω-step's
certificate (``member.omega_residual``, when the member has one). spats-step: the first SPATS
Ω-step (W from the first W-step, Ω₀ = I) run in chunks of the step's 20,000-step cap, each
chunk continuing from the last, printing SPATS' Ω objective and relative KKT residual;
``--after N`` starts from the fit's state after N outer iterations and one more W-step.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from bayesmtl import MultiTaskData
from bayesmtl.datasets import load_school
from bayesmtl.errors import ConvergenceWarning
from bayesmtl.inference import alternation
from bayesmtl.inference.omega_steps import (
    graphical_lasso,
    graphical_lasso_subgradient,
    sparse_covariance_step,
)
from bayesmtl.inference.profile import _inputs, w_step
from bayesmtl.inference.stats import data_term
from bayesmtl.methods import Fit
from bayesmtl.models import family as F
from bayesmtl.selection import score

#: the alternating members by name
MEMBERS = {"glmtl": F.SparsePrecision, "spats": F.SparseCovariance,
           "reconstruction": F.SparseReconstruction}


def glasso_objective(S, alpha, P):
    """tr(SP) − ln|P| + α Σ_st |P_st| (inf if P is not positive definite)."""
    sign, logdet = np.linalg.slogdet(P)
    return np.inf if sign <= 0 else float(np.sum(S * P) - logdet + alpha * np.abs(P).sum())


def first_omega_problem(split, lam, lam2):
    """(S, α, P0) of the first glMTL Ω-step on School ``split`` training rows."""
    train, _ = load_school(split)
    member = F.SparsePrecision(lam2)
    d, m = train.n_features, train.n_tasks
    state = member.initial_state(m)
    W, _ = w_step(data_term(train), lam * member.precision(state), jnp.zeros((d, m)),
                  jnp.zeros(m))
    return W.T @ W / d, 2.0 * lam2 / (lam * d), state, d


def omega_step(args):
    S, alpha, P0, d = first_omega_problem(args.split, args.lam, args.lam2)
    ev = np.linalg.eigvalsh(np.asarray(S))
    print(f"School split {args.split}, λ = {args.lam:g}, λ₂ = {args.lam2:g}: d = {d}, "
          f"m = {S.shape[0]}, rank S = {np.sum(ev > 1e-10 * ev.max())}, α = {alpha:.5f}")
    t = time.perf_counter()
    graphical_lasso(S, alpha, P0).block_until_ready()
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    P = graphical_lasso(S, alpha, P0)
    P.block_until_ready()
    solve_s = time.perf_counter() - t
    compile_s = first_s - solve_s
    S, P = np.asarray(S), np.asarray(P)
    kkt = np.asarray(graphical_lasso_subgradient(S, alpha, P))
    ev = np.linalg.eigvalsh(P)
    print(f"compile ≈ {compile_s:.1f} s (first call minus the second), solve {solve_s:.2f} s")
    print(f"objective {glasso_objective(S, alpha, P):.12f}")
    print(f"min-norm subgradient: Frobenius {np.linalg.norm(kkt):.2e} (relative to ‖P⁻¹‖_F "
          f"{np.linalg.norm(kkt) / np.linalg.norm(np.linalg.inv(P)):.2e}), max |.| "
          f"{np.abs(kkt).max():.2e}")
    print(f"P: symmetric {np.array_equal(P, P.T)}, eigenvalues {ev.min():.3e} .. "
          f"{ev.max():.3e}, nonzeros {np.count_nonzero(P)} of {P.size}")
    print(f"load average {os.getloadavg()[0]:.2f}")


def first_tasks(data, k):
    """The first ``k`` tasks of ``data`` (all of them for k = 0)."""
    if not k:
        return data
    return MultiTaskData.from_tasks(list(data.tasks())[:k], task_names=data.task_names[:k],
                                    feature_names=data.feature_names)


def fit(args):
    """The glMTL MAP fit (``fit_family``, tol 1e-10, extrapolation ``--extrapolation``),
    printing progress every ``--chunk`` outer iterations; stops at convergence or after
    ``--max-outer`` outer iterations. ``--tasks k`` fits the first k schools only;
    ``--member`` another alternating member (spats, reconstruction)."""
    if args.synthetic:  # bench_scale.py's problem; its rows serve as the "test" rows too
        from bench_scale import synthetic

        train = test = synthetic(*args.synthetic)
        where = f"synthetic m, n, d = {args.synthetic}"
    else:
        train, test = (first_tasks(part, args.tasks) for part in load_school(args.split))
        where = f"School split {args.split}"
    member = MEMBERS[args.member](args.lam2)
    start = time.perf_counter()

    def report(history, W, b, state):
        if len(history) % args.chunk == 0:
            fit = Fit(np.asarray(W), np.asarray(b), {}, float(history[-1]), False, {})
            print(f"{len(history)} outer iterations, {time.perf_counter() - start:.1f} s: "
                  f"objective {history[-1]:.10f}, test RMSE {score(fit, test):.4f}", flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = F.fit_family(train, member, args.lam, max_iter=args.max_outer,
                         extrapolation=args.extrapolation, newton_after=args.newton_after,
                         callback=report)
    fit = Fit(r.W, r.b, {"omega": r.omega}, r.objective, r.converged, {}, r)
    print(f"{args.member} {where} ({train.n_tasks} tasks), λ = {args.lam:g}, "
          f"λ₂ = {args.lam2:g}, extrapolation {args.extrapolation:g}: {r.n_iter} outer iterations "
          f"({int(r.extrapolated.sum())} extrapolations kept, {r.newton_steps} Newton steps; "
          f"Newton after {args.newton_after}), converged {r.converged}, "
          f"{time.perf_counter() - start:.1f} s (compilation included); objective "
          f"{r.objective:.10f}, test RMSE {score(fit, test):.4f} (train "
          f"{score(fit, train):.4f}); P nonzeros {np.count_nonzero(r.precision)} of "
          f"{r.precision.size}")
    print(f"load average {os.getloadavg()[0]:.2f}")


def timed_outer_steps(term, member, lam, d, m, n_steps):
    """The first ``n_steps`` outer iterations of the plain alternation from W = 0 (the loop of
    :func:`~bayesmtl.models.family.fit_family` with ``extrapolation=0`` and without the dual
    warm start of the Ω-step): yields (W, b, state, W-step seconds, Ω-step seconds)."""
    W, b, state = jnp.zeros((d, m)), jnp.zeros(m), member.initial_state(m)
    for _ in range(n_steps):
        t0 = time.perf_counter()
        W, b = w_step(term, lam * member.precision(state), W, b)
        W.block_until_ready()
        t1 = time.perf_counter()
        state = member.omega_step(W.T @ W, lam, d, state)
        state.block_until_ready()
        yield W, b, state, t1 - t0, time.perf_counter() - t1


def steps(args):
    """The first ``--max-outer`` outer iterations of the plain glMTL alternation (the loop of
    :func:`~bayesmtl.models.family.fit_family` with ``extrapolation=0`` and without the dual
    warm start of the Ω-step), timing the W-step and the Ω-step apart (the first iteration
    includes compilation)."""
    train, test = load_school(args.split)
    member = F.SparsePrecision(args.lam2)
    X, y, task, weights, classification, noise = _inputs(train, "mean", None)
    d, m = train.n_features, train.n_tasks
    print("| outer iteration | W-step (s) | Ω-step (s) | objective F |\n|---|---|---|---|")
    outer = timed_outer_steps(data_term(train), member, args.lam, d, m, args.max_outer)
    for it, (W, b, state, w_seconds, omega_seconds) in enumerate(outer):
        f = F.family_objective(W, b, state, member, X, y, task, weights, args.lam,
                               classification, noise)
        print(f"| {it + 1} | {w_seconds:.2f} | {omega_seconds:.2f} | {float(f):.6f} |",
              flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


def points(args):
    """``fit_family`` at every (λ, λ₂) of ``--lams`` × ``--lam2s``, timing its steps."""
    train, _ = load_school(args.split)
    cls = MEMBERS[args.member]
    seconds = {"w": 0.0, "omega": 0.0, "nw": 0, "nomega": 0}

    class Timed(cls):
        def omega_step(self, *a, **k):
            t = time.perf_counter()
            out = super().omega_step(*a, **k)
            jax.block_until_ready(out)
            seconds["omega"] += time.perf_counter() - t
            seconds["nomega"] += 1
            return out

    def timed_w_step(*a, **k):
        t = time.perf_counter()
        out = jax.block_until_ready(plain_w_step(*a, **k))
        seconds["w"] += time.perf_counter() - t
        seconds["nw"] += 1
        return out

    plain_w_step = alternation.w_step
    alternation.w_step = timed_w_step
    for lam in args.lams:
        for lam2 in args.lam2s:
            seconds.update(w=0.0, omega=0.0, nw=0, nomega=0)
            member = Timed(lam2)
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                r = F.fit_family(train, member, lam, tol=1e-8, newton_after=args.newton_after,
                                 deadline=time.monotonic() + args.deadline)
            total = time.perf_counter() - t
            certificate = ""
            if hasattr(member, "omega_residual"):
                gram = jnp.asarray(r.W).T @ jnp.asarray(r.W)
                res = float(member.omega_residual(gram, lam, train.n_features,
                                                  jnp.asarray(r.state)))
                certificate = f", final Ω-step residual {res:.1e}"
            print(f"{args.member} λ = {lam:g}, λ₂ = {lam2:g}: {total:.1f} s, {r.n_iter} outer "
                  f"({r.newton_steps} Newton), F = {r.objective:.10f}, "
                  f"converged {r.converged}; W-steps {seconds['w']:.1f} s / {seconds['nw']}, "
                  f"Ω-steps {seconds['omega']:.1f} s / {seconds['nomega']}{certificate}"
                  f"{'; warned' if caught else ''}", flush=True)
    alternation.w_step = plain_w_step
    print(f"load average {os.getloadavg()[0]:.2f}")


def spats_step(args):
    """The first SPATS Ω-step on School (``--after N``: the Ω-step after N outer iterations
    and one more W-step), continued chunk by chunk past its cap."""
    train, _ = load_school(args.split)
    member = F.SparseCovariance(args.lam2)
    d, m = train.n_features, train.n_tasks
    omega, W0 = member.initial_state(m), jnp.zeros((d, m))
    if args.after:  # warm start: the state after that many outer iterations, then a W-step
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = alternation.fit_family(train, member, args.lam, max_iter=args.after, tol=1e-8)
        omega, W0 = jnp.asarray(fit.state), jnp.asarray(fit.W)
    W, _ = w_step(data_term(train), args.lam * member.precision(omega), W0, jnp.zeros(m))
    gram = W.T @ W + member.eps * jnp.eye(m)

    def objective(o):
        o = np.asarray(o)
        return (0.5 * args.lam * np.trace(np.linalg.solve(o, np.asarray(gram)))
                + args.lam2 * np.abs(o).sum())

    start = time.perf_counter()
    for chunk in range(1, args.chunks + 1):
        omega, res, n = jax.block_until_ready(
            sparse_covariance_step(gram, args.lam, args.lam2, omega))
        ev = np.linalg.eigvalsh(np.asarray(omega))
        print(f"{chunk} × cap ({int(n)} steps in this chunk), {time.perf_counter() - start:.0f} s: "
              f"F {objective(omega):.6f}, relative KKT residual {float(res):.2e}, Ω "
              f"eigenvalues {ev[0]:.1e} .. {ev[-1]:.1e}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["omega-step", "fit", "steps", "points", "spats-step"])
    parser.add_argument("--split", type=int, default=1)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--lam2", type=float, default=0.1)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--max-outer", type=int, default=500)
    parser.add_argument("--extrapolation", type=float, default=0.5)
    parser.add_argument("--deadline", type=float, default=3600.0,
                        help="points: seconds per fit before it stops unconverged")
    parser.add_argument("--newton-after", default=alternation.NEWTON_AFTER,
                        type=lambda v: None if v == "none" else float(v))
    parser.add_argument("--tasks", type=int, default=0)
    parser.add_argument("--synthetic", type=lambda v: tuple(int(x) for x in v.split(",")),
                        default=None, help="M,N,D: fit bench_scale.py's synthetic problem")
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--after", type=int, default=0,
                        help="spats-step: start after this many outer iterations")
    parser.add_argument("--lams", type=lambda v: [float(x) for x in v.split(",")],
                        default=[0.1, 10.0])
    parser.add_argument("--lam2s", type=lambda v: [float(x) for x in v.split(",")],
                        default=[0.01, 0.1])
    parser.add_argument("--member", default="glmtl", choices=["glmtl", "spats", "reconstruction"])
    args = parser.parse_args()
    {"omega-step": omega_step, "fit": fit, "steps": steps, "points": points,
     "spats-step": spats_step}[args.which](args)
