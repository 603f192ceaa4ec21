r"""Model selection for the task-relation family: λ paths, K-fold CV, and the evidence.

* :func:`fit_member` — one entry point for every member: STL, pooled, MTRL, the Schatten
  members and the :mod:`bayesmtl.models.family` members, each by its exact MAP solver.
* :func:`regularisation_path` — fits along a λ grid from strong to weak regularisation, each
  fit warm-started at the previous one.
* :func:`cross_validate` — K-fold CV inside the training data (folds within every task,
  stratified by class per task for classification), folds in parallel threads (JAX releases
  the GIL while it computes), the whole (λ, λ₂) grid per fold as warm-started paths.
* :func:`log_evidence` / :func:`select_by_evidence` — the Bayesian alternative where it is
  available in closed form: Gaussian likelihood with a fixed task precision (STL, graph,
  mean-regularised): p(y | λ) = ∫ p(y | W, b) N(W; 0, (λP ⊗ I)⁻¹) dW db with flat b.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .data import MultiTaskData
from .models import family as F
from .models.losses import linear_predictor
from .models.matrix_normal import ConvergenceWarning, _task_blocks, fit_mtrl
from .priors import MTRL

__all__ = ["MEMBERS", "is_member", "make_member", "fit_member", "predict_member",
           "regularisation_path", "cross_validate", "CVResult", "log_evidence",
           "select_by_evidence", "score", "compare_members"]


def _stl(m, lam2=None):
    del lam2
    return F.GraphLaplacian(np.zeros((m, m)), ridge=1.0)


def _clustered(m):
    """Jacob et al.'s set with c = 1 and a = k = ⌈√m⌉ "effective clusters" (only a/c and b/c
    matter: the scale of Ω is absorbed by λ; with a ≤ c the set is MTRL's tr Ω = a)."""
    k = float(max(2, int(np.ceil(np.sqrt(m)))))
    return F.Clustered(a=k, b=1e-3, c=1.0)


def _schatten(m, lam2, r=1.0):
    from .models.schatten import Schatten
    del m
    return Schatten(r=r, lam2=lam2)


def _squared_schatten(m, lam2=None, r=2.0):
    from .models.schatten import SquaredSchatten
    del m, lam2
    return SquaredSchatten(r=r)


#: name -> (factory (m, λ₂) -> member, whether λ₂ is a hyperparameter)
MEMBERS = {
    "stl": (_stl, False),
    "pooled": (None, False),
    "rmtl": (lambda m, lam2=None: F.mean_regularised(m), False),
    "clustered": (lambda m, lam2=None: _clustered(m), False),
    "mtrl": (lambda m, lam2=None: MTRL(), False),
    "glmtl": (lambda m, lam2: F.SparsePrecision(lam2), True),
    "spats": (lambda m, lam2: F.SparseCovariance(lam2), True),
    "schatten": (_schatten, True),
    "squared_schatten": (_squared_schatten, False),
    "reconstruction": (lambda m, lam2: F.SparseReconstruction(lam2), True),
}


def is_member(obj) -> bool:
    """Whether ``obj`` is a family member solved by :func:`fit_member` (not a plain Ω prior)."""
    if hasattr(obj, "omega_step"):
        return True
    from .models.schatten import Schatten, SquaredSchatten
    return isinstance(obj, (Schatten, SquaredSchatten))


def make_member(name: str, m: int, lam2: float | None = None):
    """The member called ``name`` (see :data:`MEMBERS`) for m tasks; ``None`` for pooled."""
    if name not in MEMBERS:
        raise ValueError(f"unknown member {name!r}; choose from {sorted(MEMBERS)}")
    factory, needs_lam2 = MEMBERS[name]
    if factory is None:
        return None
    if needs_lam2 and lam2 is None:
        raise ValueError(f"member {name!r} needs lam2 (λ₂)")
    return factory(m, lam2)


class MemberFit(NamedTuple):
    """W (d, m), b (m,), omega (m, m), objective, converged, and the solver's own result."""

    W: np.ndarray
    b: np.ndarray
    omega: np.ndarray
    objective: float
    converged: bool
    raw: object


def fit_member(data: MultiTaskData, member, lam: float, *, init=None, loss_scale="mean",
               noise=None, max_iter=None, tol=None) -> MemberFit:
    """MAP of a member (an object from :func:`make_member`, or ``None`` = pooled).

    ``init`` is a previous :class:`MemberFit` of the same member (warm start). ``max_iter``
    and ``tol`` override the outer-loop settings of the alternating family members (e.g. a
    looser tolerance inside cross-validation); other solvers keep their own.
    """
    solver_kw = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
    raw_init = None if init is None else init.raw
    if member is None:
        r = F.fit_pooled(data, lam, loss_scale=loss_scale, noise=noise)
    elif isinstance(member, MTRL):
        r = fit_mtrl(data, lam, loss_scale=loss_scale, noise=noise,
                     init=None if raw_init is None else (raw_init.W, raw_init.b))
    elif hasattr(member, "omega_step"):
        r = F.fit_family(data, member, lam, loss_scale=loss_scale, noise=noise,
                         init=None if raw_init is None else (raw_init.W, raw_init.b,
                                                             raw_init.state), **solver_kw)
    else:
        from .models.schatten import fit_schatten
        r = fit_schatten(data, member, lam, loss_scale=loss_scale, noise=noise,
                         init=None if raw_init is None else (raw_init.W, raw_init.b))
    return MemberFit(np.asarray(r.W), np.asarray(r.b), np.asarray(r.omega), float(r.objective),
                     bool(r.converged), r)


def predict_member(fit: MemberFit, X, task, classification=False) -> np.ndarray:
    """(N,) predictions: f, or hard labels {0, 1} for classification."""
    f = np.asarray(linear_predictor(X, task, fit.W, fit.b))
    return (f > 0).astype(float) if classification else f


def score(fit: MemberFit, data: MultiTaskData) -> float:
    """RMSE (regression) or error % (classification) of ``fit`` on ``data``."""
    clf = data.kind == "classification"
    pred = predict_member(fit, data.X, data.task, clf)
    if clf:
        return float(100.0 * np.mean(pred != data.y))
    return float(np.sqrt(np.mean((pred - data.y) ** 2)))


def regularisation_path(data: MultiTaskData, member, lam_grid, **kw) -> list[MemberFit]:
    """Fits at every λ of ``lam_grid`` (in the given order; pass it strong → weak), each
    warm-started at the previous fit. Convergence warnings are collected, not silenced:
    a fit that stops unconverged has ``converged=False``."""
    fits, prev = [], None
    for lam in lam_grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            prev = fit_member(data, member, float(lam), init=prev, **kw)
        fits.append(prev)
    return fits


def task_folds(data: MultiTaskData, n_folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold index: K-fold within each task (stratified by class for classification)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(data.y), dtype=int)
    strata = data.task * 2 + (data.y > 0.5 if data.kind == "classification" else 0)
    offset = 0
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        fold[idx] = (np.arange(len(idx)) + offset) % n_folds
        offset += len(idx)
    counts = np.array([np.bincount(fold[data.task == i], minlength=n_folds).min()
                       for i in range(data.n_tasks)])
    if np.any(counts == 0):
        bad = data.task_names[int(np.argmin(counts))]
        raise ValueError(f"task {bad!r} has too few rows for {n_folds}-fold CV")
    return fold


@dataclass(frozen=True)
class CVResult:
    """scores (n_lam2, n_lam) mean CV score (RMSE or error %), best (lam, lam2), grids, time."""

    scores: np.ndarray
    lam_grid: tuple
    lam2_grid: tuple
    lam: float
    lam2: float | None
    seconds: float


def cross_validate(data: MultiTaskData, name: str, lam_grid, lam2_grid=(None,), *,
                   n_folds: int = 3, seed: int = 0, n_jobs: int = 1, **kw) -> CVResult:
    """K-fold CV over (λ, λ₂) for member ``name`` on the training data only.

    λ paths run from the largest λ down with warm starts. Ties go to the larger λ. Returns
    the mean validation score per grid point and the chosen (λ, λ₂).
    """
    start = time.perf_counter()
    lam_desc = sorted((float(v) for v in lam_grid), reverse=True)
    if not MEMBERS.get(name, (None, False))[1]:
        lam2_grid = (None,)
    fold = task_folds(data, n_folds, seed)

    def run_fold(k):
        train, valid = data.subset(np.flatnonzero(fold != k)), data.subset(
            np.flatnonzero(fold == k))
        out = np.empty((len(lam2_grid), len(lam_desc)))
        for a, lam2 in enumerate(lam2_grid):
            member = make_member(name, data.n_tasks, lam2)
            fits = regularisation_path(train, member, lam_desc, **kw)
            out[a] = [score(f, valid) for f in fits]
        return out

    if n_jobs > 1:
        with ThreadPoolExecutor(n_jobs) as pool:
            per_fold = list(pool.map(run_fold, range(n_folds)))
    else:
        per_fold = [run_fold(k) for k in range(n_folds)]
    scores = np.mean(per_fold, axis=0)
    a, j = np.unravel_index(np.argmin(scores), scores.shape)  # first = larger λ on ties
    return CVResult(scores, tuple(lam_desc), tuple(lam2_grid), lam_desc[j], lam2_grid[a],
                    time.perf_counter() - start)


def compare_members(train: MultiTaskData, test: MultiTaskData, members, lam_grid,
                    lam2_grid=(None,), *, n_folds=3, seed=0, n_jobs=1, log=None, tol=None):
    """For each member name: (λ, λ₂) by K-fold CV on ``train``, refit on all of ``train``,
    score on ``test``. Returns (rows, fits): rows are dicts (member, test score, fit time, CV
    time, λ, λ₂, converged), fits the refitted :class:`MemberFit` per member."""
    metric = "rmse" if train.kind == "regression" else "error_pct"
    rows, fits = [], {}
    for name in members:
        cv = cross_validate(train, name, lam_grid, lam2_grid, n_folds=n_folds, seed=seed,
                            n_jobs=n_jobs, tol=tol)
        member = make_member(name, train.n_tasks, cv.lam2)
        start = time.perf_counter()
        fit = fit_member(train, member, cv.lam)
        seconds = time.perf_counter() - start
        rows.append({"member": name, f"test_{metric}": score(fit, test), "fit_time_s": seconds,
                     "cv_time_s": cv.seconds, "lam": cv.lam, "lam2": cv.lam2,
                     "converged": fit.converged})
        fits[name] = fit
        if log is not None:
            log(rows[-1])
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
        raise ValueError("lam and noise must be positive")
    d, m = data.n_features, data.n_tasks
    p = d + 1
    # posterior precision: per-task blocks X̃ᵢᵀX̃ᵢ/σ² plus λ P ⊗ E on the W part (task-major)
    blocks, rhs = _task_blocks(data.X, data.y, data.task, np.ones(len(data.y)), noise, m)
    E = np.diag(np.r_[np.ones(d), 0.0])
    H = np.einsum("st,ab->satb", lam * P, E)
    H[np.arange(m), :, np.arange(m), :] += np.asarray(blocks)
    H = H.reshape(m * p, m * p)
    rhs = np.asarray(rhs).ravel()
    L = np.linalg.cholesky(H)
    z = np.linalg.solve(L, rhs)
    sign, logdet_prior = np.linalg.slogdet(lam * P)
    if sign <= 0:
        raise ValueError("precision must be positive definite for the evidence")
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

