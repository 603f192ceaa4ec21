r"""AMTL (Lee, Yang & Hwang 2016) and its ablations: a sparse, directed transfer graph B.

Objective (1), λ = ``lam``, μ = ``mu``, L_t the per-task mean loss:

    F(W, b, B) = Σ_t (1 + μ‖b_t^o‖₁) L_t + λ‖W - WB‖²_F,   B ≥ 0, diag B = 0.

MAP form (:func:`~bayesmtl.models.amtl.amtl_map_model`): reconstruction prior
exp(-λ‖W(I - B)‖²) and the likelihood tempered by (1 + μ‖b_t^o‖₁)/n_t (equivalently
B[s, t] ~ Exponential(μ L_s)), flat W, b; its negative log joint is F. Sampling uses the
proper-prior variant :func:`~bayesmtl.models.amtl.amtl_model` (B[s, t] ~ Exponential(μ Λ̂_s)
with Λ̂ the task losses of a MAP fit, W(I - B) ~ N(0, 1/(2λ))). The exported relation is
``transfer_graph`` with dims (source_task, target_task).

Registered variants: ``amtl`` (Algorithm 1), ``amtl_curriculum`` (Algorithm 2, an optimiser:
no sampler), ``amtl_noloss`` (Λ = I), ``amtl_imbalance`` (L_t → L_t/√n_t), ``smtl``
(symmetric B).
"""

from __future__ import annotations

import numpy as np

from ..errors import HyperparameterError
from ..models import amtl as A
from ..models.likelihoods import Gaussian
from .registry import Fit, Hyper, JointForm, Method, nonnegative, positive, register

LAM = Hyper("lam", 1.0, positive, "λ: precision of the reconstruction prior ‖W - WB‖²")
MU = Hyper("mu", 0.1, nonnegative, "μ: loss-weighted ℓ1 sparsity of the transfer graph")
GRID = {"lam": (0.01, 0.1, 1.0, 10.0), "mu": (0.01, 0.1, 1.0)}


def _check_loss_scale(settings):
    if settings.loss_scale not in (None, "mean"):
        raise HyperparameterError("AMTL's objective (1) fixes the per-task mean loss; "
                                  f"loss_scale={settings.loss_scale!r} is not available for MAP",
                                  "loss_scale", settings.loss_scale)


def _fit(variant):
    def fit_map(data, hyper, settings, init=None):
        _check_loss_scale(settings)
        kw = {k: v for k, v in (("max_iter", settings.max_iter), ("tol", settings.tol))
              if v is not None}
        warm = None
        if init is not None and variant != "curriculum":
            warm = (init.W, init.b, init.relation["transfer_graph"])
        r = A.fit_amtl(data, hyper["lam"], hyper["mu"], variant, init=warm,
                       deadline=settings.deadline, **kw)
        history = np.asarray(r.history)
        change = (abs(history[-2] - history[-1]) / max(1.0, abs(history[-1]))
                  if history.size > 1 else 0.0)
        info = {"n_iter": r.n_iter, "last_relative_change": float(change)}
        return Fit(r.W, r.b, {"transfer_graph": r.transfer_graph}, r.objective, r.converged,
                   info, r)
    return fit_map


def _joint(variant):
    def joint(data, hyper, settings, fit):
        del settings
        args, kw = A.map_model_inputs(data, variant)
        symmetric = variant == "smtl"
        rows, cols = A._offdiag_index(data.n_tasks, symmetric)
        kw.update(lam=hyper["lam"], mu=hyper["mu"],
                  loss="logistic" if data.kind == "classification" else "squared",
                  loss_dependent=variant != "noloss", symmetric=symmetric)
        params = {"W": fit.W, "b": fit.b,
                  A.graph_site_name(symmetric): fit.relation["transfer_graph"][rows, cols]}
        return JointForm(A.amtl_map_model, args, kw, params)
    return joint


def _sample(variant):
    def sample(data, hyper, settings):
        lik = None
        if settings.noise is not None and data.kind == "regression":
            lik = Gaussian(settings.noise)
        return A.sample_amtl(data, hyper["lam"], hyper["mu"], variant,
                             loss_scale=settings.resolved_loss_scale(), likelihood=lik,
                             num_warmup=settings.num_warmup, num_samples=settings.num_samples,
                             num_chains=settings.num_chains, seed=settings.seed,
                             target_accept_prob=settings.target_accept_prob,
                             progress_bar=settings.progress_bar)
    return sample


_SAMPLING = ("B[s, t] ~ Exponential(μ Λ̂_s), Λ̂ the task losses of a MAP fit (empirical Bayes); "
             "W(I - B) ~ N(0, 1/(2λ)) entry-wise (a linear SEM); b ~ N(0, 10 sd(y)²): proper "
             "for μ > 0")

for name, variant, summary in (
        ("amtl", "amtl", "AMTL (Algorithm 1): loss-weighted sparse asymmetric transfer graph"),
        ("amtl_curriculum", "curriculum",
         "AMTL Algorithm 2: one curriculum pass from STL (an optimiser of (1), not its MAP)"),
        ("amtl_noloss", "noloss", "AMTL without loss weighting (Λ = I: plain ℓ1 on B)"),
        ("amtl_imbalance", "imbalance", "AMTL with task losses scaled by 1/√n_t"),
        ("smtl", "smtl", "symmetric transfer (B = Bᵀ ≥ 0), same objective (1)")):
    register(Method(
        name=name,
        summary=summary,
        hyper=(LAM, MU),
        fit_map=_fit(variant),
        joint=_joint(variant),
        sample=None if variant == "curriculum" else _sample(variant),
        samplers=frozenset() if variant == "curriculum" else frozenset({"nuts"}),
        relation="transfer_graph",
        grid=GRID,
        sampling_prior=("none: the curriculum is an optimiser, not a model"
                        if variant == "curriculum" else _SAMPLING),
    ))
