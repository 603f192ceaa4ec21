"""AMTL's synthetic regression sets (Lee, Yang & Hwang 2016, Sections 4.1 and 4.3).

Twelve tasks in two groups (tasks 1–6 and 7–12). Within group g the true parameters are drawn
around a shared mean, ``w_t = μ_g + δ_t`` with ``μ_g ~ N(0, group_scale² I_d)`` and
``δ_t ~ N(0, task_scale² I_d)``; rows are ``x ~ N(0, I_d)``, ``y = xᵀ w_t + ε``.

* :func:`load_amtl_synthetic`: noise σ = 5 for tasks 1–3 and 7–9 ("easy") and σ = 25 for
  tasks 4–6 and 10–12 ("hard"); 90 rows per task split 30/30/30 (train/valid/test).
* :func:`load_amtl_imbalanced`: the same task parameters, σ = 50 for every task, 500 training
  rows for the easy tasks and 5 for the hard ones, 50 validation and 50 test rows per task.

The paper does not state d or the parameter scales. We take d = 10 (a third of the 30
training rows per task, so single-task estimates of the hard tasks are noisy but defined),
group_scale = 10 (signal s.d. ≈ 32, comparable to the hard tasks' noise) and task_scale = 2
(tasks of a group related, not identical); all are arguments.
"""

from __future__ import annotations

import numpy as np

from ..data import REGRESSION, MultiTaskData

__all__ = ["EASY_TASKS", "HARD_TASKS", "GROUPS", "amtl_task_parameters",
           "load_amtl_synthetic", "load_amtl_imbalanced"]

#: zero-based indices of the low-noise (easy) and high-noise (hard) tasks
EASY_TASKS = (0, 1, 2, 6, 7, 8)
HARD_TASKS = (3, 4, 5, 9, 10, 11)
#: zero-based task indices of the two groups
GROUPS = (tuple(range(6)), tuple(range(6, 12)))
_NAMES = tuple(f"task_{i + 1:02d}" for i in range(12))


def amtl_task_parameters(seed: int = 0, n_features: int = 10, group_scale: float = 10.0,
                         task_scale: float = 2.0) -> np.ndarray:
    """(d, 12) true task parameters W* (two groups of six around their group means)."""
    rng = np.random.default_rng([seed, 0])
    means = group_scale * rng.normal(size=(2, n_features))
    group = np.repeat([0, 1], 6)
    return (means[group] + task_scale * rng.normal(size=(12, n_features))).T


def _draw(rng, w, n, noise):
    X = rng.normal(size=(n, len(w)))
    return X, X @ w + noise * rng.normal(size=n)


def _split(W, sizes, noises, seed):
    """Three MultiTaskData (train, valid, test); ``sizes[t] = (n_train, n_valid, n_test)``."""
    rng = np.random.default_rng([seed, 1])
    parts = [[], [], []]
    for t in range(W.shape[1]):
        for k, n in enumerate(sizes[t]):
            parts[k].append(_draw(rng, W[:, t], n, noises[t]))
    features = [f"x{j}" for j in range(W.shape[0])]
    return tuple(MultiTaskData.from_tasks(p, _NAMES, features, REGRESSION) for p in parts)


def load_amtl_synthetic(seed: int = 0, n_features: int = 10, low_noise: float = 5.0,
                        high_noise: float = 25.0, sizes=(30, 30, 30), **scales):
    """Section 4.1 set: returns ``(train, valid, test)`` MultiTaskData, 12 tasks each.

    ``scales`` are passed to :func:`amtl_task_parameters` (``group_scale``, ``task_scale``).
    """
    W = amtl_task_parameters(seed, n_features, **scales)
    noises = [low_noise if t in EASY_TASKS else high_noise for t in range(12)]
    return _split(W, [sizes] * 12, noises, seed)


def load_amtl_imbalanced(seed: int = 0, n_features: int = 10, noise: float = 50.0,
                         n_easy: int = 500, n_hard: int = 5, n_eval: int = 50, **scales):
    """Section 4.3 set: same task parameters as :func:`load_amtl_synthetic` (same seed),
    noise 50, 500 training rows for easy tasks and 5 for hard ones; ``(train, valid, test)``."""
    W = amtl_task_parameters(seed, n_features, **scales)
    sizes = [(n_easy if t in EASY_TASKS else n_hard, n_eval, n_eval) for t in range(12)]
    return _split(W, sizes, [noise] * 12, seed)
