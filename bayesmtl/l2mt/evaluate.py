r"""L2MT's test process on held-out problems (Section 3.4) and the paper's relative test error.

For a test problem S̃ (never seen in training): Ω̃ from its training rows (Theorem 3, through
the registered method ``l2mt``), problem (1) at Ω̃ for each λ₁ of a grid on the training
rows, λ₁ chosen by the mean validation error, and the per-task test error at that λ₁. The
average relative test error of a method over q̃ test problems (Section 4) is

    ε̃_MTL / ε̃_STL,   ε̃ = (1/q̃) Σ_i (1/m̃_i) Σ_j ε̃_ij,

with every baseline tuned on the validation splits (:func:`~.experience.best_on_validation`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .experience import LAM_GRID, best_on_validation, task_errors
from .problems import ProblemSpec, build_problem

__all__ = ["L2MTOutcome", "evaluate_problem", "relative_errors"]


class L2MTOutcome(NamedTuple):
    """L2MT on one test problem: chosen ``lam``, Ω used (m, m), ρ, per-task validation and
    test errors at every λ of ``lam_grid`` ((G, m) each) and the test error at the chosen λ."""

    lam: float
    omega: np.ndarray
    rho: float
    lam_grid: tuple
    valid_error: np.ndarray
    test_error: np.ndarray

    @property
    def chosen_test_error(self) -> float:
        return float(self.test_error[self.lam_grid.index(self.lam)].mean())


def evaluate_problem(model, spec: ProblemSpec, *, lam_grid=LAM_GRID, eps: float = 1e-3,
                     settings=None) -> L2MTOutcome:
    """The test process of a trained L2MT ``model`` (L2MTResult or path) on one problem."""
    from ..methods import registry as R

    problem = build_problem(spec)
    valid, test, omega, rho = [], [], None, None
    for lam in lam_grid:
        fit, _ = R.fit(problem.train, "l2mt", {"model": model, "lam": lam, "eps": eps},
                       settings)
        valid.append(task_errors(fit.W, fit.b, problem.valid))
        test.append(task_errors(fit.W, fit.b, problem.test))
        omega, rho = fit.relation["omega"], fit.info["rho"]
    valid, test = np.array(valid), np.array(test)
    best = int(np.argmin(valid.mean(axis=1)))  # ties: the first in grid order
    return L2MTOutcome(float(lam_grid[best]), omega, float(rho), tuple(lam_grid), valid, test)


def relative_errors(test_problems, labels, l2mt: dict | None = None) -> dict:
    """{label: ε̃_label / ε̃_STL} over ``test_problems`` (ExperienceProblem list), baselines
    tuned on validation; ``l2mt`` {problem index: L2MTOutcome} adds the row "L2MT"."""
    def mean_error(label):
        return float(np.mean([best_on_validation(p, label)[0] for p in test_problems]))

    stl = mean_error("STL")
    out = {label: mean_error(label) / stl for label in labels}
    if l2mt is not None:
        out["L2MT"] = float(np.mean([l2mt[p.spec.index].chosen_test_error
                                     for p in test_problems])) / stl
    return out
