r"""Model selection over the method registry: λ paths, K-fold CV, comparisons, the evidence.

* :func:`regularisation_path` — MAP fits along a path grid (strong → weak), each
  warm-started at the previous one.
* :func:`cross_validate` — K-fold CV inside the training data (folds within every task,
  stratified by class per task for classification) over a method's hyperparameter grid, with a
  choice of score (:data:`SCORERS`); folds in parallel threads (JAX releases the GIL while it
  computes). Says when a choice sits on the grid's edge and when CV fits did not converge.
* :func:`compare` — for each method: CV on the training data, refit, test score; with a time
  limit per method (methods over it are listed as skipped, never dropped).
* :func:`log_evidence` / :func:`select_by_evidence` — the Bayesian alternative where it is
  available in closed form: Gaussian likelihood with a fixed task precision (STL, graph,
  mean-regularised): p(y | λ) = ∫ p(y | W, b) N(W; 0, (λP ⊗ I)⁻¹) dW db with flat b.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import methods as registry
from .data import CLASSIFICATION, MultiTaskData
from .errors import (
    BayesMTLError,
    ConvergenceWarning,
    DataError,
    GridEdgeWarning,
    HyperparameterError,
    WorkItemError,
)
from .inference.stats import gaussian_term, task_moments
from .methods.registry import Fit, Settings
from .models.losses import linear_predictor
from .parallel import map_completed

__all__ = ["SCORERS", "score", "predict_fit", "regularisation_path", "task_folds",
           "cross_validate", "CVResult", "compare", "log_evidence", "select_by_evidence"]


# ----------------------------------------------------------------------------- scores


def _rmse(y, f, task, m):
    del task, m
    return float(np.sqrt(np.mean((f - y) ** 2)))


def _mse(y, f, task, m):
    del task, m
    return float(np.mean((f - y) ** 2))


def _mae(y, f, task, m):
    del task, m
    return float(np.mean(np.abs(f - y)))


def _error(y, f, task, m):
    del task, m
    return float(100.0 * np.mean((f > 0) != (y > 0.5)))


def _log_loss(y, f, task, m):
    del task, m
    return float(np.mean(np.logaddexp(0.0, -(2.0 * y - 1.0) * f)))


def _auc(y, f, task, m):
    """Mean over tasks of the per-task ROC AUC (tasks with one class are left out)."""
    from sklearn.metrics import roc_auc_score

    values = [roc_auc_score(y[task == i], f[task == i]) for i in range(m)
              if 0 < y[task == i].sum() < (task == i).sum()]
    return float(np.mean(values)) if values else float("nan")


#: name → (score(y, f, task, m), kind, greater is better); f is the linear predictor
SCORERS = {
    "rmse": (_rmse, "regression", False),
    "mse": (_mse, "regression", False),
    "mae": (_mae, "regression", False),
    "error": (_error, CLASSIFICATION, False),
    "log_loss": (_log_loss, CLASSIFICATION, False),
    "auc": (_auc, CLASSIFICATION, True),
}
DEFAULT_SCORING = {"regression": "rmse", CLASSIFICATION: "error"}


def _scorer(scoring, data):
    scoring = DEFAULT_SCORING[data.kind] if scoring is None else scoring
    if scoring not in SCORERS or SCORERS[scoring][1] != data.kind:
        valid = [k for k, v in SCORERS.items() if v[1] == data.kind]
        raise HyperparameterError(f"scoring must be one of {valid} for {data.kind} data; got "
                                  f"{scoring!r}", "scoring", scoring)
    return scoring


def predict_fit(fit: Fit, X, task) -> np.ndarray:
    """(N,) linear predictor f = x w_t + b_t of a MAP fit (log-odds for classification)."""
    return np.asarray(linear_predictor(X, task, fit.W, fit.b))


def score(fit: Fit, data: MultiTaskData, scoring: str | None = None) -> float:
    """The ``scoring`` score (default RMSE, or error % for classification) of ``fit``."""
    scoring = _scorer(scoring, data)
    return SCORERS[scoring][0](data.y, predict_fit(fit, data.X, data.task), data.task,
                               data.n_tasks)


# ----------------------------------------------------------------------------- paths


class TimeLimitReached(BayesMTLError):
    """The time limit of a selection ran out (internal; :func:`compare` reports it)."""


def _check_deadline(settings: Settings):
    if settings.deadline is not None and time.monotonic() > settings.deadline:
        raise TimeLimitReached("time limit reached")


def regularisation_path(data: MultiTaskData, method, path_grid, hyper=None, *,
                        path="lam", settings: Settings | None = None) -> list[Fit]:
    """MAP fits at every value of ``path_grid`` for hyperparameter ``path`` (in the given
    order; pass it strong → weak), each warm-started at the previous fit; ``hyper`` holds
    the other hyperparameters. Unconverged fits are marked ``converged=False`` (their
    warnings are left to the caller)."""
    settings = Settings() if settings is None else settings
    fits, prev = [], None
    for value in path_grid:
        _check_deadline(settings)
        prev, _ = registry.fit(data, method, {**(hyper or {}), path: float(value)}, settings,
                               init=prev)
        fits.append(prev)
    return fits


def task_folds(data: MultiTaskData, n_folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold index: K-fold within each task (stratified by class for classification)."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise HyperparameterError(f"n_folds must be an integer ≥ 2; got {n_folds!r}",
                                  "n_folds", n_folds)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(data.y), dtype=int)
    strata = data.task * 2 + (data.y > 0.5 if data.kind == CLASSIFICATION else 0)
    offset = 0
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        fold[idx] = (np.arange(len(idx)) + offset) % n_folds
        offset += len(idx)
    counts = np.array([np.bincount(fold[data.task == i], minlength=n_folds).min()
                       for i in range(data.n_tasks)])
    if np.any(counts == 0):
        bad = data.task_names[int(np.argmin(counts))]
        raise DataError(f"task {bad!r} has {data.n_per_task[int(np.argmin(counts))]} rows, too "
                        f"few for {n_folds}-fold CV (every fold needs a row of every task)")
    return fold


@dataclass(frozen=True)
class CVResult:
    """Cross-validation over a grid.

    method, scoring : what was selected and by which score.
    grid : {name: values} (the path hyperparameter first, in path order: strong → weak).
    scores : array over the grid (axes in ``grid`` order) of the mean validation score.
    best : the chosen hyperparameters; best_score their score.
    on_edge : names whose chosen value is the first or last of a grid with > 1 values.
    n_fits, n_unconverged : CV fits run and how many stopped before their tolerance.
    seconds : wall time.
    """

    method: str
    scoring: str
    grid: dict
    scores: np.ndarray
    best: dict
    best_score: float
    on_edge: tuple
    n_fits: int
    n_unconverged: int
    seconds: float

    @property
    def converged(self) -> bool:
        return self.n_unconverged == 0

    @property
    def lam(self):
        return self.best.get("lam")

    @property
    def lam2(self):
        return self.best.get("lam2")


def _grid(method, grid):
    """The CV grid: the method's default updated by ``grid``; the path hyperparameter (the
    first of the method's grid, usually λ) first and sorted strong → weak."""
    method = registry.get(method)
    full = {k: tuple(v) for k, v in method.grid.items()}
    for k, v in (grid or {}).items():
        if k not in method.hyper_names:
            raise HyperparameterError(f"{method.name} has no hyperparameter {k!r} to search; its "
                                      f"hyperparameters are: {', '.join(method.hyper_names)}",
                                      k, v)
        v = tuple(v) if np.ndim(v) else (v,)
        if not v:
            raise HyperparameterError(f"the grid of {k} is empty", k, v)
        full[k] = v
    if not full:
        return None, {}
    path = next(iter(method.grid), None) or next(iter(full))
    values = full.pop(path)
    ordered = {path: tuple(sorted((float(x) for x in values), reverse=True))}
    ordered.update(full)
    for k, v in ordered.items():  # validate every value now, not in the middle of CV
        for x in v:
            registry.validate(method, {k: x})
    return path, ordered


def cross_validate(data: MultiTaskData, method, grid=None, *, scoring=None, hyper=None,
                   n_folds: int = 3, seed: int = 0, n_jobs: int = 1, scheduler=None,
                   settings: Settings | None = None, progress: bool = False) -> CVResult:
    """K-fold CV of ``method`` over ``grid`` on the training data only.

    grid : {hyperparameter: values}; defaults to the method's own grid (``Method.grid``),
        updated by what is given. The path hyperparameter (λ) runs strong → weak with warm
        starts; the others form a product grid.
    scoring : "rmse" (default), "mse", "mae" for regression; "error" (%, default),
        "log_loss", "auc" (per-task mean) for classification.
    hyper : fixed values of hyperparameters outside the grid.
    settings : MAP settings of the fits (e.g. ``Settings(max_iter=…, tol=…)`` to cap the
        alternating solvers inside CV; a ``deadline`` stops the CV with TimeLimitReached).
    n_jobs, scheduler : folds run on :func:`bayesmtl.parallel.map_completed`: in this
        process one after another (``n_jobs=1``, default scheduler "serial"), on ``n_jobs``
        threads (``n_jobs > 1``, default scheduler "threads"; at most one fewer than the CPUs,
        see :func:`bayesmtl.parallel.thread_workers`), on a local cluster of ``n_jobs``
        processes (``"local"``) or on a Dask scheduler's workers (an address); the scores are
        identical. Processes and remote workers see only the built-in methods, and a
        ``deadline`` (``time.monotonic``) means nothing on another machine's workers.

    Ties go to the stronger regularisation (the first value of the path). Warns with
    :class:`GridEdgeWarning` when a choice sits on the edge of its grid and with
    :class:`ConvergenceWarning` when CV fits stopped unconverged (``n_unconverged``).
    """
    start = time.perf_counter()
    method = registry.get(method)
    scoring = _scorer(scoring, data)
    greater = SCORERS[scoring][2]
    settings = Settings() if settings is None else settings._replace(inference="map")
    path, grid = _grid(method, grid)
    fold = task_folds(data, n_folds, seed)
    others = list(grid)[1:]
    combos = list(itertools.product(*(grid[k] for k in others)))
    jobs = [_CVFold(data, _by_name(method), fold, k, path, grid[path], others, combos,
                    dict(hyper or {}), settings, scoring) for k in range(n_folds)]
    if scheduler is None:
        scheduler = "serial" if n_jobs == 1 else "threads"
    results = [None] * n_folds
    try:
        for k, result in map_completed(_CVFold.__call__, jobs, scheduler=scheduler,
                                       n_workers=n_jobs, progress=progress,
                                       desc=f"CV {method.name} folds"):
            results[k] = result
    except WorkItemError as err:  # the fold's own error (e.g. TimeLimitReached)
        raise (err.__cause__ or err) from None
    scores = np.mean([r[0] for r in results], axis=0)  # (combos, path)
    n_unconverged = sum(r[1] for r in results)
    flat = -scores if greater else scores
    a, j = np.unravel_index(np.nanargmin(flat), flat.shape)  # first: stronger λ on ties
    best = {path: grid[path][j], **dict(zip(others, combos[a], strict=True))}
    best_score = float(scores[a, j])
    on_edge = tuple(k for k in grid if len(grid[k]) > 1
                    and best[k] in (grid[k][0], grid[k][-1]))
    shape = tuple(len(grid[k]) for k in others) + (len(grid[path]),)
    scores = np.moveaxis(scores.reshape(shape), -1, 0)  # axes in grid order
    n_fits = n_folds * len(combos) * len(grid[path])
    if on_edge:
        warnings.warn(f"{method.name}: CV chose {', '.join(f'{k} = {best[k]:g}' for k in on_edge)}"
                      f" on the edge of the grid; widen it", GridEdgeWarning, stacklevel=2)
    if n_unconverged:
        warnings.warn(f"{method.name}: {n_unconverged} of {n_fits} CV fits stopped before "
                      "their tolerance; the choice rests on unconverged fits (raise max_iter "
                      "or loosen tol in settings)", ConvergenceWarning, stacklevel=2)
    return CVResult(method.name, scoring, grid, scores, best, best_score, on_edge, n_fits,
                    n_unconverged, time.perf_counter() - start)


class _CVFold(NamedTuple):
    """One fold of :func:`cross_validate` (picklable: it runs on the parallel engine)."""

    data: MultiTaskData
    method: object  # a registered name (workers look it up) or an unregistered Method
    fold: np.ndarray
    k: int
    path: str
    path_values: tuple
    others: list
    combos: list
    hyper: dict
    settings: Settings
    scoring: str

    def __call__(self):
        """(scores (combos, path), number of unconverged fits) of fold k."""
        scorer = SCORERS[self.scoring][0]
        train = self.data.subset(np.flatnonzero(self.fold != self.k))
        valid = self.data.subset(np.flatnonzero(self.fold == self.k))
        out = np.empty((len(self.combos), len(self.path_values)))
        unconverged = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # counted instead
            for a, combo in enumerate(self.combos):
                fixed = {**self.hyper, **dict(zip(self.others, combo, strict=True))}
                fits = regularisation_path(train, self.method, self.path_values, fixed,
                                           path=self.path, settings=self.settings)
                unconverged += sum(not f.converged for f in fits)
                out[a] = [scorer(valid.y, predict_fit(f, valid.X, valid.task), valid.task,
                                 valid.n_tasks) for f in fits]
        return out, unconverged


def _by_name(method):
    """A registered method's name (workers look it up), else the Method itself."""
    return method.name if method.name in registry.names() and registry.get(
        method.name) is method else method


# ----------------------------------------------------------------------------- compare


def compare(train: MultiTaskData, test: MultiTaskData, methods=None, *, grids=None,
            scoring=None, n_folds: int = 3, seed: int = 0, n_jobs: int = 1, scheduler=None,
            time_limit: float | None = None, settings: Settings | None = None,
            refit_settings: Settings | None = None, progress: bool = False, log=None):
    """For each method (default: every registered shallow method for the data's kind):
    hyperparameters by K-fold CV on ``train``, a refit on all of ``train``, the score on
    ``test``.

    grids : {method: {hyperparameter: values}} overriding each method's default grid.
    time_limit : seconds per method (CV and refit); a method over it is reported with
        ``status`` "skipped: time limit" (the limit is checked between fits and inside the
        alternating solvers' outer loops, so one uninterruptible fit can overrun it).
    settings : MAP settings of every fit (e.g. an outer-iteration cap); ``refit_settings``
        those of the final refit on all of ``train`` (default: ``settings``).
    Returns (rows, fits): rows are dicts (method, status, test score, fit and CV time, chosen
    hyperparameters, converged, last relative change of the objective, on_edge); fits maps
    each finished method to its refitted :class:`~bayesmtl.methods.Fit`.
    """
    scoring = _scorer(scoring, train)
    methods = registry.names(shallow=True, kind=train.kind) if methods is None else methods
    for name in methods:
        registry.get(name)  # unknown names fail before any work
    rows, fits = [], {}
    for name in methods:
        method = registry.get(name)
        start = time.monotonic()
        deadline = None if time_limit is None else start + time_limit
        run = (Settings() if settings is None else settings)._replace(inference="map",
                                                                       deadline=deadline)
        refit = run if refit_settings is None else refit_settings._replace(inference="map",
                                                                           deadline=deadline)
        row = {"method": method.name, "status": "ok", f"test_{scoring}": None,
               "fit_time_s": None, "cv_time_s": None, "hyper": {}, "converged": None,
               "last_relative_change": None, "on_edge": []}
        if method.fit_map is None:
            row["status"] = f"skipped: no MAP ({method.no_map.split(':')[0]})"
            rows.append(row)
            if log is not None:
                log(row)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GridEdgeWarning)
                cv = cross_validate(train, method, (grids or {}).get(method.name),
                                    scoring=scoring, n_folds=n_folds, seed=seed, n_jobs=n_jobs,
                                    scheduler=scheduler,
                                    settings=run, progress=progress)
            row.update(cv_time_s=cv.seconds, hyper=cv.best, on_edge=list(cv.on_edge),
                       cv_unconverged=cv.n_unconverged)
            _check_deadline(run)
            t0 = time.perf_counter()
            fit, _ = registry.fit(train, method, cv.best, refit)
            row["fit_time_s"] = time.perf_counter() - t0
            row[f"test_{scoring}"] = score(fit, test, scoring)
            row["converged"] = bool(fit.converged)
            row["last_relative_change"] = fit.info.get("last_relative_change")
            fits[method.name] = fit
        except TimeLimitReached:
            row["status"] = f"skipped: time limit ({time_limit:g} s)"
        except Exception as err:  # one method's failure must not lose the others' rows
            row["status"] = f"failed: {type(err).__name__}: {err}"
        row["total_time_s"] = time.monotonic() - start
        rows.append(row)
        if log is not None:
            log(row)
    return rows, fits


# ----------------------------------------------------------------------------- evidence


def log_evidence(data: MultiTaskData, precision, lam: float, noise: float = 1.0) -> float:
    """log p(y | λ) for y_ij ~ N(w_iᵀx_ij + b_i, σ²), rows of W ~ N(0, (λP)⁻¹), flat b.

    ``precision`` P (m, m) must be positive definite. With flat intercepts the evidence is
    defined up to a constant that does not depend on λ (or P), so differences between λ's are
    exact. Cost: one Cholesky of the (d+1)m posterior precision.
    """
    P = np.asarray(precision, dtype=np.float64)
    if not lam > 0 or not noise > 0:
        raise HyperparameterError("lam and noise must be positive", "lam", lam)
    d, m = data.n_features, data.n_tasks
    p = d + 1
    # posterior precision: per-task blocks X̃ᵢᵀX̃ᵢ/σ² plus λ P ⊗ E on the W part (task-major)
    term = gaussian_term(task_moments(data), np.ones(m), noise)
    blocks, rhs = term.H, term.rhs
    E = np.diag(np.r_[np.ones(d), 0.0])
    H = np.einsum("st,ab->satb", lam * P, E)
    H[np.arange(m), :, np.arange(m), :] += np.asarray(blocks)
    H = H.reshape(m * p, m * p)
    rhs = np.asarray(rhs).ravel()
    L = np.linalg.cholesky(H)
    z = np.linalg.solve(L, rhs)
    sign, logdet_prior = np.linalg.slogdet(lam * P)
    if sign <= 0:
        raise HyperparameterError("precision must be positive definite for the evidence",
                                  "precision", None)
    n = len(data.y)
    return float(-0.5 * (data.y @ data.y) / noise**2 + 0.5 * z @ z
                 - np.sum(np.log(np.diag(L))) + 0.5 * d * logdet_prior
                 - 0.5 * n * np.log(2 * np.pi * noise**2))


def select_by_evidence(data: MultiTaskData, precision, lam_grid, noise=None):
    """(best λ, log-evidence per λ) for a fixed-precision Gaussian member (type-II ML).

    ``noise`` σ defaults to the residual scale of the λ-path's least-squares fit; the
    papers' σ = 1/√2 is a loss convention, not a noise level, so it is not the default.
    """
    if noise is None:
        resid = []
        for X, y in data.tasks():
            Xa = np.column_stack([X, np.ones(len(y))])
            resid.append(y - Xa @ np.linalg.lstsq(Xa, y, rcond=None)[0])
        noise = float(np.sqrt(np.mean(np.concatenate(resid) ** 2)))
    values = np.array([log_evidence(data, precision, float(lam), noise) for lam in lam_grid])
    return float(lam_grid[int(np.argmax(values))]), values
