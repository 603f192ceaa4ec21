r"""L2MT at test time (Zhang, Wei & Yang 2018, Section 3.4): Ω̃ from a trained model, then
problem (1) with Ω fixed.

A trained L2MT model (:func:`bayesmtl.l2mt.fit_l2mt`, saved with ``.save(path)``) embeds the
tasks' training rows (LGNN, eqs. (3)–(4)), forms Φ = γ₁(α₁ẼᵀẼ + α₂K̃) and ρ = γ₁α₄ and solves
problem (7) by Theorem 3, giving Ω̃ (trace one, often rank-deficient). The generative model is
then the matrix-normal model with that Ω:

    Ω = (1 - ε) Ω̃ + ε I/m,    W | Ω ~ MN(0, I_d, Ω/λ),    b flat,
    y_ij ~ N(w_iᵀx_ij + b_i, σ²)   or   Bernoulli(sigmoid(w_iᵀx_ij + b_i)),

λ = ``lam`` (the paper's λ₁, which it tunes on the validation parts: use ``lam="auto"`` or
cross-validation), ε = ``eps`` (keeps Ω invertible; ε → 0 is the paper's pseudo-inverse with W
in the range of Ω̃). MAP = problem (1) with g ≡ 0 at this Ω: one exact solve (Gaussian) or
L-BFGS (logistic). ``inference="svi"`` (a model trained with SVI): draws of (L, β, α, γ) from
its guide, each pushed through Theorem 3 to a draw of Ω̃, and W, b the MAP given each draw
(``settings.num_samples`` draws): posterior task correlations with credible intervals.
"""

from __future__ import annotations

import os

import numpy as np

from .. import priors as P
from ..errors import MethodError
from .common import likelihood
from .registry import Hyper, JointForm, Method, positive, probability, register

__all__ = ["load_model", "omega_used"]

_CACHE: dict = {}


def _model_check(value):
    """None, a path to a saved L2MT model, or a fitted :class:`~bayesmtl.l2mt.L2MTResult`."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise ValueError("must be the path of a saved L2MT model (no such file)")
        return os.fspath(value)
    if type(value).__name__ == "L2MTResult":
        return value
    raise ValueError("must be a path to a saved L2MT model or an L2MTResult")


def load_model(model):
    """The L2MTResult behind a ``model`` hyperparameter (paths cached by modification time)."""
    if model is None:
        raise MethodError("l2mt needs a trained L2MT model: pass model=PATH (saved with "
                          "L2MTResult.save, or `bayesmtl l2mt train`)", "model", None)
    if not isinstance(model, str):
        return model
    from ..l2mt.model import L2MTResult

    key = (model, os.path.getmtime(model))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = L2MTResult.load(model, device="cpu")
    return _CACHE[key]


def omega_used(omega_tilde: np.ndarray, eps: float) -> np.ndarray:
    """(1 - ε) Ω̃ + ε I/m for Ω̃ (..., m, m): trace one and positive definite for ε > 0."""
    m = omega_tilde.shape[-1]
    return (1.0 - eps) * omega_tilde + eps * np.eye(m) / m


def _fit(data, hyper, settings, init=None):
    from ..l2mt.theorem3 import omega_tilde
    from .matrix_normal import fit_fixed_omega

    del init
    model = load_model(hyper["model"])
    phi, rho = model.phi_rho(data)  # ρ goes into the fit's info, so not model.omega(data)
    omega = omega_used(omega_tilde(phi, rho), hyper["eps"])
    r = fit_fixed_omega(data, omega, hyper["lam"], 0.0, settings, settings.seed)
    info = {**r.info, "rho": float(rho), "theorem3_case": _case(rho)}
    return r._replace(info=info)


def _case(rho: float) -> str:
    return "rho>0: U diag(mu) U^T" if rho > 0 else (
        "rho=0: bottom eigenvectors" if rho == 0 else "rho<0: a bottom eigenvector")


def _joint(data, hyper, settings, fit):
    from ..models.matrix_normal import model_inputs, mtl_model

    args, kw = model_inputs(data, settings.resolved_loss_scale())
    kw.update(omega_prior=P.Fixed(fit.relation["omega"]), likelihood=likelihood(data, settings),
              lam=hyper["lam"], ridge=0.0)
    return JointForm(mtl_model, args, kw, {"W": fit.W, "b": fit.b})


def _sample(data, hyper, settings):
    from ..inference.export import to_datatree
    from .matrix_normal import fit_fixed_omega

    model = load_model(hyper["model"])
    if model.config.inference != "svi":
        raise MethodError("inference='svi' for l2mt draws Ω̃ from the L2MT model's SVI guide; "
                          "this model was trained by MAP (train it with inference='svi')",
                          "inference", settings.inference)
    draws = model.omega_draws(data, settings.num_samples, settings.seed)
    W, b, omegas = [], [], []
    for omega_t in draws:
        omega = omega_used(omega_t, hyper["eps"])
        r = fit_fixed_omega(data, omega, hyper["lam"], 0.0, settings, settings.seed)
        W.append(r.W)
        b.append(r.b)
        omegas.append(omega)
    samples = {"W": np.stack(W)[None], "b": np.stack(b)[None], "omega": np.stack(omegas)[None],
               "omega_tilde": draws[None]}
    return to_datatree(samples, task_names=data.task_names, feature_names=data.feature_names,
                       dims={"omega_tilde": ["task", "task_"]},
                       attrs={"inference": "svi", "l2mt_draws": int(settings.num_samples),
                              "w_given_omega": "MAP"}, data=data,
                       likelihood=likelihood(data, settings))


register(Method(
    name="l2mt",
    summary="L2MT (Zhang et al. 2018): Ω̃ from a trained estimation function by Theorem 3",
    hyper=(Hyper("lam", 1.0, positive, "λ (the paper's λ₁) of problem (1) at Ω = Ω̃"),
           Hyper("model", None, _model_check,
                 "the trained L2MT model: a path (L2MTResult.save) or an L2MTResult"),
           Hyper("eps", 1e-3, probability, "ε: Ω = (1 - ε) Ω̃ + ε I/m keeps Ω invertible")),
    fit_map=_fit,
    joint=_joint,
    sample=_sample,
    samplers=frozenset({"svi"}),
    grid={"lam": (0.001, 0.01, 0.1, 1.0, 10.0)},
    sampling_prior=("Ω̃ pushed forward from the L2MT model's SVI posterior over (L, β, α, γ); "
                    "W, b the conditional MAP given each draw"),
    shallow=False,
))
