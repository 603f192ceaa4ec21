"""The method registry: every multi-task method by name (see :mod:`.registry`).

Importing this package registers the built-in methods: the matrix-normal Ω priors
(:mod:`.matrix_normal`), the Schatten members (:mod:`.schatten`), the rest of L2MT's family
and the pooled baseline (:mod:`.family`), the sparse MALSAR family (:mod:`.malsar`), AMTL
and its ablations (:mod:`.amtl`), GAMTL (:mod:`.gamtl`), deep networks (:mod:`.deep`), the
shared subspace (:mod:`.info_transfer`) and test-time L2MT (:mod:`.l2mt`).
"""

# registration order is the listing order of names()
from . import matrix_normal, schatten, family, malsar, amtl, gamtl, deep  # noqa: F401, I001
from . import info_transfer  # noqa: F401, I001  (shared_subspace)
from . import l2mt  # noqa: F401, I001  (test-time L2MT: Ω̃ by Theorem 3)
from .matrix_normal import omega_prior_method
from .registry import (
    INFERENCES,
    RELATIONS,
    Fit,
    Hyper,
    JointForm,
    Method,
    Settings,
    fit,
    get,
    names,
    register,
    to_datatree,
    unregister,
    validate,
)

__all__ = ["omega_prior_method", "INFERENCES", "RELATIONS", "Fit", "Hyper", "JointForm",
           "Method", "Settings", "fit", "get", "names", "register", "to_datatree", "unregister",
           "validate"]
