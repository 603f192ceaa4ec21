"""Observation models: Gaussian (fixed, shared or per-task noise) and Bernoulli-logit.

A likelihood is called inside a NumPyro model as ``likelihood(f, task, n_tasks, y, weights)``
with the linear predictor ``f (N,)``. ``weights (N,)`` temper each row's log-likelihood
(``1/n_i`` reproduces the papers' per-task mean loss); ``None`` is the proper likelihood.

Matching the papers' losses: the squared loss ``(y - f)^2`` is ``-log N(y | f, σ²)`` up to a
constant with ``σ = 1/√2``; the logistic loss is exactly ``-log Bernoulli(y | sigmoid(f))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

__all__ = ["Gaussian", "BernoulliLogit", "PAPER_SQUARED_LOSS_NOISE"]

#: the Gaussian noise under which -log-likelihood equals the squared loss (y - f)^2 + const
PAPER_SQUARED_LOSS_NOISE = 2.0 ** -0.5


def _observe(d, y, weights):
    if weights is None:
        return numpyro.sample("y", d, obs=y)
    with handlers.scale(scale=weights):
        return numpyro.sample("y", d, obs=y)


@dataclass(frozen=True)
class Gaussian:
    """``y_ij ~ N(f_ij, σ_{t}²)``.

    noise : float (fixed σ), ``"shared"`` (one σ ~ HalfNormal(noise_scale)) or ``"task"``
        (σ_i ~ HalfNormal(noise_scale) per task; site ``noise`` of shape (m,)).
    """

    noise: float | str = 1.0
    noise_scale: float = 10.0
    kind = "regression"

    def check(self):
        if isinstance(self.noise, str):
            if self.noise not in ("shared", "task"):
                raise ValueError(f"noise must be a positive float, 'shared' or 'task'; got "
                                 f"{self.noise!r}")
        elif not self.noise > 0:
            raise ValueError(f"noise must be positive; got {self.noise}")
        if not self.noise_scale > 0:
            raise ValueError(f"noise_scale must be positive; got {self.noise_scale}")

    def sigma(self, task, n_tasks):
        if self.noise == "shared":
            return numpyro.sample("noise", dist.HalfNormal(self.noise_scale))
        if self.noise == "task":
            s = numpyro.sample("noise", dist.HalfNormal(self.noise_scale).expand([n_tasks])
                               .to_event(1))
            return s[task]
        return jnp.asarray(self.noise)

    def __call__(self, f, task, n_tasks, y=None, weights=None):
        return _observe(dist.Normal(f, self.sigma(task, n_tasks)), y, weights)


@dataclass(frozen=True)
class BernoulliLogit:
    """``y_ij ~ Bernoulli(sigmoid(f_ij))`` with y in {0, 1}."""

    kind = "classification"

    def check(self):
        pass

    def __call__(self, f, task, n_tasks, y=None, weights=None):
        del task, n_tasks
        return _observe(dist.Bernoulli(logits=f), y, weights)
