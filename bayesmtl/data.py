"""Ragged multi-task data: one container, one validation path.

A multi-task data set holds m tasks, task i with n_i rows of the same d features. It is stored
stacked and sorted by task, so the JAX models see three flat arrays ``X (N, d)``, ``y (N,)`` and
``task (N,)`` (integer task index), and per-task views are slices.

All constructors funnel through :func:`_validated`, which raises a :class:`DataError` subclass
naming the problem and never drops rows silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "DataError",
    "NonFiniteError",
    "ShapeMismatchError",
    "EmptyTaskError",
    "UnknownTaskError",
    "LabelError",
    "SingleClassWarning",
    "MultiTaskData",
    "Standardizer",
]

REGRESSION = "regression"
CLASSIFICATION = "classification"


class DataError(ValueError):
    """Base class of every input-data problem bayesmtl reports."""


class NonFiniteError(DataError):
    """X or y holds NaN or infinity."""


class ShapeMismatchError(DataError):
    """Lengths or feature counts disagree."""


class EmptyTaskError(DataError):
    """A task has no rows."""


class UnknownTaskError(DataError, KeyError):
    """A task name was not seen at fit time."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class LabelError(DataError):
    """Classification labels are not {0, 1} or {-1, +1}."""


class SingleClassWarning(UserWarning):
    """A classification task has rows of one class only."""


# ----------------------------------------------------------------------------- validation


def _check_finite(name: str, a: np.ndarray, task_names, task: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))
        tasks = sorted({str(task_names[t]) for t in task[rows]})
        raise NonFiniteError(
            f"{name} holds {int(bad.sum())} NaN/inf value(s) in {len(rows)} row(s) "
            f"(first row {int(rows[0])}; task(s) {', '.join(tasks[:5])}"
            f"{' …' if len(tasks) > 5 else ''}). Impute or remove them explicitly."
        )


def _map_labels(y: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Map binary labels to {0, 1}; return the labels and the original (negative, positive)."""
    values = set(np.unique(y).tolist())
    if values <= {0.0, 1.0}:
        return y.astype(np.float64), (0.0, 1.0)
    if values <= {-1.0, 1.0}:
        return (y > 0).astype(np.float64), (-1.0, 1.0)
    shown = sorted(values)[:6]
    raise LabelError(
        f"classification labels must be {{0, 1}} or {{-1, +1}}; found {shown}"
        f"{' …' if len(values) > 6 else ''}. Build one-vs-rest tasks first "
        "(see bayesmtl.datasets.one_vs_rest)."
    )


def _validated(X, y, task, task_names, feature_names, kind) -> MultiTaskData:
    """The one validation path: returns a stacked, task-sorted MultiTaskData."""
    if kind not in (REGRESSION, CLASSIFICATION):
        raise ValueError(f"kind must be '{REGRESSION}' or '{CLASSIFICATION}', got {kind!r}")
    X = np.asarray(X)
    y = np.asarray(y)
    task = np.asarray(task)
    if X.ndim != 2:
        raise ShapeMismatchError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ShapeMismatchError(f"y must be 1-D; got shape {y.shape}")
    if not (len(X) == len(y) == len(task)):
        raise ShapeMismatchError(
            f"X, y and task must have the same number of rows; got {len(X)}, {len(y)}, {len(task)}"
        )
    m = len(task_names)
    if m == 0:
        raise EmptyTaskError("no tasks given")
    if len(set(task_names)) != m:
        raise ValueError("task names must be unique")
    if task.size and (task.min() < 0 or task.max() >= m):
        raise ShapeMismatchError(
            f"task indices must lie in [0, {m}); got {task.min()}..{task.max()}"
        )
    task = task.astype(np.int32)
    X = X.astype(np.float64)
    y = y.astype(np.float64)
    _check_finite("X", X, task_names, task)
    _check_finite("y", y, task_names, task)
    counts = np.bincount(task, minlength=m)
    if (counts == 0).any():
        empty = [str(task_names[i]) for i in np.flatnonzero(counts == 0)]
        raise EmptyTaskError(f"task(s) with no rows: {', '.join(empty[:10])}")
    if feature_names is None:
        feature_names = tuple(f"x{j}" for j in range(X.shape[1]))
    feature_names = tuple(str(f) for f in feature_names)
    if len(feature_names) != X.shape[1]:
        raise ShapeMismatchError(
            f"{len(feature_names)} feature names for {X.shape[1]} features"
        )
    label_values = None
    if kind == CLASSIFICATION:
        y, label_values = _map_labels(y)
        per_task_pos = np.bincount(task, weights=y, minlength=m)
        single = np.flatnonzero((per_task_pos == 0) | (per_task_pos == counts))
        if single.size:
            names = ", ".join(str(task_names[i]) for i in single[:10])
            warnings.warn(
                f"task(s) with one class only: {names}; their logistic MAP may diverge "
                "without a proper prior",
                SingleClassWarning,
                stacklevel=3,
            )
    order = np.argsort(task, kind="stable")
    return MultiTaskData(
        X=X[order],
        y=y[order],
        task=task[order],
        task_names=tuple(task_names),
        feature_names=feature_names,
        kind=kind,
        label_values=label_values,
    )


def task_index(task_names, labels) -> np.ndarray:
    """(n,) indices of ``labels`` (compared as str) in ``task_names``; unknown labels raise
    :class:`UnknownTaskError`."""
    lookup = {str(t): i for i, t in enumerate(task_names)}
    out = np.empty(len(labels), dtype=np.int32)
    for k, t in enumerate(np.asarray(labels).tolist()):
        i = lookup.get(str(t))
        if i is None:
            m = len(task_names)
            raise UnknownTaskError(
                f"unknown task {str(t)!r}; the model knows {m} tasks "
                f"({', '.join(map(str, task_names[:5]))}{' …' if m > 5 else ''})"
            )
        out[k] = i
    return out


def check_features(X, n_features: int) -> np.ndarray:
    """Validate prediction-time features: 2-D, ``n_features`` columns, finite."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ShapeMismatchError(f"X must have shape (n, {n_features}); got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise NonFiniteError(f"X holds {int((~np.isfinite(X)).sum())} NaN/inf value(s)")
    return X


# ----------------------------------------------------------------------------- container


@dataclass(frozen=True, eq=False)
class MultiTaskData:
    """Stacked multi-task data sorted by task.

    Attributes
    ----------
    X : (N, d) float64
    y : (N,) float64 — targets; for classification in {0, 1}.
    task : (N,) int32 — task index of each row, in [0, m).
    task_names : tuple of m str
    feature_names : tuple of d str
    kind : "regression" or "classification"
    label_values : (negative, positive) original labels for classification, else None.
    """

    X: np.ndarray
    y: np.ndarray
    task: np.ndarray
    task_names: tuple
    feature_names: tuple
    kind: str = REGRESSION
    label_values: tuple | None = None
    _offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        counts = np.bincount(self.task, minlength=len(self.task_names))
        object.__setattr__(self, "_offsets", np.concatenate([[0], np.cumsum(counts)]))

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def from_tasks(
        cls,
        tasks: Sequence[tuple[np.ndarray, np.ndarray]],
        task_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        kind: str = REGRESSION,
    ) -> MultiTaskData:
        """From a list of per-task ``(X_i (n_i, d), y_i (n_i,))`` pairs."""
        if len(tasks) == 0:
            raise EmptyTaskError("no tasks given")
        names = tuple(task_names) if task_names is not None else tuple(
            f"task{i}" for i in range(len(tasks))
        )
        if len(names) != len(tasks):
            raise ShapeMismatchError(f"{len(names)} task names for {len(tasks)} tasks")
        Xs, ys, ids = [], [], []
        dims = set()
        for i, (Xi, yi) in enumerate(tasks):
            Xi = np.asarray(Xi)
            yi = np.asarray(yi)
            if Xi.ndim == 1:
                Xi = Xi[:, None]
            if Xi.ndim != 2:
                raise ShapeMismatchError(f"task {names[i]}: X must be 2-D, got {Xi.shape}")
            if len(Xi) == 0:
                raise EmptyTaskError(f"task {names[i]} has no rows")
            if len(Xi) != len(yi):
                raise ShapeMismatchError(
                    f"task {names[i]}: X has {len(Xi)} rows but y has {len(yi)}"
                )
            dims.add(Xi.shape[1])
            Xs.append(Xi)
            ys.append(yi.reshape(len(yi), -1)[:, 0] if yi.ndim == 2 else yi)
            ids.append(np.full(len(Xi), i))
        if len(dims) > 1:
            per_task = {names[i]: np.asarray(t[0]).shape[1] for i, t in enumerate(tasks)}
            raise ShapeMismatchError(f"tasks have different numbers of features: {per_task}")
        return _validated(
            np.concatenate(Xs), np.concatenate(ys), np.concatenate(ids), names, feature_names, kind
        )

    @classmethod
    def from_arrays(
        cls,
        X,
        y,
        task,
        task_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        kind: str = REGRESSION,
    ) -> MultiTaskData:
        """From stacked ``X (N, d)``, ``y (N,)`` and per-row task labels ``task (N,)``.

        ``task`` may hold any hashable labels; task order follows ``task_names`` if given,
        otherwise the sorted unique labels.
        """
        task = np.asarray(task)
        if task.ndim != 1:
            raise ShapeMismatchError(f"task must be 1-D; got shape {task.shape}")
        if task_names is None:
            task_names = tuple(np.unique(task).tolist())
        lookup = {t: i for i, t in enumerate(task_names)}
        try:
            ids = np.fromiter((lookup[t] for t in task.tolist()), dtype=np.int64, count=len(task))
        except KeyError as err:
            raise UnknownTaskError(f"task label {err.args[0]!r} is not in task_names") from None
        names = tuple(str(t) for t in task_names)
        return _validated(X, y, ids, names, feature_names, kind)

    @classmethod
    def from_dataframe(
        cls,
        df,
        task_col: str,
        target_col: str,
        feature_cols: Sequence[str] | None = None,
        kind: str = REGRESSION,
    ) -> MultiTaskData:
        """From a pandas DataFrame with one task column and one target column."""
        for col in (task_col, target_col):
            if col not in df.columns:
                raise KeyError(f"column {col!r} not in the DataFrame")
        if feature_cols is None:
            feature_cols = [c for c in df.columns if c not in (task_col, target_col)]
        return cls.from_arrays(
            df[list(feature_cols)].to_numpy(dtype=np.float64),
            df[target_col].to_numpy(dtype=np.float64),
            df[task_col].to_numpy(),
            feature_names=feature_cols,
            kind=kind,
        )

    # --- views --------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_per_task(self) -> np.ndarray:
        """(m,) number of rows of each task."""
        return np.diff(self._offsets)

    def task_slice(self, i: int) -> slice:
        return slice(int(self._offsets[i]), int(self._offsets[i + 1]))

    def tasks(self):
        """Iterate over per-task ``(X_i, y_i)``."""
        for i in range(self.n_tasks):
            s = self.task_slice(i)
            yield self.X[s], self.y[s]

    def task_index(self, names) -> np.ndarray:
        """Map task names to indices; unknown names raise :class:`UnknownTaskError`."""
        return task_index(self.task_names, names)

    def subset(self, rows: np.ndarray) -> MultiTaskData:
        """Rows by index (or boolean mask); every task must keep at least one row."""
        rows = np.asarray(rows)
        return _validated(
            self.X[rows], self._labels(self.y[rows]), self.task[rows], self.task_names,
            self.feature_names, self.kind,
        )

    def _labels(self, y01):
        """Labels back in the user's coding (so re-validation maps them again)."""
        if self.kind != CLASSIFICATION or self.label_values == (0.0, 1.0):
            return y01
        neg, pos = self.label_values
        return np.where(y01 > 0, pos, neg)

    def with_features(self, X: np.ndarray, feature_names=None) -> MultiTaskData:
        """Same tasks and targets, new feature matrix of N rows."""
        return replace(self, X=np.asarray(X, dtype=np.float64),
                       feature_names=tuple(feature_names or self.feature_names))

    def drop_constant_features(self) -> MultiTaskData:
        """Remove columns constant over all rows (e.g. a bias column; models have intercepts)."""
        keep = np.ptp(self.X, axis=0) > 0
        return replace(
            self, X=self.X[:, keep], feature_names=tuple(np.asarray(self.feature_names)[keep])
        )

    def train_test_split(self, test_size: float = 0.3, seed: int = 0):
        """Per-task split (stratified by class for classification). Returns (train, test).

        Each task keeps at least one row on each side, so tasks need n_i >= 2.
        """
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size must lie in (0, 1); got {test_size}")
        rng = np.random.default_rng(seed)
        test = np.zeros(len(self.y), dtype=bool)
        for i in range(self.n_tasks):
            s = self.task_slice(i)
            idx = np.arange(s.start, s.stop)
            if len(idx) < 2:
                raise EmptyTaskError(
                    f"task {self.task_names[i]} has {len(idx)} row(s); a split needs at least 2"
                )
            groups = [idx[self.y[idx] == c] for c in (0, 1)] if self.kind == CLASSIFICATION \
                else [idx]
            chosen = []
            for g in groups:
                k = int(round(test_size * len(g)))
                chosen.append(rng.permutation(g)[:k])
            chosen = np.concatenate(chosen)
            k = len(chosen)
            if k == 0 or k == len(idx):
                chosen = rng.permutation(idx)[: max(1, min(len(idx) - 1, k))]
            test[chosen] = True
        return self.subset(~test), self.subset(test)

    def __repr__(self):
        return (
            f"MultiTaskData({self.kind}, {self.n_tasks} tasks, {len(self.y)} rows, "
            f"{self.n_features} features, n_i in [{self.n_per_task.min()}, "
            f"{self.n_per_task.max()}])"
        )


# ----------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Standardizer:
    """Feature standardisation fitted on training data, per task or global.

    ``mean``/``scale`` are (d,) for ``scope="global"`` and (m, d) for ``scope="task"``.
    Constant columns keep scale 1 (they are centred only).
    """

    scope: str
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, data: MultiTaskData, scope: str = "global") -> Standardizer:
        if scope == "global":
            mean, scale = data.X.mean(0), data.X.std(0)
        elif scope == "task":
            m = data.n_tasks
            mean = np.stack([data.X[data.task_slice(i)].mean(0) for i in range(m)])
            scale = np.stack([data.X[data.task_slice(i)].std(0) for i in range(m)])
        else:
            raise ValueError(f"scope must be 'global' or 'task', got {scope!r}")
        return cls(scope, mean, np.where(scale > 0, scale, 1.0))

    def transform(self, data: MultiTaskData) -> MultiTaskData:
        if data.n_features != self.mean.shape[-1]:
            raise ShapeMismatchError(
                f"standardizer fitted on {self.mean.shape[-1]} features, data has "
                f"{data.n_features}"
            )
        if self.scope == "global":
            return data.with_features((data.X - self.mean) / self.scale)
        if len(self.mean) != data.n_tasks:
            raise ShapeMismatchError("per-task standardizer applied to data with other tasks")
        t = data.task
        return data.with_features((data.X - self.mean[t]) / self.scale[t])
