r"""The sparse methods MALSAR, RMTL and mutar users reach for first (relation "none").

See :mod:`bayesmtl.models.sparse_rows` for the models, their Bayesian reading and the MAP.

=========  ==================================================================================
``l21``    joint feature selection: rows of W ~ exp(-λ‖w_r‖₂) (multivariate Laplace), MAP
           penalty λ‖W‖₂,₁ (MALSAR ``Least_L21``/``Logistic_L21``)
``lasso``  per-task Lasso: W_ij ~ Laplace(0, 1/λ), MAP penalty λ‖W‖₁ (``Least_Lasso``)
``dirty``  dirty model (Jalali et al. 2010): W = P + Q, rows of P ~ exp(-λ‖p_r‖_∞), Q_ij ~
           Laplace(0, 1/λ₂), MAP penalty λ‖P‖₁,∞ + λ₂‖Q‖₁ (``Least_Dirty``)
=========  ==================================================================================

Every prior on W is proper, so NUTS and SVI sample the same model (with the proper
likelihood and a learned noise by default). These methods have no task covariance: the
exported relation is "none" (an Ω from WᵀW would only restate the shared support, not a
modelled quantity); the dirty model exports its parts ``P`` and ``Q`` (dims feature, task)
beside W.
"""

from __future__ import annotations

import numpy as np

from ..models import sparse_rows as S
from ..models.matrix_normal import model_inputs
from .common import history_info, likelihood, map_noise, sample_model
from .registry import Fit, Hyper, JointForm, Method, positive, register

GRID = (0.001, 0.01, 0.1, 1.0)
SAMPLERS = frozenset({"nuts", "svi"})


def _lam2(hyper):
    return hyper.get("lam2")


def _fit(penalty):
    def fit_map(data, hyper, settings, init=None):
        kw = {} if settings.max_iter is None else {"max_iter": max(settings.max_iter, 5000)}
        r = S.fit_sparse_rows(data, penalty, hyper["lam"], _lam2(hyper),
                              loss_scale=settings.resolved_loss_scale(),
                              noise=map_noise(settings),
                              init=None if init is None else (init.W, init.b), **kw)
        relation = {}
        if penalty == "dirty":
            P, Q = S.dirty_split(r.W, hyper["lam"], hyper["lam2"])
            relation = {"P": np.asarray(P), "Q": np.asarray(Q)}
        return Fit(r.W, r.b, relation, r.objective, r.converged,
                   history_info(r.history, r.n_iter, r.residual), r)
    return fit_map


def _joint(penalty):
    def joint(data, hyper, settings, fit):
        args, kw = model_inputs(data, settings.resolved_loss_scale())
        kw.update(penalty=penalty, lam=hyper["lam"], lam2=_lam2(hyper),
                  likelihood=likelihood(data, settings))
        if penalty == "dirty":  # Q = W - P keeps the point's W (P + Q = W)
            P = fit.relation["P"]
            params = {"P": P, "Q": fit.W - P, "b": fit.b}
        else:
            params = {"W": fit.W, "b": fit.b}
        return JointForm(S.sparse_rows_model, args, kw, params)
    return joint


def _sample(penalty):
    reported = ("W", "b", "noise") + (("P", "Q") if penalty == "dirty" else ())

    def sample(data, hyper, settings):
        return sample_model(S.sparse_rows_model, data, settings, reported, penalty=penalty,
                            lam=hyper["lam"], lam2=_lam2(hyper))
    return sample


register(Method(
    name="l21",
    statistics=True,
    aliases=("joint_feature_selection",),
    summary="joint feature selection (MALSAR Least_L21): ℓ2,1 on rows of W",
    hyper=(Hyper("lam", 1.0, positive,
                 "λ: rate of the row prior exp(-λ‖w_r‖₂), penalty λ‖W‖₂,₁ (MALSAR's ρ1)"),),
    fit_map=_fit("l21"),
    joint=_joint("l21"),
    sample=_sample("l21"),
    samplers=SAMPLERS,
    relation="none",
    grid={"lam": GRID},
    sampling_prior="rows of W ~ exp(-λ‖w_r‖₂) (multivariate Laplace): proper",
))

register(Method(
    name="lasso",
    statistics=True,
    summary="per-task Lasso (MALSAR Least_Lasso): ℓ1 on W (Laplace prior)",
    hyper=(Hyper("lam", 1.0, positive,
                 "λ: rate of the Laplace prior on each W_ij, penalty λ‖W‖₁ (MALSAR's ρ1)"),),
    fit_map=_fit("lasso"),
    joint=_joint("lasso"),
    sample=_sample("lasso"),
    samplers=SAMPLERS,
    relation="none",
    grid={"lam": GRID},
    sampling_prior="W_ij ~ Laplace(0, 1/λ): proper",
))

register(Method(
    name="dirty",
    statistics=True,
    aliases=("dirty_model",),
    summary="dirty model (Jalali et al. 2010): W = P + Q, ℓ1,∞ rows of P + ℓ1 on Q",
    hyper=(Hyper("lam", 1.0, positive,
                 "λ: rate of the row prior exp(-λ‖p_r‖_∞) on P, penalty λ‖P‖₁,∞ (ρ1)"),
           Hyper("lam2", 0.5, positive,
                 "λ₂: rate of the Laplace prior on Q_ij, penalty λ₂‖Q‖₁ (ρ2)")),
    fit_map=_fit("dirty"),
    joint=_joint("dirty"),
    sample=_sample("dirty"),
    samplers=SAMPLERS,
    relation="none",
    grid={"lam": GRID, "lam2": (0.001, 0.01, 0.1)},
    sampling_prior=("rows of P ~ exp(-λ‖p_r‖_∞), Q_ij ~ Laplace(0, 1/λ₂): proper (W = P + Q; "
                    "P and Q are told apart by the prior only)"),
))
