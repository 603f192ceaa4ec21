r"""The data term of a MAP fit, in the form its solvers need: sufficient statistics for the
Gaussian likelihood, the rows for the logistic one.

With the Gaussian likelihood the weighted data loss of task i is a quadratic in
θ_i = (w_i, b_i) (D = d + 1 coefficients, or D = d without intercept),

    L(W, b) = Σ_i ½ θ_iᵀ H_i θ_i - r_iᵀ θ_i + c,
    H_i = Σ_{j∈i} c_j x̃_j x̃_jᵀ,  r_i = Σ_{j∈i} c_j y_j x̃_j,  c = ½ Σ_j c_j y_j²,

with x̃ = (x, 1) and c_j = w_j / σ² (w_j the loss-scale weight: 1 or 1/n_i). The rows are
touched once (:func:`task_moments`, O(N d²) flops, one task's rows at a time, cached on the
data object); every W-step, ADMM iteration and objective after that costs O(m d²),
independent of the number of rows, and compiles for the shapes (m, D) only, so folds and
bootstrap resamples of the same tasks reuse the compiled solvers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..data import CLASSIFICATION, MultiTaskData, TaskStatistics
from ..errors import UnknownTaskError
from ..models.likelihoods import PAPER_SQUARED_LOSS_NOISE
from ..models.losses import linear_predictor, task_loss_weights

__all__ = ["TaskMoments", "accumulate", "task_moments", "GaussianTerm", "LogisticTerm", "data_term",
           "data_loss", "bucket_size", "padded_rows", "resolve_noise"]


class TaskMoments(NamedTuple):
    """Unweighted per-task moments of the augmented rows x̃ = (x, 1).

    gram (m, d+1, d+1) = Σ_j x̃x̃ᵀ, cross (m, d+1) = Σ_j y_j x̃, yy (m,) = Σ_j y_j²; the row
    count n_i is gram[i, d, d].
    """

    gram: np.ndarray
    cross: np.ndarray
    yy: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return self.gram[:, -1, -1]

    @classmethod
    def zeros(cls, m: int, d: int) -> TaskMoments:
        return cls(np.zeros((m, d + 1, d + 1)), np.zeros((m, d + 1)), np.zeros(m))

    def update(self, X, y, task) -> TaskMoments:
        """These moments plus those of a chunk of rows (X (n, d), y (n,), task (n,) indices in
        [0, m)): for data streamed in chunks that do not fit in memory together."""
        out = TaskMoments(*(a.copy() for a in self))
        accumulate(out, X, y, task)
        return out


def accumulate(moments: TaskMoments, X, y, task) -> None:
    """Add the moments of a chunk of rows (X (n, d), y (n,), task (n,) indices in [0, m)) to
    ``moments`` in place (rows are sorted by task first unless they already are)."""
    X, y, task = np.asarray(X, np.float64), np.asarray(y, np.float64), np.asarray(task)
    if np.any(task[1:] < task[:-1]):
        order = np.argsort(task, kind="stable")
        X, y, task = X[order], y[order], task[order]
    m = moments.gram.shape[0]
    if not len(task):
        return
    if not (0 <= task[0] and task[-1] < m):  # sorted: the ends bound the rest
        raise UnknownTaskError(f"task indices must lie in [0, {m}); got {task[0]} … {task[-1]}")
    first, last = int(task[0]), int(task[-1]) + 1  # only the chunk's range of tasks
    chunk = _as_moments(_segment_moments(X, y, np.searchsorted(task, np.arange(first, last + 1))))
    for mine, theirs in zip(moments, chunk, strict=True):
        mine[first:last] += theirs


#: rows per block of :func:`_segment_moments` (bounds the temporary copy with the ones column:
#: 13 MB at d = 100, where 65,536 rows per block were slower, 0.51–0.75 s against 0.46–0.50 s
#: for 10⁶ rows)
_BLOCK_ROWS = 16384


def _segment_moments(X, y, offsets):
    """(m, d+2, d+2): Σ z zᵀ over the rows ``offsets[i]:offsets[i+1]`` of each task i, with
    z = (x, 1, y), for rows sorted by task (X (N, d), y (N,), offsets (m+1,) nondecreasing).

    The rows are copied into Z = (X, 1, y) in blocks of ``_BLOCK_ROWS`` (the copy stays
    bounded), and each task's part of a block is one BLAS product ZᵢᵀZᵢ."""
    N, d = X.shape
    offsets = [int(o) for o in offsets]
    total = np.zeros((len(offsets) - 1, d + 2, d + 2))
    buffer = np.empty((min(_BLOCK_ROWS, N), d + 2))  # one for all blocks: a fresh one per
    buffer[:, d] = 1.0  # block cost 0.4 s of page faults at 10⁶ × 100 rows
    task = 0
    for lo in range(0, N, _BLOCK_ROWS):
        hi = min(lo + _BLOCK_ROWS, N)
        Z = buffer[:hi - lo]
        Z[:, :d], Z[:, d + 1] = X[lo:hi], y[lo:hi]
        while task < len(offsets) - 1 and offsets[task] < hi:
            a, b = max(offsets[task], lo) - lo, min(offsets[task + 1], hi) - lo
            if b > a:
                Zi = Z[a:b]
                total[task] += Zi.T @ Zi
            if offsets[task + 1] > hi:  # the task goes on in the next block
                break
            task += 1
    return total


def _as_moments(total) -> TaskMoments:
    """The :class:`TaskMoments` in :func:`_segment_moments`' products (m, d+2, d+2), as views:
    x̃ᵀx̃ is the leading (d+1) block, x̃ᵀy the next column, yᵀy the last entry."""
    D = total.shape[1] - 1
    return TaskMoments(total[:, :D, :D], total[:, :D, D], total[:, D, D])


def task_moments(data: MultiTaskData) -> TaskMoments:
    """The per-task moments of ``data`` (rows sorted by task, as MultiTaskData keeps them),
    computed once per data object and cached on it; a
    :class:`~bayesmtl.data.TaskStatistics` holds them already."""
    if isinstance(data, TaskStatistics):
        return data.moments
    cache = data._cache
    if "moments" not in cache:
        m, d = data.n_tasks, data.n_features
        if np.all(np.diff(data.task) >= 0):
            offsets = np.concatenate([[0], np.cumsum(data.n_per_task)])
            # views of the one (m, d+2, d+2) array: no second copy of the moments
            moments = _as_moments(_segment_moments(np.asarray(data.X, np.float64),
                                                   np.asarray(data.y, np.float64), offsets))
        else:
            moments = TaskMoments.zeros(m, d)
            accumulate(moments, data.X, data.y, data.task)
        cache["moments"] = moments
    return cache["moments"]


def bucket_size(n: int) -> int:
    """The smallest 2^k·(1 + j/8) ≥ n (j = 0..7): row counts rounded up by ≤ 12.5 %, so the
    folds and resamples of one data set share a few shapes (and compiled objectives)."""
    if n <= 16:
        return max(n, 1)
    k = n.bit_length() - 4  # n < 2^(k+4)
    step = 1 << k
    return -(-n // step) * step


def padded_rows(X, y, task, weights, fill=0.0):
    """(X, y, task, weights) as JAX arrays padded to :func:`bucket_size` rows: x = 0, y = 0,
    task 0 and weight ``fill`` (no likelihood term at 0)."""
    pad = bucket_size(len(y)) - len(y)
    return (jnp.pad(X, ((0, pad), (0, 0))), jnp.pad(y, (0, pad)), jnp.pad(task, (0, pad)),
            jnp.pad(weights, (0, pad), constant_values=fill))


class GaussianTerm(NamedTuple):
    """The Gaussian data loss Σ_i ½θ_iᵀH_iθ_i - r_iᵀθ_i + const (module docstring): H (m, D, D),
    rhs (m, D), const (), with the loss-scale weights and 1/σ² applied. A pytree."""

    H: jnp.ndarray
    rhs: jnp.ndarray
    const: jnp.ndarray


class LogisticTerm(NamedTuple):
    """The weighted logistic loss on the rows: X (N, d), y (N,) in {0, 1}, task (N,),
    weights (N,); N padded to :func:`bucket_size` with weight-0 rows. A pytree."""

    X: jnp.ndarray
    y: jnp.ndarray
    task: jnp.ndarray
    weights: jnp.ndarray


def gaussian_term(moments: TaskMoments, task_weights, noise: float,
                  fit_intercept: bool = True) -> GaussianTerm:
    """The :class:`GaussianTerm` of moments with per-task loss weights (m,) and Gaussian σ."""
    c = np.asarray(task_weights, dtype=np.float64) / noise**2
    gram, cross = moments.gram, moments.cross
    if not fit_intercept:
        gram, cross = gram[:, :-1, :-1], cross[:, :-1]
    # scaled on the host: one transfer per array instead of a dispatch per operation
    return GaussianTerm(jnp.asarray(gram * c[:, None, None]), jnp.asarray(cross * c[:, None]),
                        jnp.asarray(0.5 * c @ moments.yy))


def resolve_noise(noise) -> float:
    """σ of the Gaussian likelihood (default 1/√2: the squared loss (y - f)²)."""
    noise = PAPER_SQUARED_LOSS_NOISE if noise is None else noise
    if not noise > 0:
        raise ValueError(f"noise must be positive; got {noise}")
    return float(noise)


def data_term(data: MultiTaskData, loss_scale: str = "mean", noise=None,
              fit_intercept: bool = True) -> GaussianTerm | LogisticTerm:
    """The data term of ``data``: :class:`GaussianTerm` for regression (from the cached
    :func:`task_moments`), :class:`LogisticTerm` (the rows) for binary classification."""
    noise = resolve_noise(noise)
    weights = task_loss_weights(data.n_per_task, loss_scale)
    if data.kind == CLASSIFICATION:  # rows padded to a bucket, weight 0: folds share shapes
        return LogisticTerm(*padded_rows(data.X, data.y, data.task, weights[data.task]))
    key = ("gaussian_term", loss_scale, noise, fit_intercept)
    if key not in data._cache:  # the last one only: a λ grid reuses it, nothing piles up
        for old in [k for k in data._cache if isinstance(k, tuple) and k[0] == "gaussian_term"]:
            del data._cache[old]
        data._cache[key] = gaussian_term(task_moments(data), weights, noise, fit_intercept)
    return data._cache[key]


def stacked_parameters(term: GaussianTerm, W, b):
    """θ (m, D) of a :class:`GaussianTerm`'s blocks: rows (w_i, b_i), or w_i for a term
    without intercept (D = d; b ignored)."""
    return W.T if term.H.shape[-1] == W.shape[0] else jnp.concatenate([W.T, b[:, None]], axis=1)


def data_loss(term, W, b):
    """The data loss L(W, b) (W (d, m), b (m,)) of a :class:`GaussianTerm` or
    :class:`LogisticTerm`; a Gaussian term without intercept ignores b."""
    if isinstance(term, GaussianTerm):
        theta = stacked_parameters(term, W, b)
        return (0.5 * jnp.einsum("mi,mij,mj->", theta, term.H, theta)
                - jnp.sum(term.rhs * theta) + term.const)
    f = linear_predictor(term.X, term.task, W, b)
    return jnp.sum(term.weights * jnp.logaddexp(0.0, -(2.0 * term.y - 1.0) * f))

