"""``bayesmtl`` command line: fit or compare registered methods and write a report folder.

    bayesmtl methods
    bayesmtl fit --dataset school --split 1 --method mtrl --out reports/school
    bayesmtl fit --method glmtl --param lam2=0.1 --lam 0.1 --out reports/glmtl
    bayesmtl compare --dataset school --split 1 --methods mtrl,amtl,gamtl --time-limit 300

A ``fit`` report holds ``metrics.json``, ``summary.csv`` (task-relation summary),
``posterior.nc`` (the ArviZ DataTree), ``task_relation.png`` and ``model/`` (the fitted
estimator as JSON + npz; no pickle). Reports are written to a temporary folder and moved into
place at the end: an interrupted run leaves no partial report, and an existing report is
replaced as a whole (never mixed). Arguments are checked before any work; errors print one
line and exit non-zero.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

LAM_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
DATASETS = ("school", "mnist", "usps", "sklearn-digits")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
FEATURES_HELP = ("School attributes: all 27, or the 25 binary ones (the published protocol of "
                 "the AMTL and GAMTL papers)")


def log(msg=""):
    print(msg, flush=True)


class UsageError(Exception):
    """A command-line argument that cannot be used (reported in one line, exit code 2)."""


# ----------------------------------------------------------------------------- arguments


def _parse_value(text: str):
    """A --param value: a number, True/False/None, @file (.npy or .csv matrix) or a string."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UsageError(f"file {path} (from {text!r}) does not exist")
        return np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_params(items) -> dict:
    params = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--param takes NAME=VALUE; got {item!r}")
        params[name] = _parse_value(value)
    return params


def _parse_grid(items) -> dict:
    """{(method or None, hyperparameter): values} from NAME=V1,V2 or METHOD.NAME=V1,V2."""
    grid = {}
    for item in items or ():
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise UsageError(f"--grid takes NAME=V1,V2,… or METHOD.NAME=V1,V2,…; got {item!r}")
        method, _, name = name.rpartition(".")
        try:
            grid[(method or None, name)] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise UsageError(f"--grid {name}: values must be numbers; got {values!r}") from None
    return grid


def _check_common(args):
    from . import methods

    if args.data is not None:
        path = Path(args.data)
        if not path.is_file():
            raise UsageError(f"--data {path} does not exist")
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise UsageError(f"--data {path}: expected a file ending in "
                             f"{', '.join(TABLE_SUFFIXES)}")
        if args.task_col is None or args.target is None:
            raise UsageError("--data needs --task-col and --target (the names of the task and "
                             "target columns)")
        if not 0 < args.test_size < 1:
            raise UsageError(f"--test-size must lie in (0, 1); got {args.test_size}")
    else:
        for flag, value in (("--task-col", args.task_col), ("--target", args.target),
                            ("--feature-cols", args.feature_cols)):
            if value is not None:
                raise UsageError(f"{flag} describes a file of your own: use it with --data")
    if not 1 <= args.split <= 10:
        raise UsageError(f"--split must lie in 1..10; got {args.split}")
    if args.features != "all" and args.dataset != "school":
        raise UsageError(f"--features {args.features} selects School attributes; "
                         f"{args.dataset!r} has no such option")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    for name in _method_names(args):
        if name != "all":
            try:
                methods.get(name)
            except Exception as err:
                raise UsageError(str(err)) from None


def _method_names(args):
    raw = getattr(args, "methods", None) or getattr(args, "method", None) or "all"
    return [n for n in raw.split(",") if n]


def _load(dataset, split, features="all"):
    from .datasets import load_digits_split, load_school, load_sklearn_digits

    if dataset == "school":
        return load_school(split, features=features)
    if dataset in ("mnist", "usps"):
        train, valid, test = load_digits_split(dataset)
        return train, test
    return load_sklearn_digits("ovr", seed=split)


def read_table(path, task_col: str, target: str, feature_cols=None, kind: str = "auto"):
    """MultiTaskData from a CSV/TSV or Parquet file (one row per sample), checked by
    :meth:`MultiTaskData.from_dataframe`; an unreadable file raises DataError."""
    import pandas as pd

    from .data import MultiTaskData
    from .errors import DataError

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    return MultiTaskData.from_dataframe(df, task_col, target, feature_cols, kind,
                                        source=path.name)


def _start(args):
    import matplotlib

    matplotlib.use("Agg")
    if args.data is not None:
        cols = None if args.feature_cols is None else args.feature_cols.split(",")
        data = read_table(args.data, args.task_col, args.target, cols, args.kind)
        train, test = data.train_test_split(args.test_size, seed=args.seed)
        log(f"data: {args.data} ({data.kind}), {100 * args.test_size:g}% of each task's rows "
            f"held out for testing: {train!r}")
        return train, test
    train, test = _load(args.dataset, args.split, args.features)
    log(f"data: {args.dataset} split {args.split}: {train!r}")
    return train, test


def _source(args) -> dict:
    """Where the data came from, for the report's metrics."""
    if args.data is not None:
        return {"data": str(args.data), "task_col": args.task_col, "target": args.target,
                "test_size": args.test_size}
    return {"dataset": args.dataset, "split": args.split, "features": args.features}


# ----------------------------------------------------------------------------- fit


def _task_labels(data):
    return np.asarray(data.task_names)[data.task]


def _metric(est, data):
    pred = est.predict(data.X, task=_task_labels(data))
    if data.kind == "regression":
        return "rmse", float(np.sqrt(np.mean((pred - data.y) ** 2)))
    return "error_pct", float(100 * np.mean(pred != data.y))


def _choose_lam(train, method, params, lam, progress):
    """λ given, or chosen by 3-fold CV on the training rows (MAP) when ``lam == 'auto'``."""
    from .selection import cross_validate

    if lam != "auto":
        return lam
    if "lam" not in method.hyper_names:
        return None
    if method.predictor is not None:
        log(f"  {method.name} is a network: λ keeps its default (CV over networks: use "
            "bayesmtl.selection.cross_validate)")
        return None
    if method.fit_map is None:
        log(f"  {method.name} has no MAP to cross-validate; λ = 1")
        return 1.0
    cv = cross_validate(train, method, {"lam": LAM_GRID}, hyper=params, progress=progress)
    log(f"  λ chosen by 3-fold CV on training data ({cv.scoring}): {cv.lam:g}")
    return cv.lam


def _fit(train, method_name, params, lam, inference, common, progress):
    from . import methods
    from .estimators import MTLClassifier, MTLRegressor

    method = methods.get(method_name)
    lam = _choose_lam(train, method, params, lam, progress)
    hyper = dict(params) if lam is None else {**params, "lam": float(lam)}
    cls = MTLRegressor if train.kind == "regression" else MTLClassifier
    est = cls(method=method.name, inference=inference, **common, **hyper)
    start = time.perf_counter()
    est.fit(train.X, train.y, task=_task_labels(train))
    return est, time.perf_counter() - start


def cmd_fit(args):
    params = _parse_params(args.param)
    if args.balancing is not None:
        params["balancing"] = args.balancing
    lam = args.lam if args.lam == "auto" else float(args.lam)
    if args.chunksize is not None:
        return cmd_fit_streamed(args, params, lam)
    train, test = _start(args)
    progress = sys.stderr.isatty()
    common = dict(seed=args.seed, num_warmup=args.warmup, num_samples=args.samples,
                  num_chains=args.chains, progress_bar=progress and args.inference == "nuts")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log("fitting the independent-task baseline (stl, MAP) …")
        stl, stl_time = _fit(train, "stl", {}, lam, "map", {"seed": args.seed}, progress)
        log(f"fitting method={args.method} inference={args.inference} …")
        est, fit_time = _fit(train, args.method, params, lam, args.inference, common, progress)
    raised = _echo_warnings(caught)
    name, value = _metric(est, test)
    _, base = _metric(stl, test)
    hyper = {k: v for k, v in est.get_params().items()
             if k in _method_hyper(est) and isinstance(v, (int, float, str, bool, type(None)))}
    if getattr(est, "lam_", None) is not None:
        hyper["lam"] = est.lam_
    metrics = {**_source(args), "method": est.method_name_, "inference": args.inference,
               "hyper": hyper, "stl_lam": stl.lam, f"test_{name}": value,
               f"stl_test_{name}": base, "fit_time_s": fit_time, "stl_fit_time_s": stl_time,
               "converged": None if est.fit_result_ is None else bool(est.fit_result_.converged)}
    log(f"\n{'model':<32}{'test ' + name:>14}{'fit time (s)':>14}")
    log(f"{'STL (identity Ω)':<32}{base:>14.4f}{stl_time:>14.2f}")
    log(f"{est.method_name_ + ' / ' + args.inference:<32}{value:>14.4f}{fit_time:>14.2f}")
    similarity = _covariance_similarity(train)
    _write_fit_report(args, est, metrics, hyper, raised, similarity)
    return 0


def _echo_warnings(caught) -> list[str]:
    """Print each warning raised during the fits (one line each) and return the lines."""
    lines = []
    for w in caught:
        line = f"{w.category.__name__}: {w.message}"
        if line not in lines:
            lines.append(line)
            print(f"bayesmtl: warning: {line}", file=sys.stderr)
    return lines


# ----------------------------------------------------------------------------- streamed fit


def _check_streamed(args):
    from . import methods

    if args.data is None:
        raise UsageError("--chunksize streams a file of your own: use it with --data")
    if args.chunksize < 1:
        raise UsageError(f"--chunksize must be ≥ 1; got {args.chunksize}")
    if args.lam == "auto":
        raise UsageError("--chunksize keeps no rows to cross-validate λ on: give --lam a "
                         "number")
    if args.inference != "map" or args.kind == "classification":
        raise UsageError("--chunksize fits the MAP of a regression (sufficient statistics "
                         "determine the Gaussian likelihood only)")
    if not methods.get(args.method).statistics:
        able = ", ".join(methods.names(statistics=True))
        raise UsageError(f"--chunksize: {args.method} needs the rows; methods that fit from "
                         f"streamed statistics: {able}")


def _chunks(path, rows, columns=None):
    """DataFrames of ≤ ``rows`` rows from a CSV/TSV or Parquet file (``columns`` only)."""
    import pandas as pd

    from .errors import DataError

    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            # pre_buffer=False: with pre-buffering, pyarrow keeps every row group's buffers
            # alive while iterating (resident memory grew by ~80 MB per 500,000-row batch)
            with pq.ParquetFile(path, pre_buffer=False) as file:
                for batch in file.iter_batches(batch_size=rows, columns=columns):
                    yield batch.to_pandas()
        else:
            yield from pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",",
                                   chunksize=rows, usecols=columns)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def _chunk_arrays(df, start, args, features):
    """(X, y, task labels) of one chunk, checked (numeric, no missing values)."""
    import pandas as pd

    from .errors import DataError

    where = f"{Path(args.data).name}, rows {start + 1}–{start + len(df)}"
    bad = [c for c in (*features, args.target) if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"{where}: column(s) {', '.join(map(repr, bad))} are not numeric "
                        "(a streamed fit is a regression on numeric features)")
    missing = [c for c in (args.task_col, args.target, *features) if df[c].isna().any()]
    if missing:
        raise DataError(f"{where}: missing values in column(s) {', '.join(map(repr, missing))}")
    return (df[features].to_numpy(np.float64), df[args.target].to_numpy(np.float64),
            df[args.task_col].astype(str).to_numpy())


def _held_out(n, start, seed, test_size):
    """(n,) mask of the rows start..start+n-1 held out for testing (reproducible per chunk)."""
    return np.random.default_rng([seed, start]).random(n) < test_size


def _split_chunks(args, features):
    """(X, y, task labels, held-out mask) of each chunk of the file, in order."""
    start = 0
    for df in _chunks(args.data, args.chunksize, [args.task_col, args.target, *features]):
        X, y, task = _chunk_arrays(df, start, args, features)
        yield X, y, task, _held_out(len(y), start, args.seed, args.test_size)
        start += len(y)


def _streamed_statistics(args):
    """TaskStatistics of the training rows (pass 1, after a pass over the task column) and
    the feature names."""
    from .data import TaskStatistics
    from .errors import DataError

    header = next(_chunks(args.data, 1))
    cols = [str(c) for c in header.columns]
    features = (args.feature_cols.split(",") if args.feature_cols is not None
                else [c for c in cols if c not in (args.task_col, args.target)])
    for col in (args.task_col, args.target, *features):
        if col not in cols:
            raise DataError(f"{args.data} has no column {col!r} (columns: {', '.join(cols)})")
    names = set()
    for df in _chunks(args.data, args.chunksize, [args.task_col]):
        names.update(df[args.task_col].astype(str).unique().tolist())
    stats = TaskStatistics(sorted(names), feature_names=features)
    for X, y, task, test in _split_chunks(args, features):
        stats.add(X[~test], y[~test], task[~test])
    return stats, features


def _streamed_rmse(args, features, estimators):
    """Test RMSE of each estimator on the held-out rows (pass 2)."""
    sse, n = np.zeros(len(estimators)), 0
    for X, y, task, test in _split_chunks(args, features):
        if test.any():
            for k, est in enumerate(estimators):
                sse[k] += np.sum((est.predict(X[test], task=task[test]) - y[test]) ** 2)
            n += int(test.sum())
    if n == 0:
        from .errors import DataError

        raise DataError(f"no row of {args.data} was held out (--test-size {args.test_size})")
    return np.sqrt(sse / n), n


def cmd_fit_streamed(args, params, lam):
    """``fit --data FILE --chunksize ROWS``: MAP from streamed sufficient statistics."""
    import matplotlib

    from .estimators import MTLRegressor

    matplotlib.use("Agg")
    start = time.perf_counter()
    stats, features = _streamed_statistics(args)
    log(f"data: {args.data} streamed in chunks of {args.chunksize:,} rows "
        f"({time.perf_counter() - start:.1f} s), {100 * args.test_size:g}% of the rows held "
        f"out for testing: {stats!r}")
    fits = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, hyper in (("stl", {}), (args.method, params)):
            log(f"fitting method={name} (MAP, from the statistics) …")
            est = MTLRegressor(method=name, seed=args.seed, **{**hyper, "lam": float(lam)})
            t = time.perf_counter()
            fits.append((est.fit(stats), time.perf_counter() - t))
    raised = _echo_warnings(caught)
    (stl, stl_time), (est, fit_time) = fits
    (base, value), n_test = _streamed_rmse(args, features, [stl, est])
    hyper = {k: v for k, v in est.get_params().items()
             if k in _method_hyper(est) and isinstance(v, (int, float, str, bool, type(None)))}
    metrics = {**_source(args), "chunksize": args.chunksize, "test_rows": n_test,
               "method": est.method_name_, "inference": "map", "hyper": hyper,
               "stl_lam": float(lam), "test_rmse": float(value), "stl_test_rmse": float(base),
               "fit_time_s": fit_time, "stl_fit_time_s": stl_time,
               "converged": bool(est.fit_result_.converged)}
    log(f"\n{'model':<32}{'test rmse':>14}{'fit time (s)':>14}")
    log(f"{'STL (identity Ω)':<32}{base:>14.4f}{stl_time:>14.2f}")
    log(f"{est.method_name_ + ' / map':<32}{value:>14.4f}{fit_time:>14.2f}")
    _write_fit_report(args, est, metrics, hyper, raised, _covariance_similarity(stats))
    return 0


def _covariance_similarity(train):
    """Eq. (5) of Wu, Zhang & Ré between every pair of tasks' covariates, with one report line
    (the least similar pair); None for a single task."""
    from .transfer.similarity import covariance_similarity

    if train.n_tasks < 2:
        return None
    sim = covariance_similarity(train)
    S = np.asarray(sim.values)
    off = S[~np.eye(len(S), dtype=bool)]
    i, j = np.unravel_index(np.argmin(S + 2 * np.eye(len(S))), S.shape)
    log(f"covariance similarity of the tasks' covariates (eq. 5, 99% of the spectrum): mean "
        f"{off.mean():.3f} over task pairs, lowest {S[i, j]:.3f} "
        f"({train.task_names[i]} vs {train.task_names[j]})")
    return sim


def _diagnostics(est) -> dict:
    """Convergence of a MAP fit, or R-hat/ESS/divergences of a sampled one."""
    diag = {"fit time (s)": est.fit_time_}
    if est.fit_result_ is not None:
        diag["converged"] = bool(est.fit_result_.converged)
        info = est.fit_result_.info or {}
        diag.update({k: v for k, v in info.items() if isinstance(v, (int, float, str))})
    attrs = est.idata_.attrs
    for key in ("max_rhat", "min_ess"):
        if key in attrs:
            diag[key] = float(attrs[key])
    if "sample_stats" in est.idata_.children and "diverging" in est.idata_.sample_stats:
        diag["divergences"] = int(np.asarray(est.idata_.sample_stats["diverging"]).sum())
    return diag


def _write_fit_report(args, est, metrics, hyper, raised, similarity):
    from .inference.export import relation_variable, task_relation_summary
    from .io import atomic_folder
    from .plots import cluster_order, plot_task_relation
    from .plots.info_transfer import plot_covariance_similarity
    from .report import html_report

    out = Path(args.out)
    if out.exists():
        log(f"\nreplacing the existing report at {out}/")
    label = Path(args.data).name if args.data is not None else args.dataset
    written = ["metrics.json", "posterior.nc", "model/", "report.html"]
    images, order = [], None
    with atomic_folder(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        est.idata_.to_netcdf(tmp / "posterior.nc", engine="h5netcdf")
        var = relation_variable(est.idata_)
        if var is not None:
            task_relation_summary(est.idata_).to_csv(tmp / "summary.csv", index=False)
            fig = plot_task_relation(est.idata_, title=f"{label}: {est.method_name_} "
                                                       f"({args.inference}) task relation")
            fig.savefig(tmp / "task_relation.png", dpi=120, bbox_inches="tight")
            images.append(("task_relation.png", f"Learned task relation ({var})"))
            written[1:1] = ["summary.csv", "task_relation.png"]
            names = np.asarray(est.task_names_)
            if var == "omega_corr":
                corr = est.idata_.posterior["omega_corr"].values.mean(axis=(0, 1))
                names = names[cluster_order(corr)]
            order = [str(t) for t in names] if len(names) > 40 else None
        if similarity is not None:
            similarity.to_pandas().to_csv(tmp / "covariance_similarity.csv")
            fig = plot_covariance_similarity(similarity)
            fig.savefig(tmp / "covariance_similarity.png", dpi=110, bbox_inches="tight")
            images.append(("covariance_similarity.png",
                           "Covariance similarity of the tasks' covariates (eq. 5)"))
            written[1:1] = ["covariance_similarity.csv", "covariance_similarity.png"]
        est.save(tmp / "model")
        (tmp / "report.html").write_text(html_report(
            title=f"bayesmtl fit: {est.method_name_} ({args.inference}) on {label}",
            metrics={k: v for k, v in metrics.items() if k != "hyper"}, hyper=hyper,
            diagnostics=_diagnostics(est), warnings=raised, images=images, task_order=order,
            command="bayesmtl " + " ".join(args.argv)),
            encoding="utf-8")
    log(f"\nreport written to {out}/ ({', '.join(written)}); open {out}/report.html")


def _method_hyper(est):
    from . import methods

    return methods.get(est.method_name_).hyper_names


# ----------------------------------------------------------------------------- compare


def cmd_compare(args):
    """Every registered shallow method (or --methods) with its hyperparameters by K-fold CV
    on the training data; print test error, fit time and the choices; write a table and
    the task-relation heatmaps."""
    import matplotlib.pyplot as plt

    from . import methods
    from .inference.export import omega_to_corr
    from .io import atomic_folder
    from .methods.registry import Settings
    from .selection import _scorer, compare

    grid = _parse_grid(args.grid)
    train, test = _start(args)
    scoring = _scorer(args.scoring, train)
    names = (methods.names(shallow=True, kind=train.kind) if args.methods == "all"
             else tuple(_method_names(args)))
    grids = {}
    for name in names:
        method = methods.get(name)
        grids[method.name] = {k: v for (who, k), v in sorted(grid.items(), key=lambda i:
                                                              i[0][0] is not None)
                              if k in method.hyper_names and who in (None, method.name)}
    settings = Settings(max_iter=args.max_iter)
    log(f"{len(names)} methods; {args.folds}-fold CV on the training rows only; grid "
        f"overrides {' '.join(args.grid or []) or 'none'}; time limit "
        f"{'none' if args.time_limit is None else f'{args.time_limit:g} s'} per method"
        + (f"; outer iterations capped at {args.max_iter}" if args.max_iter else ""))
    log(f"\n{'method':<18}{'test ' + scoring:>12}{'fit (s)':>9}{'CV (s)':>9}  "
        f"{'chosen hyperparameters':<34}status")

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    def row(r):
        chosen = ", ".join(f"{k}={v:g}" for k, v in r["hyper"].items())
        status = r["status"]
        if status == "ok" and not r["converged"]:
            status = f"unconverged (last rel. change {r['last_relative_change']:.1e})"
        log(f"{r['method']:<18}{fmt(r['test_' + scoring], '.4f'):>12}"
            f"{fmt(r['fit_time_s'], '.2f'):>9}{fmt(r['cv_time_s'], '.1f'):>9}  "
            f"{chosen:<34}{status}")

    rows, fits = compare(train, test, names, grids=grids, scoring=scoring, n_folds=args.folds,
                         seed=args.seed, n_jobs=args.jobs, scheduler=args.scheduler,
                         time_limit=args.time_limit,
                         settings=settings, progress=sys.stderr.isatty(), log=row)
    skipped = [r["method"] for r in rows if r["status"] != "ok"]
    if skipped:
        log(f"\nnot finished: {', '.join(skipped)} (see status)")
    out = Path(args.out)
    with atomic_folder(out) as tmp:
        (tmp / "compare.json").write_text(json.dumps(
            {**_source(args), "folds": args.folds, "scoring": scoring, "grids": grids,
             "time_limit_s": args.time_limit, "max_iter": args.max_iter, "rows": rows},
            indent=2, default=float))
        fig = _relation_panels(fits, omega_to_corr, plt) if fits else None
        if fig is not None:
            fig.savefig(tmp / "task_relations.png", dpi=110, bbox_inches="tight")
    log(f"\nreport written to {out}/ (compare.json, task_relations.png)")
    return 0


def _relation_panels(fits, omega_to_corr, plt):
    """One heatmap per method: Ω's correlation, or the directed relation it learned."""
    from .plots import cluster_order

    mats = {}
    for name, fit in fits.items():
        m = np.shape(fit.b)[-1]
        task_by_task = [(var, M) for var, M in fit.relation.items() if np.shape(M) == (m, m)]
        if task_by_task:  # methods without a task relation (l21, lasso, dirty) have no panel
            var, M = task_by_task[0]
            mats[name] = omega_to_corr(M) if var == "omega" else M
    if not mats:
        return None
    reference = next((n for n in ("mtrl", "clustered") if n in mats), None)
    order = (cluster_order(mats[reference]) if reference is not None
             else np.arange(next(iter(mats.values())).shape[0]))
    cols = min(5, len(mats))
    nrows = -(-len(mats) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel()[len(mats):]:
        ax.axis("off")
    for ax, (name, M) in zip(axes.ravel(), mats.items(), strict=False):
        limit = max(float(np.abs(M).max()), 1e-12)
        ax.imshow(M[np.ix_(order, order)], cmap="RdBu_r", vmin=-limit, vmax=limit,
                  interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("task relation per method (Ω: correlation; AMTL: B; GAMTL: C)"
                 + (f", tasks in the clustered order of {reference}" if reference else ""))
    return fig


# ----------------------------------------------------------------------------- methods


def cmd_methods(args):
    from . import methods

    del args
    for name in methods.names():
        m = methods.get(name)
        hyper = ", ".join(f"{h.name}={h.default!r}" for h in m.hyper)
        log(f"{name:<18}{'/'.join(m.inferences()):<22}{m.summary}")
        log(f"{'':<18}hyperparameters: {hyper or '(none)'}")
    return 0


# ----------------------------------------------------------------------------- l2mt


def cmd_l2mt(args):
    """``l2mt experience``: build (or complete) an experience folder; ``l2mt train``: fit the
    estimation/link model on one and save it (then ``fit --method l2mt --param model=FILE``)."""
    from .l2mt import experience as X

    if args.l2mt_command == "experience":
        scheduler = "serial" if args.workers == 1 and args.scheduler is None else args.scheduler
        paths = X.build_experience(args.out, args.problems, seed=args.seed, stream=args.stream,
                                   pools=tuple(args.pools.split(",")), scheduler=scheduler,
                                   n_workers=args.workers, progress=sys.stderr.isatty())
        log(f"{len(paths)} problems in {args.out} (stream {args.stream})")
        return 0
    from .l2mt.model import experience_meta, fit_l2mt

    found = X.load_experience(args.experience)
    meta = experience_meta(found, k=args.k)
    log(f"training L2MT ({args.inference}) on {len(found)} problems, {meta.n_tuples} tuples …")
    r = fit_l2mt(meta, hidden=args.hidden, layers=args.layers, k=args.k, lam=args.lam,
                 epochs=args.epochs, inference=args.inference, link=args.link,
                 device=args.device, seed=args.seed, progress_bar=sys.stderr.isatty())
    r.save(args.out)
    log(f"final loss {r.history['loss'][-1]:.4g}; saved {args.out}\n"
        f"use it: bayesmtl fit --method l2mt --param model={args.out} (same features)")
    return 0


def _l2mt_parser(sub, fmt):
    l2 = sub.add_parser("l2mt", help="L2MT: build multitask experience, train the estimation "
                        "function", formatter_class=fmt)
    l2sub = l2.add_subparsers(dest="l2mt_command", required=True)
    exp = l2sub.add_parser("experience", help="fit the 10 baselines on random class-pair "
                           "problems (one file per problem; resumable)", formatter_class=fmt)
    exp.add_argument("--out", default="reports/l2mt/experience", help="experience folder")
    exp.add_argument("--problems", type=int, default=100, help="number of problems q")
    exp.add_argument("--stream", default="train", choices=["train", "test"],
                     help="train and test problems come from disjoint seeds")
    exp.add_argument("--pools", default="mnist",
                     help="comma-separated pools: mnist, usps, digits (one feature space "
                          "per trained model)")
    exp.add_argument("--workers", type=int, default=2, help="local Dask worker processes")
    exp.add_argument("--scheduler", default=None,
                     help="a Dask scheduler address (tcp://host:8786) instead of a local "
                          "cluster")
    exp.add_argument("--seed", type=int, default=0)
    tr = l2sub.add_parser("train", help="fit the estimation/link model (MAP or SVI) and save "
                          "it", formatter_class=fmt)
    tr.add_argument("--experience", default="reports/l2mt/experience")
    tr.add_argument("--out", default="reports/l2mt/model.pt", help="model file")
    tr.add_argument("--inference", default="map", choices=["map", "svi"])
    tr.add_argument("--epochs", type=int, default=200)
    tr.add_argument("--lam", type=float, default=0.1, help="λ of objective (6)")
    tr.add_argument("--hidden", type=int, default=50, help="d̂")
    tr.add_argument("--layers", type=int, default=2, help="s")
    tr.add_argument("--k", type=int, default=6, help="neighbours of the label graph")
    tr.add_argument("--link", default="learned", choices=["learned", "fixed"],
                    help="learned: υ(o) = tanh(γ₁o + γ₂) (the paper; can saturate), fixed: "
                         "γ = (1, 0)")
    tr.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu, cuda:1 …")
    tr.add_argument("--seed", type=int, default=0)


# ----------------------------------------------------------------------------- main


def _parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="bayesmtl", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bayesmtl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    sub.add_parser("methods", help="list the registered methods", formatter_class=fmt)

    def data_args(p, out):
        p.add_argument("--dataset", default="school", choices=DATASETS, help="bundled data set")
        p.add_argument("--split", type=int, default=1, help="standard split (School: 1..10)")
        p.add_argument("--features", default="all", choices=["all", "binary"],
                       help=FEATURES_HELP)
        p.add_argument("--data", default=None, metavar="FILE",
                       help="your own data: a CSV/TSV or Parquet file, one row per sample "
                            "(replaces --dataset; needs --task-col and --target)")
        p.add_argument("--task-col", default=None, help="with --data: the task column")
        p.add_argument("--target", default=None, help="with --data: the target column")
        p.add_argument("--feature-cols", default=None,
                       help="with --data: comma-separated feature columns (default: every "
                            "other column)")
        p.add_argument("--kind", default="auto", choices=["auto", "regression",
                                                          "classification"],
                       help="with --data: auto = classification when the target has exactly "
                            "two distinct values or is not numeric")
        p.add_argument("--test-size", type=float, default=0.3,
                       help="with --data: share of each task's rows held out for the test "
                            "metric")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        p.add_argument("--out", default=out, help="report folder (replaced as a whole)")

    fit = sub.add_parser("fit", help="fit one method and write a report folder",
                         formatter_class=fmt)
    data_args(fit, "reports/run")
    fit.add_argument("--chunksize", type=int, default=None, metavar="ROWS",
                     help="with --data (regression): stream the file in chunks of ROWS rows "
                          "into per-task sufficient statistics, so it need not fit in memory "
                          "(MAP of a method that fits TaskStatistics; needs a numeric --lam; "
                          "the held-out rows are scored in a second pass)")
    fit.add_argument("--method", default="mtrl", help="a registered method (bayesmtl methods)")
    fit.add_argument("--param", action="append", metavar="NAME=VALUE",
                     help="a hyperparameter of the method (repeatable; @file.npy/.csv for a "
                          "matrix)")
    fit.add_argument("--balancing", default=None,
                     help="loss balancing of the deep methods (dmtl*): ds, fixed, dwa, max, "
                          "smax, cl, mgda, bmtl, uncertainty")
    fit.add_argument("--inference", default="map", choices=["map", "nuts", "gibbs", "svi"])
    fit.add_argument("--lam", default="auto",
                     help="λ, or 'auto' for 3-fold CV on the training rows")
    fit.add_argument("--warmup", type=int, default=500, help="NUTS/Gibbs warm-up draws")
    fit.add_argument("--samples", type=int, default=500, help="posterior draws per chain")
    fit.add_argument("--chains", type=int, default=2, help="chains")
    cmp = sub.add_parser("compare", help="every shallow method, hyperparameters by CV",
                         formatter_class=fmt)
    data_args(cmp, "reports/compare")
    cmp.add_argument("--methods", default="all",
                     help="comma-separated registered names, or 'all' (every shallow method)")
    cmp.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                     help="override a hyperparameter's CV grid in every method that has it, or "
                          "in one method (repeatable): lam=0.01,0.1,1 or glmtl.lam2=0.1,1")
    cmp.add_argument("--scoring", default=None,
                     help="rmse|mse|mae (regression), error|log_loss|auc (classification)")
    cmp.add_argument("--folds", type=int, default=3, help="CV folds (≥ 2)")
    cmp.add_argument("--jobs", type=int, default=1,
                     help="CV folds run in parallel: threads, or --scheduler's workers")
    cmp.add_argument("--scheduler", default=None,
                     help="run CV folds on Dask: 'local' (a cluster of --jobs processes) or a "
                          "scheduler address tcp://host:8786 (built-in methods only)")
    cmp.add_argument("--time-limit", type=float, default=None,
                     help="seconds per method (CV + refit); methods over it are listed as "
                          "skipped")
    cmp.add_argument("--max-iter", type=int, default=None,
                     help="cap on the outer iterations of the alternating solvers (a reduced "
                          "protocol; the last relative change of the objective is reported)")
    _l2mt_parser(sub, fmt)
    return parser


def _validate(args):
    _check_common(args)
    if args.command == "fit":
        if args.lam != "auto":
            try:
                lam = float(args.lam)
            except ValueError:
                raise UsageError(f"--lam must be a positive number or 'auto'; got "
                                 f"{args.lam!r}") from None
            if not (np.isfinite(lam) and lam > 0):
                raise UsageError(f"--lam must be a positive number or 'auto'; got {args.lam!r}")
        _parse_params(args.param)
        if args.chunksize is not None:
            _check_streamed(args)
        for flag, v, low in (("--warmup", args.warmup, 0), ("--samples", args.samples, 1),
                             ("--chains", args.chains, 1)):
            if v < low:
                raise UsageError(f"{flag} must be ≥ {low}; got {v}")
    else:
        _parse_grid(args.grid)
        if args.folds < 2:
            raise UsageError(f"--folds must be ≥ 2; got {args.folds}")
        if args.jobs < 1:
            raise UsageError(f"--jobs must be ≥ 1; got {args.jobs}")
        if args.time_limit is not None and not args.time_limit > 0:
            raise UsageError(f"--time-limit must be positive; got {args.time_limit}")
        if args.max_iter is not None and args.max_iter < 1:
            raise UsageError(f"--max-iter must be ≥ 1; got {args.max_iter}")


def main(argv=None):
    from .errors import BayesMTLError

    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "methods":
        return cmd_methods(args)
    if args.command == "l2mt":
        try:
            return cmd_l2mt(args)
        except BayesMTLError as err:
            print(f"bayesmtl: error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    try:
        _validate(args)
    except UsageError as err:
        parser.error(str(err))
    if args.command == "fit" and args.chains > 1:
        import numpyro

        numpyro.set_host_device_count(args.chains)
    try:
        return cmd_compare(args) if args.command == "compare" else cmd_fit(args)
    except BayesMTLError as err:
        print(f"bayesmtl: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bayesmtl: interrupted; no report written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
