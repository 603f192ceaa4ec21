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

from ..errors import DivergenceWarning

__all__ = ["run_nuts"]


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
    return mcmc
