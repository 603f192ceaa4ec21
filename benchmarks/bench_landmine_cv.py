"""Cross-validation time on a Landmine-sized problem (issue 19): 29 tasks × 9 features, ~4,000
rows, for the alternating members (glMTL, SPATS, reconstruction), AMTL and GAMTL.

Landmine itself cannot be downloaded here; the stand-in keeps its shape: 29 tasks in two
groups (Landmine's foliated / bare terrains: weights = group centre + task noise), 9
features, 100–175 rows per task (4,015 rows), binary labels from a logistic model (Landmine is
binary) and, with ``--kind regression``, Gaussian targets from the same weights. Each method
runs ``selection.cross_validate`` with its default grid, 3 task-stratified folds, default
tolerances; every figure is one run in this process (JIT compilation of the first fit
included), under the machine load printed.

    .venv/bin/python benchmarks/bench_landmine_cv.py --kind classification
    .venv/bin/python benchmarks/bench_landmine_cv.py --kind regression
    # one fit per grid point on all rows (time, outer iterations, converged, objective)
    .venv/bin/python benchmarks/bench_landmine_cv.py --kind classification --fits --methods gamtl
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from bayesmtl import MultiTaskData
from bayesmtl.selection import cross_validate


def landmine_sized(kind: str, seed: int = 0) -> MultiTaskData:
    rng = np.random.default_rng(seed)
    m, d = 29, 9
    centres = rng.normal(size=(2, d))
    group = (np.arange(m) >= 15).astype(int)
    W = centres[group].T + 0.3 * rng.normal(size=(d, m))
    sizes = rng.integers(100, 176, size=m)
    tasks = []
    for i, n in enumerate(sizes):
        X = rng.normal(size=(n, d))
        f = X @ W[:, i] - 1.0
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-f))).astype(int) if kind == "classification" \
            else f + rng.normal(size=n)
        tasks.append((X, y))
    return MultiTaskData.from_tasks(tasks, task_names=[f"landmine{i + 1}" for i in range(m)],
                                    kind=kind)


def grid_fits(data, names) -> None:
    """One MAP fit per grid point (the first includes compilation)."""
    import itertools

    from bayesmtl import methods

    print("| method | hyperparameters | fit (s) | iterations | converged | objective |")
    print("|---|---|---|---|---|---|")
    for name in names:
        grid = methods.get(name).grid
        for values in itertools.product(*grid.values()):
            hyper = dict(zip(grid, values, strict=True))
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit, _ = methods.fit(data, name, hyper)
            point = ", ".join(f"{k}={v:g}" for k, v in hyper.items())
            print(f"| {name} | {point} | {time.perf_counter() - start:.1f} | "
                  f"{fit.info.get('n_iter')} | {fit.converged} | {fit.objective:.10g} |",
                  flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="classification",
                        choices=("classification", "regression"))
    parser.add_argument("--methods", default="glmtl,spats,reconstruction,amtl,gamtl")
    parser.add_argument("--fits", action="store_true",
                        help="time one fit per grid point on all rows instead of the CV")
    args = parser.parse_args()
    data = landmine_sized(args.kind)
    print(f"{data.n_tasks} tasks × {data.n_features} features, {len(data.y)} rows, "
          f"{args.kind}; load average {os.getloadavg()[0]:.2f}\n")
    if args.fits:
        grid_fits(data, args.methods.split(","))
        return
    print("| method | grid | CV fits | unconverged | CV wall time (s) | best |")
    print("|---|---|---|---|---|---|")
    for name in args.methods.split(","):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv = cross_validate(data, name, n_folds=3)
        seconds = time.perf_counter() - start
        grid = " × ".join(f"{len(v)} {k}" for k, v in cv.grid.items())
        best = ", ".join(f"{k}={v:g}" for k, v in cv.best.items())
        print(f"| {name} | {grid} | {cv.n_fits} | {cv.n_unconverged} | {seconds:.1f} | "
              f"{best} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
