"""Foundation benchmarks (issue 2). Prints markdown tables.

    .venv/bin/python benchmarks/bench_core.py            # MTRL timing + 10-split RMSE
    .venv/bin/python benchmarks/bench_core.py --nuts     # also NUTS on School (long)
"""

import argparse
import sys
import time

import numpy as np
import numpyro

if "--nuts" in sys.argv:  # must precede any JAX work
    numpyro.set_host_device_count(2)

import bayesmtl  # noqa: E402,F401
from bayesmtl import priors as P  # noqa: E402
from bayesmtl.datasets import load_school  # noqa: E402
from bayesmtl.models.matrix_normal import fit_mtrl  # noqa: E402


def bench_mtrl_time(lam=0.1, repeats=5):
    train, _ = load_school(1)
    start = time.perf_counter()
    r = fit_mtrl(train, lam)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        r = fit_mtrl(train, lam)
        times.append(time.perf_counter() - start)
    run = float(np.median(times))
    print(f"| MTRL MAP, School split 1, λ={lam:.3g} (ADMM) | compile {first - run:.2f} s | "
          f"run {run:.3f} s | {r.n_iter} iterations | objective {r.objective:.6f} | "
          f"converged {r.converged} |")


def bench_ten_splits():
    from bayesmtl.cli import _fit, _metric
    from bayesmtl.estimators import MTLRegressor

    rows = {"STL (identity Ω)": [], "MTRL": []}
    for split in range(1, 11):
        train, test = load_school(split)
        for name, prior in (("STL (identity Ω)", "identity"), ("MTRL", "mtrl")):
            est, _ = _fit(MTLRegressor(prior=prior), train, "auto", lambda *_: None)
            rows[name].append(_metric(est, test)[1])
        print(f"split {split}: STL {rows['STL (identity Ω)'][-1]:.3f}  MTRL {rows['MTRL'][-1]:.3f}",
              flush=True)
    print("\n| model | School test RMSE, 10 splits (mean ± s.e.) |\n|---|---|")
    for name, v in rows.items():
        v = np.asarray(v)
        print(f"| {name} | {v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f} |")


def bench_nuts(warmup=300, samples=300):
    from bayesmtl.estimators import MTLRegressor
    from bayesmtl.inference.export import task_relation_summary

    train, _ = load_school(1)
    task = np.asarray(train.task_names)[train.task]
    est = MTLRegressor(prior=P.InverseWishart(), inference="nuts", noncentered=True,
                       num_warmup=warmup, num_samples=samples, num_chains=2, progress_bar=True)
    est.fit(train.X, train.y, task=task)
    s = task_relation_summary(est.idata_, "omega")
    print(f"| NUTS, School split 1, InverseWishart | {est.fit_time_:.0f} s | min ESS(Ω) "
          f"{s['ess_bulk'].min():.0f} | max R-hat(Ω) {s['r_hat'].max():.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nuts", action="store_true")
    args = parser.parse_args()
    bench_mtrl_time()
    bench_ten_splits()
    if args.nuts:
        bench_nuts()
