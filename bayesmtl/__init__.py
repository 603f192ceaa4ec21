"""bayesmtl — multi-task learning methods as Bayesian generative models.

Importing bayesmtl enables JAX float64 (MAP reproduces published objectives to high
precision); set ``BAYESMTL_X64=0`` before import to keep JAX's float32 default.
"""

import os as _os

import jax as _jax

if _os.environ.get("BAYESMTL_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

from .data import MultiTaskData  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MultiTaskData", "__version__"]
