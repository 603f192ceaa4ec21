r"""Covariance alignment (Algorithm 1 of Wu, Zhang & Ré): a matrix R_i per task before a
fixed shared module B; minimise over the R_i and the heads A_i.

Task i's input X_i (n_i, d) enters the shared module as Z_i = X_i R_i, so its prediction is

    f_i(x) = g(x̃ᵀ R_i B + c) A_i + b_i,      x̃ = (x - x̄) / s,  g = identity or ReLU,

with the shared module (B (d, r), c (r,), g, x̄, s) fixed (:class:`SharedModule`: from a linear
shared-subspace fit, :func:`linear_module`, or from the ReLU layer of a deep network,
:func:`module_from_deep`). MAP of the generative reading

    R_i ~ MN(I_d, I_d, I_d / μ)      (each R_i centred at "no alignment")
    A_i ~ N(0, λ⁻¹ I_r),  b_i flat,  y_ij ~ N(f_i(x_ij), 1/2) or Bernoulli(sigmoid f_i(x_ij))

with each task's log-likelihood tempered by s_i (1/n_i: the per-task mean loss) minimises

    Σ_i s_i Σ_j ℓ(f_i(x_ij), y_ij) + (μ/2) Σ_i ‖R_i - I‖²_F + (λ/2) ‖A‖²_F,

ℓ the squared or the logistic loss. Algorithm 1 starts from R_i = I: first the heads with
R_i = I (convex; ``align=False`` stops here — the "no alignment" baseline with the same B),
then R and the heads jointly, by full-batch L-BFGS in float64 (torch).

The prior matters: R_i B A_i ranges over all of R^d (and R_i B over every d × r matrix), so
with μ → 0 every task fits its own model and no information is transferred; μ says how far
a task's coordinates may be from the shared ones.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..data import CLASSIFICATION, REGRESSION, MultiTaskData, check_features, task_index
from ..errors import DataError, HyperparameterError, ShapeMismatchError

__all__ = ["SharedModule", "AlignedModel", "linear_module", "module_from_deep", "align"]

ACTIVATIONS = ("identity", "relu")


class SharedModule(NamedTuple):
    """A fixed shared module x ↦ g(((x - x_mean) / x_scale)ᵀ R B + bias).

    B (d, r); bias (r,); activation "identity" or "relu"; x_mean, x_scale (d,).
    """

    B: np.ndarray
    bias: np.ndarray
    activation: str
    x_mean: np.ndarray
    x_scale: np.ndarray

    @property
    def n_features(self) -> int:
        return self.B.shape[0]


def linear_module(B) -> SharedModule:
    """The linear shared module B (d, r) of a shared-subspace fit (its ``relation["B"]``)."""
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2:
        raise ShapeMismatchError(f"B must be (d, r); got shape {B.shape}")
    d, r = B.shape
    return SharedModule(B, np.zeros(r), "identity", np.zeros(d), np.ones(d))


def module_from_deep(result) -> SharedModule:
    """The ReLU layer relu(W1 x̃ + b1) of a MAP :class:`~bayesmtl.deep.DeepResult` (``hidden``
    = r > 0), with the network's own feature standardisation."""
    if result.values is None or "trunk.weight" not in result.values:
        raise HyperparameterError("module_from_deep needs a MAP fit (inference='map') of a "
                                  "network with a shared layer (hidden > 0)", "result", None)
    W1 = result.values["trunk.weight"].detach().double().cpu().numpy()
    b1 = result.values["trunk.bias"].detach().double().cpu().numpy()
    return SharedModule(W1.T.copy(), b1, "relu", result.x_mean.astype(np.float64),
                        result.x_scale.astype(np.float64))


class AlignedModel(NamedTuple):
    """Algorithm 1's result: module (fixed), R (m, d, d), A (r, m), b (m,), kind, objective
    (the MAP objective above), n_iter (L-BFGS iterations), converged, grad_norm (max |∂F|
    at the end), task_names."""

    module: SharedModule
    R: np.ndarray
    A: np.ndarray
    b: np.ndarray
    kind: str
    objective: float
    n_iter: int
    converged: bool
    grad_norm: float
    task_names: tuple

    def decision_function(self, X, task) -> np.ndarray:
        """(n,) f_i(x) for rows X (n, d) of tasks ``task`` (names or indices)."""
        import torch

        X = check_features(X, self.module.n_features)
        idx = _task_idx(self.task_names, task, len(X))
        with torch.no_grad():
            f = _forward(_tensors(self, X), torch.as_tensor(idx), torch.as_tensor(self.R),
                         torch.as_tensor(self.A), torch.as_tensor(self.b), self.module)
        return f.numpy()

    def predict(self, X, task) -> np.ndarray:
        """(n,) means (regression) or P(y = 1) (classification)."""
        f = self.decision_function(X, task)
        return f if self.kind == REGRESSION else 1.0 / (1.0 + np.exp(-f))


def _task_idx(names, task, n):
    task = np.asarray(task)
    idx = task if task.dtype.kind in "iu" else task_index(names, task)
    if idx.shape != (n,):
        raise ShapeMismatchError(f"task must hold one label per row ({n}); got {idx.shape}")
    return idx


def _tensors(model_or_module, X):
    import torch

    module = getattr(model_or_module, "module", model_or_module)
    return torch.as_tensor((X - module.x_mean) / module.x_scale, dtype=torch.float64)


def _forward(X, task, R, A, b, module):
    """(n,) f(x) = g(x̃ᵀ R_t B + c) A_t + b_t for standardised rows X (n, d)."""
    import torch

    B = torch.as_tensor(module.B, dtype=torch.float64)
    c = torch.as_tensor(module.bias, dtype=torch.float64)
    f = torch.empty(len(X), dtype=torch.float64)
    for i in torch.unique(task).tolist():
        rows = task == i
        Z = X[rows] @ R[i] @ B + c
        if module.activation == "relu":
            Z = torch.relu(Z)
        f[rows] = Z @ A[:, i] + b[i]
    return f


def _check(data, module, mu, lam, loss_scale):
    if not isinstance(data, MultiTaskData):
        raise DataError(f"data must be a MultiTaskData; got {type(data).__name__}")
    if data.kind not in (REGRESSION, CLASSIFICATION):
        raise DataError(f"alignment fits regression or binary classification tasks; got "
                        f"{data.kind} data")
    if module.n_features != data.n_features:
        raise ShapeMismatchError(f"the shared module takes d = {module.n_features} features but "
                                 f"the data have d = {data.n_features}")
    if module.activation not in ACTIVATIONS:
        raise HyperparameterError(f"activation must be one of {ACTIVATIONS}; got "
                                  f"{module.activation!r}", "activation", module.activation)
    for name, value, low_open in (("mu", mu, True), ("lam", lam, False)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not np.isfinite(value) or (value <= 0 if low_open else value < 0):
            raise HyperparameterError(f"{name} must be a finite number "
                                      f"{'> 0' if low_open else '≥ 0'}; got {value!r}",
                                      name, value)
    if loss_scale not in ("mean", "sum"):
        raise HyperparameterError(f"loss_scale must be 'mean' or 'sum'; got {loss_scale!r}",
                                  "loss_scale", loss_scale)


def align(data: MultiTaskData, module: SharedModule, *, align: bool = True, mu: float = 1.0,
          lam: float = 1e-3, loss_scale: str = "mean", max_iter: int = 500,
          tol: float = 1e-9) -> AlignedModel:
    """Algorithm 1 on ``data`` with the fixed shared ``module`` (module docstring).

    align : False keeps R_i = I (heads only: the baseline). mu : μ > 0, precision of R_i's
    prior around I. lam : λ ≥ 0, precision of the heads' prior. loss_scale : "mean" (s_i =
    1/n_i) or "sum". max_iter, tol : L-BFGS iterations per stage and its gradient tolerance.
    """
    import torch

    _check(data, module, mu, lam, loss_scale)
    m, d, r = data.n_tasks, data.n_features, module.B.shape[1]
    X = _tensors(module, data.X)
    task = torch.as_tensor(data.task, dtype=torch.long)
    y = torch.as_tensor(data.y, dtype=torch.float64)
    scale = 1.0 / data.n_per_task if loss_scale == "mean" else np.ones(m)
    w = torch.as_tensor(scale[data.task], dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    R = eye.repeat(m, 1, 1).requires_grad_(align)
    A = torch.zeros((r, m), dtype=torch.float64, requires_grad=True)
    means = np.array([yi.mean() for _, yi in data.tasks()])
    b = torch.as_tensor(means if data.kind == REGRESSION else np.zeros(m),
                        dtype=torch.float64).requires_grad_(True)

    def objective():
        f = _forward(X, task, R, A, b, module)
        if data.kind == REGRESSION:
            loss = (f - y) ** 2
        else:
            loss = torch.nn.functional.softplus(-(2 * y - 1) * f)
        return (w * loss).sum() + 0.5 * mu * ((R - eye) ** 2).sum() + 0.5 * lam * (A**2).sum()

    stages = [[A, b]] + ([[R, A, b]] if align else [])
    n_iter = 0
    for params in stages:
        n_iter += _lbfgs(objective, params, max_iter, tol)
    F = objective()
    grad_norm = max(float(g.abs().max()) for g in torch.autograd.grad(F, stages[-1]))
    F = float(F.detach())
    return AlignedModel(module, R.detach().numpy().copy(), A.detach().numpy().copy(),
                        b.detach().numpy().copy(), data.kind, F, n_iter,
                        grad_norm <= 1e-5 * max(1.0, abs(F)), grad_norm,
                        tuple(data.task_names))


def _lbfgs(objective, params, max_iter, tol) -> int:
    """Full-batch L-BFGS (strong Wolfe) on ``params``; returns the iterations used."""
    import torch

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=50,
                            tolerance_grad=tol, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        F = objective()
        F.backward()
        return F

    opt.step(closure)
    return int(opt.state[opt._params[0]].get("n_iter", 0))
