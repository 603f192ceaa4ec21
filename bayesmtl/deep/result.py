"""The fitted deep model: predictions, history, Ω, ArviZ export, and state without pickle."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pyro
import torch
from pyro import poutine

from ..data import REGRESSION, check_features, task_index
from ..errors import DataError, HyperparameterError, ModelFileError
from .balancing import DS, Strategy
from .model import deep_model
from .networks import NETWORKS, DeepNet, TaskLayout

__all__ = ["DeepResult", "resolve_device", "local_params", "STATE_FORMAT"]

STATE_FORMAT = "bayesmtl.deep/1"
HISTORY_ARRAYS = ("train_loss", "valid_loss", "task_weight", "objective", "epoch_time", "lr")


def resolve_device(device) -> torch.device:
    """"auto" → CUDA when ``torch.cuda.is_available()``, else CPU; otherwise a torch device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HyperparameterError(f"device must be 'auto' or a torch device; got {device!r}",
                                  "device", device) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HyperparameterError("device asks for CUDA but torch sees no GPU; use 'auto'",
                                  "device", device)
    return dev


@contextlib.contextmanager
def local_params():
    """Keep the guides' parameters inside their modules (never in Pyro's global param store),
    so fits in one process cannot share parameters by name."""
    with pyro.settings.context(module_local_params=True):
        yield


class _Sites(Strategy):
    """Stand-in strategy with given sites (restoring a guide needs its latent sites only)."""

    def __init__(self, sites: dict):
        self._sites = sites

    def sites(self, m):
        del m
        return self._sites

    def __call__(self, L, ctx):
        return DS()(L, ctx)


class DeepResult:
    """A fitted :func:`~bayesmtl.deep.fit_deep` model.

    Attributes
    ----------
    net : DeepNet (priors, Ω buffers); values : dict site → tensor (MAP) or None;
    guide : the fitted autoguide (SVI) or None; config : the fit's hyperparameters (JSON-able);
    layout : TaskLayout; history : dict of per-epoch arrays — ``train_loss``, ``valid_loss``,
    ``task_weight`` (E, m), ``objective`` (mean balanced loss B), ``epoch_time``, ``lr`` (E,)
    — and ``best_epoch``; noise_var : (m,) training mean squared residual (regression).
    """

    def __init__(self, *, net: DeepNet, config: dict, layout: TaskLayout, x_mean, x_scale,
                 feature_names, label_values, history: dict, noise_var, values=None,
                 guide=None, device=None, sites=None):
        self.net, self.config, self.layout = net, config, layout
        self.x_mean, self.x_scale = np.asarray(x_mean), np.asarray(x_scale)
        self.feature_names, self.label_values = tuple(feature_names), label_values
        self.history = {k: (np.asarray(v) if k in HISTORY_ARRAYS else v)
                        for k, v in history.items()}
        self.noise_var = np.asarray(noise_var, dtype=np.float64)
        self.values, self.guide = values, guide
        self.sites = {k: tuple(v) for k, v in (sites or {}).items()}
        self.device = device if device is not None else torch.device("cpu")
        self._draws = None

    # --- basic views ------------------------------------------------------------------------
    @property
    def task_names(self) -> tuple:
        return self.layout.task_names

    @property
    def n_tasks(self) -> int:
        return self.layout.n_tasks

    @property
    def omega(self):
        """(m, m) task covariance Ω of the "omega" heads (block-diagonal over head groups, each
        block of trace 1; tasks with different output sets are independent), else None."""
        if self.net.heads_prior != "omega":
            return None
        m = self.n_tasks
        out = np.zeros((m, m))
        for head, (_, tasks) in zip(self.net.heads, self.layout.groups, strict=True):
            out[np.ix_(tasks, tasks)] = head.omega.detach().double().cpu().numpy()
        return out

    # --- prediction -------------------------------------------------------------------------
    def _inputs(self, X, task):
        X = check_features(X, len(self.feature_names))
        if isinstance(task, (str, np.str_)) or (np.ndim(task) and len(task)
                                                and isinstance(np.asarray(task)[0], str)):
            idx = task_index(self.task_names, np.atleast_1d(task))
        else:
            idx = np.atleast_1d(np.asarray(task))
            if idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= self.n_tasks:
                raise DataError(f"task_index must be task names or integers in "
                                f"[0, {self.n_tasks}); got {task!r}")
        if idx.size == 1:
            idx = np.repeat(idx, len(X))
        if idx.shape != (len(X),):
            raise DataError(f"task_index must be one task or {len(X)} task indices; "
                            f"got shape {idx.shape}")
        dtype = getattr(torch, self.config["dtype"])
        Xt = torch.as_tensor((X - self.x_mean) / self.x_scale, dtype=dtype, device=self.device)
        return Xt, torch.as_tensor(idx, device=self.device).long(), idx

    def _posterior_values(self) -> list:
        """[values] for MAP; ``num_samples`` guide draws for SVI (seeded: repeatable)."""
        if self.guide is None:
            return [self.values]
        if self._draws is None:
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), local_params(), torch.no_grad():
                torch.manual_seed(self.config["seed"])
                self._draws = [{k: v.detach() for k, v in self.guide().items()}
                               for _ in range(self.config["num_samples"])]
        return self._draws

    @torch.no_grad()
    def _predict_draws(self, X, task) -> torch.Tensor:
        """(S, n) means or (S, n, K) probabilities, one per posterior draw."""
        with local_params():
            return torch.stack([self.net.predictions(poutine.condition(self.net, data=v)(X, task),
                                                     X.shape[0])
                                for v in self._posterior_values()])

    def predict(self, X, task_index, return_std: bool = False):
        """(n,) regression means or predicted class codes (indices into ``label_values``).

        ``return_std`` (SVI fits): also the (n,) predictive sd — regression: √(Var_q[f(x)] +
        σ̂_i²) with σ̂_i² the task's training mean squared residual; classification: the sd over
        posterior draws of the predicted class's probability."""
        if return_std and self.guide is None:
            raise HyperparameterError("return_std needs a fit with inference='svi'",
                                      "return_std", return_std)
        X, task, idx = self._inputs(X, task_index)
        draws = self._predict_draws(X, task).double().cpu().numpy()
        if self.layout.kind == REGRESSION:
            mean = draws.mean(0)
            if not return_std:
                return mean
            return mean, np.sqrt(draws.var(0) + self.noise_var[idx])
        proba = draws.mean(0)
        code = proba.argmax(1)
        if not return_std:
            return code
        return code, draws[:, np.arange(len(code)), code].std(0)

    def predict_proba(self, X, task_index) -> np.ndarray:
        """(n, K) class probabilities over the data set's classes (K = 2 for binary; 0 for
        classes the task's head lacks), averaged over posterior draws for SVI."""
        if self.layout.kind == REGRESSION:
            raise DataError("predict_proba needs a classification fit")
        X, task, _ = self._inputs(X, task_index)
        return self._predict_draws(X, task).double().cpu().numpy().mean(0)

    # --- export -----------------------------------------------------------------------------
    def _head_arrays(self, values: dict) -> dict:
        p = self.net.heads[0].shape[0]
        m, K = self.n_tasks, self.layout.n_classes
        W, b = np.full((p, K, m), np.nan), np.full((K, m), np.nan)
        for g, (cls, tasks) in enumerate(self.layout.groups):
            rows, cols = np.asarray(cls)[:, None], np.asarray(tasks)[None, :]
            W[:, rows, cols] = values[f"heads.{g}.weight"].detach().double().cpu().numpy()
            b[rows, cols] = values[f"heads.{g}.bias"].detach().double().cpu().numpy()
        if self.layout.kind == REGRESSION:
            return {"head_weight": W[:, 0], "head_bias": b[0]}
        return {"head_weight": W, "head_bias": b}

    def to_datatree(self, task_names=None, feature_names=None):
        """ArviZ DataTree of the MAP point (1 chain × 1 draw) or the SVI draws (1 chain ×
        ``num_samples``): ``head_weight`` (hidden [or feature for hidden=0], class, task),
        ``head_bias``, ``omega`` (omega heads), ``log_var`` (uncertainty weighting) and the
        last epoch's ``task_weight`` and ``task_loss``, with task names as coordinates."""
        from ..inference.export import to_datatree

        task_names = list(task_names if task_names is not None else self.task_names)
        feature_names = list(feature_names if feature_names is not None
                             else self.feature_names)
        draws = self._posterior_values()
        per_draw = [self._head_arrays(v) for v in draws]
        samples = {k: np.stack([d[k] for d in per_draw])[None] for k in per_draw[0]}
        S = len(draws)
        if "balance.log_var" in draws[0]:
            samples["log_var"] = np.stack([v["balance.log_var"].detach().double().cpu().numpy()
                                           for v in draws])[None]
        extra = {"task_weight": self.history["task_weight"][-1],
                 "task_loss": self.history["train_loss"][-1]}
        if self.omega is not None:
            extra["omega"] = self.omega
        for k, v in extra.items():
            samples[k] = np.broadcast_to(v, (1, S) + v.shape).copy()
        unit = "feature" if self.config["hidden"] == 0 else "hidden"
        cls = [] if self.layout.kind == REGRESSION else ["class"]
        dims = {"head_weight": [unit, *cls, "task"], "head_bias": [*cls, "task"],
                "task_weight": ["task"], "log_var": ["task"]}
        dt = to_datatree(samples, task_names=task_names,
                         feature_names=feature_names if unit == "feature" else None, dims=dims,
                         attrs={"network": self.config["network"],
                                "balancing": self.config["balancing"]["name"],
                                "inference": self.config["inference"]})
        if cls:
            labels = [str(v) for v in self.label_values]
            dt["posterior"] = dt["posterior"].to_dataset().assign_coords({"class": labels})
        return dt

    # --- state ------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """(meta, arrays): JSON-able metadata and numpy arrays (module buffers, parameter values
        or guide state, scaling, history) — everything :meth:`restore` needs, no pickle."""
        arrays = {"x_mean": self.x_mean, "x_scale": self.x_scale, "noise_var": self.noise_var}
        arrays.update({f"net/{k}": v.detach().cpu().numpy()
                       for k, v in self.net.state_dict().items()})
        if self.guide is None:
            arrays.update({f"value/{k}": v.detach().cpu().numpy() for k, v in self.values.items()})
        else:
            arrays.update({f"guide/{k}": v.detach().cpu().numpy()
                           for k, v in self.guide.state_dict().items()})
        arrays.update({f"history/{k}": np.asarray(self.history[k]) for k in HISTORY_ARRAYS})
        sites = {name: list(shape) for name, shape in self.sites.items()}
        meta = {"format": STATE_FORMAT, "config": self.config, "layout": self.layout.to_json(),
                "feature_names": list(self.feature_names),
                "label_values": None if self.label_values is None else
                [v.item() if hasattr(v, "item") else v for v in self.label_values],
                "best_epoch": self.history.get("best_epoch"), "strategy_sites": sites}
        return meta, arrays

    @classmethod
    def restore(cls, meta: dict, arrays: dict, device="auto") -> DeepResult:
        """Rebuild a result from :meth:`state`; predictions are identical."""
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise ModelFileError(f"not a bayesmtl.deep state (format "
                                 f"{meta.get('format') if isinstance(meta, dict) else None!r})")
        try:
            cfg, layout = meta["config"], TaskLayout.from_json(meta["layout"])
            dev = resolve_device(device)
            dtype = getattr(torch, cfg["dtype"])
            with local_params():
                net = DeepNet(layout, len(meta["feature_names"]), cfg["hidden"],
                              NETWORKS[cfg["network"]], cfg["lam"], cfg["lam_heads"])
            net.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in arrays.items()
                                 if k.startswith("net/")})
            net = net.to(device=dev, dtype=dtype)
            values, guide = None, None
            if cfg["inference"] == "map":
                values = {k[6:]: torch.as_tensor(v, device=dev) for k, v in arrays.items()
                          if k.startswith("value/")}
                shapes = {k: tuple(v.shape) for k, v in values.items()}
                expected = site_shapes(net, meta["strategy_sites"])
                if shapes != expected:
                    raise ValueError(f"parameter values {shapes} do not fit the network's "
                                     f"sites {expected}")
            else:
                guide = _rebuild_guide(net, layout, meta, arrays, dev, dtype)
            history = {k: arrays[f"history/{k}"] for k in HISTORY_ARRAYS}
            history["best_epoch"] = meta.get("best_epoch")
            label_values = None if meta["label_values"] is None else tuple(meta["label_values"])
            return cls(net=net, config=cfg, layout=layout, x_mean=arrays["x_mean"],
                       x_scale=arrays["x_scale"], feature_names=meta["feature_names"],
                       label_values=label_values, history=history,
                       noise_var=arrays["noise_var"], values=values, guide=guide, device=dev,
                       sites=meta["strategy_sites"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise ModelFileError(f"cannot restore the deep model: {err}") from err


def site_shapes(net: DeepNet, sites: dict) -> dict:
    """Name → shape of every latent site of the model: the network's and the strategy's."""
    shapes = {}
    if net.trunk is not None:
        shapes["trunk.weight"], shapes["trunk.bias"] = net.trunk.shape, net.trunk.shape[:1]
    for g, head in enumerate(net.heads):
        shapes[f"heads.{g}.weight"], shapes[f"heads.{g}.bias"] = head.shape, head.shape[1:]
    shapes.update({k: tuple(v) for k, v in sites.items()})
    return {k: tuple(v) for k, v in shapes.items()}


def _rebuild_guide(net, layout, meta, arrays, dev, dtype):
    from .train import make_guide

    cfg, m = meta["config"], layout.n_tasks
    sites = {k: tuple(v) for k, v in meta["strategy_sites"].items()}
    model = functools.partial(deep_model, net=net, strategy=_Sites(sites), eta=1.0)
    init = {k: torch.zeros(s, dtype=dtype, device=dev) for k, s in
            site_shapes(net, sites).items()}
    X = torch.zeros(m, len(meta["feature_names"]), dtype=dtype, device=dev)
    task = torch.arange(m, device=dev)
    y = (torch.zeros(m, dtype=dtype, device=dev) if layout.kind == REGRESSION else
         torch.as_tensor([c[0] for c in layout.task_classes], device=dev).long())
    with local_params():
        guide = make_guide(model, cfg["guide"], init, cfg["svi_init_scale"])
        with torch.no_grad():
            guide(X, task, y)
        guide.load_state_dict({k[6:]: torch.as_tensor(v, device=dev) for k, v in arrays.items()
                               if k.startswith("guide/")})
    return guide
