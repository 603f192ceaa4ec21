"""AMTL benchmarks (issue 4). Prints markdown tables; λ, μ chosen on the validation part.

    .venv/bin/python benchmarks/bench_amtl.py             # everything (~25 min on 2 busy cores)
    .venv/bin/python benchmarks/bench_amtl.py --quick     # synthetic set and timing only
    .venv/bin/python benchmarks/bench_amtl.py --only digits   # one part: time, synthetic,
                                                              # imbalanced or digits

Fairness: STL is ``fit_stl``, i.e. objective (1) with B fixed at 0 (same loss, same mean-loss
scaling, same unpenalised intercept where one is fitted, same solver), and STL is tuned on the
same λ grid as the AMTL variants. Every method picks its grid point by the same rule: lowest
validation RMSE (regression) or lowest validation error %, ties broken by the validation mean
log-loss (digits).
"""

import argparse
import itertools
import time
import warnings

import numpy as np

import bayesmtl  # noqa: F401  (x64)
from bayesmtl.datasets import load_digits_split
from bayesmtl.datasets.synthetic import (
    EASY_TASKS,
    GROUPS,
    HARD_TASKS,
    load_amtl_imbalanced,
    load_amtl_synthetic,
)
from bayesmtl.errors import ConvergenceWarning
from bayesmtl.models.amtl import fit_amtl, fit_stl, predict_amtl

GRIDS = {  # one λ grid per data set, shared by STL and every AMTL variant
    "synthetic": {"lam": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
                  "mu": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
                  # ablations whose choices sat on the edges of the grid above: noLoss's μ
                  # weighs ΣB instead of Σ Λ_s B (Λ_s ≈ 20-600 here), so its μ is ~100x larger
                  "noloss": {"lam": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
                             "mu": (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)},
                  "smtl": {"lam": (1.0, 3.0, 10.0, 30.0, 100.0),
                           "mu": (0.003, 0.01, 0.03, 0.1, 0.3)}},
    "imbalanced": {"lam": (0.3, 1.0, 3.0, 10.0), "mu": (0.1, 0.3, 1.0, 10.0)},
    "digits": {"lam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
               "mu": (0.01, 0.03, 0.1, 0.3, 1.0)},
}


def rmse(result, data, tasks=None):
    err = (predict_amtl(result, data.X, data.task) - data.y) ** 2
    if tasks is not None:
        err = err[np.isin(data.task, tasks)]
    return float(np.sqrt(np.mean(err)))


def digit_scores(result, data):
    """(multiclass error %, mean log-loss) of the 10 one-vs-rest tasks; the class is the argmax
    over tasks of P(y = 1) (the tasks share their rows, in the same order)."""
    p = predict_amtl(result, data.X, data.task).reshape(data.n_tasks, -1)
    y = data.y.reshape(data.n_tasks, -1)
    error = 100.0 * float(np.mean(p.argmax(0) != y.argmax(0)))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return error, float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def select(fit, grid, valid, score):
    """Fit every grid point, keep the one with the lowest ``score(result, valid)`` (a number or
    a tuple compared lexicographically)."""
    best = None
    for params in grid:
        r = fit(*params)
        s = score(r, valid)
        if best is None or s < best[0]:
            best = (s, params, r)
    return best


def methods(variant_list, grid, fit_intercept, **kw):
    """{name: (make(train) -> fit(*params), grid points)}; a variant uses ``grid[variant]``
    when the data set's grid has one, else the shared λ × μ grid."""
    out = {"STL": (lambda tr: lambda lam: fit_stl(tr, lam, fit_intercept=fit_intercept),
                   [(lam,) for lam in grid["lam"]])}
    for name, variant in variant_list:
        own = grid.get(variant, grid)
        out[name] = (lambda tr, v=variant: lambda lam, mu: fit_amtl(
            tr, lam, mu, v, fit_intercept=fit_intercept, **kw),
            list(itertools.product(own["lam"], own["mu"])))
    return out


def mass_shares(B):
    """Shares of the total B mass: easy → hard, easy → easy, sent by hard tasks, cross-group."""
    easy, hard = np.array(EASY_TASKS), np.array(HARD_TASKS)
    group = np.zeros(len(B), int)
    group[list(GROUPS[1])] = 1
    total = B.sum() or 1.0
    return (B[np.ix_(easy, hard)].sum() / total, B[np.ix_(easy, easy)].sum() / total,
            B[hard].sum() / total, B[group[:, None] != group[None, :]].sum() / total)


def bench_synthetic(loader, variant_list, label, grid, seeds=range(5), max_iter=300,
                    only=None):
    table, graphs = {}, []
    for seed in seeds:
        train, valid, test = loader(seed)
        for name, (make, pts) in methods(variant_list, grid, False, max_iter=max_iter).items():
            if only and name not in only:
                continue
            _, params, r = select(make(train), pts, valid, rmse)
            table.setdefault(name, []).append(
                (rmse(r, test), rmse(r, test, EASY_TASKS), rmse(r, test, HARD_TASKS), params))
            if name == "AMTL":
                graphs.append((seed, params, r.transfer_graph))
    print(f"\n| {label}: method | test RMSE, 5 seeds (mean ± s.e.) | easy tasks | hard tasks "
          f"| λ, μ per seed |\n|---|---|---|---|---|")
    for name, rows in table.items():
        v = np.array([x[:3] for x in rows])
        mean, se = v.mean(0), v.std(0, ddof=1) / np.sqrt(len(v))
        print(f"| {name} | {mean[0]:.2f} ± {se[0]:.2f} | {mean[1]:.2f} | {mean[2]:.2f} | "
              f"{' '.join(str(x[3]) for x in rows)} |", flush=True)
    print(f"\n| {label}, AMTL graph at the chosen (λ, μ): seed | λ, μ | B mass | easy→hard | "
          f"easy→easy | from hard tasks | across groups |\n|---|---|---|---|---|---|---|")
    for seed, params, B in graphs:
        shares = " | ".join(f"{100 * s:.1f} %" for s in mass_shares(B))
        print(f"| {seed} | {params} | {B.sum():.2f} | {shares} |", flush=True)


def bench_time(lam=1.0, mu=1.0, repeats=5):
    train, _, _ = load_amtl_synthetic(0)
    print("\n| synthetic seed 0, λ=1, μ=1 | compile + first run | run (median of 5) | "
          "iterations |\n|---|---|---|---|")
    for variant in ("amtl", "curriculum"):
        start = time.perf_counter()
        r = fit_amtl(train, lam, mu, variant, fit_intercept=False)
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            r = fit_amtl(train, lam, mu, variant, fit_intercept=False)
            times.append(time.perf_counter() - start)
        print(f"| AMTL-{variant} | {first:.2f} s | {np.median(times):.3f} s | {r.n_iter} |",
              flush=True)


def bench_digits(name, grid=GRIDS["digits"]):
    train, valid, test = load_digits_split(name)
    cells = []
    start = time.perf_counter()
    for _label, fit, pts in (
            ("STL", lambda lam: fit_stl(train, lam), [(lam,) for lam in grid["lam"]]),
            ("AMTL", lambda lam, mu: fit_amtl(train, lam, mu, max_iter=100, tol=1e-6),
             list(itertools.product(grid["lam"], grid["mu"]))),
            ("AMTL-curriculum", lambda lam, mu: fit_amtl(train, lam, mu, "curriculum"),
             list(itertools.product(grid["lam"], grid["mu"])))):
        (v_err, _), params, r = select(fit, pts, valid, digit_scores)
        cells.append(f"{digit_scores(r, test)[0]:.2f} (valid {v_err:.1f}; {params}; "
                     f"B mass {r.transfer_graph.sum():.2f})")
    took = time.perf_counter() - start
    print(f"| {name.upper()} | {' | '.join(cells)} | {took:.0f} s |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("time", "synthetic", "imbalanced", "digits"))
    parser.add_argument("--methods", nargs="+", help="synthetic/imbalanced rows to run, e.g. "
                        "SMTL AMTL-noLoss (default: all)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    parts = ({args.only} if args.only else
             {"time", "synthetic"} | (set() if args.quick else {"imbalanced", "digits"}))
    if "time" in parts:
        bench_time()
    if "synthetic" in parts:
        bench_synthetic(load_amtl_synthetic, [("AMTL-noLoss", "noloss"), ("SMTL", "smtl"),
                                              ("AMTL", "amtl"), ("AMTL-curriculum", "curriculum")],
                        "Synthetic (Section 4.1, d = 10)", GRIDS["synthetic"], only=args.methods)
    if "imbalanced" in parts:
        bench_synthetic(load_amtl_imbalanced, [("AMTL", "amtl"), ("AMTL-imbalance", "imbalance")],
                        "Imbalanced synthetic (Section 4.3)", GRIDS["imbalanced"], max_iter=100,
                        only=args.methods)
    if "digits" in parts:
        print("\n| data (one 1000/500/500 split) | STL error % | AMTL error % | "
              "AMTL-curriculum error % | grid time |\n|---|---|---|---|---|")
        bench_digits("mnist")
        bench_digits("usps")
