"""Information-transfer tools of Wu, Zhang & Ré, each usable on any MultiTaskData.

* :mod:`.similarity` — the covariance similarity score (eq. (5)): a task × task matrix.
* :mod:`.alignment` — covariance alignment (Algorithm 1) before a fixed linear or ReLU module.
* :mod:`.reweighting` — SVD task re-weighting (Algorithm 2) for tasks sharing X.
* :mod:`.capacity` — the capacity sweep of the shared module (r = 1 … k).

The model they act on (shared module B, heads A_i) is :mod:`bayesmtl.models.info_transfer`,
registered as the method ``shared_subspace``. Submodules are imported on first use (alignment
needs torch; the sweep needs the registry).
"""

from __future__ import annotations

import importlib

__all__ = ["covariance_similarity", "covariance_similarity_score", "covariance_factor",
           "retained_rank", "align", "linear_module", "module_from_deep", "SharedModule",
           "AlignedModel", "svd_task_weights", "task_signals", "capacity_sweep",
           "CapacitySweep"]

_LOCATIONS = {
    "covariance_similarity": "similarity", "covariance_similarity_score": "similarity",
    "covariance_factor": "similarity", "retained_rank": "similarity",
    "align": "alignment", "linear_module": "alignment", "module_from_deep": "alignment",
    "SharedModule": "alignment", "AlignedModel": "alignment",
    "svd_task_weights": "reweighting", "task_signals": "reweighting",
    "capacity_sweep": "capacity", "CapacitySweep": "capacity",
}


def __getattr__(name: str):
    if name in _LOCATIONS:
        return getattr(importlib.import_module(f"{__name__}.{_LOCATIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
