r"""Stand-in data for the information-transfer paper (Wu, Zhang & Ré), seeded.

GLUE/BERT, the sentiment sets and ChestX-ray14 are not available here; these test the same
claims:

* :func:`section23_tasks` — the synthetic generator of Section 2.3 (Figure 3): a target task
  and three sources sharing θ₂ (cos(θ₁, θ₂) = 0.96 by default) with the target's covariance,
  another spectrum, or another rotation.
* :func:`rotated_digits` — one-vs-rest digit tasks on disjoint images of scikit-learn's
  bundled 8 × 8 digits, each task's (standardised) pixels rotated by its own fixed random
  orthogonal matrix (what covariance alignment should undo).
* :func:`noisy_multilabel_digits` — one-vs-rest tasks that share X (all images, like the 14
  labels of a ChestX-ray14 image), with a fraction of one task's training labels flipped at
  random (Appendix C.5: 20 %).
"""

from __future__ import annotations

import numpy as np

from ..data import CLASSIFICATION, REGRESSION, MultiTaskData
from ..errors import HyperparameterError

__all__ = ["SECTION23_TASKS", "random_rotation", "section23_parameters", "section23_tasks",
           "digit_rotations", "rotated_digits", "noisy_multilabel_digits"]

#: task names of :func:`section23_tasks` (the paper's tasks 1–4)
SECTION23_TASKS = ("target", "same_covariance", "other_spectrum", "other_rotation")


def random_rotation(d: int, rng) -> np.ndarray:
    """A Haar-distributed orthogonal matrix (d, d): QR of a Gaussian, signs fixed."""
    Q, R = np.linalg.qr(rng.normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


def section23_parameters(d: int = 100, kappa: float = 100.0, cosine: float = 0.96,
                         seed: int = 0) -> dict:
    """The fixed parts of Section 2.3's tasks: unit θ₁, θ₂ with cos(θ₁, θ₂) = ``cosine``;
    coordinate sets S₁, S₂ (d/10 each, disjoint); scalings D₁, D₂ (κ on S_i, 1 elsewhere);
    rotations Q₁, Q₂. Returns {"theta1", "theta2", "D1", "D2", "Q1", "Q2"} (D as (d,))."""
    if not -1 <= cosine <= 1:
        raise HyperparameterError(f"cosine must lie in [-1, 1]; got {cosine!r}", "cosine",
                                  cosine)
    rng = np.random.default_rng([seed, 23])
    theta1 = rng.normal(size=d)
    theta1 /= np.linalg.norm(theta1)
    u = rng.normal(size=d)
    u -= (u @ theta1) * theta1
    theta2 = cosine * theta1 + np.sqrt(1 - cosine**2) * u / np.linalg.norm(u)
    coords = rng.permutation(d)
    k = max(1, d // 10)
    D1, D2 = np.ones(d), np.ones(d)
    D1[coords[:k]], D2[coords[k:2 * k]] = kappa, kappa
    return {"theta1": theta1, "theta2": theta2, "D1": D1, "D2": D2,
            "Q1": random_rotation(d, rng), "Q2": random_rotation(d, rng)}


def section23_tasks(n_target: int, n_source: int, *, d: int = 100, kappa: float = 100.0,
                    cosine: float = 0.96, noise: float = 0.0, n_test: int = 1000,
                    activation: str = "identity", seed: int = 0, param_seed: int = 0):
    """(train, test): Section 2.3's four regression tasks.

    Rows x = r D Q (r ~ N(0, I_d)), so Cov x = Qᵀ D² Q; y = g(xᵀθ) + noise · N(0, 1) with
    g = identity or, for ``activation="relu"``, max(·, 0) (the paper's ReLU regression tasks):

    ============================  ====================  ======  ==========
    task                          covariates            model   rows
    ============================  ====================  ======  ==========
    target (task 1)               D₁, Q₁                θ₁      n_target
    same_covariance (task 2)      D₁, Q₁                θ₂      n_source
    other_spectrum (task 3)       D₂, Q₁                θ₂      n_source
    other_rotation (task 4)       D₁, Q₂                θ₂      n_source
    ============================  ====================  ======  ==========

    The paper writes X = R Q D; with R isotropic Gaussian that has covariance D² for every Q,
    so tasks 2 and 4 would coincide; the rotation is applied after the scaling here. Test
    sets hold ``n_test`` rows per task. ``param_seed`` fixes θ, D, Q; ``seed`` the rows.
    """
    if activation not in ("identity", "relu"):
        raise HyperparameterError(f"activation must be 'identity' or 'relu'; got "
                                  f"{activation!r}", "activation", activation)
    g = (lambda z: np.maximum(z, 0.0)) if activation == "relu" else (lambda z: z)
    p = section23_parameters(d, kappa, cosine, param_seed)
    spec = ((p["D1"], p["Q1"], p["theta1"], n_target), (p["D1"], p["Q1"], p["theta2"], n_source),
            (p["D2"], p["Q1"], p["theta2"], n_source), (p["D1"], p["Q2"], p["theta2"], n_source))
    rng = np.random.default_rng([seed, 2])
    parts = ([], [])
    for D, Q, theta, n in spec:
        for part, rows in zip(parts, (n, n_test), strict=True):
            X = (rng.normal(size=(rows, d)) * D) @ Q
            part.append((X, g(X @ theta) + noise * rng.normal(size=rows)))
    return tuple(MultiTaskData.from_tasks(part, SECTION23_TASKS, kind=REGRESSION)
                 for part in parts)


def _digits():
    from sklearn.datasets import load_digits

    X, labels = load_digits(return_X_y=True)
    scale = X.std(0)
    return (X - X.mean(0)) / np.where(scale > 0, scale, 1.0), labels


def digit_rotations(n_tasks: int, d: int = 64, seed: int = 0) -> np.ndarray:
    """(n_tasks, d, d) the fixed rotations Q_i of :func:`rotated_digits`."""
    rng = np.random.default_rng([seed, 7])
    return np.stack([random_rotation(d, rng) for _ in range(n_tasks)])


def rotated_digits(classes=(0, 1, 2, 3, 4), n_train: int = 100, n_test: int = 150, *,
                   rotate: bool = True, seed: int = 0):
    """(train, test): task i = "digit == classes[i]" (binary) on its own disjoint images,
    pixels standardised and multiplied by task i's rotation Q_i (:func:`digit_rotations`,
    x ↦ Q_iᵀx; ``rotate=False``: unrotated). Images are drawn without replacement (scikit-
    learn's 1,797 limit the total)."""
    X, labels = _digits()
    k = len(classes)
    if k * (n_train + n_test) > len(X):
        raise HyperparameterError(f"{k} tasks × {n_train + n_test} images exceed the "
                                  f"{len(X)} digits", "n_train", n_train)
    rng = np.random.default_rng([seed, 11])
    rows = rng.permutation(len(X))[: k * (n_train + n_test)].reshape(k, -1)
    Q = digit_rotations(k, X.shape[1], seed)
    parts = ([], [])
    for i, c in enumerate(classes):
        Xi = X[rows[i]] @ Q[i] if rotate else X[rows[i]]
        yi = (labels[rows[i]] == c).astype(float)
        parts[0].append((Xi[:n_train], yi[:n_train]))
        parts[1].append((Xi[n_train:], yi[n_train:]))
    return tuple(MultiTaskData.from_tasks(part, _names(classes), kind=CLASSIFICATION)
                 for part in parts)


def _names(classes) -> list:
    """digit_<c>, or task<i>_digit_<c> when a class labels several tasks."""
    classes = list(classes)
    return [f"digit_{c}" if classes.count(c) == 1 else f"task{i}_digit_{c}"
            for i, c in enumerate(classes)]


def noisy_multilabel_digits(classes=(0, 1), noisy_task: int = 0, flip: float = 0.2, *,
                            n_train: int = 600, seed: int = 0):
    """(train, test): one-vs-rest tasks for ``classes`` that all share X (``n_train`` training
    images; the rest of the 1,797 for testing), with a fraction ``flip`` of task
    ``noisy_task``'s training labels flipped (y ↦ 1 - y) at random. Test labels are clean."""
    if not 0 <= flip < 1:
        raise HyperparameterError(f"flip must lie in [0, 1); got {flip!r}", "flip", flip)
    X, labels = _digits()
    rng = np.random.default_rng([seed, 13])
    order = rng.permutation(len(X))
    train_rows, test_rows = order[:n_train], order[n_train:]
    parts = ([], [])
    for i, c in enumerate(classes):
        for part, rows in zip(parts, (train_rows, test_rows), strict=True):
            y = (labels[rows] == c).astype(float)
            if part is parts[0] and i == noisy_task:
                flipped = rng.permutation(len(rows))[: int(round(flip * len(rows)))]
                y[flipped] = 1 - y[flipped]
            part.append((X[rows], y))
    return tuple(MultiTaskData.from_tasks(part, _names(classes), kind=CLASSIFICATION)
                 for part in parts)
