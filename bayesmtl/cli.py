"""``bayesmtl`` command line: fit a model on a bundled data set and write a report folder.

    bayesmtl fit --dataset school --split 1 --prior mtrl --inference map --out reports/school
    bayesmtl compare --dataset school --split 1 --out reports/compare

The report holds ``metrics.json``, ``summary.csv`` (task-relation summary), ``posterior.nc``
(the ArviZ DataTree), ``omega_corr.png`` (clustered task-correlation heatmap) and ``model/``
(the fitted estimator as JSON + npz; no pickle).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

LAM_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
FEATURES_HELP = ("School attributes: all 27, or the 25 binary ones (the published protocol of "
                 "the AMTL and GAMTL papers)")


def _load(dataset, split, features="all"):
    from .datasets import load_digits_split, load_school, load_sklearn_digits

    if dataset == "school":
        return load_school(split, features=features)
    if features != "all":
        raise SystemExit(f"--features {features} selects School attributes; {dataset!r} has "
                         "no such option")
    if dataset in ("mnist", "usps"):
        train, valid, test = load_digits_split(dataset)
        return train, test
    if dataset == "sklearn-digits":
        return load_sklearn_digits("ovr", seed=split)
    raise SystemExit(f"unknown dataset {dataset!r}")


def _with_task_column(data):
    return np.column_stack([data.task.astype(float), data.X])


def _task_labels(data):
    return np.asarray(data.task_names)[data.task]


def _fit(est, data, lam, log):
    """Fit ``est`` on ``data`` with task names; λ by 3-fold task-stratified CV on the training
    data when ``lam == 'auto'`` (GridSearchCV sees the task id as column 0 of X)."""
    from sklearn.model_selection import GridSearchCV

    from .estimators import TaskKFold

    X = _with_task_column(data)
    if lam == "auto":
        est.set_params(task_col=0)
        scoring = "neg_mean_squared_error" if data.kind == "regression" else "accuracy"
        search = GridSearchCV(est, {"lam": list(LAM_GRID)}, cv=TaskKFold(3), scoring=scoring,
                              refit=False)
        search.fit(X, data.y, groups=data.task)
        lam = search.best_params_["lam"]
        log(f"  λ chosen by 3-fold CV on training data: {lam}")
    est.set_params(lam=float(lam), task_col=None)
    start = time.perf_counter()
    est.fit(data.X, data.y, task=_task_labels(data))
    return est, time.perf_counter() - start


def _metric(est, data):
    pred = est.predict(data.X, task=_task_labels(data))
    if data.kind == "regression":
        return "rmse", float(np.sqrt(np.mean((pred - data.y) ** 2)))
    return "error_pct", float(100 * np.mean(pred != data.y))


def log(msg):
    print(msg, flush=True)


def _start(args):
    """Headless plotting, the report folder and the data: ``(out, train, test)``."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = _load(args.dataset, args.split, args.features)
    log(f"data: {args.dataset} split {args.split}: {train!r}")
    return out, train, test


def cmd_fit(args):
    from .estimators import MTLClassifier, MTLRegressor
    from .inference.export import task_relation_summary
    from .plots import plot_task_correlation

    out, train, test = _start(args)
    cls = MTLRegressor if train.kind == "regression" else MTLClassifier
    lam = args.lam if args.lam == "auto" else float(args.lam)
    if args.inference != "map" and lam == "auto":
        lam = 1.0
    common = dict(seed=args.seed, num_warmup=args.warmup, num_samples=args.samples,
                  num_chains=args.chains, progress_bar=args.inference == "nuts")
    log("fitting independent-task baseline (identity Ω, MAP) …")
    stl, stl_time = _fit(cls(prior="identity", inference="map", **common), train,
                         args.lam if args.lam == "auto" else lam, log)
    log(f"fitting prior={args.prior} inference={args.inference} …")
    est, fit_time = _fit(cls(prior=args.prior, inference=args.inference, ridge=args.ridge,
                             **common), train, lam, log)
    name, value = _metric(est, test)
    _, base = _metric(stl, test)
    metrics = {"dataset": args.dataset, "split": args.split, "prior": args.prior,
               "inference": args.inference, "lam": est.lam, "stl_lam": stl.lam,
               "ridge": args.ridge, f"test_{name}": value, f"stl_test_{name}": base,
               "fit_time_s": fit_time, "stl_fit_time_s": stl_time}
    log(f"\n{'model':<28}{'test ' + name:>14}{'fit time (s)':>14}")
    log(f"{'STL (identity Ω)':<28}{base:>14.4f}{stl_time:>14.2f}")
    log(f"{args.prior + ' / ' + args.inference:<28}{value:>14.4f}{fit_time:>14.2f}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    task_relation_summary(est.idata_).to_csv(out / "summary.csv", index=False)
    est.idata_.to_netcdf(out / "posterior.nc", engine="h5netcdf")
    fig = plot_task_correlation(est.idata_, title=f"{args.dataset}: {args.prior} "
                                                  f"({args.inference}) task correlation")
    fig.savefig(out / "omega_corr.png", dpi=120, bbox_inches="tight")
    est.save(out / "model")
    log(f"\nreport written to {out}/ (metrics.json, summary.csv, posterior.nc, "
        "omega_corr.png, model/)")
    return 0


#: λ₂ grid for the members that have one (glMTL, SPATS, Schatten, reconstruction)
LAM2_GRID = (0.01, 0.1, 1.0)
DEFAULT_MEMBERS = ("stl", "pooled", "rmtl", "clustered", "mtrl", "glmtl", "spats", "schatten",
                   "squared_schatten", "reconstruction")


def cmd_compare(args):
    """Fit STL, pooled and every family member with (λ, λ₂) by K-fold CV on the training data;
    print test error, fit time and the chosen hyperparameters; write a table and heatmaps."""
    out, train, test = _start(args)
    import matplotlib.pyplot as plt

    from .inference.export import omega_to_corr
    from .plots import cluster_order
    from .selection import compare_members

    metric = "rmse" if train.kind == "regression" else "error_pct"
    members = DEFAULT_MEMBERS if args.members == "all" else tuple(args.members.split(","))
    lam_grid = tuple(float(v) for v in args.lam_grid.split(","))
    lam2_grid = tuple(float(v) for v in args.lam2_grid.split(","))
    log(f"λ grid {lam_grid}, λ₂ grid {lam2_grid}, {args.folds}-fold CV on training rows only")
    log(f"\n{'member':<18}{'test ' + metric:>12}{'fit time (s)':>14}{'CV time (s)':>13}"
        f"{'λ':>9}{'λ₂':>9}")
    def row(r):
        lam2 = "-" if r["lam2"] is None else f"{r['lam2']:g}"
        log(f"{r['member']:<18}{r['test_' + metric]:>12.4f}{r['fit_time_s']:>14.2f}"
            f"{r['cv_time_s']:>13.1f}{r['lam']:>9g}{lam2:>9}")

    rows, fits = compare_members(train, test, members, lam_grid, lam2_grid, n_folds=args.folds,
                                 seed=args.seed, n_jobs=args.jobs, log=row)
    corrs = {name: omega_to_corr(fit.omega) for name, fit in fits.items()}
    (out / "compare.json").write_text(json.dumps(
        {"dataset": args.dataset, "split": args.split, "folds": args.folds, "lam_grid": lam_grid,
         "lam2_grid": lam2_grid, "rows": rows}, indent=2))
    best = min(rows, key=lambda r: r[f"test_{metric}"])
    reference = next(n for n in ("mtrl", "clustered", best["member"]) if n in corrs)
    order = cluster_order(corrs[reference])
    cols = min(5, len(corrs))
    nrows = -(-len(corrs) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel()[len(corrs):]:
        ax.axis("off")
    for ax, (name, corr) in zip(axes.ravel(), corrs.items(), strict=False):
        im = ax.imshow(corr[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1,
                       interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02)
    fig.suptitle(f"{args.dataset} split {args.split}: task correlation (tasks in the "
                 f"clustered order of {reference})")
    fig.savefig(out / "task_correlations.png", dpi=110, bbox_inches="tight")
    log(f"\nreport written to {out}/ (compare.json, task_correlations.png)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bayesmtl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a model and write a report folder")
    fit.add_argument("--dataset", default="school",
                     choices=["school", "mnist", "usps", "sklearn-digits"])
    fit.add_argument("--split", type=int, default=1)
    fit.add_argument("--features", default="all", choices=["all", "binary"], help=FEATURES_HELP)
    fit.add_argument("--prior", default="mtrl",
                     choices=["identity", "inverse_wishart", "lkj", "mtrl"])
    fit.add_argument("--inference", default="map", choices=["map", "nuts", "svi"])
    fit.add_argument("--lam", default="auto", help="λ, or 'auto' for CV (MAP only)")
    fit.add_argument("--ridge", type=float, default=0.0)
    fit.add_argument("--warmup", type=int, default=500)
    fit.add_argument("--samples", type=int, default=500)
    fit.add_argument("--chains", type=int, default=2)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default="reports/run")
    cmp = sub.add_parser("compare", help="STL, pooled and every family member, λ by CV")
    cmp.add_argument("--dataset", default="school",
                     choices=["school", "mnist", "usps", "sklearn-digits"])
    cmp.add_argument("--split", type=int, default=1)
    cmp.add_argument("--features", default="all", choices=["all", "binary"], help=FEATURES_HELP)
    cmp.add_argument("--members", default="all",
                     help="comma-separated names, or 'all': " + ",".join(DEFAULT_MEMBERS))
    cmp.add_argument("--lam-grid", default=",".join(str(v) for v in LAM_GRID))
    cmp.add_argument("--lam2-grid", default=",".join(str(v) for v in LAM2_GRID))
    cmp.add_argument("--folds", type=int, default=3)
    cmp.add_argument("--jobs", type=int, default=1, help="CV folds run in parallel threads")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--out", default="reports/compare")
    args = parser.parse_args(argv)
    if args.command == "compare":
        return cmd_compare(args)
    if args.command == "fit":
        if args.chains > 1:
            import numpyro

            numpyro.set_host_device_count(args.chains)
        return cmd_fit(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
