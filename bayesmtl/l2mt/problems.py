"""Random multitask problems for L2MT's experience (Zhang, Wei & Yang 2018, Section 4).

A problem has m ~ U{4, …, 8} binary tasks, each "class a vs class b" for a distinct class pair
drawn from one pool of 10-class digits (45 pairs per pool):

========  ===================================================================================
``mnist``  bundled ``digits_mnist.npz`` (PCA to 87 dims), all 2000 rows of its three splits
``usps``   bundled ``digits_usps.npz`` (PCA to 64 dims), 2000 rows
``digits`` scikit-learn's bundled 8x8 digits (64 pixels), 1797 rows
========  ===================================================================================

Pool rows are the concatenation train, valid, test of the bundled split (scikit-learn: its
own order); classes are the digits 0–9 (the bundled files' labels 1–10 minus one). Features
are standardised per pool (mean and scale over all of its rows; a constant column keeps
scale 1).

Each task takes exactly ``per_class`` rows of each of its two classes (without replacement;
tasks of one problem may share rows of a shared class) and splits them per class into fixed
counts ``round(f_train·per_class)``, ``round(f_valid·per_class)`` and the rest for testing,
so every problem with the same pool and m has the same array shapes (JAX compiles once per
shape). ``y = 1`` for class ``a``; the orientation of each pair is random.

Everything is a function of ``(seed, stream, index)`` through
``np.random.SeedSequence(seed, spawn_key=(STREAMS[stream], index))``: any worker rebuilds the
same problem from its :class:`ProblemSpec`. ``stream="train"`` and ``stream="test"`` enter the
spawn key, so L2MT's training and test problems never share a random stream, whatever the
seeds and indices (they do share the pools' images, as in the paper, where both sets are
drawn from one data set).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import combinations
from typing import NamedTuple

import numpy as np

from ..data import CLASSIFICATION, MultiTaskData
from ..errors import DataError, HyperparameterError

__all__ = ["POOLS", "STREAMS", "Pool", "ProblemSpec", "Problem", "load_pool", "sample_spec",
           "build_problem", "split_counts"]

POOLS = ("mnist", "usps", "digits")
#: stream name → its entry in the SeedSequence spawn key (train and test never collide)
STREAMS = {"train": 0, "test": 1}


# ----------------------------------------------------------------------------- pools


@dataclass(frozen=True, eq=False)
class Pool:
    """A standardised 10-class pool: X (N, d), labels (N,) int in 0..9, mean and scale (d,)
    (X = (raw - mean) / scale), classes (10,) and rows_of[c] the pool rows of class c."""

    name: str
    X: np.ndarray
    labels: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @property
    def classes(self) -> tuple:
        return tuple(int(c) for c in np.unique(self.labels))

    @property
    def pairs(self) -> tuple:
        """The 45 unordered class pairs (a, b), a < b."""
        return tuple(combinations(self.classes, 2))

    def rows_of(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.labels == c)


def _raw_pool(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name in ("mnist", "usps"):
        from ..datasets import _npz

        raw = _npz(f"digits_{name}.npz")
        X = np.concatenate([raw[f"{p}x"] for p in ("train", "valid", "test")])
        y = np.concatenate([raw[f"{p}y"].ravel() for p in ("train", "valid", "test")])
        return X.astype(np.float64), y.astype(np.int64) - 1
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float64), y.astype(np.int64)


@functools.cache
def load_pool(name: str) -> Pool:
    """The standardised pool ``name`` (one of :data:`POOLS`; cached per process)."""
    if name not in POOLS:
        raise HyperparameterError(f"pool must be one of {POOLS}; got {name!r}", "pools", name)
    X, labels = _raw_pool(name)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    X = (X - mean) / scale
    X.setflags(write=False)
    labels.setflags(write=False)
    return Pool(name, X, labels, mean, scale)


# ----------------------------------------------------------------------------- specs


def split_counts(per_class: int, fractions=(0.3, 0.3)) -> tuple[int, int, int]:
    """Rows per class in (train, valid, test): round(f·per_class) for the first two, the rest
    for testing; each at least 1."""
    f_train, f_valid = (float(f) for f in fractions)
    n_train, n_valid = round(f_train * per_class), round(f_valid * per_class)
    n_test = per_class - n_train - n_valid
    if min(n_train, n_valid, n_test) < 1:
        raise HyperparameterError(
            f"fractions {tuple(fractions)} of per_class = {per_class} leave a split without "
            f"rows (train {n_train}, valid {n_valid}, test {n_test})", "fractions", fractions)
    return n_train, n_valid, n_test


@dataclass(frozen=True)
class ProblemSpec:
    """A multitask problem as pool row indices (JSON-serialisable via :meth:`to_dict`).

    pool : the pool's name. pairs : m pairs (a, b), task i is "a vs b" with y = 1 for a.
    train, valid, test : per task a tuple of pool rows (class a's rows first), lengths
    2·n_train, 2·n_valid, 2·n_test of :func:`split_counts`.
    seed, stream, index, per_class, fractions : how it was drawn (provenance).
    """

    pool: str
    pairs: tuple
    train: tuple
    valid: tuple
    test: tuple
    seed: int
    stream: str
    index: int
    per_class: int
    fractions: tuple

    def __repr__(self) -> str:  # the row indices would drown the identity
        return (f"ProblemSpec(stream={self.stream!r}, seed={self.seed}, index={self.index}, "
                f"pool={self.pool!r}, pairs={self.pairs})")

    @property
    def m(self) -> int:
        return len(self.pairs)

    @property
    def task_names(self) -> tuple:
        return tuple(f"{self.pool} {a}v{b}" for a, b in self.pairs)

    def to_dict(self) -> dict:
        """Plain lists and numbers (``json.dumps``-able)."""
        return {"pool": self.pool, "pairs": [list(p) for p in self.pairs],
                "train": [list(r) for r in self.train], "valid": [list(r) for r in self.valid],
                "test": [list(r) for r in self.test], "seed": self.seed, "stream": self.stream,
                "index": self.index, "per_class": self.per_class,
                "fractions": list(self.fractions)}

    @classmethod
    def from_dict(cls, d: dict) -> ProblemSpec:
        def rows(key):
            return tuple(tuple(int(i) for i in r) for r in d[key])

        return cls(pool=str(d["pool"]), pairs=tuple(tuple(int(c) for c in p) for p in d["pairs"]),
                   train=rows("train"), valid=rows("valid"), test=rows("test"),
                   seed=int(d["seed"]), stream=str(d["stream"]), index=int(d["index"]),
                   per_class=int(d["per_class"]),
                   fractions=tuple(float(f) for f in d["fractions"]))


class Problem(NamedTuple):
    """A built problem: its spec and binary-classification MultiTaskData per split (m tasks
    named ``spec.task_names``; train/valid/test rows per task 2·n_train/2·n_valid/2·n_test)."""

    spec: ProblemSpec
    train: MultiTaskData
    valid: MultiTaskData
    test: MultiTaskData


def problem_rng(seed: int, index: int, stream: str = "train") -> np.random.Generator:
    """The generator of problem ``index`` of ``stream`` (see the module docstring)."""
    if stream not in STREAMS:
        raise HyperparameterError(f"stream must be one of {tuple(STREAMS)}; got {stream!r}",
                                  "stream", stream)
    if int(seed) < 0 or int(index) < 0:
        raise HyperparameterError(f"seed and index must be ≥ 0; got {seed}, {index}", "seed",
                                  seed)
    return np.random.default_rng(
        np.random.SeedSequence(int(seed), spawn_key=(STREAMS[stream], int(index))))


def sample_spec(seed: int, index: int, *, stream: str = "train", pools=POOLS,
                m_range=(4, 8), per_class: int = 160, fractions=(0.3, 0.3)) -> ProblemSpec:
    """Draw problem ``index`` of ``stream``: a pool uniformly from ``pools``, m uniformly from
    ``m_range`` (inclusive), m distinct class pairs with random orientation, and per task
    ``per_class`` rows of each class split into fixed counts (:func:`split_counts`)."""
    pools = tuple(pools)
    if not pools:
        raise HyperparameterError("pools must name at least one pool", "pools", pools)
    lo, hi = (int(v) for v in m_range)
    if not 1 <= lo <= hi:
        raise HyperparameterError(f"m_range must be (low, high) with 1 ≤ low ≤ high; got "
                                  f"{tuple(m_range)}", "m_range", m_range)
    per_class = int(per_class)
    n_train, n_valid, _ = split_counts(per_class, fractions)
    rng = problem_rng(seed, index, stream)
    pool = load_pool(pools[int(rng.integers(len(pools)))])
    all_pairs = pool.pairs
    if hi > len(all_pairs):
        raise HyperparameterError(f"m_range {tuple(m_range)} exceeds the {len(all_pairs)} class "
                                  f"pairs of pool {pool.name!r}", "m_range", m_range)
    smallest = min(len(pool.rows_of(c)) for c in pool.classes)
    if per_class > smallest:
        raise DataError(f"per_class = {per_class} exceeds the smallest class of pool "
                        f"{pool.name!r} ({smallest} rows)")
    m = int(rng.integers(lo, hi + 1))
    chosen = rng.choice(len(all_pairs), size=m, replace=False)
    flips = rng.integers(2, size=m)
    pairs, splits = [], ([], [], [])
    for k, flip in zip(chosen, flips, strict=True):
        a, b = all_pairs[int(k)]
        a, b = (b, a) if flip else (a, b)
        pairs.append((a, b))
        parts = ([], [], [])
        for c in (a, b):
            rows = rng.choice(pool.rows_of(c), size=per_class, replace=False)
            cuts = np.split(rows, [n_train, n_train + n_valid])
            for part, cut in zip(parts, cuts, strict=True):
                part.extend(int(r) for r in cut)
        for split, part in zip(splits, parts, strict=True):
            split.append(tuple(part))
    return ProblemSpec(pool=pool.name, pairs=tuple(pairs), train=tuple(splits[0]),
                       valid=tuple(splits[1]), test=tuple(splits[2]), seed=int(seed),
                       stream=stream, index=int(index), per_class=per_class,
                       fractions=tuple(float(f) for f in fractions))


def _split_data(pool: Pool, spec: ProblemSpec, rows_per_task) -> MultiTaskData:
    tasks = []
    for (a, _), rows in zip(spec.pairs, rows_per_task, strict=True):
        rows = np.asarray(rows, dtype=np.int64)
        tasks.append((pool.X[rows], (pool.labels[rows] == a).astype(np.float64)))
    return MultiTaskData.from_tasks(tasks, task_names=spec.task_names, kind=CLASSIFICATION)


def build_problem(spec: ProblemSpec) -> Problem:
    """The train/valid/test :class:`MultiTaskData` of ``spec`` (deterministic)."""
    pool = load_pool(spec.pool)
    return Problem(spec, *(_split_data(pool, spec, rows)
                           for rows in (spec.train, spec.valid, spec.test)))
