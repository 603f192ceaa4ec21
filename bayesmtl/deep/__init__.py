"""Deep multi-task learning with loss balancing, in Pyro/torch (imported lazily).

``import bayesmtl`` does not import torch; the first attribute access here does::

    from bayesmtl.deep import fit_deep
    result = fit_deep(data, network="dmtl", balancing="bmtl", T=50.0)

Modules: :mod:`.networks` (DMTL and its head priors), :mod:`.balancing` (the strategies and
Theorem 1's check of h), :mod:`.model` (the Pyro model and its Bayesian reading),
:mod:`.train` (MAP and SVI), :mod:`.result` (DeepResult), :mod:`.standins` (data generators).
"""

from __future__ import annotations

import importlib

__all__ = ["fit_deep", "DeepResult", "FitConfig", "STRATEGIES", "NETWORKS", "make_strategy",
           "deep_model", "neg_log_joint", "min_norm_weights", "networks", "balancing", "model",
           "train", "result", "standins"]

_LOCATIONS = {
    "fit_deep": "train", "FitConfig": "train", "DeepResult": "result",
    "STRATEGIES": "balancing", "make_strategy": "balancing", "min_norm_weights": "balancing",
    "NETWORKS": "networks", "deep_model": "model", "neg_log_joint": "model",
}
_SUBMODULES = ("networks", "balancing", "model", "train", "result", "standins")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LOCATIONS:
        return getattr(importlib.import_module(f"{__name__}.{_LOCATIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
