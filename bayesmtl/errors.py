"""The error and warning types of bayesmtl: one hierarchy that users can catch.

::

    BayesMTLError
    ├── DataError (ValueError)               bad input data
    │   ├── NonFiniteError                   NaN/inf in X or y
    │   ├── ShapeMismatchError               lengths, widths, task counts disagree
    │   ├── EmptyTaskError                   a task without rows
    │   ├── UnknownTaskError (KeyError)      a task name not seen at fit time
    │   ├── LabelError                       labels of the wrong kind
    │   └── TooFewSamplesError               a task too small for its loss
    ├── HyperparameterError (ValueError)     a method's or estimator's parameter
    │   ├── PriorError                       a prior's parameters or a user matrix
    │   ├── TransferGraphError               a transfer graph violating B ≥ 0, diag 0
    │   └── MethodError                      an unknown method, or an unsupported inference
    ├── ResultError (RuntimeError)           a fit that produced no usable result
    │   ├── NonFiniteResultError             NaN/inf in the fitted parameters
    │   └── WorkItemError                    an item of a parallel map raised
    └── ModelFileError (OSError)             a saved model folder that cannot be loaded

    BayesMTLWarning (UserWarning)
    ├── ConvergenceWarning                   an optimiser stopped before its tolerance
    ├── DivergenceWarning                    NUTS divergences
    ├── SamplingWarning                      R-hat > 1.01 or low ESS
    ├── SingleClassWarning                   a classification task with one class
    ├── GridEdgeWarning                      a CV choice on the edge of its grid
    └── DegenerateRelationWarning            a learned Ω of rank one (tasks collapsed)
"""

from __future__ import annotations

__all__ = [
    "BayesMTLError", "DataError", "NonFiniteError", "ShapeMismatchError", "EmptyTaskError",
    "UnknownTaskError", "LabelError", "TooFewSamplesError", "HyperparameterError",
    "PriorError", "TransferGraphError", "MethodError", "ResultError", "NonFiniteResultError",
    "WorkItemError",
    "ModelFileError", "BayesMTLWarning", "ConvergenceWarning", "DivergenceWarning",
    "SamplingWarning", "SingleClassWarning", "GridEdgeWarning", "DegenerateRelationWarning",
]


class BayesMTLError(Exception):
    """Base class of every error bayesmtl raises on purpose."""


# ----------------------------------------------------------------------------- data


class DataError(BayesMTLError, ValueError):
    """Base class of every input-data problem."""


class NonFiniteError(DataError):
    """X or y holds NaN or infinity."""


class ShapeMismatchError(DataError):
    """Lengths or feature counts disagree."""


class EmptyTaskError(DataError):
    """A task has no rows."""


class UnknownTaskError(DataError, KeyError):
    """A task name was not seen at fit time."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class LabelError(DataError):
    """Classification labels of the wrong kind (more than two for a binary task, …)."""


class TooFewSamplesError(DataError):
    """A task has too few rows (or classes) for its loss to be informative."""


# ----------------------------------------------------------------------------- hyperparameters


class HyperparameterError(BayesMTLError, ValueError):
    """A hyperparameter outside its domain. ``parameter`` and ``value`` name the culprit
    (None where the message concerns several)."""

    def __init__(self, message: str, parameter: str | None = None, value=None):
        super().__init__(message)
        self.parameter = parameter
        self.value = value


class PriorError(HyperparameterError):
    """A prior's hyperparameters or a user-supplied matrix are invalid."""


class TransferGraphError(HyperparameterError):
    """A user-supplied transfer graph violates B ≥ 0, zero diagonal (or symmetry)."""


class MethodError(HyperparameterError):
    """An unknown method name, or an inference the method does not support."""


# ----------------------------------------------------------------------------- results


class ResultError(BayesMTLError, RuntimeError):
    """A fit produced no usable result."""


class NonFiniteResultError(ResultError, FloatingPointError):
    """The fitted parameters hold NaN or infinity."""


class WorkItemError(ResultError):
    """An item of :func:`bayesmtl.parallel.map_completed` raised: ``index`` and ``item`` name
    it; the worker's exception is chained (``__cause__``)."""

    def __init__(self, message: str, index: int, item):
        super().__init__(message)
        self.index = index
        self.item = item


class ModelFileError(BayesMTLError, OSError):
    """A saved model folder is corrupt, incomplete or from an incompatible version."""


# ----------------------------------------------------------------------------- warnings


class BayesMTLWarning(UserWarning):
    """Base class of bayesmtl's warnings."""


class ConvergenceWarning(BayesMTLWarning):
    """An optimiser stopped at its iteration limit before meeting its tolerance."""


class DivergenceWarning(BayesMTLWarning):
    """NUTS reported divergent transitions after warm-up."""


class SamplingWarning(BayesMTLWarning):
    """MCMC diagnostics (R-hat, effective sample size) say the chains have not mixed."""


class SingleClassWarning(BayesMTLWarning):
    """A classification task has rows of one class only."""


class GridEdgeWarning(BayesMTLWarning):
    """A cross-validated choice lies on the edge of its grid: widen the grid."""


class DegenerateRelationWarning(BayesMTLWarning):
    """The learned task covariance Ω is numerically rank one (every task correlation ±1)
    although the tasks' weights differ: usually λ is too large for the data."""
