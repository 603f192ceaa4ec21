"""bayesmtl — multi-task learning methods as Bayesian generative models.

Importing bayesmtl enables JAX float64 (MAP reproduces published objectives to high
precision); set ``BAYESMTL_X64=0`` before import to keep JAX's float32 default. It also
turns on JAX's persistent compilation cache in ``~/.cache/bayesmtl/jax`` (a few kB per
compiled function, never evicted: JAX's size-capped eviction raced between processes here; so
delete the folder at will; ``BAYESMTL_JAX_CACHE`` names another folder, ``0`` turns it off; a
cache folder set through JAX's own configuration wins), so a second process does not compile
again what the first one did.

The public subpackages are attributes, imported on first access (``bayesmtl.methods``,
``bayesmtl.estimators``, …); ``bayesmtl.deep`` (torch, Pyro) is never imported by
``import bayesmtl``.
"""

import importlib as _importlib
import os as _os

import jax as _jax

if _os.environ.get("BAYESMTL_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

_cache = _os.environ.get("BAYESMTL_JAX_CACHE",
                         _os.path.join(_os.path.expanduser("~"), ".cache", "bayesmtl", "jax"))
if _cache not in ("", "0") and not _jax.config.jax_compilation_cache_dir:
    _jax.config.update("jax_compilation_cache_dir", _cache)
    _jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

from .data import MultiTaskData, TaskStatistics  # noqa: E402

__version__ = "0.1.0"

#: subpackages and modules reachable as ``bayesmtl.<name>`` (imported lazily)
SUBMODULES = ("data", "errors", "priors", "methods", "models", "inference", "estimators",
              "selection", "datasets", "plots", "io", "cli", "deep", "transfer", "report")
__all__ = ["MultiTaskData", "TaskStatistics", "__version__", *SUBMODULES]


def __getattr__(name: str):
    if name in SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
