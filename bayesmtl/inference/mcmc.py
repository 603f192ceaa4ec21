"""Posterior sampling with NumPyro NUTS: one runner for every model.

Chains run in parallel when JAX sees several host devices (call
``numpyro.set_host_device_count(k)`` before JAX does any work, as the CLI does), otherwise
sequentially. Divergences are counted and warned about.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value

from ..errors import DivergenceWarning, SamplingWarning

__all__ = ["run_nuts", "convergence_diagnostics"]


def convergence_diagnostics(samples_by_chain: dict) -> dict:
    """Largest split R-hat and smallest effective sample size over every scalar of every
    site of ``{site: (chain, draw, ...)}`` draws (NumPyro's estimators; R-hat is NaN for one
    chain)."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    rhat, ess = [], []
    for v in samples_by_chain.values():
        v = np.asarray(v, dtype=np.float64)
        v = v.reshape(v.shape[:2] + (-1,))
        keep = np.ptp(v, axis=(0, 1)) > 0  # constant entries (a zero diagonal) say nothing
        if not keep.any() or v.shape[1] < 4:
            continue
        v = v[..., keep]
        ess.append(np.min(effective_sample_size(v)))
        if v.shape[0] > 1:
            rhat.append(np.max(split_gelman_rubin(v)))
    return {"max_rhat": float(max(rhat)) if rhat else float("nan"),
            "min_ess": float(min(ess)) if ess else float("nan")}


def run_nuts(model, *model_args, num_warmup=500, num_samples=500, num_chains=2, seed=0,
             progress_bar=False, target_accept_prob=0.8, max_tree_depth=10, init_params=None,
             dense_mass=False, noncentered_hint=None, **model_kwargs) -> MCMC:
    """Run NUTS on a NumPyro ``model(*model_args, **model_kwargs)``.

    ``init_params`` is an optional dict of constrained values (e.g. a MAP estimate) to start
    every chain from; other sites start at the prior median. Returns the ``MCMC`` object with
    ``diverging`` kept as an extra field. Divergences warn with :class:`DivergenceWarning`;
    ``noncentered_hint`` (whether the model is already non-centred; None = not applicable)
    tailors the advice.
    """
    init = init_to_value(values=init_params) if init_params else init_to_median(num_samples=15)
    kernel = NUTS(model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                  init_strategy=init, dense_mass=dense_mass)
    method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=method, progress_bar=progress_bar)
    mcmc.run(jax.random.PRNGKey(seed), *model_args, extra_fields=("diverging", "num_steps"),
             **model_kwargs)
    n_div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    if n_div:
        advice = [f"a higher target_accept_prob (now {target_accept_prob})"]
        if noncentered_hint is False:
            advice.append("noncentered=True")
        elif noncentered_hint:
            advice.append("a stronger prior on Ω (the model is already non-centred)")
        warnings.warn(f"{n_div} divergent transition(s) after warm-up; consider "
                      f"{' or '.join(advice)}", DivergenceWarning, stacklevel=2)
    diag = convergence_diagnostics(mcmc.get_samples(group_by_chain=True))
    if diag["max_rhat"] > 1.01 or diag["min_ess"] < 100:
        rhat = (f"max R-hat {diag['max_rhat']:.3f} (want ≤ 1.01)"
                if np.isfinite(diag["max_rhat"]) else "R-hat not computed (one chain)")
        warnings.warn(f"the chains have not mixed: {rhat}, min effective sample size "
                      f"{diag['min_ess']:.0f} (want ≥ 100); "
                      "run longer chains or more of them before trusting the posterior",
                      SamplingWarning, stacklevel=2)
    return mcmc
