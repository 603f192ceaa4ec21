r"""The Pyro model of :mod:`bayesmtl.deep`: network priors times a balanced likelihood factor.

::

    Θ ~ p(Θ)                                              priors of :mod:`.networks`
    L_i(Θ) = -(1/n_i) Σ_j log p(y_ij | f_i(x_ij; Θ)) - c  mean loss of task i   (m,)
    p̃(Θ | D) ∝ exp(-η B(L(Θ))) p(Θ)                       B = the balancing objective

with c = ½ log π for regression (the squared loss (f - y)² is -log N(y | f, 1/2) - ½ log π) and
c = 0 for classification (cross-entropy = -log softmax). Hence the negative log joint is

    -log p̃(Θ, D) = η B(L(Θ)) + r(Θ) + const,     r(Θ) = -log p(Θ) (up to its normaliser)

and the MAP (η = 1) is the paper's problem (8) with that r:

- DS, B = Σ L_i: exp(-B) = Π_i Π_j p(y_ij | Θ)^{1/n_i} · e^{mc}, the product of the task
  likelihoods, each tempered by 1/n_i (the papers' mean per-task loss);
- fixed weights, B = Σ w_i L_i: task i's likelihood tempered by w_i/n_i;
- BMTL, B = Σ h(L_i): a generalised (Gibbs) posterior — not a product of likelihoods — whose MAP
  is problem (8); by Theorem 2 it is log-concave when every L_i is convex in Θ and r is convex;
- r(Θ) = (λ/2)‖W1‖² + [(λ_h/2)‖W_heads‖² | (λ_h/2) tr(W Ω⁻¹ Wᵀ) | λ_h‖W‖_*] + const: Gaussian
  prior ↔ weight decay λ, matrix-normal heads ↔ the Ω coupling, biases flat.

The constant is -log of the priors' normalisers: ½ log(2π/λ) per Gaussian entry (for the Ω heads
the matrix-normal's normaliser net of the hyperprior, which does not depend on Ω); flat priors
add nothing and the trace-norm prior's finite normaliser is left out. The likelihood part has no
constant because L_i is the loss itself (c is subtracted). Both are checked in
``tests/test_deep.py``. For SVI, η scales the balanced loss: with η = n̄ (rows per task) DS is
the ordinary posterior of balanced tasks; BMTL's exp(L/T) ≈ 1 + L/T is then tempered by 1/T.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine

from ..data import REGRESSION
from .balancing import Context
from .networks import DeepNet, Flat

__all__ = ["deep_model", "task_means", "shared_jacobian", "loss_constant", "map_trace",
           "neg_log_joint", "task_losses"]


def loss_constant(kind: str) -> float:
    """c with l = -log p - c: ½ log π for the squared loss, 0 for cross-entropy."""
    return 0.5 * math.log(math.pi) if kind == REGRESSION else 0.0


def task_means(values, task, m: int):
    """Per-task means of ``values`` (n,) over rows with task index ``task`` (n,).

    Returns ``(means (m,), present (m,) bool)``; absent tasks get mean 0 (finite gradients)."""
    sums = torch.zeros(m, dtype=values.dtype, device=values.device).index_add(0, task, values)
    counts = torch.bincount(task, minlength=m)
    return sums / counts.clamp(min=1).to(values.dtype), counts > 0


def shared_jacobian(L, shared, task) -> torch.Tensor:
    r"""(m, p·(d+1)): row i = ∂L_i/∂(W1, b1), the gradient of task i's loss with respect to the
    shared layer, flattened.

    Exact for the one shared layer pre = X W1ᵀ + b1: each row r belongs to one task, so with
    δ_r = ∂(Σ_i L_i)/∂pre_r = ∂L_{t(r)}/∂pre_r (one backward pass), g_i = Σ_{r ∈ i} δ_r [x_r; 1]ᵀ.
    Zeros when L carries no graph (e.g. a guide set up under ``torch.no_grad``).
    """
    X, pre = shared
    m, (n, p) = L.shape[0], pre.shape
    out = torch.zeros(m, p * (X.shape[1] + 1), dtype=L.dtype, device=L.device)
    if not L.requires_grad:
        return out
    delta = torch.autograd.grad(L.sum(), pre, retain_graph=True)[0]
    X1 = torch.cat([X, torch.ones(n, 1, dtype=X.dtype, device=X.device)], dim=1)
    order = torch.argsort(task, stable=True)
    counts = torch.bincount(task, minlength=m).tolist()
    for i, rows in enumerate(torch.split(order, counts)):
        if len(rows):
            out[i] = (delta[rows].T @ X1[rows]).reshape(-1)
    return out


def deep_model(X, task, y=None, *, net: DeepNet, strategy, history=(), eta: float = 1.0):
    """The generative model (see the module docstring).

    X : (n, d) features (standardised as at fit time); task : (n,) long task indices;
    y : (n,) targets (regression) or long global class codes, or None to sample them
    (sites ``y`` — per head group ``y_g`` when there are several — holding each head's local
    class index). Records ``task_loss`` (m,) and ``task_weight`` (m,) as deterministic sites.
    """
    out = net(X, task)
    if y is None:
        for g, (lik, rows) in enumerate(zip(net.likelihoods(out), out.rows, strict=True)):
            n_g = X.shape[0] if rows is None else rows.shape[0]
            with pyro.plate(f"rows_{g}", n_g, device=X.device):
                pyro.sample("y" if len(out.rows) == 1 else f"y_{g}", lik)
        return out
    m = net.layout.n_tasks
    L, present = task_means(-net.row_log_lik(out, y), task, m)
    L = L - loss_constant(net.layout.kind) * present.to(L.dtype)
    pyro.deterministic("task_loss", L)
    params = {name: pyro.sample(name, Flat(shape)) for name, shape in strategy.sites(m).items()}
    grads = (lambda: shared_jacobian(L, out.shared, task)) if strategy.needs_grads else None
    balanced = strategy(L, Context(present, tuple(history), grads, params))
    pyro.deterministic("task_weight", balanced.weights)
    pyro.factor("balanced_loss", -eta * balanced.objective)
    return out


def map_trace(values: dict, X, task, y, **model_kwargs):
    """Trace of :func:`deep_model` with every latent site conditioned on ``values``."""
    return poutine.trace(poutine.condition(deep_model, data=values)).get_trace(
        X, task, y, **model_kwargs)


def neg_log_joint(values: dict, X, task, y, **model_kwargs) -> torch.Tensor:
    """-log p̃(Θ = values, D) = η B(L(Θ)) + r(Θ) + const, differentiable in ``values``."""
    return -map_trace(values, X, task, y, **model_kwargs).log_prob_sum()


@torch.no_grad()
def task_losses(net: DeepNet, values: dict, X, task, y, chunk: int = 8192) -> torch.Tensor:
    """(m,) mean loss L_i of every task at ``values`` (NaN for tasks without rows)."""
    m = net.layout.n_tasks
    sums = torch.zeros(m, dtype=X.dtype, device=X.device)
    counts = torch.bincount(task, minlength=m)
    conditioned = poutine.condition(net, data=values)
    for start in range(0, X.shape[0], chunk):
        s = slice(start, start + chunk)
        nll = -net.row_log_lik(conditioned(X[s], task[s]), y[s])
        sums.index_add_(0, task[s], nll)
    L = sums / counts.clamp(min=1).to(X.dtype) - loss_constant(net.layout.kind)
    return torch.where(counts > 0, L, torch.full_like(L, math.nan))
