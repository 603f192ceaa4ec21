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

from .errors import (
    DataError,
    EmptyTaskError,
    LabelError,
    NonFiniteError,
    ShapeMismatchError,
    SingleClassWarning,
    UnknownTaskError,
)

__all__ = [
    "DataError",
    "NonFiniteError",
    "ShapeMismatchError",
    "EmptyTaskError",
    "UnknownTaskError",
    "LabelError",
    "SingleClassWarning",
    "MultiTaskData",
    "TaskStatistics",
    "Standardizer",
]

REGRESSION = "regression"
CLASSIFICATION = "classification"
MULTICLASS = "multiclass"
KINDS = (REGRESSION, CLASSIFICATION, MULTICLASS)


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


def _map_labels(y: np.ndarray, labels=None) -> tuple[np.ndarray, tuple]:
    """Binary labels → {0, 1}; return them and the original (negative, positive) labels.

    Any two distinct labels are accepted (sorted: the larger is positive, so {0, 1},
    {-1, +1} and {"no", "yes"} keep their usual meaning); ``labels`` fixes the coding (a
    subset of a data set keeps its parent's labels even when one class is missing).
    """
    if labels is None:
        values = _unique_labels(y)
        if len(values) == 1:
            v = values[0]
            values = [v, 1] if v in (-1, 0) else [0, v] if v == 1 else None
            if values is None:
                raise LabelError(f"classification labels hold one value ({v!r}) that is not "
                                 "0, 1 or -1, so which class it is cannot be told; pass "
                                 "data with both classes")
        if len(values) > 2:
            shown = values[:6]
            raise LabelError(
                f"binary classification needs two labels (e.g. {{0, 1}} or {{-1, +1}}); found "
                f"{len(values)}: {shown}{' …' if len(values) > 6 else ''}. Build one-vs-rest "
                "tasks first (see bayesmtl.datasets.one_vs_rest) or use kind='multiclass'"
            )
        labels = tuple(values)
    neg, pos = labels
    y01 = np.full(len(y), np.nan)
    y01[_equal(y, neg)] = 0.0
    y01[_equal(y, pos)] = 1.0
    if np.isnan(y01).any():
        bad = y[np.isnan(y01)][0]
        raise LabelError(f"label {bad!r} is neither of the two classes {labels}")
    return y01, labels


def _unique_labels(y: np.ndarray) -> list:
    """Sorted distinct labels of any one type; mixed types or NaN raise LabelError."""
    if y.dtype.kind in "biuf":
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise LabelError("labels hold NaN")
        return np.unique(y).tolist()
    values = np.unique(y.astype(object)).tolist() if y.dtype.kind == "U" else y.tolist()
    kinds = {"number" if _label_type(v) in ("int", "float") else _label_type(v)
             for v in values}
    if len(kinds) > 1:
        raise LabelError(f"labels mix types {sorted(kinds)}; use one type (e.g. all str)")
    if "float" in kinds and any(v != v for v in values):
        raise LabelError("labels hold NaN")
    return sorted(set(values))


def _label_type(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "int" if float(v).is_integer() else "float"
    return type(v).__name__


def _equal(y: np.ndarray, value) -> np.ndarray:
    if y.dtype.kind in "biuf" and isinstance(value, (int, float, np.number)):
        return y == value
    return np.asarray([v == value for v in y.tolist()], dtype=bool)


def _encode_classes(y: np.ndarray, labels=None) -> tuple[np.ndarray, tuple]:
    """Multi-class labels (any one type) → codes 0..K-1 (float) and the sorted labels."""
    if labels is None:
        labels = tuple(_unique_labels(y))
        if len(labels) < 2:
            raise LabelError(f"multiclass data need at least 2 classes; found {list(labels)}")
    codes = np.full(len(y), np.nan)
    for k, v in enumerate(labels):
        codes[_equal(y, v)] = k
    if np.isnan(codes).any():
        bad = y[np.isnan(codes)][0]
        raise LabelError(f"label {bad!r} is not one of the classes {tuple(labels)}")
    return codes, tuple(labels)


def _validated(X, y, task, task_names, feature_names, kind, labels=None) -> MultiTaskData:
    """The one validation path: returns a stacked, task-sorted MultiTaskData.

    ``labels`` (classification kinds) fixes the label coding (see :func:`_map_labels`).
    """
    if kind not in KINDS:
        raise DataError(f"kind must be one of {KINDS}; got {kind!r}")
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
    try:
        X = np.asarray(X, dtype=np.float64)  # no copy of float64 input (10⁶ × 100 is 0.8 GB)
    except (TypeError, ValueError) as err:
        raise DataError(f"X must be numeric: {err}") from None
    label_values = None
    if kind == CLASSIFICATION:
        y, label_values = _map_labels(y, labels)
    elif kind == MULTICLASS:
        y, label_values = _encode_classes(y, labels)
    try:
        y = y.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"y must be numeric for regression: {err}") from None
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
    if kind == CLASSIFICATION:
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
    if np.all(task[1:] >= task[:-1]):  # already sorted: keep the arrays (read-only views)
        X, y = X.view(), y.view()
        X.flags.writeable = y.flags.writeable = False
    else:
        order = np.argsort(task, kind="stable")
        X, y, task = X[order], y[order], task[order]
    return MultiTaskData(
        X=X,
        y=y,
        task=task,
        task_names=tuple(task_names),
        feature_names=feature_names,
        kind=kind,
        label_values=label_values,
    )


def _unique_task_ids(task: np.ndarray) -> list:
    """Sorted distinct task ids; ids of mixed types (1 and "1") or NaN raise DataError."""
    values = task.tolist()
    kinds = {"number" if _label_type(v) in ("int", "float") else _label_type(v)
             for v in values}
    if len(kinds) > 1:
        raise DataError(f"task ids mix types {sorted(kinds)} (e.g. 1 and '1' would be "
                        "ambiguous); use one type for every id")
    if any(isinstance(v, float) and v != v for v in values) or any(v is None for v in values):
        raise DataError("task ids hold NaN or None; every row needs a task")
    return sorted(set(values))


def require_data(data, who: str, statistics: bool = False) -> MultiTaskData:
    """``data`` if it is a MultiTaskData (or, with ``statistics=True``, a non-empty
    :class:`TaskStatistics`), else a DataError saying how to build one."""
    if statistics and isinstance(data, TaskStatistics):
        return data.check(who)
    if not isinstance(data, MultiTaskData):
        raise DataError(f"{who} takes a MultiTaskData; got {type(data).__name__}. Build one "
                        "with MultiTaskData.from_arrays(X, y, task) or .from_tasks(...)")
    return data


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

    Input arrays that are already float64 and sorted by task are kept, not copied (as
    read-only views): do not modify them afterwards, since values derived from the rows
    (the per-task moments of the Gaussian fits) are cached on the data object.

    Attributes
    ----------
    X : (N, d) float64
    y : (N,) float64 — targets; for classification in {0, 1}.
    task : (N,) int32 — task index of each row, in [0, m).
    task_names : tuple of m str
    feature_names : tuple of d str
    kind : "regression" or "classification"
    label_values : (negative, positive) original labels for classification, the sorted class
        labels (y holds their codes 0..K-1) for multiclass, else None.
    """

    X: np.ndarray
    y: np.ndarray
    task: np.ndarray
    task_names: tuple
    feature_names: tuple
    kind: str = REGRESSION
    label_values: tuple | None = None
    _offsets: np.ndarray = field(init=False, repr=False)
    #: values derived from the rows once (e.g. the per-task moments of the Gaussian fits);
    #: the arrays are treated as immutable
    _cache: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        counts = np.bincount(self.task, minlength=len(self.task_names))
        object.__setattr__(self, "_offsets", np.concatenate([[0], np.cumsum(counts)]))
        object.__setattr__(self, "_cache", {})

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
            task_names = tuple(_unique_task_ids(task))
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
        source: str = "the DataFrame",
    ) -> MultiTaskData:
        """From a pandas DataFrame with one task column and one target column.

        ``feature_cols`` default to every other column, all numeric. ``kind="auto"``: binary
        classification when the target has exactly two distinct values or is not numeric.
        Missing columns, non-numeric features, missing values and a non-numeric regression
        target raise DataError naming the column (``source`` names the table in messages).
        """
        import pandas as pd

        df = df.rename(columns=str)
        cols = list(df.columns)
        features = (list(feature_cols) if feature_cols is not None
                    else [c for c in cols if c not in (task_col, target_col)])
        for col in (task_col, target_col, *features):
            if col not in cols:
                raise DataError(f"{source} has no column {col!r} (columns: {', '.join(cols)})")
        if not features:
            raise DataError(f"{source}: no feature columns besides {task_col!r} and "
                            f"{target_col!r}")
        bad = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise DataError(f"{source}: feature column(s) {', '.join(map(repr, bad))} are not "
                            "numeric (encode them, or leave them out of the feature columns)")
        missing = [c for c in (task_col, target_col, *features) if df[c].isna().any()]
        if missing:
            raise DataError(f"{source}: missing values in column(s) "
                            f"{', '.join(map(repr, missing))} (drop or impute those rows first)")
        numeric = pd.api.types.is_numeric_dtype(df[target_col])
        if kind == "auto":
            kind = CLASSIFICATION if not numeric or df[target_col].nunique() == 2 else REGRESSION
        y = df[target_col].to_numpy()
        if kind == REGRESSION:
            if not numeric:
                raise DataError(f"{source}: target {target_col!r} is not numeric; use kind "
                                "classification for labels")
            y = y.astype(np.float64)
        return cls.from_arrays(df[features].to_numpy(dtype=np.float64), y,
                               df[task_col].to_numpy(), feature_names=features, kind=kind)

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
            self.X[rows], self.labels()[rows], self.task[rows], self.task_names,
            self.feature_names, self.kind, self.label_values,
        )

    def select_tasks(self, tasks) -> MultiTaskData:
        """The data of some tasks only (names or indices, in the given order)."""
        index = [t if isinstance(t, (int, np.integer)) else self.task_index([t])[0]
                 for t in tasks]
        if not index:
            raise EmptyTaskError("select_tasks needs at least one task")
        if len(set(index)) != len(index) or min(index) < 0 or max(index) >= self.n_tasks:
            raise ShapeMismatchError(f"task indices must be distinct and in [0, {self.n_tasks})"
                                     f"; got {index}")
        rows = np.concatenate([np.arange(self.task_slice(i).start, self.task_slice(i).stop)
                               for i in index])
        remap = np.full(self.n_tasks, -1)
        remap[index] = np.arange(len(index))
        return _validated(self.X[rows], self.labels()[rows], remap[self.task[rows]],
                          tuple(self.task_names[i] for i in index), self.feature_names,
                          self.kind, self.label_values)

    def labels(self) -> np.ndarray:
        """(N,) targets in the user's coding (class labels for the classification kinds)."""
        if self.kind == REGRESSION:
            return self.y
        return np.asarray(self.label_values)[self.y.astype(int)]

    @property
    def n_classes(self) -> int:
        """Number of classes (2 for binary classification; 0 for regression)."""
        return 0 if self.label_values is None else len(self.label_values)

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


# ----------------------------------------------------------------------------- statistics


class TaskStatistics:
    """Regression data of m tasks reduced to their sufficient statistics, built chunk by chunk.

    For the Gaussian likelihood the per-task moments x̃ᵀx̃ (x̃ = (x, 1)), x̃ᵀy and yᵀy
    determine the log-likelihood of every (W, b) up to nothing (see
    :mod:`bayesmtl.inference.stats`), so rows can be streamed from disk or a database in
    chunks of any size and dropped: memory is O(m d²), whatever the number of rows. Fit with
    ``methods.fit(stats, name, hyper)`` (MAP) for the methods whose ``Method.statistics`` is
    True; CV, sampling and the estimators need the rows (a :class:`MultiTaskData`).

    ``add`` validates each chunk like :class:`MultiTaskData` does (finite, shapes, known
    tasks); fitting raises :class:`EmptyTaskError` for a task that never got a row. Scale
    the features before adding them (the moments of standardised features cannot be had from
    the raw ones without their means and scales).

    Attributes
    ----------
    task_names : tuple of m str; feature_names : tuple of d str
    moments : :class:`~bayesmtl.inference.stats.TaskMoments` — gram (m, d+1, d+1),
        cross (m, d+1), yy (m,)
    kind : always "regression"
    """

    kind = REGRESSION

    def __init__(self, task_names: Sequence, n_features: int | None = None,
                 feature_names: Sequence[str] | None = None):
        from .inference.stats import TaskMoments

        names = tuple(str(t) for t in task_names)
        if not names:
            raise EmptyTaskError("no tasks given")
        if len(set(names)) != len(names):
            raise ValueError("task names must be unique")
        if feature_names is None:
            if n_features is None or isinstance(n_features, bool) or int(n_features) < 1:
                raise ShapeMismatchError(f"give feature_names or n_features ≥ 1; got "
                                         f"n_features={n_features!r}")
            feature_names = tuple(f"x{j}" for j in range(int(n_features)))
        feature_names = tuple(str(f) for f in feature_names)
        if n_features is not None and len(feature_names) != n_features:
            raise ShapeMismatchError(f"{len(feature_names)} feature names for {n_features} "
                                     f"features")
        self.task_names, self.feature_names = names, feature_names
        self.moments = TaskMoments.zeros(len(names), len(feature_names))
        self._lookup = {t: i for i, t in enumerate(names)}
        self._cache = {}

    @classmethod
    def from_chunks(cls, chunks, task_names: Sequence, feature_names=None,
                    n_features: int | None = None) -> TaskStatistics:
        """Accumulate an iterable of ``(X (n, d), y (n,), task (n,))`` chunks (task labels
        as in ``task_names``); ``n_features`` defaults to the first chunk's width."""
        stats = None
        for X, y, task in chunks:
            if stats is None:  # the width: n_features, else the first chunk's (feature_names win)
                width = None if feature_names is not None else (
                    n_features if n_features is not None
                    else (np.shape(X)[1] if np.ndim(X) == 2 else None))
                stats = cls(task_names, width, feature_names)
            stats.add(X, y, task)
        if stats is None:
            raise EmptyTaskError("no chunks given")
        return stats

    @classmethod
    def from_data(cls, data: MultiTaskData) -> TaskStatistics:
        """The statistics of a regression :class:`MultiTaskData` (one pass over its rows)."""
        from .inference.stats import task_moments

        require_data(data, "TaskStatistics.from_data")
        if data.kind != REGRESSION:
            raise DataError(f"sufficient statistics determine the Gaussian likelihood only; "
                            f"got {data.kind} data")
        stats = cls(data.task_names, feature_names=data.feature_names)
        stats.moments = type(stats.moments)(*(a.copy() for a in task_moments(data)))
        return stats

    def add(self, X, y, task) -> TaskStatistics:
        """Add a chunk of rows: X (n, d), y (n,), task (n,) labels from ``task_names``.
        Returns self (the moments are accumulated in place)."""
        X, y, task = np.asarray(X), np.asarray(y), np.asarray(task)
        d = self.n_features
        if X.ndim != 2 or X.shape[1] != d:
            raise ShapeMismatchError(f"X must have shape (n, {d}); got {X.shape}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or task.ndim != 1 or not len(X) == len(y) == len(task):
            raise ShapeMismatchError(f"X, y and task must be (n, d), (n,), (n,) with one n; "
                                     f"got {X.shape}, {y.shape}, {task.shape}")
        try:
            X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(f"X and y must be numeric: {err}") from None
        labels, inverse = np.unique(task.astype(str), return_inverse=True)
        unknown = [t for t in labels.tolist() if t not in self._lookup]
        if unknown:
            raise UnknownTaskError(f"task label {unknown[0]!r} is not in task_names")
        index = np.array([self._lookup[t] for t in labels.tolist()], np.int64)[inverse]
        from .inference.stats import accumulate

        _check_finite("X", X, self.task_names, index)
        _check_finite("y", y, self.task_names, index)
        accumulate(self.moments, X, y, index)
        self._cache.clear()
        return self

    def merge(self, other: TaskStatistics) -> TaskStatistics:
        """Add another TaskStatistics of the same tasks and features (e.g. a shard of the
        rows accumulated elsewhere) into this one; returns self."""
        if not isinstance(other, TaskStatistics):
            raise DataError(f"merge takes a TaskStatistics; got {type(other).__name__}")
        if other.task_names != self.task_names or other.feature_names != self.feature_names:
            raise ShapeMismatchError("merge needs the same task names and feature names, in "
                                     "the same order")
        for mine, theirs in zip(self.moments, other.moments, strict=True):
            mine += theirs
        self._cache.clear()
        return self

    def save(self, path) -> None:
        """Write the statistics to a folder (JSON + npz, atomically; no pickle)."""
        from .io import write_model

        write_model(path, {"kind": "task_statistics", "task_names": list(self.task_names),
                           "feature_names": list(self.feature_names), "params": {}},
                    dict(zip(("gram", "cross", "yy"), self.moments, strict=True)))

    @classmethod
    def load(cls, path) -> TaskStatistics:
        """Statistics written by :meth:`save`; a missing, corrupt or foreign folder raises
        :class:`~bayesmtl.errors.ModelFileError`."""
        from .errors import ModelFileError
        from .io import read_model

        meta, arrays = read_model(path)
        if meta.get("kind") != "task_statistics" or set(arrays) != {"gram", "cross", "yy"}:
            raise ModelFileError(f"{path} does not hold TaskStatistics")
        stats = cls(meta["task_names"], feature_names=meta["feature_names"])
        m, d = stats.n_tasks, stats.n_features
        shapes = [(m, d + 1, d + 1), (m, d + 1), (m,)]
        loaded = [arrays[k] for k in ("gram", "cross", "yy")]
        if [a.shape for a in loaded] != shapes or not all(np.all(np.isfinite(a))
                                                          for a in loaded):
            raise ModelFileError(f"{path}: the moments do not match {m} tasks × {d} features "
                                 "or are not finite")
        stats.moments = type(stats.moments)(*(a.astype(np.float64) for a in loaded))
        return stats

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_per_task(self) -> np.ndarray:
        """(m,) rows added to each task."""
        return np.rint(self.moments.counts).astype(np.int64)

    def check(self, who: str) -> TaskStatistics:
        """Self, or :class:`EmptyTaskError` naming the tasks without rows."""
        empty = np.flatnonzero(self.n_per_task == 0)
        if empty.size:
            names = ", ".join(self.task_names[i] for i in empty[:10])
            raise EmptyTaskError(f"{who}: task(s) with no rows: {names}")
        return self

    def __repr__(self):
        n = self.n_per_task
        return (f"TaskStatistics({self.n_tasks} tasks, {int(n.sum())} rows, "
                f"{self.n_features} features, n_i in [{n.min()}, {n.max()}])")


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
