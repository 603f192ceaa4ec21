"""Variational inference with NumPyro SVI and an automatic guide."""

from __future__ import annotations

import jax
import numpy as np
from numpyro.infer import SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro.optim import Adam

__all__ = ["run_svi", "GUIDES", "check_elbo"]


def check_elbo(losses: np.ndarray, rel: float = 5e-3) -> bool:
    """Whether the ELBO trace (negative ELBO per step) has flattened: the mean of its last
    tenth is within ``rel`` (relative) of the tenth before it. Warns with ConvergenceWarning
    (the fit is still returned) when it has not, or when it is not finite."""
    import warnings

    from ..errors import ConvergenceWarning

    n = len(losses) // 10
    if not np.all(np.isfinite(losses[-max(n, 1):])):
        warnings.warn("the ELBO is not finite at the end of SVI", ConvergenceWarning,
                      stacklevel=3)
        return False
    if n < 5:
        return True
    last, before = losses[-n:].mean(), losses[-2 * n:-n].mean()
    if before - last > rel * max(1.0, abs(last)):
        warnings.warn(f"SVI has not converged: the ELBO still improved by "
                      f"{(before - last) / max(1.0, abs(last)):.1%} over the last tenth of "
                      f"{len(losses)} steps; raise svi_steps", ConvergenceWarning, stacklevel=3)
        return False
    return True

GUIDES = {"normal": AutoNormal, "lowrank": AutoLowRankMultivariateNormal}


def run_svi(model, *model_args, guide="normal", num_steps=5000, learning_rate=0.01,
            num_samples=1000, seed=0, progress_bar=False, **model_kwargs):
    """Fit an automatic guide (``"normal"`` = AutoNormal, ``"lowrank"`` =
    AutoLowRankMultivariateNormal) and draw ``num_samples`` from it.

    Returns ``(svi_result, samples)`` with samples shaped (1, num_samples, ...) — one "chain" —
    including deterministic sites, ready for ``export.to_datatree``.
    """
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {sorted(GUIDES)}; got {guide!r}")
    auto = GUIDES[guide](model)
    svi = SVI(model, auto, Adam(learning_rate), Trace_ELBO())
    key_fit, key_draw = jax.random.split(jax.random.PRNGKey(seed))
    result = svi.run(key_fit, num_steps, *model_args, progress_bar=progress_bar, **model_kwargs)
    check_elbo(np.asarray(result.losses))
    key_latent, key_det = jax.random.split(key_draw)
    latents = auto.sample_posterior(key_latent, result.params, *model_args,
                                    sample_shape=(num_samples,), **model_kwargs)
    derived = Predictive(model, posterior_samples=latents)(key_det, *model_args,
                                                           **{**model_kwargs, "y": None})
    samples = {k: np.asarray(v)[None] for k, v in {**derived, **latents}.items() if k != "y"}
    return result, samples
