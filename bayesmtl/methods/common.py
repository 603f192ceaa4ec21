"""Pieces shared by the method files: likelihood choice, the matrix-normal sampler, info."""

from __future__ import annotations

import numpy as np

from ..data import CLASSIFICATION, MultiTaskData
from ..errors import HyperparameterError
from ..models.likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from .registry import Settings

__all__ = ["likelihood", "map_noise", "fixed_noise", "sample_model", "sample_mtl_model",
           "history_info", "REPORTED_SITES"]

#: sites of ``mtl_model`` worth exporting (not the internal parameterisation sites)
REPORTED_SITES = ("W", "b", "omega", "noise", "omega_scale")


def map_noise(settings: Settings) -> float:
    """Gaussian σ of a MAP fit: ``settings.noise`` or 1/√2 (the squared loss)."""
    noise = settings.noise
    if noise is None:
        return PAPER_SQUARED_LOSS_NOISE
    if isinstance(noise, str):
        raise HyperparameterError(
            f"MAP needs a fixed Gaussian noise σ (a positive float); got noise={noise!r}. "
            "Learned noise ('shared'/'task') is for sampling", "noise", noise)
    return float(noise)


def fixed_noise(method: str, settings: Settings, data: MultiTaskData) -> float | None:
    """σ for samplers of models written with a fixed noise (the Gibbs-joint members)."""
    if data.kind == CLASSIFICATION:
        return None
    noise = settings.noise
    if noise is None or isinstance(noise, str):
        raise HyperparameterError(
            f"{method} samples the Gibbs joint exp(-F) with a fixed Gaussian noise: pass "
            f"noise=<σ> (a positive float; 0.7071 = 1/√2 reproduces the paper's squared loss); "
            f"got noise={noise!r}", "noise", noise)
    return float(noise)


def likelihood(data: MultiTaskData, settings: Settings):
    """The observation model: Bernoulli-logit for classification, Gaussian otherwise (σ from
    ``settings.noise``; default 1/√2 for MAP, a learned shared σ for sampling)."""
    if data.kind == CLASSIFICATION:
        return BernoulliLogit()
    noise = settings.noise
    if noise is None:
        noise = PAPER_SQUARED_LOSS_NOISE if settings.inference == "map" else "shared"
    lik = Gaussian(noise)
    try:
        lik.check()
    except ValueError as err:
        raise HyperparameterError(str(err), "noise", noise) from None
    return lik


def history_info(history, n_iter, residual=None) -> dict:
    """Solver diagnostics for :class:`~bayesmtl.methods.registry.Fit.info`: iterations and
    the objective's last relative change."""
    history = np.asarray(history, dtype=float)
    change = (abs(history[-2] - history[-1]) / max(1.0, abs(history[-1]))
              if history.size > 1 else 0.0)
    info = {"n_iter": int(n_iter), "last_relative_change": float(change)}
    if residual is not None:
        info["residual"] = float(residual)
    return info


def sample_model(model, data: MultiTaskData, settings: Settings, reported, *,
                 noncentered_hint=None, **model_kwargs):
    """NUTS or SVI on ``model(X, task, m, y=…, weights=…, likelihood=…, **model_kwargs)``;
    returns a DataTree of the ``reported`` sites with task and feature names, the observed
    data and the pointwise log-likelihood (``reported`` must hold W, b and a learned noise)."""
    from ..inference.export import from_mcmc, to_datatree
    from ..models.matrix_normal import model_inputs

    args, kw = model_inputs(data, settings.resolved_loss_scale())
    lik = likelihood(data, settings)
    kw.update(likelihood=lik, **model_kwargs)
    attrs = {"inference": settings.inference}
    if settings.inference == "nuts":
        from ..inference.mcmc import run_nuts

        mcmc = run_nuts(model, *args, num_warmup=settings.num_warmup,
                        num_samples=settings.num_samples, num_chains=settings.num_chains,
                        seed=settings.seed, progress_bar=settings.progress_bar,
                        target_accept_prob=settings.target_accept_prob,
                        max_tree_depth=settings.max_tree_depth,
                        noncentered_hint=noncentered_hint, **kw)
        return from_mcmc(mcmc, task_names=data.task_names, feature_names=data.feature_names,
                         var_names=reported, attrs=attrs, data=data, likelihood=lik)
    from ..inference.svi import run_svi

    result, samples = run_svi(model, *args, guide=settings.guide, num_steps=settings.svi_steps,
                              num_samples=settings.num_samples, seed=settings.seed,
                              progress_bar=settings.progress_bar, **kw)
    keep = {k: v for k, v in samples.items() if k in reported}
    dt = to_datatree(keep, task_names=data.task_names, feature_names=data.feature_names,
                     attrs=attrs, data=data, likelihood=lik)
    return with_elbo_trace(dt, result.losses)


def with_elbo_trace(dt, losses):
    """The DataTree with SVI's negative-ELBO trace as group ``optimization`` (dim ``step``)."""
    import xarray as xr

    dt["optimization"] = xr.DataTree(xr.Dataset({"elbo_loss": ("step", np.asarray(losses))}))
    return dt


def sample_mtl_model(data: MultiTaskData, omega_prior, hyper: dict, settings: Settings):
    """NUTS, SVI or (inverse-Wishart, Gaussian) Gibbs on
    :func:`~bayesmtl.models.matrix_normal.mtl_model`; returns a DataTree."""
    from ..inference.export import to_datatree
    from ..models.matrix_normal import mtl_model

    omega_prior.check(data.n_tasks)
    if settings.inference == "gibbs":
        from ..inference.gibbs import run_gibbs

        lik = likelihood(data, settings)
        r = run_gibbs(data, omega_prior, lam=hyper["lam"], likelihood=lik,
                      ridge=hyper.get("ridge", 0.0), loss_scale=settings.resolved_loss_scale(),
                      num_warmup=settings.num_warmup, num_samples=settings.num_samples,
                      num_chains=settings.num_chains, seed=settings.seed)
        return to_datatree(r.samples, task_names=data.task_names,
                           feature_names=data.feature_names, sample_stats=r.sample_stats,
                           attrs={"inference": "gibbs"}, data=data, likelihood=lik)
    return sample_model(mtl_model, data, settings, REPORTED_SITES,
                        noncentered_hint=settings.noncentered, omega_prior=omega_prior,
                        lam=hyper["lam"], ridge=hyper.get("ridge", 0.0),
                        noncentered=settings.noncentered)
