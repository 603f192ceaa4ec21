r"""GAMTL (group-adaptive MTL): a trace-Lasso prior on task combinations C.

Objective (1), λ = ``lam`` (reconstruction precision), γ = ``gamma`` (trace-Lasso weight):

    F = Σ_i L_i + (λ/2) Σ_i ‖w_i - W_{-i} c_i‖² + γ Σ_i ‖W_{-i} Diag(c_i)‖_*,

the negative log density of the Gibbs-type joint :func:`~bayesmtl.models.gamtl.gamtl_model`
(reconstruction prior w_i | W_{-i}, c_i ~ N(W_{-i}c_i, I/λ), trace-Lasso prior on c_i, flat
W and b, likelihood tempered by 1/n_i with σ = 1/√2). MAP: Algorithm 1 (alternating ADMM).
NUTS samples the same density (small problems). Exported relation: ``combination`` C with
dims (source_task, target_task).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..models import gamtl as G
from ..models.likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from ..models.losses import row_weights
from .common import history_info, map_noise
from .registry import Fit, Hyper, JointForm, Method, positive, register


def _fit(data, hyper, settings, init=None):
    if map_noise(settings) != PAPER_SQUARED_LOSS_NOISE:
        from ..errors import HyperparameterError

        raise HyperparameterError("GAMTL's objective fixes the squared loss (σ = 1/√2); "
                                  "noise cannot be set for its MAP", "noise", settings.noise)
    kw = {k: v for k, v in (("max_outer", settings.max_iter), ("tol", settings.tol))
          if v is not None}
    warm = None if init is None else (init.W, init.b, init.relation["combination"])
    r = G.fit_gamtl(data, hyper["lam"], hyper["gamma"],
                    loss_scale=settings.resolved_loss_scale(), init=warm,
                    deadline=settings.deadline, **kw)
    info = history_info(r.history, r.n_outer)
    info["n_groups"] = int(r.n_groups)
    return Fit(r.W, r.b, {"combination": r.combination}, r.objective, r.converged, info, r)


def _joint(data, hyper, settings, fit):
    classification = data.kind == "classification"
    lik = BernoulliLogit() if classification else Gaussian(PAPER_SQUARED_LOSS_NOISE)
    weights = row_weights(data.task, data.n_tasks, settings.resolved_loss_scale())
    args = (jnp.asarray(data.X), jnp.asarray(data.task), data.n_tasks)
    kw = {"y": jnp.asarray(data.y), "lam": hyper["lam"], "gamma": hyper["gamma"],
          "likelihood": lik, "weights": jnp.asarray(weights)}
    params = {"W": fit.W, "b": fit.b,
              "combination_offdiag": G.combination_to_offdiag(jnp.asarray(
                  fit.relation["combination"]))}
    return JointForm(G.gamtl_model, args, kw, params)


def _sample(data, hyper, settings):
    return G.sample_gamtl(data, hyper["lam"], hyper["gamma"],
                          loss_scale=settings.resolved_loss_scale(),
                          num_warmup=settings.num_warmup, num_samples=settings.num_samples,
                          num_chains=settings.num_chains, seed=settings.seed,
                          progress_bar=settings.progress_bar,
                          target_accept_prob=settings.target_accept_prob,
                          max_tree_depth=settings.max_tree_depth)


register(Method(
    name="gamtl",
    statistics=True,
    summary="GAMTL: tasks reconstructed from others with a trace-Lasso prior (groups)",
    hyper=(Hyper("lam", 1.0, positive, "λ: precision of the reconstruction prior"),
           Hyper("gamma", 1.0, positive, "γ: weight of the trace-Lasso prior on c_i")),
    fit_map=_fit,
    joint=_joint,
    sample=_sample,
    samplers=frozenset({"nuts"}),
    relation="combination",
    grid={"lam": (0.01, 0.1, 1.0, 10.0), "gamma": (0.01, 0.1, 1.0)},
    sampling_prior=("the Gibbs-type joint exp(-F) with flat W and b (both priors "
                    "unnormalised); small problems"),
))
