r"""Networks of :mod:`bayesmtl.deep`: DMTL's shared layer and per-task heads as PyroModules.

Every learnable tensor is a ``PyroSample`` site, so the network *is* the prior part of the
generative model (the likelihood part is in :mod:`bayesmtl.deep.model`)::

    W1 ~ N(0, 1/λ) i.i.d.   (p, d)      shared layer; -log p = (λ/2)‖W1‖²_F + c  (weight decay λ)
    b1 flat                 (p,)
    z(x) = relu(W1 x + b1)  (p,)        [``hidden=0``: z(x) = x, the linear network, no trunk]

    heads of group g — the m_g tasks sharing one output set of K_g outputs —
    W_g (p, K_g, m_g), read as the matrix W_g (D × m_g), D = p·K_g ("features × tasks"):
      "normal"  W_g ~ N(0, 1/λ_h) i.i.d.                -log p = (λ_h/2)‖W_g‖²_F + c
      "omega"   W_g ~ MN(0, I_D, Ω_g/λ_h),  p(Ω_g) ∝ |Ω_g|^{D/2} on {Ω ⪰ 0, tr Ω = 1}
                                                         -log p = (λ_h/2) tr(W_g Ω_g⁻¹ W_gᵀ) + c
      "trace"   p(W_g) ∝ exp(-λ_h ‖W_g‖_*)              -log p = λ_h ‖W_g‖_* + c
    b_g flat (K_g, m_g)
    f_i(x) = W_g[:, :, i]ᵀ z(x) + b_g[:, i]   (K_g,)   for task i in group g

λ = ``lam``, λ_h = ``lam_heads``; the constants c do not depend on the parameters (for
"omega": the hyperprior |Ω|^{D/2} cancels the matrix-normal normaliser |Ω|^{-D/2}, so c does not
depend on Ω either — MTRL's objective, Zhang & Yeung 2010). Ω_g is a registered buffer updated
by its exact step :func:`omega_step` between gradient steps. "trace" is the last-axis-flattened
trace norm of TNRMTL (Yang & Hospedales 2017); its normaliser is finite and not computed.

Prior parameters live in registered buffers, so ``net.to(device)`` moves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroSample
from torch import nn

from ..data import CLASSIFICATION, MULTICLASS, REGRESSION
from ..errors import DataError, HyperparameterError, ShapeMismatchError, TooFewSamplesError

__all__ = ["HEAD_PRIORS", "NETWORKS", "TaskLayout", "task_layout", "DeepNet", "NetOutput",
           "Flat", "omega_step", "trace_norm", "head_matrix", "init_values",
           "SQUARED_LOSS_NOISE"]

#: head prior of each network name
NETWORKS = {"dmtl": "normal", "omega": "omega", "trace": "trace"}
HEAD_PRIORS = tuple(NETWORKS.values())
#: the squared loss (f - y)² is -log N(y | f, σ²) - ½ log π with σ = 1/√2
SQUARED_LOSS_NOISE = 1.0 / math.sqrt(2.0)


class Flat(dist.ImproperUniform):
    """Improper flat prior on R^shape (log density 0), device- and dtype-aware."""

    def __init__(self, shape):
        super().__init__(constraints.real, batch_shape=(), event_shape=tuple(shape))

    def log_prob(self, value):
        batch = value.shape[: value.dim() - self.event_dim]
        return torch.zeros((), dtype=value.dtype, device=value.device).expand(batch)


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class TaskLayout:
    """Which outputs each task's head has.

    Attributes
    ----------
    kind : "regression", "classification" or "multiclass"
    task_names : (m,) str
    task_classes : m tuples of sorted global class codes (one output each); ``(0,)`` for
        regression (one output, the mean)
    n_classes : global number of classes K (1 for regression)
    """

    kind: str
    task_names: tuple
    task_classes: tuple
    n_classes: int

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def groups(self) -> tuple:
        """Tasks grouped by output set: ``((classes, task indices), ...)`` in first-seen order."""
        seen: dict = {}
        for i, cls in enumerate(self.task_classes):
            seen.setdefault(cls, []).append(i)
        return tuple((cls, tuple(tasks)) for cls, tasks in seen.items())

    def to_json(self) -> dict:
        return {"kind": self.kind, "task_names": list(self.task_names),
                "task_classes": [list(c) for c in self.task_classes],
                "n_classes": self.n_classes}

    @classmethod
    def from_json(cls, meta: dict) -> TaskLayout:
        return cls(meta["kind"], tuple(meta["task_names"]),
                   tuple(tuple(int(k) for k in c) for c in meta["task_classes"]),
                   int(meta["n_classes"]))


def task_layout(data, classes=None) -> TaskLayout:
    """The heads' outputs for ``data`` (a :class:`~bayesmtl.data.MultiTaskData`).

    classes : None (each task's observed classes), "all" (every class of the data set for every
        task) or a sequence of m sequences of class labels (in ``data.label_values``' coding).
        Ignored for regression. A task needs at least 2 classes and all its observed labels.
    """
    m, names = data.n_tasks, tuple(str(t) for t in data.task_names)
    if data.kind == REGRESSION:
        return TaskLayout(REGRESSION, names, ((0,),) * m, 1)
    if data.kind not in (CLASSIFICATION, MULTICLASS):
        raise DataError(f"kind must be regression, classification or multiclass; got "
                        f"{data.kind!r}")
    K = data.n_classes
    observed = [tuple(np.unique(data.y[data.task_slice(i)]).astype(int).tolist())
                for i in range(m)]
    if classes is None:
        chosen = observed
    elif isinstance(classes, str) and classes == "all":
        chosen = [tuple(range(K))] * m
    elif isinstance(classes, str):
        raise HyperparameterError(f"classes must be None, 'all' or one label list per task; "
                                  f"got {classes!r}", "classes", classes)
    else:
        chosen = _codes_of(classes, data.label_values, m)
    for i, (cls, seen) in enumerate(zip(chosen, observed, strict=True)):
        lab = [data.label_values[k] for k in cls]
        if len(cls) < 2:
            raise TooFewSamplesError(
                f"task {names[i]!r} has {len(cls)} class(es) {lab}; a classification head needs "
                "at least 2 (pass classes='all' or per-task classes, or drop the task)")
        missing = sorted(set(seen) - set(cls))
        if missing:
            raise DataError(f"task {names[i]!r} has labels "
                            f"{[data.label_values[k] for k in missing]} outside its classes {lab}")
    return TaskLayout(data.kind, names, tuple(chosen), K)


def _codes_of(classes, label_values, m: int) -> list:
    if len(classes) != m:
        raise ShapeMismatchError(f"classes has {len(classes)} entries for {m} tasks")
    lookup = {str(v): k for k, v in enumerate(label_values)}
    out = []
    for i, labels in enumerate(classes):
        codes = []
        for v in labels:
            if str(v) not in lookup:
                raise DataError(f"classes[{i}] holds {v!r}, not a class of the data set "
                                f"{tuple(label_values)}")
            codes.append(lookup[str(v)])
        out.append(tuple(sorted(set(codes))))
    return out


# ----------------------------------------------------------------------------- head priors


def head_matrix(W: torch.Tensor) -> torch.Tensor:
    """(p, K, m) stacked heads → the (p·K, m) matrix "features × tasks"."""
    return W.reshape(-1, W.shape[-1])


def omega_step(W: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""Exact Ω-step of MTRL: argmin_{Ω ⪰ 0, tr Ω = 1} tr(W Ω⁻¹ Wᵀ) = (WᵀW)^{1/2} / tr(·).

    W : (D, m). ``eps`` (relative to tr(WᵀW)/m) is added to WᵀW's diagonal so Ω stays positive
    definite when W has rank < m. Returns (m, m), computed in float64.
    """
    A = W.detach().double()
    gram = A.T @ A
    m = gram.shape[0]
    gram = gram + eps * max(float(torch.trace(gram)) / m, 1e-300) * torch.eye(
        m, dtype=gram.dtype, device=gram.device)
    e, V = torch.linalg.eigh(gram)
    root = (V * e.clamp(min=0.0).sqrt()) @ V.T
    return (root / torch.trace(root)).to(W.dtype)


def trace_norm(W: torch.Tensor) -> torch.Tensor:
    """‖W‖_* = Σ singular values of W (D, m). Its autograd gradient is the subgradient U Vᵀ
    (``torch.linalg.svdvals`` has stable gradients)."""
    return torch.linalg.svdvals(W).sum()


# ----------------------------------------------------------------------------- modules


class Trunk(PyroModule):
    """Shared layer z = relu(X W1ᵀ + b1); W1 ~ N(0, 1/λ) i.i.d. (p, d), b1 flat (p,)."""

    def __init__(self, n_features: int, hidden: int, lam: float):
        super().__init__()
        self.shape = (hidden, n_features)
        self.register_buffer("prior_scale", torch.tensor(lam ** -0.5, dtype=torch.float64))
        self.weight = PyroSample(
            lambda self: dist.Normal(0.0, self.prior_scale).expand(self.shape).to_event(2))
        self.bias = PyroSample(lambda self: Flat(self.shape[:1]))

    def forward(self, X):
        """Returns z (n, p) and (X, pre-activation (n, p)), what MGDA's per-task gradients of
        the shared layer are built from."""
        pre = X @ self.weight.T + self.bias
        return torch.relu(pre), (X, pre)


class HeadGroup(PyroModule):
    """Heads of the m_g tasks sharing K_g outputs: weight (p, K_g, m_g), bias (K_g, m_g)."""

    def __init__(self, p: int, n_out: int, n_tasks: int, prior: str, lam_heads: float):
        super().__init__()
        self.shape, self.prior = (p, n_out, n_tasks), prior
        self.register_buffer("lam", torch.tensor(float(lam_heads), dtype=torch.float64))
        self.register_buffer("omega", torch.eye(n_tasks, dtype=torch.float64) / n_tasks)
        self.weight = PyroSample(_head_prior)
        self.bias = PyroSample(lambda self: Flat(self.shape[1:]))

    def forward(self, Z, local):
        """Z (n, p) features of rows whose task has position ``local`` (n,) in the group."""
        W, b = self.weight, self.bias
        D = self.shape[0] * self.shape[1]
        if self.prior == "omega":  # hyperprior |Ω|^{D/2}: cancels the MN normaliser in Ω
            pyro.factor(f"{self._pyro_name}.omega_hyperprior",
                        0.5 * D * torch.logdet(self.omega))
        elif self.prior == "trace":
            pyro.factor(f"{self._pyro_name}.trace_norm_prior",
                        -self.lam * trace_norm(head_matrix(W)))
        return torch.einsum("np,npk->nk", Z, W.permute(2, 0, 1)[local]) + b.T[local]


def _head_prior(self: HeadGroup):
    p, K, m = self.shape
    if self.prior == "normal":
        return dist.Normal(0.0, self.lam.rsqrt()).expand(self.shape).to_event(3)
    if self.prior == "omega":
        tril = torch.linalg.cholesky(self.omega) * self.lam.rsqrt()
        return dist.MultivariateNormal(torch.zeros_like(self.omega[0]), scale_tril=tril) \
            .expand((p, K)).to_event(2)
    return Flat(self.shape)


class NetOutput(NamedTuple):
    """outputs: per group (n_g, K_g); rows: per group the (n_g,) row indices (None: all rows,
    one group); shared: the shared layer's input X (n, d) and pre-activation W1 x + b1 (n, p)
    (empty for ``hidden=0``)."""

    outputs: tuple
    rows: tuple
    shared: tuple


class DeepNet(PyroModule):
    """DMTL (Caruana 1997): input → shared ReLU layer of ``hidden`` units → one linear head per
    task with that task's outputs (see the module docstring for the priors).

    Parameters
    ----------
    layout : TaskLayout (the heads' outputs); n_features : d; hidden : p (0: no shared layer);
    heads : "normal" | "omega" | "trace"; lam : λ of the shared layer; lam_heads : λ_h.
    """

    def __init__(self, layout: TaskLayout, n_features: int, hidden: int = 600,
                 heads: str = "normal", lam: float = 1e-4, lam_heads: float = 1.0):
        # the net holds no parameters (only sample sites and buffers), so it may run with Pyro's
        # module-local parameters on or off; a context created in local mode serves both
        with pyro.settings.context(module_local_params=True):
            super().__init__()
        if heads not in HEAD_PRIORS:
            raise HyperparameterError(f"heads must be one of {HEAD_PRIORS}; got {heads!r}",
                                      "heads", heads)
        self.layout, self.heads_prior = layout, heads
        self.trunk = Trunk(n_features, hidden, lam) if hidden > 0 else None
        p = hidden if hidden > 0 else n_features
        groups = layout.groups
        self.heads = PyroModule[nn.ModuleList](
            [HeadGroup(p, len(cls), len(tasks), heads, lam_heads) for cls, tasks in groups])
        m, K = layout.n_tasks, layout.n_classes
        task_group, task_local = np.zeros(m, np.int64), np.zeros(m, np.int64)
        to_local = np.full((len(groups), K), -1, np.int64)
        for g, (cls, tasks) in enumerate(groups):
            task_group[list(tasks)] = g
            task_local[list(tasks)] = np.arange(len(tasks))
            to_local[g, list(cls)] = np.arange(len(cls))
        self.register_buffer("task_group", torch.as_tensor(task_group))
        self.register_buffer("task_local", torch.as_tensor(task_local))
        self.register_buffer("to_local", torch.as_tensor(to_local))

    def forward(self, X, task) -> NetOutput:
        Z, shared = self.trunk(X) if self.trunk is not None else (X, ())
        if len(self.heads) == 1:
            return NetOutput((self.heads[0](Z, self.task_local[task]),), (None,), shared)
        outs, rows = [], []
        group = self.task_group[task]
        for g, head in enumerate(self.heads):
            r = torch.nonzero(group == g).squeeze(1)
            outs.append(head(Z[r], self.task_local[task[r]]))
            rows.append(r)
        return NetOutput(tuple(outs), tuple(rows), shared)

    # --- likelihood and prediction --------------------------------------------------------
    def likelihoods(self, out: NetOutput):
        """Per group the likelihood of its rows: N(f, 1/2) (regression) or Categorical over the
        group's classes (logits = f)."""
        if self.layout.kind == REGRESSION:
            return [dist.Normal(f[:, 0], SQUARED_LOSS_NOISE) for f in out.outputs]
        return [dist.Categorical(logits=f) for f in out.outputs]

    def row_log_lik(self, out: NetOutput, y) -> torch.Tensor:
        """(n,) log p(y_r | f(x_r)) of every row (y: targets, or global class codes)."""
        liks = self.likelihoods(out)
        if len(liks) == 1:
            return liks[0].log_prob(self._local(0, y))
        ll = torch.empty_like(y, dtype=out.outputs[0].dtype)
        for g, (lik, r) in enumerate(zip(liks, out.rows, strict=True)):
            ll[r] = lik.log_prob(self._local(g, y[r]))
        return ll

    def _local(self, g: int, y):
        return y if self.layout.kind == REGRESSION else self.to_local[g][y.long()]

    def predictions(self, out: NetOutput, n: int) -> torch.Tensor:
        """Regression: (n,) means. Classification: (n, K) probabilities over the data set's
        global classes (0 for classes a task's head lacks)."""
        if self.layout.kind == REGRESSION:
            if out.rows[0] is None:
                return out.outputs[0][:, 0]
            mean = torch.empty(n, dtype=out.outputs[0].dtype, device=out.outputs[0].device)
            for f, r in zip(out.outputs, out.rows, strict=True):
                mean[r] = f[:, 0]
            return mean
        proba = torch.zeros(n, self.layout.n_classes, dtype=out.outputs[0].dtype,
                            device=out.outputs[0].device)
        for (cls, _), f, r in zip(self.layout.groups, out.outputs, out.rows, strict=True):
            idx = torch.as_tensor(cls, device=f.device)
            rows = torch.arange(n, device=f.device) if r is None else r
            proba[rows[:, None], idx[None, :]] = torch.softmax(f, dim=-1)
        return proba

    def update_omega(self, values: dict, eps: float = 1e-8) -> None:
        """Exact Ω-step for every "omega" head group at the head values ``values[site]``."""
        if self.heads_prior != "omega":
            return
        for g, head in enumerate(self.heads):
            head.omega.copy_(omega_step(head_matrix(values[f"heads.{g}.weight"]), eps))


def init_values(net: DeepNet, seed: int, task_means=None) -> dict:
    """Initial parameter values (CPU, float64; move them with ``.to``): weights like
    ``nn.Linear`` (U(±1/√fan_in)), shared biases likewise, head biases 0 — or, for regression,
    each task's mean target ``task_means`` (m,)."""
    gen = torch.Generator().manual_seed(int(seed))

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound

    values = {}
    if net.trunk is not None:
        p, d = net.trunk.shape
        values["trunk.weight"] = uniform((p, d), d)
        values["trunk.bias"] = uniform((p,), d)
    for g, (head, (_, tasks)) in enumerate(zip(net.heads, net.layout.groups, strict=True)):
        p, K, m_g = head.shape
        values[f"heads.{g}.weight"] = uniform(head.shape, p)
        bias = torch.zeros((K, m_g), dtype=torch.float64)
        if task_means is not None and net.layout.kind == REGRESSION:
            bias[0] = torch.as_tensor(np.asarray(task_means)[list(tasks)], dtype=torch.float64)
        values[f"heads.{g}.bias"] = bias
    return values
