"""bayesmtl — multi-task learning methods as Bayesian generative models.

Importing bayesmtl enables JAX float64 (MAP reproduces published objectives to high
precision); set ``BAYESMTL_X64=0`` before import to keep JAX's float32 default.

The public subpackages are attributes, imported on first access (``bayesmtl.methods``,
``bayesmtl.estimators``, …); ``bayesmtl.deep`` (torch, Pyro) is never imported by
``import bayesmtl``.
"""

import importlib as _importlib
import os as _os

import jax as _jax

if _os.environ.get("BAYESMTL_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

from .data import MultiTaskData  # noqa: E402

__version__ = "0.1.0"

#: subpackages and modules reachable as ``bayesmtl.<name>`` (imported lazily)
SUBMODULES = ("data", "errors", "priors", "methods", "models", "inference", "estimators",
              "selection", "datasets", "plots", "io", "cli", "deep")
__all__ = ["MultiTaskData", "__version__", *SUBMODULES]


def __getattr__(name: str):
    if name in SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
