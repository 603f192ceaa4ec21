r"""Capacity sweep: error of the shared-subspace model against the capacity r = 1 … k.

Proposition 1: with r ≥ k (the number of tasks) the optimum is the single-task solution, so
no information is transferred; a too small r forces unrelated tasks through one subspace. The
sweep fits ``shared_subspace`` (through the registry) at every r, scores each by K-fold CV on
the training rows (the choice) and, when a test set is given, on it (the report), and returns
the table with the chosen r = the CV minimiser (ties: the smaller r).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from ..data import MultiTaskData
from ..errors import GridEdgeWarning, HyperparameterError

__all__ = ["CapacitySweep", "capacity_sweep"]

METHOD = "shared_subspace"


class CapacitySweep(NamedTuple):
    """table : DataFrame with columns r, cv_<scoring> (K-fold CV on train), train_<scoring>,
    test_<scoring> (NaN without a test set) and objective (the MAP objective on all of
    train); chosen_r : the CV choice; scoring : the score's name (lower is better)."""

    table: object
    chosen_r: int
    scoring: str


def capacity_sweep(train: MultiTaskData, test: MultiTaskData | None = None, ranks=None, *,
                   hyper=None, n_folds: int = 3, scoring: str | None = None,
                   seed: int = 0) -> CapacitySweep:
    """Sweep r over ``ranks`` (default 1 … min(k, d)) with the other hyperparameters of
    ``shared_subspace`` fixed at ``hyper`` (λ defaults to the method's default)."""
    import pandas as pd

    from .. import methods
    from ..selection import SCORERS, _scorer, cross_validate, score

    k, d = train.n_tasks, train.n_features
    ranks = tuple(range(1, min(k, d) + 1)) if ranks is None else tuple(int(r) for r in ranks)
    if not ranks or min(ranks) < 1 or max(ranks) > d:
        raise HyperparameterError(f"ranks must lie in 1..d = {d}; got {ranks}", "ranks", ranks)
    scoring = _scorer(scoring, train)
    if SCORERS[scoring][2]:
        raise HyperparameterError(f"scoring must be an error (lower is better); got "
                                  f"{scoring!r}", "scoring", scoring)
    hyper = methods.validate(METHOD, hyper)
    fixed = {name: v for name, v in hyper.items() if name not in ("r", "lam")}
    with warnings.catch_warnings():  # the sweep's edges (r = 1, r = k) are meaningful
        warnings.simplefilter("ignore", GridEdgeWarning)
        cv = cross_validate(train, METHOD, {"lam": (hyper["lam"],), "r": ranks},
                            scoring=scoring, hyper=fixed, n_folds=n_folds, seed=seed)
    cv_scores = np.asarray(cv.scores).reshape(len(ranks))
    rows = []
    for r, cv_score in zip(ranks, cv_scores, strict=True):
        fit, _ = methods.fit(train, METHOD, {**hyper, "r": r})
        rows.append({"r": r, f"cv_{scoring}": float(cv_score),
                     f"train_{scoring}": score(fit, train, scoring),
                     f"test_{scoring}": np.nan if test is None else score(fit, test, scoring),
                     "objective": fit.objective})
    chosen = ranks[int(np.argmin(cv_scores))]
    return CapacitySweep(pd.DataFrame(rows), int(chosen), scoring)
