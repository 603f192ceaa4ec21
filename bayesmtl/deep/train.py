r"""Fitting :func:`~bayesmtl.deep.model.deep_model`: MAP by Adam (or L-BFGS) and SVI.

MAP minimises the negative log joint η B(L(Θ)) + r(Θ) (η = 1: problem (8)) on task-stratified
minibatches: every step takes up to ``batch_size`` rows of *every* task (with ``fill="cycle"``
a task that has run out of rows in this epoch starts over, so every task is in every batch; with
``fill="none"`` it is absent and the strategies ignore it). An epoch lasts ⌈max_i n_i / b⌉
steps. The learning rate follows the paper's schedule η_p = η₀ / (1 + γ p), p the iteration
index (γ = ``lr_decay`` = 1 in the paper; 0 keeps η₀). Ω-prior heads take their exact Ω-step
after every gradient step. Early stopping keeps the parameters of the epoch with the lowest
validation loss Σ_i L_i^valid / m (the plain mean task loss, whatever the strategy).

SVI maximises the single-particle Trace_ELBO E_q[log p̃(Θ, D) - log q(Θ)] (written out so the
trace's task losses and weights can be read; it equals ``Trace_ELBO().differentiable_loss``)
with an AutoNormal guide (``guide="normal"``, mean field) or point estimates everywhere except
the heads (``guide="last_layer"``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta, AutoGuideList, AutoNormal, init_to_value
from pyro.infer.autoguide.initialization import InitMessenger
from tqdm.auto import tqdm

from ..data import REGRESSION, MultiTaskData
from ..errors import DataError, HyperparameterError, NonFiniteResultError
from .balancing import STRATEGIES, Strategy, make_strategy
from .model import deep_model, map_trace, task_losses
from .networks import NETWORKS, DeepNet, init_values, task_layout
from .result import DeepResult, local_params, resolve_device

__all__ = ["fit_deep", "FitConfig", "stratified_batches", "valid_split", "make_guide",
           "elbo_traces"]


@dataclass(frozen=True)
class FitConfig:
    """The validated hyperparameters of one fit (JSON-able; see :func:`fit_deep`)."""

    network: str
    balancing: dict
    hidden: int
    lam: float
    lam_heads: float
    epochs: int
    batch_size: int
    lr: float
    lr_decay: float
    valid_fraction: float
    patience: int | None
    inference: str
    guide: str
    num_samples: int
    eta: float | str
    optimizer: str
    fill: str
    standardize: bool
    dtype: str
    omega_eps: float
    svi_init_scale: float
    seed: int

    def to_json(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- validation


def _number(name, value, low=None, high=None, low_open=False, integer=False, allow_none=False):
    if value is None and allow_none:
        return None
    ok_type = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise HyperparameterError(f"{name} must be {kind}; got {value!r}", name, value)
    if low is not None and (value <= low if low_open else value < low) or \
            high is not None and value > high:
        bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else '∞'}" \
                 f"{']' if high is not None else ')'}"
        raise HyperparameterError(f"{name} must lie in {bounds}; got {value!r}", name, value)
    return int(value) if integer else float(value)


def _choice(name, value, options):
    if value not in options:
        raise HyperparameterError(f"{name} must be one of {tuple(options)}; got {value!r}",
                                  name, value)
    return value


# ----------------------------------------------------------------------------- batches


def valid_split(data: MultiTaskData, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, valid): per task (and class, for classification) a ``fraction`` goes
    to validation; every task keeps at least one training row, tasks of one row keep it."""
    valid = []
    for i in range(data.n_tasks):
        s = data.task_slice(i)
        idx = np.arange(s.start, s.stop)
        if fraction == 0 or len(idx) < 2:
            continue
        strata = [idx] if data.kind == REGRESSION else [idx[data.y[idx] == c]
                                                        for c in np.unique(data.y[idx])]
        chosen = np.concatenate([rng.permutation(g)[: int(round(fraction * len(g)))]
                                 for g in strata])
        if len(chosen) == len(idx):
            chosen = chosen[1:]
        if len(chosen) == 0:
            chosen = rng.permutation(idx)[:1]
        valid.append(chosen)
    valid = np.sort(np.concatenate(valid)) if valid else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(data.y)), valid), valid


def stratified_batches(task_rows: list, batch_size: int, rng, fill: str = "cycle"
                       ) -> Iterator[np.ndarray]:
    """One epoch of task-stratified batches of row indices.

    task_rows : per task the (n_i,) training rows. Step k takes rows k·b … (k+1)·b - 1 of each
    task's permutation; ``fill="cycle"`` wraps around so a task holds min(b, n_i) rows in every
    batch, ``fill="none"`` leaves a task that ran out absent.
    """
    perms = [rng.permutation(r) for r in task_rows]
    n_steps = max(1, math.ceil(max(len(r) for r in task_rows) / batch_size))
    for k in range(n_steps):
        parts = []
        for p in perms:
            if fill == "cycle":
                parts.append(p[(k * batch_size + np.arange(min(batch_size, len(p)))) % len(p)])
            else:
                parts.append(p[k * batch_size:(k + 1) * batch_size])
        yield np.concatenate(parts)


# ----------------------------------------------------------------------------- guides


def make_guide(model, kind: str, init: dict, init_scale: float):
    """AutoNormal over every latent site (``"normal"``) or AutoDelta for the shared layer and
    AutoNormal for the heads (``"last_layer"``), initialised at ``init``."""
    loc_fn = init_to_value(values=init)
    if kind == "normal":
        return AutoNormal(model, init_loc_fn=loc_fn, init_scale=init_scale)
    # prototypes are traced with every site at its initial value (flat priors cannot be sampled)
    traced = InitMessenger(loc_fn)(model)
    heads = [k for k in init if k.startswith("heads.")]
    guide = AutoGuideList(traced)
    guide.append(AutoDelta(poutine.block(traced, hide=heads), init_loc_fn=loc_fn))
    guide.append(AutoNormal(poutine.block(traced, expose=heads), init_loc_fn=loc_fn,
                            init_scale=init_scale))
    return guide


def elbo_traces(model, guide, *args, **kwargs):
    """(loss, model_trace): loss = -(log p̃(Θ, D) - log q(Θ)) at one draw Θ ~ q, the
    single-particle Trace_ELBO for reparameterised guides."""
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    return -(model_tr.log_prob_sum() - guide_tr.log_prob_sum()), model_tr


# ----------------------------------------------------------------------------- fit


def fit_deep(data: MultiTaskData, *, network="dmtl", balancing="bmtl", hidden=600, T=50.0,
             h=None, weights=None, lam=1e-4, lam_heads=1e-3, epochs=100, batch_size=32, lr=0.02,
             lr_decay=1.0, valid_fraction=0.2, patience=10, inference="map", guide="normal",
             num_samples=100, device="auto", seed=0, progress_bar=False, dwa_T=2.0, cl_T=1.0,
             classes=None, eta="auto", optimizer="adam", fill="cycle", standardize=True,
             dtype="float32", omega_eps=1e-8, svi_init_scale=0.01) -> DeepResult:
    r"""Fit a deep multi-task network with a loss-balancing strategy.

    Parameters
    ----------
    data : MultiTaskData (regression, classification or multiclass; ragged tasks).
    network : "dmtl" (Gaussian heads), "omega" (matrix-normal heads with MTRL's Ω) or "trace"
        (trace-norm heads).
    balancing : one of ``STRATEGIES`` or a :class:`~bayesmtl.deep.balancing.Strategy`.
    hidden : units p of the shared ReLU layer (0: a linear network, no shared layer).
    T : BMTL temperature of h(z) = exp(z/T). h : BMTL transform — a torch callable or
        polynomial coefficients (increasing degree), checked against Theorem 1.
    weights : (m,) positive weights for ``balancing="fixed"``. dwa_T, cl_T : DWA's and CL's
        temperatures.
    lam : λ, precision of the shared layer's Gaussian prior (weight decay (λ/2)‖W1‖²).
    lam_heads : λ_h of the head prior (see :mod:`bayesmtl.deep.networks`).
    epochs, batch_size, lr, lr_decay : at most ``epochs`` passes; ``batch_size`` rows per task
        per step; learning rate lr / (1 + lr_decay · iteration).
    valid_fraction, patience : validation part of each task; stop after ``patience`` epochs
        without improvement (None: never) and keep the best epoch.
    inference : "map" or "svi". guide : "normal" or "last_layer". num_samples : posterior
        draws for SVI predictions and export.
    eta : η of the balanced factor exp(-η B); "auto" = 1 for MAP (problem (8)) and the mean
        number of training rows per task for SVI.
    optimizer : "adam" or "lbfgs" (full-batch use; strategies with state-dependent weights —
        DWA, CL, MGDA — need "adam"). fill : "cycle" or "none" (see ``stratified_batches``).
    classes : heads' outputs, see :func:`~bayesmtl.deep.networks.task_layout`.
    standardize : centre and scale features with the training rows' statistics.
    dtype : "float32" or "float64". device : "auto" (CUDA if available, else CPU) or a torch
        device string. seed : seeds Pyro/torch, the split, the batches and the initial values.
        A seed repeats a CPU fit bitwise; on CUDA, scatter sums add atomically, so repeats agree
        to round-off unless ``torch.use_deterministic_algorithms(True)`` is on (with
        ``CUBLAS_WORKSPACE_CONFIG=:4096:8``). SVI's posterior draws are seeded per device: the
        same device repeats them, CPU and CUDA give different draws of one posterior.
    progress_bar : tqdm bar over epochs.

    Returns
    -------
    DeepResult
    """
    if not isinstance(data, MultiTaskData):
        raise DataError(f"data must be a MultiTaskData; got {type(data).__name__}")
    _choice("network", network, NETWORKS)
    if not isinstance(balancing, Strategy):
        _choice("balancing", balancing, STRATEGIES)
    layout = task_layout(data, classes)
    strategy = make_strategy(balancing, n_tasks=data.n_tasks, T=T, h=h, weights=weights,
                             dwa_T=dwa_T, cl_T=cl_T)
    cfg = _config(network, strategy, hidden, lam, lam_heads, epochs, batch_size, lr, lr_decay,
                  valid_fraction, patience, inference, guide, num_samples, eta, optimizer, fill,
                  standardize, dtype, omega_eps, svi_init_scale, seed)
    _check_combination(strategy, cfg)
    dev = resolve_device(device)
    pyro.set_rng_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_rows, valid_rows = valid_split(data, cfg.valid_fraction, rng)
    x_mean, x_scale = _scaling(data.X[train_rows], cfg.standardize)
    tdtype = getattr(torch, cfg.dtype)
    train, valid = (_tensors(data, rows, x_mean, x_scale, tdtype, dev)
                    for rows in (train_rows, valid_rows))
    task_rows = [np.flatnonzero(data.task[train_rows] == i) for i in range(data.n_tasks)]
    task_means = np.array([data.y[train_rows][r].mean() for r in task_rows])
    if cfg.eta == "auto":  # record the η used
        eta = 1.0 if cfg.inference == "map" else len(train_rows) / data.n_tasks
        cfg = dataclasses.replace(cfg, eta=eta)
    with local_params():  # built and run inside: guides never touch Pyro's global param store
        net = DeepNet(layout, data.n_features, cfg.hidden, NETWORKS[network], cfg.lam,
                      cfg.lam_heads).to(device=dev, dtype=tdtype)
        init = {k: v.to(device=dev, dtype=tdtype)
                for k, v in init_values(net, cfg.seed, task_means).items()}
        for name, shape in strategy.sites(data.n_tasks).items():
            init[name] = torch.zeros(shape, dtype=tdtype, device=dev)
        loop = _Loop(net, strategy, cfg, cfg.eta, train, valid, task_rows, rng, layout,
                     progress_bar)
        state = loop.run_map(init) if cfg.inference == "map" else loop.run_svi(init)
        noise_var = _noise_var(net, state, train, layout, data.n_tasks)
    return DeepResult(net=net, config=cfg.to_json(), layout=layout, x_mean=x_mean,
                      x_scale=x_scale, feature_names=tuple(data.feature_names),
                      label_values=data.label_values, history=loop.history, noise_var=noise_var,
                      values=state if cfg.inference == "map" else None,
                      guide=state if cfg.inference == "svi" else None, device=dev,
                      sites=strategy.sites(data.n_tasks))


def _check_combination(strategy: Strategy, cfg: FitConfig) -> None:
    if strategy.needs_grads and cfg.hidden == 0:
        raise HyperparameterError("MGDA balances gradients of shared parameters; hidden=0 has "
                                  "none", "balancing", strategy.name)
    if cfg.optimizer == "lbfgs" and cfg.inference != "map":
        raise HyperparameterError("optimizer='lbfgs' is for inference='map' (SVI's objective is "
                                  "stochastic)", "optimizer", "lbfgs")
    if cfg.optimizer == "lbfgs" and not strategy.fixed_target:
        raise HyperparameterError(f"optimizer='lbfgs' needs a fixed objective; "
                                  f"balancing={strategy.name!r} changes its weights at every "
                                  "evaluation", "optimizer", "lbfgs")


def _tensors(data, rows, x_mean, x_scale, dtype, device):
    """(X standardised, task, y) of ``rows`` on ``device``; y long class codes for
    classification."""
    X = torch.as_tensor((data.X[rows] - x_mean) / x_scale, dtype=dtype, device=device)
    y = torch.as_tensor(data.y[rows], device=device)
    y = y.to(dtype) if data.kind == REGRESSION else y.long()
    return X, torch.as_tensor(data.task[rows], device=device).long(), y


def _config(network, strategy, hidden, lam, lam_heads, epochs, batch_size, lr, lr_decay,
            valid_fraction, patience, inference, guide, num_samples, eta, optimizer, fill,
            standardize, dtype, omega_eps, svi_init_scale, seed) -> FitConfig:
    if not (isinstance(eta, str) and eta == "auto"):
        eta = _number("eta", eta, 0, low_open=True)
    return FitConfig(
        network=network, balancing=strategy.to_json(),
        hidden=_number("hidden", hidden, 0, integer=True),
        lam=_number("lam", lam, 0, low_open=True),
        lam_heads=_number("lam_heads", lam_heads, 0, low_open=True),
        epochs=_number("epochs", epochs, 1, integer=True),
        batch_size=_number("batch_size", batch_size, 1, integer=True),
        lr=_number("lr", lr, 0, low_open=True), lr_decay=_number("lr_decay", lr_decay, 0),
        valid_fraction=_number("valid_fraction", valid_fraction, 0, 0.9),
        patience=_number("patience", patience, 1, integer=True, allow_none=True),
        inference=_choice("inference", inference, ("map", "svi")),
        guide=_choice("guide", guide, ("normal", "last_layer")),
        num_samples=_number("num_samples", num_samples, 1, integer=True),
        eta=eta,
        optimizer=_choice("optimizer", optimizer, ("adam", "lbfgs")),
        fill=_choice("fill", fill, ("cycle", "none")),
        standardize=bool(_choice("standardize", standardize, (True, False))),
        dtype=_choice("dtype", dtype, ("float32", "float64")),
        omega_eps=_number("omega_eps", omega_eps, 0),
        svi_init_scale=_number("svi_init_scale", svi_init_scale, 0, low_open=True),
        seed=_number("seed", seed, 0, integer=True))


def _scaling(X, standardize):
    if not standardize:
        return np.zeros(X.shape[1]), np.ones(X.shape[1])
    scale = X.std(0)
    return X.mean(0), np.where(scale > 0, scale, 1.0)


@torch.no_grad()
def _noise_var(net, state, train, layout, m):
    """(m,) training mean squared residual per task at the point estimate (regression), the
    plug-in noise of SVI's predictive sd; NaN for classification."""
    if layout.kind != REGRESSION:
        return np.full(m, np.nan)
    values = state if isinstance(state, dict) else _median(state)
    return task_losses(net, values, *train).cpu().numpy()  # the squared loss: mean residual²


# ----------------------------------------------------------------------------- the loop


class _Loop:
    """Epoch loop shared by MAP and SVI; fills ``history``."""

    def __init__(self, net, strategy, cfg, eta, train, valid, task_rows, rng, layout,
                 progress_bar=False):
        self.net, self.strategy, self.cfg, self.eta = net, strategy, cfg, eta
        self.progress_bar = bool(progress_bar)
        self.train, self.valid, self.task_rows, self.rng = train, valid, task_rows, rng
        self.names = layout.task_names
        self.history = {k: [] for k in ("train_loss", "valid_loss", "task_weight", "objective",
                                        "epoch_time", "lr")}
        self.history["best_epoch"] = None

    def model(self):
        """The model with the current history bound (DWA reads it)."""
        return functools.partial(deep_model, **self.kwargs)

    def batch(self, rows):
        idx = torch.as_tensor(rows, device=self.train[0].device)
        return tuple(t[idx] for t in self.train)

    def run_map(self, init: dict) -> dict:
        values = {k: v.clone().requires_grad_(True) for k, v in init.items()}
        self.net.update_omega(values, self.cfg.omega_eps)
        params = list(values.values())

        def step_fn(batch):
            def closure():
                opt.zero_grad()
                tr = map_trace(values, *batch, **self.kwargs)
                loss = -tr.log_prob_sum()
                loss.backward()
                closure.trace = tr
                return loss
            opt.step(closure)
            return closure.trace

        opt, sched = self._optimizer(params)
        return self._epochs(step_fn, lambda: values, sched, params=values)

    def run_svi(self, init: dict):
        model = self.model()
        guide = make_guide(model, self.cfg.guide, init, self.cfg.svi_init_scale)
        with torch.no_grad():
            guide(*self.batch(np.concatenate([r[:1] for r in self.task_rows])))
        self._guide_omega(guide)
        params = list(guide.parameters())

        def step_fn(batch):
            opt.zero_grad()
            loss, tr = elbo_traces(self.model(), guide, *batch)
            loss.backward()
            opt.step()
            return tr

        opt, sched = self._optimizer(params)
        return self._epochs(step_fn, lambda: _median(guide), sched, guide=guide)

    @property
    def kwargs(self):
        return {"net": self.net, "strategy": self.strategy,
                "history": tuple(self.history["train_loss"]), "eta": self.eta}

    def _optimizer(self, params):
        if self.cfg.optimizer == "lbfgs":
            opt = torch.optim.LBFGS(params, lr=self.cfg.lr, max_iter=20,
                                    line_search_fn="strong_wolfe")
            return opt, None
        opt = torch.optim.Adam(params, lr=self.cfg.lr)
        decay = self.cfg.lr_decay
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda p: 1.0 / (1.0 + decay * p))

    def _guide_omega(self, guide):
        if self.net.heads_prior == "omega":
            self.net.update_omega(_median(guide), self.cfg.omega_eps)

    def _epochs(self, step_fn, point, sched, params=None, guide=None):
        cfg, m = self.cfg, len(self.names)
        best, best_loss, since = None, math.inf, 0
        bar = tqdm(range(cfg.epochs), disable=not self.progress_bar, desc="epochs")
        for epoch in bar:
            t0 = time.perf_counter()
            L, P, W, objectives = self._epoch(epoch, step_fn, sched, params, guide)
            count = P.sum(0).clamp(min=1)
            mean_L = ((L * P).sum(0) / count).cpu().numpy()
            self.history["train_loss"].append(mean_L)
            self.history["task_weight"].append((W * P).sum(0).div(count).cpu().numpy())
            self.history["objective"].append(-float(objectives.mean()) / self.eta)
            valid_L = (task_losses(self.net, point(), *self.valid).cpu().numpy()
                       if len(self.valid[0]) else np.full(m, np.nan))
            self.history["valid_loss"].append(valid_L)
            self.history["lr"].append(sched.get_last_lr()[0] if sched else cfg.lr)
            self.history["epoch_time"].append(time.perf_counter() - t0)
            score = float(np.nanmean(valid_L)) if len(self.valid[0]) else -epoch  # no valid: last
            if score < best_loss:
                best_loss, since = score, 0
                best = _snapshot(self.net, params, guide)
                self.history["best_epoch"] = epoch
            else:
                since += 1
                if cfg.patience is not None and since >= cfg.patience:
                    break
            bar.set_postfix(train=float(np.mean(mean_L)),
                            valid=score if len(self.valid[0]) else float("nan"))
        _restore(self.net, params, guide, best)
        return params if params is not None else guide

    def _epoch(self, epoch, step_fn, sched, params, guide):
        """One pass over the stratified batches. Returns the per-step task losses, presence and
        weights (steps, m) and the log factors (steps,)."""
        cfg, m = self.cfg, len(self.names)
        losses, weights, objectives, present = [], [], [], []
        for step, rows in enumerate(stratified_batches(self.task_rows, cfg.batch_size,
                                                       self.rng, cfg.fill)):
            batch = self.batch(rows)
            try:
                tr = step_fn(batch)
            except ValueError as err:  # a distribution rejected non-finite parameter values
                self._nonfinite_parameters(epoch, step, params, guide, err)
            if sched is not None:
                sched.step()
            if params is not None:
                self.net.update_omega(params, cfg.omega_eps)
            else:
                self._guide_omega(guide)
            losses.append(tr.nodes["task_loss"]["value"].detach())
            weights.append(tr.nodes["task_weight"]["value"].detach())
            objectives.append(tr.nodes["balanced_loss"]["fn"].log_factor.detach())
            present.append(torch.bincount(batch[1], minlength=m) > 0)
            self._check_finite(epoch, step, losses[-1], present[-1], objectives[-1])
        return torch.stack(losses), torch.stack(present), torch.stack(weights), \
            torch.stack(objectives)

    def _check_finite(self, epoch, step, L, present, log_factor):
        """Raise NonFiniteResultError naming the task(s) and the epoch (one sync per step)."""
        where = f"at epoch {epoch + 1} (step {step + 1})"
        bad = ~torch.isfinite(L) & present
        if bad.any():
            tasks = [self.names[i] for i in torch.nonzero(bad).squeeze(1).tolist()]
            raise NonFiniteResultError(
                f"non-finite training loss of task(s) {', '.join(map(repr, tasks))} {where}; "
                "lower lr, rescale the targets or check the data")
        if not torch.isfinite(log_factor):
            worst = int(torch.argmax(L.masked_fill(~present, -math.inf)))
            raise NonFiniteResultError(
                f"non-finite balanced objective {where}; the largest task loss is task "
                f"{self.names[worst]!r} (L = {float(L[worst]):.4g}); for BMTL raise T or rescale "
                "the targets")

    def _nonfinite_parameters(self, epoch, step, params, guide, err):
        tensors = list(params.values()) if params is not None else list(guide.parameters())
        if all(bool(torch.isfinite(t).all()) for t in tensors):
            raise err
        raise NonFiniteResultError(
            f"parameters became non-finite before epoch {epoch + 1} step {step + 1} (a step with "
            "non-finite gradients); lower lr or check the data") from err


def _median(guide) -> dict:
    return {k: v.detach() for k, v in guide.median().items()}


def _snapshot(net, values, guide):
    buffers = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if values is not None:
        return buffers, {k: v.detach().clone() for k, v in values.items()}
    return buffers, copy.deepcopy(guide.state_dict())


def _restore(net, values, guide, snap):
    if snap is None:
        return
    buffers, state = snap
    net.load_state_dict(buffers)
    with torch.no_grad():
        if values is not None:
            for k, v in state.items():
                values[k].copy_(v)
        else:
            guide.load_state_dict(state)

