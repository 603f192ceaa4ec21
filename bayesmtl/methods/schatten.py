r"""The (squared) Schatten members of L2MT's g(Ω) family (Theorems 1–2).

Both are priors on Ω for :func:`~bayesmtl.models.matrix_normal.mtl_model` (W | Ω ~
MN(0, I, Ω/λ)) carrying |Ω|^{d/2}, so MAP with the mean loss and σ = 1/√2 is objective (1)
of L2MT:

* ``schatten``: λ₂ g(Ω) = λ₂ tr(Ω^r); p(Ω) ∝ |Ω|^{d/2} exp(-λ₂ tr Ω^r) (proper). MAP profile
  λ_r‖W‖_{S_p}^p, p = 2r/(r+1); r = 1 is the trace norm with weight √(2λλ₂).
* ``squared_schatten``: g(Ω) = 0 on {tr Ω^r ≤ 1}; p(Ω) ∝ |Ω|^{d/2} on that set (proper). MAP
  profile (λ/2)‖W‖²_{S_p}; r = 1 is MTRL without ridge.

λ = ``lam`` (λ₁), λ₂ = ``lam2``, r = ``r``; ``ridge`` ρ adds (ρ/2)‖W‖²_F. For r < 1 the
profile is non-convex and MAP returns a stationary point.
"""

from __future__ import annotations

from ..models.schatten import Schatten, SquaredSchatten, fit_schatten
from .common import history_info, map_noise
from .matrix_normal import LAM, LAM_GRID, RIDGE, SAMPLERS, _joint, _sampler
from .registry import Fit, Hyper, Method, positive, register

R = Hyper("r", 1.0, positive, "r > 0: g(Ω) = tr(Ω^r) (r = 1: the trace norm)")
LAM2_GRID = (0.01, 0.1, 1.0)


def _fit(prior_of):
    def fit_map(data, hyper, settings, init=None):
        kw = {} if settings.max_iter is None else {"max_iter": max(settings.max_iter, 5000)}
        r = fit_schatten(data, prior_of(hyper), hyper["lam"], ridge=hyper["ridge"],
                         loss_scale=settings.resolved_loss_scale(), noise=map_noise(settings),
                         init=None if init is None else (init.W, init.b), **kw)
        return Fit(r.W, r.b, {"omega": r.omega}, r.objective, r.converged,
                   history_info(r.history, r.n_iter, r.residual), r)
    return fit_map


def _schatten(hyper):
    return Schatten(r=hyper["r"], lam2=hyper["lam2"])


def _squared(hyper):
    return SquaredSchatten(r=hyper["r"])


register(Method(
    name="schatten",
    statistics=True,
    summary="Schatten g(Ω) = tr(Ω^r) (Theorem 1); r = 1: trace-norm MTL",
    hyper=(LAM, Hyper("lam2", 1.0, positive, "λ₂: weight of tr(Ω^r)"), R, RIDGE),
    fit_map=_fit(_schatten),
    joint=_joint(_schatten, lambda fit: {"omega": fit.relation["omega"]}),
    sample=_sampler(_schatten),
    samplers=SAMPLERS,
    grid={"lam": LAM_GRID, "lam2": LAM2_GRID},
    sampling_prior="p(Ω) ∝ |Ω|^{d/2} exp(-λ₂ tr Ω^r) on Ω ≻ 0: proper",
))


def _squared_sites(fit):
    # Ω = t S / (tr S^r)^{1/r}: at the MAP t = 1 and S = Ω (tr Ω^r = 1)
    return {"omega_raw": fit.relation["omega"], "omega_radius": 1.0}


register(Method(
    name="squared_schatten",
    statistics=True,
    summary="squared Schatten: tr(Ω^r) ≤ 1 (Theorem 2); r = 1 is MTRL without ridge",
    hyper=(LAM, Hyper("r", 2.0, positive, "r > 0: the constraint tr(Ω^r) ≤ 1"), RIDGE),
    fit_map=_fit(_squared),
    joint=_joint(_squared, _squared_sites),
    sample=_sampler(_squared),
    samplers=SAMPLERS,
    grid={"lam": LAM_GRID},
    sampling_prior="p(Ω) ∝ |Ω|^{d/2} on {Ω ≻ 0, tr Ω^r ≤ 1}: proper (bounded)",
))
