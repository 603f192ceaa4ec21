r"""Stand-in data for the BMTL paper's experiments (Section 4), built from bundled data or
simulated, with seeds.

The paper uses Office-31, Office-Home and ImageCLEF (VGG-19 fc7 features, domains as tasks, one
classifier per domain over shared classes) and SARCOS (7 joint torques from 21 inputs). None is
bundled, so:

- :func:`digit_domains` — scikit-learn's bundled 8×8 digits split into disjoint "domains", each
  seen through a fixed corruption of increasing difficulty (clean, pixel noise, blur, rotation,
  occlusion); every domain is a 10-class task (kind "multiclass"), as every Office domain is a
  31-class task.
- :func:`school_tasks` — School (139 regression tasks, :func:`~bayesmtl.datasets.load_school`),
  all 15,362 rows, to be re-split by :func:`proportion_split`.
- :func:`sarcos_like` — 7 regression tasks on shared 21-dimensional inputs (positions q,
  velocities q̇, accelerations q̈ of a simulated 7-joint arm): torque-like outputs whose scales
  span 64× and whose noise levels differ per task, so the task losses differ by orders of
  magnitude, which is what balancing strategies act on.

The paper trains on 50 %, 60 % and 70 % of each task (:data:`TRAIN_PROPORTIONS`).
"""

from __future__ import annotations

import numpy as np

from ..data import MULTICLASS, REGRESSION, MultiTaskData
from ..errors import HyperparameterError

__all__ = ["TRAIN_PROPORTIONS", "DIGIT_DOMAINS", "SARCOS_SCALES", "SARCOS_NOISE",
           "digit_domains", "corrupt", "school_tasks", "sarcos_like", "proportion_split"]

TRAIN_PROPORTIONS = (0.5, 0.6, 0.7)

#: domain name → corruption (applied in the order rotate, blur, occlude, noise)
DIGIT_DOMAINS = (
    ("clean", {}),
    ("noise", {"noise": 0.25}),
    ("blur", {"blur": 1.0, "noise": 0.2}),
    ("rotate", {"rotate": 45.0, "blur": 0.8, "noise": 0.25}),
    ("occlude", {"occlude": 4, "rotate": -45.0, "blur": 0.8, "noise": 0.3}),
)

#: output scales (sd before noise) and noise sd relative to the scale, per SARCOS-like joint
SARCOS_SCALES = (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125)
SARCOS_NOISE = (0.05, 0.4, 0.1, 0.6, 0.2, 0.8, 0.3)


def corrupt(images: np.ndarray, rng, *, rotate: float = 0.0, blur: float = 0.0,
            occlude: int = 0, noise: float = 0.0) -> np.ndarray:
    """Corrupt (n, 8, 8) images in [0, 1]: rotate by ``rotate`` degrees, Gaussian blur of sd
    ``blur`` pixels, a random ``occlude`` × ``occlude`` square set to 0 per image, then
    Gaussian pixel noise of sd ``noise``; clipped to [0, 1]."""
    from scipy import ndimage

    out = images.astype(np.float64).copy()
    if rotate:
        out = ndimage.rotate(out, rotate, axes=(1, 2), reshape=False, order=1, mode="constant")
    if blur:
        out = ndimage.gaussian_filter(out, sigma=(0, blur, blur))
    if occlude:
        side = out.shape[1]
        corners = rng.integers(0, side - occlude + 1, size=(len(out), 2))
        for img, (r, c) in zip(out, corners, strict=True):
            img[r:r + occlude, c:c + occlude] = 0.0
    if noise:
        out = out + noise * rng.normal(size=out.shape)
    return np.clip(out, 0.0, 1.0)


def digit_domains(n_domains: int = 5, seed: int = 0) -> MultiTaskData:
    """scikit-learn's 1,797 digits split at random (``seed``) into ``n_domains`` disjoint parts;
    part k is corrupted as :data:`DIGIT_DOMAINS` [k] and becomes task k, a 10-class problem.
    Features: the 64 pixels in [0, 1]."""
    from sklearn.datasets import load_digits

    if not 1 <= n_domains <= len(DIGIT_DOMAINS):
        raise HyperparameterError(f"n_domains must lie in [1, {len(DIGIT_DOMAINS)}]; got "
                                  f"{n_domains!r}", "n_domains", n_domains)
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(len(labels)), n_domains)
    tasks, names = [], []
    for (name, spec), rows in zip(DIGIT_DOMAINS, parts, strict=False):
        X = corrupt(images[rows], rng, **spec).reshape(len(rows), -1)
        tasks.append((X, labels[rows]))
        names.append(name)
    pixels = [f"px{r}_{c}" for r in range(8) for c in range(8)]
    return MultiTaskData.from_tasks(tasks, names, pixels, kind=MULTICLASS)


def school_tasks(split: int = 1) -> MultiTaskData:
    """School's 139 regression tasks with every row (``split``'s train and test parts joined;
    the row set is the same for every split)."""
    from ..datasets import load_school

    train, test = load_school(split)
    tasks = []
    for i in range(train.n_tasks):
        a, b = train.task_slice(i), test.task_slice(i)
        tasks.append((np.vstack([train.X[a], test.X[b]]), np.r_[train.y[a], test.y[b]]))
    return MultiTaskData.from_tasks(tasks, train.task_names, train.feature_names, REGRESSION)


def sarcos_like(n: int = 2000, seed: int = 0, scales=SARCOS_SCALES,
                noise=SARCOS_NOISE) -> MultiTaskData:
    r"""7 torque-like regression tasks on shared inputs x = (q, q̇, q̈) ∈ R^21, n rows each.

    q ~ U(-π, π)^7, q̇, q̈ ~ N(0, I_7); with fixed random couplings A, B (7 × 7) and g (7,)
    (drawn from ``seed``), joint k's noiseless output is

        τ_k = Σ_j (δ_kj + ½ A_kj cos(q_k - q_j)) q̈_j + Σ_j B_kj sin(q_k - q_j) q̇_j²
              + g_k cos q_k + ½ g_k cos(q_k + q_{k+1}),

    (inertia, Coriolis-like and gravity-like terms), standardised over the n rows, multiplied
    by ``scales[k]``, plus N(0, (noise[k]·scales[k])²) noise.
    """
    rng = np.random.default_rng(seed)
    J = len(scales)
    q = rng.uniform(-np.pi, np.pi, size=(n, J))
    dq, ddq = rng.normal(size=(n, J)), rng.normal(size=(n, J))
    A, B = rng.normal(size=(J, J)) / np.sqrt(J), rng.normal(size=(J, J)) / np.sqrt(J)
    g = rng.normal(size=J)
    diff = q[:, :, None] - q[:, None, :]                       # (n, k, j): q_k - q_j
    inertia = np.einsum("nkj,nj->nk", np.eye(J) + 0.5 * A * np.cos(diff), ddq)
    coriolis = np.einsum("nkj,nj->nk", B * np.sin(diff), dq ** 2)
    gravity = g * np.cos(q) + 0.5 * g * np.cos(q + np.roll(q, -1, axis=1))
    tau = inertia + coriolis + gravity
    tau = (tau - tau.mean(0)) / tau.std(0)
    X = np.hstack([q, dq, ddq])
    tasks = [(X, scales[k] * tau[:, k] + noise[k] * scales[k] * rng.normal(size=n))
             for k in range(J)]
    features = [f"{v}{j + 1}" for v in ("q", "dq", "ddq") for j in range(J)]
    return MultiTaskData.from_tasks(tasks, [f"joint_{k + 1}" for k in range(J)], features,
                                    REGRESSION)


def proportion_split(data: MultiTaskData, train_fraction: float, seed: int = 0):
    """(train, test): ``train_fraction`` of each task's rows for training (per-task split of
    :meth:`MultiTaskData.train_test_split`; SARCOS-like tasks are split independently)."""
    return data.train_test_split(test_size=1.0 - train_fraction, seed=seed)
