"""Information transfer (Wu, Zhang & Ré) on the stand-ins (issue 16): mean ± s.e. over seeds.

Sections (each prints a markdown table):

* ``fig3``      — Figure 3's phenomenon on the Section 2.3 generator (d = 20, κ = 10, noise 3,
  40 target rows): target test MSE of the r = 1 shared-module MAP (eq. (3), summed losses) on
  {target, source} relative to the target's own least squares, (MTL − STL) / STL, against the
  source's sample count, for the three sources.
* ``align``     — covariance alignment (Algorithm 1) vs none with the same fixed module:
  linear module on a synthetic rotated-target regression (3 sources sharing a rank-2 model,
  a target seeing its inputs through a fixed rotation) and on rotated digits (5 one-vs-rest
  tasks, each rotated by its own orthogonal matrix; module = shared_subspace MAP, r = 5);
  ReLU module (the hidden layer of a DMTL network, 32 units) on rotated digits.
* ``reweight``  — SVD re-weighting (Algorithm 2) vs unweighted on one-vs-rest digit tasks
  sharing X with 20 % of one task's training labels flipped (Appendix C.5), r = 1.
* ``capacity``  — the capacity sweep r = 1 … 4 on the four Section 2.3 tasks.

    nice -n 10 .venv/bin/python benchmarks/bench_info_transfer.py [--seeds 5] [SECTION …]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bayesmtl import methods
from bayesmtl.data import MultiTaskData
from bayesmtl.datasets.info_transfer import (
    noisy_multilabel_digits,
    rotated_digits,
    section23_tasks,
)
from bayesmtl.models.info_transfer import fit_subspace
from bayesmtl.selection import score
from bayesmtl.transfer import (
    align,
    capacity_sweep,
    linear_module,
    module_from_deep,
    svd_task_weights,
)

SOURCES = ("same_covariance", "other_spectrum", "other_rotation")


def mean_se(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}"


def ols_mse(train_X, train_y, test_X, test_y) -> float:
    A = np.c_[train_X, np.ones(len(train_y))]
    coef = np.linalg.lstsq(A, train_y, rcond=None)[0]
    return float(np.mean((np.c_[test_X, np.ones(len(test_y))] @ coef - test_y) ** 2))


def fig3(seeds):
    sizes = (40, 160, 640, 2560)
    print("\n### Figure 3 (Section 2.3 generator): (MTL − STL) / STL target test MSE\n")
    print("| source | " + " | ".join(f"n_source = {n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for src in SOURCES:
        cells = []
        for n in sizes:
            rel = []
            for seed in seeds:
                train, test = section23_tasks(40, n, d=20, kappa=10.0, noise=3.0, seed=seed,
                                              n_test=1000)
                pair = train.select_tasks(["target", src])
                (X0, y0), = train.select_tasks(["target"]).tasks()
                (Xt, yt), = test.select_tasks(["target"]).tasks()
                stl = ols_mse(X0, y0, Xt, yt)
                fit = fit_subspace(pair, 1, 0.0, loss_scale="sum", tol=1e-10)
                mtl = float(np.mean((Xt @ fit.W[:, 0] + fit.b[0] - yt) ** 2))
                rel.append((mtl - stl) / stl)
            cells.append(mean_se(rel))
        print(f"| {src} | " + " | ".join(cells) + " |")


def rotated_target(seed, d=10, r=2, n_source=80, n_target=30, noise=0.1):
    """3 sources y = X B₀ a_i + ε, and a target whose inputs arrive rotated by Q."""
    rng = np.random.default_rng([seed, 5])
    basis = rng.normal(size=(d, r))
    sources = []
    for _ in range(3):
        X = rng.normal(size=(n_source, d))
        sources.append((X, X @ basis @ rng.normal(size=r) + noise * rng.normal(size=n_source)))
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    theta = basis @ rng.normal(size=r)
    X0, Xt = rng.normal(size=(n_target, d)), rng.normal(size=(1000, d))
    target = MultiTaskData.from_tasks([(X0 @ Q, X0 @ theta + noise * rng.normal(size=n_target))])
    return MultiTaskData.from_tasks(sources), target, (Xt @ Q, Xt @ theta)


def align_section(seeds, mus=(0.01, 0.1, 1.0)):
    print("\n### Covariance alignment (Algorithm 1) vs none, same fixed module\n")
    print("| data | module | metric | none | " + " | ".join(f"aligned μ = {m:g}" for m in mus)
          + " | reference |")
    print("|---|---|---|---|" + "---|" * len(mus) + "---|")
    rows = {}
    for seed in seeds:  # synthetic rotated target, linear module
        sources, target, (Xt, yt) = rotated_target(seed)
        module = linear_module(fit_subspace(sources, 2, 0.0, fit_intercept=False).B)
        task = np.zeros(len(yt), dtype=int)
        none = align(target, module, align=False, lam=0.0)
        rows.setdefault(("synthetic rotated target", "linear (r = 2)", "test MSE / Var y"),
                        {}).setdefault("none", []).append(
            np.mean((none.predict(Xt, task) - yt) ** 2) / np.var(yt))
        for mu in mus:
            a = align(target, module, mu=mu, lam=0.0)
            rows[("synthetic rotated target", "linear (r = 2)", "test MSE / Var y")] \
                .setdefault(mu, []).append(np.mean((a.predict(Xt, task) - yt) ** 2) / np.var(yt))
        (X0, y0), = target.tasks()
        rows[("synthetic rotated target", "linear (r = 2)", "test MSE / Var y")] \
            .setdefault("ref", []).append(ols_mse(X0, y0, Xt, yt) / np.var(yt))
    for seed in seeds:  # rotated digits, linear and ReLU modules
        train, test = rotated_digits(seed=seed)
        fit, _ = methods.fit(train, "shared_subspace", {"r": 5, "lam": 0.01})
        torch.manual_seed(seed)
        deep = fit_deep_module(train, seed)
        stl, _ = methods.fit(train, "stl", {"lam": 0.1})
        for label, module, ref in (("linear (shared_subspace, r = 5)",
                                    linear_module(fit.relation["B"]), score(fit, test)),
                                   ("ReLU (DMTL hidden layer, 32)", module_from_deep(deep),
                                    deep_error(deep, test))):
            key = ("rotated digits (5 tasks)", label, "test error %")
            none = align(train, module, align=False, lam=1e-3, max_iter=300)
            rows.setdefault(key, {}).setdefault("none", []).append(error_pct(none, test))
            for mu in mus:
                a = align(train, module, mu=mu, lam=1e-3, max_iter=300)
                rows[key].setdefault(mu, []).append(error_pct(a, test))
            rows[key].setdefault("ref", []).append(ref)
        rows.setdefault(("rotated digits (5 tasks)", "STL logistic (λ = 0.1)", "test error %"),
                        {}).setdefault("ref", []).append(score(stl, test))
    for (data, module, metric), cells in rows.items():
        print(f"| {data} | {module} | {metric} | "
              + " | ".join(mean_se(cells[k]) if k in cells else "-" for k in ("none", *mus))
              + f" | {mean_se(cells['ref'])} |")
    print("\nreference: the target's own least squares (synthetic); the module's own fit "
          "(shared_subspace MAP or the DMTL network) on rotated digits; STL logistic.")


def fit_deep_module(train, seed):
    from bayesmtl.deep import fit_deep

    return fit_deep(train, hidden=32, balancing="ds", epochs=60, lr=0.01, lr_decay=0.0,
                    valid_fraction=0.0, seed=seed)


def deep_error(deep, test) -> float:
    p = np.asarray(deep.predict_proba(test.X, test.task))
    p1 = p[:, 1] if p.ndim == 2 else p
    return float(100 * np.mean((p1 > 0.5) != (test.y > 0.5)))


def error_pct(model, test) -> float:
    return float(100 * np.mean((model.predict(test.X, test.task) > 0.5) != (test.y > 0.5)))


def reweight(seeds, pairs=((1, 7), (3, 8), (4, 9))):
    print("\n### SVD re-weighting (Algorithm 2) vs unweighted, 20 % of task 0's labels "
          "flipped, tasks share X, shared_subspace r = 1, λ = 0.01\n")
    print("| tasks | weights | α (noisy, clean) | test error % noisy task | clean task |")
    print("|---|---|---|---|---|")
    for classes in pairs:
        res = {}
        for seed in seeds:
            train, test = noisy_multilabel_digits(classes=classes, flip=0.2, seed=seed)
            for weights in (None, "svd"):
                fit, _ = methods.fit(train, "shared_subspace",
                                     {"r": 1, "lam": 0.01, "task_weights": weights})
                alpha = np.ones(2) if weights is None else svd_task_weights(train, 1)
                err = [100 * np.mean((fit_predict(fit, test, i) > 0.5) != (yi > 0.5))
                       for i, (_, yi) in enumerate(test.tasks())]
                cell = res.setdefault(weights, {"noisy": [], "clean": [], "alpha": []})
                cell["noisy"].append(err[0])
                cell["clean"].append(err[1])
                cell["alpha"].append(alpha)
        for weights, cell in res.items():
            a = np.mean(cell["alpha"], axis=0)
            print(f"| digits {classes[0]} vs rest (noisy), {classes[1]} vs rest | "
                  f"{'none' if weights is None else 'SVD'} | {a[0]:.2f}, {a[1]:.2f} | "
                  f"{mean_se(cell['noisy'])} | {mean_se(cell['clean'])} |")


def fit_predict(fit, test, i):
    from bayesmtl.selection import predict_fit

    s = test.task_slice(i)
    return predict_fit(fit, test.X[s], test.task[s])


def capacity(seeds):
    print("\n### Capacity sweep on the four Section 2.3 tasks (d = 20, κ = 10, noise 3; "
          "40 target rows, 160 per source; λ = 0.01)\n")
    tables, chosen = [], []
    for seed in seeds:
        train, test = section23_tasks(40, 160, d=20, kappa=10.0, noise=3.0, seed=seed,
                                      n_test=500)
        sweep = capacity_sweep(train, test, hyper={"lam": 0.01}, seed=seed)
        tables.append(sweep.table)
        chosen.append(sweep.chosen_r)
    print("| r | CV RMSE | test RMSE | chosen (seeds) |")
    print("|---|---|---|---|")
    for k, r in enumerate(tables[0]["r"]):
        print(f"| {r} | {mean_se([t['cv_rmse'].iloc[k] for t in tables])} | "
              f"{mean_se([t['test_rmse'].iloc[k] for t in tables])} | "
              f"{sum(c == r for c in chosen)} |")


SECTIONS = {"fig3": fig3, "align": align_section, "reweight": reweight, "capacity": capacity}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = tuple(range(args.seeds))
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    for name in args.sections or SECTIONS:
        start = time.perf_counter()
        SECTIONS[name](seeds)
        print(f"\n({name}: {time.perf_counter() - start:.0f} s, {len(seeds)} seeds)")


if __name__ == "__main__":
    main()
