"""Bundled data sets and task builders (see PROVENANCE.md beside this file)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from ..data import CLASSIFICATION, REGRESSION, MultiTaskData

__all__ = ["load_school", "load_digits_split", "load_sklearn_digits", "one_vs_rest",
           "one_vs_one", "SCHOOL_FEATURES", "SCHOOL_PERCENTAGES"]

_ETHNIC = ["eswi", "african", "arab", "bangladeshi", "caribbean", "greek", "indian",
           "pakistani", "se_asian", "turkish", "other"]
SCHOOL_FEATURES = (
    ["year_1985", "year_1986", "year_1987", "pct_fsm", "pct_vr1", "gender_0", "gender_1",
     "vr_band_1", "vr_band_2", "vr_band_3"]
    + [f"ethnic_{e}" for e in _ETHNIC]
    + ["school_mixed", "school_male", "school_female", "denom_maintained", "denom_cofe",
       "denom_rc", "bias"]
)


def _npz(name: str):
    with resources.files(__name__).joinpath(name).open("rb") as fh:
        return dict(np.load(fh))


SCHOOL_PERCENTAGES = ("pct_fsm", "pct_vr1")


def load_school(split: int = 1, bias_column: bool = False, features: str = "all"):
    """School data, standard train/test split ``split`` (1..10) of Argyriou et al.

    Returns ``(train, test)`` MultiTaskData with 139 tasks named ``school_001`` …. The raw
    integer file is converted to float64. With ``bias_column=False`` (default) the all-ones
    column is dropped because bayesmtl models carry their own intercepts.

    features : "all" (the 27 attributes) or "binary" (the 25 binary attributes: the two
        school-year percentages % FSM and % VR1, 0–100, dropped). "binary" is the published
        protocol the School figures of the AMTL and GAMTL papers follow ("26 binary-valued
        features following the procedure of Argyriou et al. (2008)", counting the bias).
    """
    if not isinstance(split, (int, np.integer)) or not 1 <= split <= 10:
        raise ValueError(f"School has standard splits 1..10; got {split!r}")
    if features not in ("all", "binary"):
        raise ValueError(f"features must be 'all' or 'binary'; got {features!r}")
    raw = _npz("school.npz")
    x = raw["x"].astype(np.float64)
    y = raw["y"].astype(np.float64)
    starts = raw["task_start"].astype(np.int64) - 1
    task = np.searchsorted(starts, np.arange(len(y)), side="right") - 1
    names = tuple(f"school_{i + 1:03d}" for i in range(len(starts)))
    keep = [j for j, name in enumerate(SCHOOL_FEATURES)
            if (bias_column or name != "bias")
            and (features == "all" or name not in SCHOOL_PERCENTAGES)]
    x, feature_names = x[:, keep], [SCHOOL_FEATURES[j] for j in keep]

    def part(key):
        rows = raw[f"{key}_{split}"].astype(np.int64) - 1
        t = task[rows]
        return MultiTaskData.from_tasks(
            [(x[rows][t == i], y[rows][t == i]) for i in range(len(names))], names, feature_names,
            REGRESSION,
        )

    return part("train"), part("test")


def one_vs_rest(X, labels, classes, kind_names=None) -> MultiTaskData:
    """One binary task per class c: all rows, label 1 where ``labels == c``."""
    labels = np.asarray(labels)
    names = kind_names or [f"class_{c}" for c in classes]
    return MultiTaskData.from_tasks(
        [(X, (labels == c).astype(float)) for c in classes], names, kind=CLASSIFICATION
    )


def one_vs_one(X, labels, classes) -> MultiTaskData:
    """One binary task per pair (a, b), a < b: the rows of a and b, label 1 for b."""
    labels = np.asarray(labels)
    tasks, names = [], []
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            rows = (labels == a) | (labels == b)
            tasks.append((X[rows], (labels[rows] == b).astype(float)))
            names.append(f"{a}_vs_{b}")
    return MultiTaskData.from_tasks(tasks, names, kind=CLASSIFICATION)


def load_digits_split(name: str = "mnist"):
    """MNIST or USPS 1000/500/500 split (Kang et al. 2011) as 10 one-vs-rest logistic tasks.

    Returns ``(train, valid, test)``; tasks are ``digit_0`` … ``digit_9``.
    """
    if name not in ("mnist", "usps"):
        raise ValueError(f"name must be 'mnist' or 'usps'; got {name!r}")
    raw = _npz(f"digits_{name}.npz")
    digits = list(range(10))
    names = [f"digit_{k}" for k in digits]
    out = []
    for part in ("train", "valid", "test"):
        labels = raw[f"{part}y"].astype(int) - 1
        out.append(one_vs_rest(raw[f"{part}x"], labels, digits, names))
    return tuple(out)


def load_sklearn_digits(mode: str = "ovr", test_size: float = 0.5, seed: int = 0,
                        n_train_per_class: int | None = None):
    """scikit-learn's bundled 8x8 digits as 10 one-vs-rest or 45 one-vs-one tasks.

    The split is made on images first (so one-vs-rest tasks share rows). With
    ``n_train_per_class`` (one-vs-one only) each task keeps that many training images from each
    of its two classes and the remaining images of those classes for testing. Returns
    ``(train, test)``.
    """
    from sklearn.datasets import load_digits

    X, labels = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(seed)
    digits = list(range(10))
    if mode == "ovr":
        test = rng.random(len(labels)) < test_size
        return (one_vs_rest(X[~test], labels[~test], digits),
                one_vs_rest(X[test], labels[test], digits))
    if mode != "ovo":
        raise ValueError(f"mode must be 'ovr' or 'ovo'; got {mode!r}")
    if n_train_per_class is None:
        test = rng.random(len(labels)) < test_size
        return one_vs_one(X[~test], labels[~test], digits), one_vs_one(X[test], labels[test],
                                                                       digits)
    train_tasks, test_tasks, names = [], [], []
    for i, a in enumerate(digits):
        for b in digits[i + 1:]:
            tr, te = [], []
            for c in (a, b):
                idx = rng.permutation(np.flatnonzero(labels == c))
                tr.append(idx[:n_train_per_class])
                te.append(idx[n_train_per_class:])
            tr, te = np.concatenate(tr), np.concatenate(te)
            train_tasks.append((X[tr], (labels[tr] == b).astype(float)))
            test_tasks.append((X[te], (labels[te] == b).astype(float)))
            names.append(f"{a}_vs_{b}")
    return (MultiTaskData.from_tasks(train_tasks, names, kind=CLASSIFICATION),
            MultiTaskData.from_tasks(test_tasks, names, kind=CLASSIFICATION))
