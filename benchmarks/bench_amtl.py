"""AMTL benchmarks (issue 4). Prints markdown tables; λ, μ chosen on the validation part.

    .venv/bin/python benchmarks/bench_amtl.py             # everything (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_amtl.py --quick     # synthetic sets and timing only
"""

import argparse
import itertools
import time
import warnings

import numpy as np

import bayesmtl  # noqa: F401  (x64)
from bayesmtl.datasets import load_digits_split
from bayesmtl.datasets.synthetic import load_amtl_imbalanced, load_amtl_synthetic
from bayesmtl.models.amtl import fit_amtl, fit_stl, predict_amtl
from bayesmtl.models.matrix_normal import ConvergenceWarning

SYN_LAM = (0.1, 0.3, 1.0, 3.0)
SYN_MU = (0.1, 0.3, 1.0, 3.0)
STL_LAM = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def rmse(result, data):
    return float(np.sqrt(np.mean((predict_amtl(result, data.X, data.task) - data.y) ** 2)))


def digit_error(result, data):
    """Multiclass error % of the 10 one-vs-rest tasks (argmax over tasks of P(y = 1))."""
    p = predict_amtl(result, data.X, data.task).reshape(data.n_tasks, -1)
    truth = data.y.reshape(data.n_tasks, -1).argmax(0)
    return 100.0 * float(np.mean(p.argmax(0) != truth))


def select(fit, grid, valid, metric):
    """Fit every grid point, keep the one best on the validation part."""
    best = None
    for params in grid:
        r = fit(*params)
        score = metric(r, valid)
        if best is None or score < best[0]:
            best = (score, params, r)
    return best


def methods(variant_list, lam_grid, mu_grid, fit_intercept, **kw):
    grid = list(itertools.product(lam_grid, mu_grid))
    out = {"STL": (lambda tr: lambda lam: fit_stl(tr, lam, fit_intercept=fit_intercept),
                   [(lam,) for lam in STL_LAM])}
    for name, variant in variant_list:
        out[name] = (lambda tr, v=variant: lambda lam, mu: fit_amtl(
            tr, lam, mu, v, fit_intercept=fit_intercept, **kw), grid)
    return out


def bench_synthetic(loader, variant_list, label, seeds=range(5)):
    table = {}
    for seed in seeds:
        train, valid, test = loader(seed)
        for name, (make, grid) in methods(variant_list, SYN_LAM, SYN_MU, False).items():
            _, params, r = select(make(train), grid, valid, rmse)
            table.setdefault(name, []).append((rmse(r, test), params))
    print(f"\n| {label}: method | test RMSE, 5 seeds (mean ± s.e.) | λ, μ per seed |")
    print("|---|---|---|")
    for name, rows in table.items():
        v = np.array([x for x, _ in rows])
        print(f"| {name} | {v.mean():.2f} ± {v.std(ddof=1) / np.sqrt(len(v)):.2f} | "
              f"{' '.join(str(p) for _, p in rows)} |", flush=True)


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


def bench_digits(name):
    train, valid, test = load_digits_split(name)
    s_score, s_params, s = select(lambda lam: fit_stl(train, lam),
                                  [(lam,) for lam in (0.0003, 0.001, 0.003, 0.01)], valid,
                                  digit_error)
    start = time.perf_counter()
    grid = list(itertools.product((0.001, 0.003), (0.01, 0.03, 0.1)))
    a_score, a_params, a = select(
        lambda lam, mu: fit_amtl(train, lam, mu, max_iter=60, tol=1e-6), grid, valid,
        digit_error)
    c_score, c_params, c = select(lambda lam, mu: fit_amtl(train, lam, mu, "curriculum"),
                                  grid, valid, digit_error)
    took = time.perf_counter() - start
    print(f"| {name.upper()} | STL {digit_error(s, test):.2f} (λ={s_params[0]}) | "
          f"AMTL {digit_error(a, test):.2f} (λ, μ={a_params}; {a.n_iter} it.; "
          f"{a.transfer_graph.sum():.2f} B mass) | AMTL-curriculum {digit_error(c, test):.2f} "
          f"(λ, μ={c_params}) | grid {took:.0f} s |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    bench_time()
    bench_synthetic(load_amtl_synthetic, [("AMTL-noLoss", "noloss"), ("SMTL", "smtl"),
                                          ("AMTL", "amtl"), ("AMTL-curriculum", "curriculum")],
                    "Synthetic (Section 4.1, d = 10)")
    bench_synthetic(load_amtl_imbalanced, [("AMTL", "amtl"), ("AMTL-imbalance", "imbalance")],
                    "Imbalanced synthetic (Section 4.3)")
    if not args.quick:
        print("\n| data (one 1000/500/500 split) | STL error % | AMTL error % | "
              "AMTL-curriculum error % | grid time |\n|---|---|---|---|---|")
        bench_digits("mnist")
        bench_digits("usps")
