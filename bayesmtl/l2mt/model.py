r"""L2MT's estimation and link functions as a Bayesian model (Pyro), trained by MAP or SVI.

Training set: q tuples (S_i, Ω_i, o_i) grouped by problem (:func:`meta_data`). With the LGNN
task embeddings E_i = (e_i1, …, e_im) of problem S_i (:mod:`~bayesmtl.l2mt.lgnn`), eq. (5)

    f(E, Ω) = α₁ tr(EᵀEΩ) + α₂ tr(KΩ) + α₄ tr(Ω²),   K_jk = exp(-‖α₃(e_j - e_k)‖²),

and the link υ(o) = tanh(γ₁o + γ₂), the generative model is

    L₁, L₂ ~ N(0, σ_L²) entrywise,          σ_L² = b / (2 q λ),
    β₁, β₂, α, γ ~ N(0, s²) entrywise       (s = ``prior_scale``; s = ∞: flat, improper),
    υ(o_i) | S_i, Ω_i ~ Laplace(f(E_i, Ω_i), b)   independently for i = 1..q,

so that, at any parameter value, with s = ∞

    -log p(Θ, υ(o)) = (q / b) · objective (6) + q log(2b) + ½ n_L log(2π σ_L²),

objective (6) = (1/q) Σ_i |f(E_i, Ω_i) - υ(o_i)| + λ Σ_k ‖L_k‖²_F, n_L the number of entries
of L₁, L₂ (λ is the paper's λ = ``lam``, b the Laplace scale ``scale``). A finite s adds
Σ θ²/(2s²) + its normalisers for β, α, γ. As in objective (6), the Laplace factor is a density
for υ(o), not for o (it omits the Jacobian γ₁(1 - υ²) of the link).

MAP (AutoDelta) minimises exactly this with Adam on minibatches of problems (a problem's
tuples share its embedding) and the paper's learning rate, linearly decaying from 0.01; SVI
fits AutoNormal (or a low-rank multivariate normal) with the single-particle Trace_ELBO and
needs a proper prior (finite s). Initialisation is the paper's: L entries ~ N(0, 1/100),
β = 0, α = (1, 1, 1, 0.1), γ = (1, 0).

**A degenerate minimiser of (6).** With the link learned, objective (6) is driven towards 0
by γ alone: large γ₁ and γ₂ saturate υ(o_i) ≈ 1 for every tuple, and a constant f ≈ 1 then
fits them all whatever Ω is. On 95 MNIST problems (4,204 tuples) MAP went there (γ ≈ (2.0,
1.35), spread of υ(o) 0.002, correlation of f with υ(o) 0.12; benchmarks/results_l2mt.md).
``link="fixed"`` keeps γ = (1, 0), υ(o) = tanh o (the paper's initial link), a documented
deviation that removes this direction.

Tensors live on ``device="auto"`` (CUDA when torch sees one); priors are buffers; saved as a
state dict plus JSON, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoLowRankMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from pyro.nn import PyroModule, PyroSample
from tqdm.auto import tqdm

from ..deep.networks import Flat
from ..deep.result import local_params, resolve_device
from ..errors import DataError, HyperparameterError, ModelFileError, NonFiniteResultError
from ..io import atomic_file
from .lgnn import lgnn_embed, pad_tasks, task_arrays
from .theorem3 import omega_tilde, phi_and_rho

__all__ = ["L2MTConfig", "MetaData", "meta_data", "experience_meta", "L2MTNet", "fit_l2mt",
           "L2MTResult", "estimation", "link", "STATE_FORMAT", "PAPER_INIT"]

STATE_FORMAT = "bayesmtl.l2mt/1"
SITES = ("L1", "L2", "beta1", "beta2", "alpha", "gamma")
PAPER_INIT = {"alpha": (1.0, 1.0, 1.0, 0.1), "gamma": (1.0, 0.0), "L_std": 0.1}


@dataclass(frozen=True)
class L2MTConfig:
    """Validated hyperparameters of one L2MT fit (JSON-able).

    hidden : d̂; layers : s; k : neighbours of the label graph; lam : λ of (6); scale : b,
    the Laplace scale; prior_scale : s of the N(0, s²) priors on β, α, γ (inf: flat);
    epochs, batch_size (problems per step), lr (decays linearly to lr/epochs); inference
    "map" or "svi"; guide "normal" or "lowrank"; svi_init_scale : initial guide std;
    link : "learned" (the paper: γ is a parameter) or "fixed" (γ = (1, 0), υ(o) = tanh o;
    see the module docstring for why).
    """

    n_features: int
    hidden: int = 50
    layers: int = 2
    k: int = 6
    lam: float = 0.1
    scale: float = 0.1
    prior_scale: float = math.inf
    epochs: int = 200
    batch_size: int = 8
    lr: float = 0.01
    inference: str = "map"
    guide: str = "normal"
    svi_init_scale: float = 0.01
    link: str = "learned"
    seed: int = 0

    def check(self) -> L2MTConfig:
        def need(name, ok, what):
            if not ok:
                value = getattr(self, name)
                raise HyperparameterError(f"l2mt: {name} {what}; got {value!r}", name, value)

        for name in ("n_features", "hidden", "layers", "k", "epochs", "batch_size"):
            value = getattr(self, name)
            need(name, isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                 and value >= 1, "must be an integer ≥ 1")
        need("lam", _finite(self.lam) and self.lam >= 0, "must be a finite number ≥ 0")
        need("scale", _finite(self.scale) and self.scale > 0, "must be a finite number > 0")
        need("prior_scale", isinstance(self.prior_scale, (int, float)) and self.prior_scale > 0
             and not math.isnan(self.prior_scale), "must be > 0 (inf for flat priors)")
        need("lr", _finite(self.lr) and self.lr > 0, "must be a finite number > 0")
        need("svi_init_scale", _finite(self.svi_init_scale) and self.svi_init_scale > 0,
             "must be a finite number > 0")
        need("inference", self.inference in ("map", "svi"), "must be 'map' or 'svi'")
        need("guide", self.guide in ("normal", "lowrank"), "must be 'normal' or 'lowrank'")
        need("link", self.link in ("learned", "fixed"), "must be 'learned' or 'fixed'")
        if self.inference == "svi":
            need("prior_scale", math.isfinite(self.prior_scale),
                 "must be finite for SVI (flat priors on β, α, γ make the posterior improper)")
            need("lam", self.lam > 0, "must be > 0 for SVI (a flat prior on L is improper)")
        return self


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


# ----------------------------------------------------------------------------- data


class MetaData(NamedTuple):
    """P problems padded to M tasks of n rows and K tuples (NumPy).

    X (P, M, n, d), G (P, M, n, n), rows (P, M, n) row mask; omega (P, K, M, M) trace-one task
    covariances (zero outside the problem's m tasks); o (P, K) relative test errors;
    tuples (P, K) tuple mask.
    """

    X: np.ndarray
    G: np.ndarray
    rows: np.ndarray
    omega: np.ndarray
    o: np.ndarray
    tuples: np.ndarray

    @property
    def n_tuples(self) -> int:
        return int(self.tuples.sum())


def meta_data(problems, k: int = 6) -> MetaData:
    """Stack training problems [(train MultiTaskData, omegas (K_i, m_i, m_i), o (K_i,))].

    Each Ω is rescaled to trace one (the paper's preprocessing); non-finite o or Ω raise.
    """
    if not problems:
        raise DataError("L2MT needs at least one training problem")
    tasks, omegas, os_ = [], [], []
    for i, (data, omega, o) in enumerate(problems):
        omega, o = np.asarray(omega, float), np.asarray(o, float)
        if omega.ndim != 3 or omega.shape[1:] != (data.n_tasks, data.n_tasks) \
                or o.shape != omega.shape[:1]:
            raise DataError(f"problem {i}: omegas must be (K, m, m) and o (K,) with m = "
                            f"{data.n_tasks}; got {omega.shape} and {o.shape}")
        if not (np.all(np.isfinite(omega)) and np.all(np.isfinite(o))):
            raise DataError(f"problem {i}: non-finite Ω or relative error o")
        tr = np.trace(omega, axis1=1, axis2=2)
        if np.any(tr <= 0):
            raise DataError(f"problem {i}: a task covariance has trace ≤ 0")
        tasks.append(task_arrays(data, k))
        omegas.append(omega / tr[:, None, None])
        os_.append(o)
    d = {X.shape[1] for t in tasks for X, _ in t}
    if len(d) != 1:
        raise DataError(f"every problem must have the same features (LGNN's L₁ is d × d̂); "
                        f"got feature counts {sorted(d)}")
    P, M = len(tasks), max(len(t) for t in tasks)
    n = max(X.shape[0] for t in tasks for X, _ in t)
    K = max(len(o) for o in os_)
    Xs, Gs, R = np.zeros((P, M, n, d.pop())), np.zeros((P, M, n, n)), np.zeros((P, M, n), bool)
    Om, O, T = np.zeros((P, K, M, M)), np.zeros((P, K)), np.zeros((P, K), bool)
    for p, (t, om, o) in enumerate(zip(tasks, omegas, os_, strict=True)):
        Xp, Gp, mask = pad_tasks(t, n)
        m, kk = len(t), len(o)
        Xs[p, :m], Gs[p, :m], R[p, :m] = Xp, Gp, mask
        Om[p, :kk, :m, :m], O[p, :kk], T[p, :kk] = om, o, True
    return MetaData(Xs, Gs, R, Om, O, T)


def experience_meta(problems, k: int = 6) -> MetaData:
    """:func:`meta_data` of loaded experience problems (:func:`~.experience.load_experience`),
    their training splits rebuilt from the specs."""
    from .problems import build_problem

    return meta_data([(build_problem(p.spec).train, p.omegas, p.o) for p in problems], k)


# ----------------------------------------------------------------------------- model


def estimation(E: torch.Tensor, omega: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eq. (5): f (..., K) for embeddings E (..., M, d̂) and Ω (..., K, M, M)."""
    lin = E @ E.transpose(-1, -2)
    sq = torch.diagonal(lin, dim1=-2, dim2=-1)
    dist2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * lin).clamp(min=0.0)
    K = torch.exp(-(alpha[2] ** 2) * dist2)
    kern = alpha[0] * lin + alpha[1] * K
    return (kern[..., None, :, :] * omega).sum((-1, -2)) + alpha[3] * (omega**2).sum((-1, -2))


def link(o: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """υ(o) = tanh(γ₁o + γ₂)."""
    return torch.tanh(gamma[0] * o + gamma[1])


def _normal_or_flat(shape):
    def prior(self):
        if math.isinf(float(self.prior_scale)):
            return Flat(shape)
        return dist.Normal(torch.zeros((), dtype=self.prior_scale.dtype,
                                       device=self.prior_scale.device),
                           self.prior_scale).expand(shape).to_event(len(shape))
    return prior


class L2MTNet(PyroModule):
    """LGNN + estimation + link; priors as buffers (``.to(device)`` moves them)."""

    def __init__(self, cfg: L2MTConfig, n_tuples: int):
        super().__init__()
        d, h = cfg.n_features, cfg.hidden
        self.layers = cfg.layers
        sigma = math.sqrt(cfg.scale / (2.0 * n_tuples * cfg.lam)) if cfg.lam > 0 else math.inf
        self.register_buffer("sigma_L", torch.tensor(sigma, dtype=torch.float64))
        self.register_buffer("prior_scale", torch.tensor(float(cfg.prior_scale),
                                                         dtype=torch.float64))
        self.register_buffer("b", torch.tensor(float(cfg.scale), dtype=torch.float64))
        for name in ("L1", "L2"):
            setattr(self, name, PyroSample(_weight_prior((d, h))))
        self.beta1 = PyroSample(_normal_or_flat((h,)))
        self.beta2 = PyroSample(_normal_or_flat((h,)))
        self.alpha = PyroSample(_normal_or_flat((4,)))
        if cfg.link == "learned":
            self.gamma = PyroSample(_normal_or_flat((2,)))
        else:
            self.register_buffer("gamma", torch.tensor(PAPER_INIT["gamma"],
                                                       dtype=torch.float64))

    def params(self) -> dict:
        """The current value of every site (inside a handler: the conditioned values)."""
        return {name: getattr(self, name) for name in SITES}

    def forward(self, X, G, rows, omega, o, tuples, n_problems=None, subsample=None):
        """Observe υ(o) for the problems ``subsample`` (all when None) of ``n_problems``."""
        th = self.params()
        P = X.shape[0] if n_problems is None else n_problems
        with pyro.plate("problems", P, subsample=subsample, device=X.device):
            E = lgnn_embed(X, G, rows, th["L1"], th["beta1"], th["L2"], th["beta2"],
                           self.layers)
            f = estimation(E, omega, th["alpha"])
            pyro.sample("upsilon", dist.Laplace(f, self.b).mask(tuples).to_event(1),
                        obs=link(o, th["gamma"]))
        return f


def _weight_prior(shape):
    def prior(self):
        if math.isinf(float(self.sigma_L)):
            return Flat(shape)
        return dist.Normal(torch.zeros((), dtype=self.sigma_L.dtype, device=self.sigma_L.device),
                           self.sigma_L).expand(shape).to_event(2)
    return prior


def paper_init(cfg: L2MTConfig, seed: int, dtype=torch.float64, device="cpu") -> dict:
    """The paper's initial values of the latent sites: L ~ N(0, 1/100), β = 0,
    α = (1, 1, 1, .1), γ = (1, 0) (γ only when the link is learned)."""
    g = torch.Generator().manual_seed(int(seed))
    d, h = cfg.n_features, cfg.hidden
    init = {name: (PAPER_INIT["L_std"] * torch.randn(d, h, generator=g, dtype=dtype))
            for name in ("L1", "L2")}
    init.update(beta1=torch.zeros(h, dtype=dtype), beta2=torch.zeros(h, dtype=dtype),
                alpha=torch.tensor(PAPER_INIT["alpha"], dtype=dtype),
                gamma=torch.tensor(PAPER_INIT["gamma"], dtype=dtype))
    if cfg.link == "fixed":
        del init["gamma"]
    return {k: v.to(device) for k, v in init.items()}


def _guide(net, cfg: L2MTConfig, init: dict):
    loc = init_to_value(values=init)
    if cfg.inference == "map":
        return AutoDelta(net, init_loc_fn=loc)
    if cfg.guide == "lowrank":
        return AutoLowRankMultivariateNormal(net, init_loc_fn=loc, init_scale=cfg.svi_init_scale)
    return AutoNormal(net, init_loc_fn=loc, init_scale=cfg.svi_init_scale)


# ----------------------------------------------------------------------------- fit


def fit_l2mt(meta: MetaData, *, hidden=50, layers=2, k=6, lam=0.1, scale=0.1,
             prior_scale=None, epochs=200, batch_size=8, lr=0.01, inference="map",
             guide="normal", svi_init_scale=0.01, link="learned", seed=0, device="auto",
             progress_bar=False, dtype=torch.float64) -> L2MTResult:
    """Fit the estimation/link model on :class:`MetaData` (from :func:`meta_data`).

    ``prior_scale`` defaults to ∞ (flat; MAP reproduces objective (6)) for MAP and 10 for
    SVI. Returns an :class:`L2MTResult`; raises :class:`NonFiniteResultError` if the loss
    becomes NaN.
    """
    if not isinstance(meta, MetaData):
        raise DataError("fit_l2mt takes MetaData; build it with l2mt.meta_data(problems)")
    if prior_scale is None:
        prior_scale = math.inf if inference == "map" else 10.0
    cfg = L2MTConfig(n_features=int(meta.X.shape[-1]), hidden=hidden, layers=layers, k=k,
                     lam=lam, scale=scale, prior_scale=prior_scale, epochs=epochs,
                     batch_size=batch_size, lr=lr, inference=inference, guide=guide,
                     svi_init_scale=svi_init_scale, link=link, seed=seed).check()
    dev = resolve_device(device)
    pyro.set_rng_seed(seed)
    tensors = [torch.as_tensor(a, device=dev, dtype=dtype if a.dtype != bool else torch.bool)
               for a in meta]
    P = tensors[0].shape[0]
    with local_params():
        net = L2MTNet(cfg, meta.n_tuples).to(dev)
        guide_ = _guide(net, cfg, paper_init(cfg, seed, dtype, dev))
        with torch.no_grad():
            guide_(*tensors)
        params = list(guide_.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: max(1.0 - e / cfg.epochs, 1.0 / cfg.epochs))
        elbo = Trace_ELBO()
        rng = np.random.default_rng(seed)
        history = {"loss": [], "epoch_time": []}
        B = min(cfg.batch_size, P)
        for _ in tqdm(range(cfg.epochs), disable=not progress_bar, desc="l2mt epochs"):
            t0, total = time.perf_counter(), 0.0
            order = rng.permutation(P)
            for start in range(0, P, B):
                idx = torch.as_tensor(np.sort(order[start:start + B]), device=dev)
                batch = [t[idx] for t in tensors]
                opt.zero_grad()
                loss = elbo.differentiable_loss(net, guide_, *batch, n_problems=P,
                                                subsample=idx)
                if not torch.isfinite(loss):
                    raise NonFiniteResultError(
                        "l2mt: the training loss became NaN or inf; lower lr or raise lam")
                loss.backward()
                opt.step()
                total += float(loss.detach())
            sched.step()
            history["loss"].append(total / max(1, math.ceil(P / B)))
            history["epoch_time"].append(time.perf_counter() - t0)
    history = {k: np.asarray(v) for k, v in history.items()}
    return L2MTResult(net, guide_, cfg, history, meta.n_tuples, dev)


# ----------------------------------------------------------------------------- result


class L2MTResult:
    """A fitted L2MT model: task embeddings, f, and the test-time Ω̃ (Theorem 3).

    ``values()`` is the MAP (AutoDelta) or the guide's median (SVI); ``draws(S)`` samples the
    SVI guide. ``omega(data)`` embeds the tasks of a classification MultiTaskData and solves
    problem (7); ``omega_draws`` pushes guide draws through the same map.
    """

    def __init__(self, net, guide, config: L2MTConfig, history: dict, n_tuples: int,
                 device=None, path=None):
        self.net, self.guide, self.config = net, guide, config
        self.history, self.n_tuples = history, int(n_tuples)
        self.device = torch.device("cpu") if device is None else device
        self.path = path

    # parameters
    def values(self) -> dict:
        with torch.no_grad(), local_params():
            return self._with_link({k: v.detach() for k, v in self.guide.median().items()})

    def _with_link(self, values: dict) -> dict:
        if self.config.link == "fixed":
            values["gamma"] = self.net.gamma.detach()
        return values

    def draws(self, num_draws: int, seed: int = 0) -> list:
        if self.config.inference != "svi":
            raise HyperparameterError("posterior draws need an SVI fit (inference='svi')",
                                      "inference", self.config.inference)
        pyro.set_rng_seed(seed)
        args = _dummy_args(self.config, self.device)
        out = []
        with torch.no_grad(), local_params():
            for _ in range(int(num_draws)):
                tr = pyro.poutine.trace(self.guide).get_trace(*args)
                out.append(self._with_link({k: tr.nodes[k]["value"].detach() for k in SITES
                                            if k in tr.nodes}))
        return out

    # embeddings and Ω̃
    def embed(self, data, values: dict | None = None) -> np.ndarray:
        """Task embeddings E (m, d̂) of a classification MultiTaskData's training rows."""
        if data.n_features != self.config.n_features:
            raise DataError(f"the L2MT model was trained on {self.config.n_features} features;"
                            f" got {data.n_features}")
        th = self.values() if values is None else values
        X, G, mask = pad_tasks(task_arrays(data, self.config.k))
        t = [torch.as_tensor(a, device=self.device) for a in (X, G, mask)]
        with torch.no_grad():
            E = lgnn_embed(*t, th["L1"], th["beta1"], th["L2"], th["beta2"], self.config.layers)
        return E.cpu().numpy()

    def phi_rho(self, data, values: dict | None = None):
        """(Φ (m, m), ρ) of problem (7) for the tasks of ``data``."""
        th = self.values() if values is None else values
        E = self.embed(data, th)
        return phi_and_rho(E.T, th["alpha"].cpu().numpy(), th["gamma"].cpu().numpy())

    def omega(self, data, values: dict | None = None) -> np.ndarray:
        """Ω̃ (m, m), trace one: Theorem 3's solution of problem (7)."""
        phi, rho = self.phi_rho(data, values)
        return omega_tilde(phi, rho)

    def omega_draws(self, data, num_draws: int = 200, seed: int = 0) -> np.ndarray:
        """(S, m, m): Ω̃ of each of S draws of (L, β, α, γ) from the SVI guide."""
        return np.stack([self.omega(data, v) for v in self.draws(num_draws, seed)])

    def estimate(self, data, omega) -> tuple:
        """(f, ô): the estimation function at Ω and the relative error it implies,
        ô = (atanh f - γ₂)/γ₁ (NaN where |f| ≥ 1)."""
        th = self.values()
        E = torch.as_tensor(self.embed(data, th), device=self.device)
        om = torch.as_tensor(np.asarray(omega, float), device=self.device)
        with torch.no_grad():
            f = float(estimation(E, om[None], th["alpha"])[0])
        g = th["gamma"].cpu().numpy()
        o_hat = (math.atanh(f) - g[1]) / g[0] if abs(f) < 1 and g[0] != 0 else math.nan
        return f, o_hat

    # state
    def save(self, path) -> str:
        """Write the guide's state dict and JSON metadata to ``path`` (atomically)."""
        path = os.fspath(path)
        meta = {"format": STATE_FORMAT, "config": _json_config(self.config),
                "n_tuples": self.n_tuples,
                "history": {k: np.asarray(v).tolist() for k, v in self.history.items()}}
        state = {"meta": json.dumps(meta),
                 "guide": {k: v.detach().cpu() for k, v in self.guide.state_dict().items()}}
        with atomic_file(path) as fh:
            torch.save(state, fh)
        self.path = path
        return path

    @classmethod
    def load(cls, path, device="auto") -> L2MTResult:
        """Read a model written by :meth:`save` (``weights_only=True``; no pickle)."""
        path = os.fspath(path)
        dev = resolve_device(device)
        try:
            state = torch.load(path, map_location=dev, weights_only=True)
            meta = json.loads(state["meta"])
        except FileNotFoundError:
            raise ModelFileError(f"no L2MT model at {path}") from None
        except Exception as err:
            raise ModelFileError(f"{path} is not an L2MT model file ({err})") from None
        if meta.get("format") != STATE_FORMAT:
            raise ModelFileError(f"{path} has format {meta.get('format')!r}; expected "
                                 f"{STATE_FORMAT!r}")
        cfg = L2MTConfig(**_config_from_json(meta["config"])).check()
        with local_params():
            net = L2MTNet(cfg, meta["n_tuples"]).to(dev)
            guide = _guide(net, cfg, paper_init(cfg, cfg.seed, device=dev))
            dummy = _dummy_args(cfg, dev)
            with torch.no_grad():
                guide(*dummy)
            guide.load_state_dict(state["guide"])
        history = {k: np.asarray(v) for k, v in meta["history"].items()}
        return cls(net, guide, cfg, history, meta["n_tuples"], dev, path)


def _dummy_args(cfg, dev):
    z = torch.zeros
    return (z((1, 1, 1, cfg.n_features), dtype=torch.float64, device=dev),
            z((1, 1, 1, 1), dtype=torch.float64, device=dev),
            torch.ones((1, 1, 1), dtype=torch.bool, device=dev),
            z((1, 1, 1, 1), dtype=torch.float64, device=dev),
            z((1, 1), dtype=torch.float64, device=dev),
            torch.ones((1, 1), dtype=torch.bool, device=dev))


def _json_config(cfg: L2MTConfig) -> dict:
    out = asdict(cfg)
    out["prior_scale"] = None if math.isinf(cfg.prior_scale) else cfg.prior_scale
    return out


def _config_from_json(d: dict) -> dict:
    d = dict(d)
    d["prior_scale"] = math.inf if d.get("prior_scale") is None else d["prior_scale"]
    return d
