"""Issue 3: the task-relation family on School (10 splits) and the MNIST / USPS digits.

    .venv/bin/python benchmarks/bench_family.py school [--splits 1-10] [--members all]
        [--features all|binary]
    .venv/bin/python benchmarks/bench_family.py digits
    .venv/bin/python benchmarks/bench_family.py conventions [--file results_....json]

School: (λ, λ₂) by 3-fold task-stratified CV on each split's training rows only, refit on the
training rows, test RMSE; mean ± standard error over the splits. Digits (10 one-vs-rest
logistic tasks, 1000/500/500): (λ, λ₂) on the validation part, refit on train, test error %
(multi-class prediction = argmax over the 10 one-vs-rest scores, the AMTL paper's protocol).
Prints markdown tables and writes JSON next to this file.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import bayesmtl  # noqa: F401
from bayesmtl import methods
from bayesmtl.errors import ConvergenceWarning
from bayesmtl.methods import Settings
from bayesmtl.selection import compare, predict_fit, regularisation_path

LAM_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
LAM2_GRID = (0.01, 0.1, 1.0)
HERE = Path(__file__).parent
#: the family members of issue 3 (``--members all``)
DEFAULT_MEMBERS = ("stl", "pooled", "rmtl", "clustered", "mtrl", "glmtl", "spats", "schatten",
                   "squared_schatten", "reconstruction")


def _grid(name, lam_grid, lam2_grid):
    """The CV grid of member ``name``: λ, and λ₂ where the member has one."""
    grid = {"lam": lam_grid}
    if "lam2" in methods.get(name).hyper_names:
        grid["lam2"] = lam2_grid
    return grid


def _splits(text):
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def rmse_conventions(fit, test):
    """School test error of ``fit`` under the RMSE conventions in use: overall √(mean over
    all test rows), the unweighted mean over tasks of per-task RMSE, and that mean weighted
    by test rows per task."""
    sq = (predict_fit(fit, test.X, test.task) - test.y) ** 2
    n = test.n_per_task
    per = np.sqrt(np.bincount(test.task, sq, minlength=test.n_tasks) / n)
    return float(np.sqrt(sq.mean())), float(per.mean()), float(per @ n / n.sum())


def school(splits, members, folds, tol, lam_grid=LAM_GRID, lam2_grid=LAM2_GRID,
           features="all", out=None):
    from bayesmtl.datasets import load_school

    meta = {name: [] for name in members}
    for split in splits:
        train, test = load_school(split, features=features)
        # CV fits with the outer tolerance ``tol``, the refit with each solver's default
        rows, fits = compare(train, test, members,
                             grids={n: _grid(n, lam_grid, lam2_grid) for n in members},
                             n_folds=folds, settings=Settings(tol=tol),
                             refit_settings=Settings())
        rows = [{"member": r["method"], "test_rmse": r["test_rmse"],
                 "fit_time_s": r["fit_time_s"], "cv_time_s": r["cv_time_s"],
                 "lam": r["hyper"]["lam"], "lam2": r["hyper"].get("lam2"),
                 "converged": r["converged"]} for r in rows]
        for r in rows:
            r["test_rmse_per_task"] = rmse_conventions(fits[r["member"]], test)[1]
            meta[r["member"]].append(r)
        print(f"split {split}: " + "  ".join(
            f"{r['member']} {r['test_rmse']:.3f} / {r['test_rmse_per_task']:.3f}"
            for r in rows), flush=True)
        tag = "_".join(members) if len(members) < 4 else "all"
        suffix = "" if features == "all" else f"_{features}"
        path = HERE / (out or f"results_family_school_{tag}{suffix}.json")
        path.write_text(json.dumps(meta, indent=1))
    render_school(meta)


def render_school(meta):
    """Markdown table from the per-member rows (also: ``--render FILE.json``)."""
    n = min(len(rows) for rows in meta.values())
    per_task = all("test_rmse_per_task" in r for rows in meta.values() for r in rows)
    extra = " mean per-task RMSE |" if per_task else ""
    print(f"\n| member | School test RMSE, {n} split(s) (mean ± s.e.) |{extra} median fit "
          f"time (s) | λ chosen (per split) | λ₂ chosen |\n|---|---|---|---|---|"
          + ("---|" if per_task else ""))

    def mean_se(values):
        v = np.asarray(values)
        se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        return f"{v.mean():.3f} ± {se:.3f}"

    for name in meta:
        meta[name] = meta[name][:n]
        cells = [mean_se([r["test_rmse"] for r in meta[name]])]
        if per_task:
            cells.append(mean_se([r["test_rmse_per_task"] for r in meta[name]]))
        lams = ",".join(f"{r['lam']:g}" for r in meta[name])
        lam2s = ",".join("-" if r["lam2"] is None else f"{r['lam2']:g}" for r in meta[name])
        fit_t = np.median([r["fit_time_s"] for r in meta[name]])
        print(f"| {name} | {' | '.join(cells)} | {fit_t:.2f} | {lams} | {lam2s} |")


def conventions(meta, splits, features="all"):
    """Refit each member at its stored CV choice and report School test error under the
    three RMSE conventions of :func:`rmse_conventions`."""
    from bayesmtl.datasets import load_school

    print("| member | overall RMSE | mean per-task RMSE | row-weighted mean per-task RMSE |\n"
          "|---|---|---|---|")
    for name, rows in meta.items():
        values = []
        for split, r in zip(splits, rows, strict=False):
            train, test = load_school(split, features=features)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                hyper = {"lam": r["lam"]} if r["lam2"] is None else {"lam": r["lam"],
                                                                      "lam2": r["lam2"]}
                fit, _ = methods.fit(train, name, hyper)
            values.append(rmse_conventions(fit, test))
        v = np.mean(values, axis=0)
        print(f"| {name} | {v[0]:.3f} | {v[1]:.3f} | {v[2]:.3f} |", flush=True)


def _digit_error(fits, test):
    """Error % of argmax over the one-vs-rest scores (tasks = digits 0..9)."""
    X = test.X[test.task == 0]  # every one-vs-rest task holds the same rows in order
    scores = np.stack([X @ fits.W[:, i] + fits.b[i] for i in range(test.n_tasks)], axis=1)
    truth = np.argmax(np.stack([test.y[test.task == i] for i in range(test.n_tasks)], axis=1),
                      axis=1)
    return float(100 * np.mean(np.argmax(scores, axis=1) != truth))


def digits(members, tol, lam_grid=LAM_GRID, lam2_grid=LAM2_GRID):
    from bayesmtl.datasets import load_digits_split

    print("| member | MNIST error % | USPS error % | λ, λ₂ (MNIST) | λ, λ₂ (USPS) |\n"
          "|---|---|---|---|---|")
    results = {}
    for name in members:
        cells, chosen = [], []
        for dataset in ("mnist", "usps"):
            train, valid, test = load_digits_split(dataset)
            best = (np.inf, None, None, None)
            lam2s = lam2_grid if "lam2" in methods.get(name).hyper_names else (None,)
            for lam2 in lam2s:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    path = regularisation_path(train, name, sorted(lam_grid, reverse=True),
                                               {} if lam2 is None else {"lam2": lam2},
                                               settings=Settings(tol=tol))
                for lam, fit in zip(sorted(lam_grid, reverse=True), path, strict=True):
                    err = _digit_error(fit, valid)
                    if err < best[0]:
                        best = (err, lam, lam2, fit)
            _, lam, lam2, fit = best
            cells.append(_digit_error(fit, test))
            chosen.append(f"{lam:g}, {'-' if lam2 is None else f'{lam2:g}'}")
        results[name] = {"mnist": cells[0], "usps": cells[1], "chosen": chosen}
        print(f"| {name} | {cells[0]:.2f} | {cells[1]:.2f} | {chosen[0]} | {chosen[1]} |",
              flush=True)
        tag = "_".join(members) if len(members) < 4 else "all"
        (HERE / f"results_family_digits_{tag}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["school", "digits", "render", "conventions"])
    parser.add_argument("--file", default=str(HERE / "results_family_school.json"))
    parser.add_argument("--splits", default="1-10")
    parser.add_argument("--members", default="all")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--lam-grid", default=",".join(str(v) for v in LAM_GRID))
    parser.add_argument("--lam2-grid", default=",".join(str(v) for v in LAM2_GRID))
    parser.add_argument("--tol", type=float, default=1e-8,
                        help="outer tolerance of the alternating members inside CV / paths")
    parser.add_argument("--features", default="all", choices=["all", "binary"],
                        help="School attributes: all 27, or the 25 binary ones (the AMTL / "
                             "GAMTL papers' protocol)")
    parser.add_argument("--out", help="results file name under benchmarks/ (school; default "
                                      "results_family_school_<members>.json)")
    args = parser.parse_args()
    chosen = DEFAULT_MEMBERS if args.members == "all" else tuple(args.members.split(","))
    start = time.perf_counter()
    if args.which == "render":
        render_school(json.loads(Path(args.file).read_text()))
    elif args.which == "conventions":
        conventions(json.loads(Path(args.file).read_text()), _splits(args.splits),
                    args.features)
    elif args.which == "school":
        school(_splits(args.splits), chosen, args.folds, args.tol,
               tuple(float(v) for v in args.lam_grid.split(",")),
               tuple(float(v) for v in args.lam2_grid.split(",")), args.features, args.out)
    else:
        digits(chosen, args.tol, tuple(float(v) for v in args.lam_grid.split(",")),
               tuple(float(v) for v in args.lam2_grid.split(",")))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
