"""The method registry: name → :class:`Method`, and the one path from a name to a fit.

A method is a generative model plus the knowledge of how to fit it. It declares its
hyperparameters (validated here, once, into :class:`~bayesmtl.errors.HyperparameterError`),
its exact MAP solver, the NumPyro model whose negative log joint is the paper's objective,
the posterior inference it supports and the task relation it exports. Everything else
(estimators, CLI, cross-validation, export, save/load) goes through :func:`get` and
:func:`fit` and never special-cases a method.

Adding a method: write a file that builds a :class:`Method` and calls :func:`register`
(see ``examples/user_defined_prior.py``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..data import CLASSIFICATION, REGRESSION, MultiTaskData, TaskStatistics
from ..errors import (
    ConvergenceWarning,
    HyperparameterError,
    MethodError,
    NonFiniteResultError,
)

__all__ = ["Hyper", "Method", "Settings", "Fit", "register", "unregister", "get", "names",
           "fit", "validate", "to_datatree", "JointForm", "check_finite_fit", "INFERENCES",
           "RELATIONS",
           "positive", "nonnegative", "positive_or_none", "number", "integer_at_least",
           "boolean", "one_of", "matrix_or_none", "probability"]

INFERENCES = ("map", "nuts", "gibbs", "svi")
#: exported task relation → its DataTree variable and dims
RELATIONS = {"omega": ("omega", ("task", "task_")),
             "transfer_graph": ("transfer_graph", ("source_task", "target_task")),
             "combination": ("combination", ("source_task", "target_task")),
             "none": (None, ())}


# ----------------------------------------------------------------------------- checks
# A check takes the value and returns it (coerced) or raises ValueError with the
# requirement, which :func:`validate` turns into a HyperparameterError naming the parameter.


def number(value) -> float:
    """A finite real number (not a bool, not a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError("must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


def positive(value) -> float:
    """A finite number > 0."""
    value = number(value)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def nonnegative(value) -> float:
    """A finite number ≥ 0."""
    value = number(value)
    if not value >= 0:
        raise ValueError("must be non-negative")
    return value


def probability(value) -> float:
    """A number in (0, 1)."""
    value = number(value)
    if not 0 < value < 1:
        raise ValueError("must lie in (0, 1)")
    return value


def positive_or_none(value):
    """None (the method's data-dependent default) or a finite number > 0."""
    return None if value is None else positive(value)


def integer_at_least(low: int):
    """An integer ≥ ``low``."""
    def check(value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError("must be an integer")
        if value < low:
            raise ValueError(f"must be ≥ {low}")
        return int(value)
    check.__doc__ = f"An integer ≥ {low}."
    return check


def boolean(value) -> bool:
    """True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError("must be True or False")
    return bool(value)


def one_of(*choices):
    """One of ``choices``."""
    def check(value):
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"must be one of {choices}")
        return value
    check.__doc__ = f"One of {choices}."
    return check


def matrix_or_none(value):
    """None or a finite square matrix (its size and definiteness are checked at fit time)."""
    if value is None or isinstance(value, str):
        return value
    a = np.asarray(value, dtype=np.float64) if not isinstance(value, np.ndarray) else value
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"must be a square matrix (got shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError("must be finite")
    return value


# ----------------------------------------------------------------------------- types


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: ``name``, ``default``, ``check`` (value → value, or ValueError
    with the requirement) and a one-line ``doc`` (which λ of the paper it is)."""

    name: str
    default: object
    check: Callable = number
    doc: str = ""


class Settings(NamedTuple):
    """How to fit, shared by every method.

    inference : "map", "nuts", "gibbs" or "svi".
    loss_scale : "mean" (the papers' Σ_i (1/n_i) Σ_j l) or "sum" (the proper likelihood);
        None = "mean" for MAP, "sum" for sampling.
    noise : Gaussian σ (float; None = 1/√2 for MAP, so -log-likelihood is the squared loss),
        or "shared"/"task" (learned; sampling only).
    max_iter, tol : override the outer-loop settings of the alternating MAP solvers.
    deadline : ``time.monotonic()`` value after which iterative solvers stop (time limits).
    The rest are sampler settings (NUTS, SVI, Gibbs).
    """

    inference: str = "map"
    loss_scale: str | None = None
    noise: float | str | None = None
    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 2
    svi_steps: int = 5000
    guide: str = "normal"
    noncentered: bool = False
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    seed: int = 0
    progress_bar: bool = False
    max_iter: int | None = None
    tol: float | None = None
    deadline: float | None = None

    def resolved_loss_scale(self) -> str:
        if self.loss_scale is None:
            return "mean" if self.inference == "map" else "sum"
        return self.loss_scale


class Fit(NamedTuple):
    """A MAP fit: W (d, m), b (m,), relation {DataTree variable: (m, m) array}, objective
    (the method's MAP objective, the paper's up to its stated constant), converged, info
    (solver diagnostics: n_iter, last relative change, …) and raw (the solver's own result,
    used to warm-start the next fit of a path)."""

    W: np.ndarray
    b: np.ndarray
    relation: dict
    objective: float
    converged: bool
    info: dict
    raw: object = None


class JointForm(NamedTuple):
    """A NumPyro model whose negative log joint (no Jacobian) at ``params`` is the method's
    MAP objective up to a constant: ``-log_density(model, args, kwargs, params)``."""

    model: Callable
    args: tuple
    kwargs: dict
    params: dict


@dataclass(frozen=True)
class Method:
    """A registered multi-task method.

    name, summary : registry key and one line for listings.
    hyper : its hyperparameters (:class:`Hyper`).
    fit_map : ``fit_map(data, hyper, settings, init) -> Fit`` (exact MAP; ``init`` a previous
        :class:`Fit` of the same method, a warm start) or None when no MAP exists (``no_map``
        says why).
    joint : ``joint(data, hyper, settings, fit) -> JointForm``: the MAP-form model evaluated
        at a fit (the conformance test compares it with the paper's objective).
    sample : ``sample(data, hyper, settings) -> DataTree`` for the inferences in ``samplers``.
    relation : the task relation it exports (a key of :data:`RELATIONS`).
    kinds : the data kinds it fits ("regression", "classification").
    grid : default cross-validation grid; the first entry is the warm-started path.
    sampling_prior : the proper prior used for posterior sampling, or why there is none.
    aliases : other names that resolve to it.
    shallow : a linear model that needs nothing but data (``compare`` fits every shallow
        method by default); False for networks and for methods that need a trained artefact
        (``l2mt``).
    statistics : its regression MAP needs only the per-task sufficient statistics, so
        :func:`fit` takes a :class:`~bayesmtl.data.TaskStatistics` for it (rows streamed in
        chunks, never held together).
    predictor, restore, export : non-linear methods (networks) only. ``predictor(fit)`` is
        the fitted model, an object with ``predict(X, task_index, return_std=False)``,
        ``predict_proba(X, task_index)`` and ``state() -> (meta, arrays)``;
        ``restore(meta, arrays)`` rebuilds it from a saved state; ``export(fit, data)`` is its
        DataTree. For these methods ``Fit.W``/``Fit.b`` are None and ``sample`` returns a
        :class:`Fit` (its ``raw`` the fitted posterior approximation).
    """

    name: str
    summary: str
    hyper: tuple = ()
    fit_map: Callable | None = None
    joint: Callable | None = None
    sample: Callable | None = None
    samplers: frozenset = frozenset()
    relation: str = "omega"
    kinds: frozenset = frozenset({REGRESSION, CLASSIFICATION})
    grid: Mapping = field(default_factory=dict)
    sampling_prior: str = ""
    no_map: str | None = None
    aliases: tuple = ()
    shallow: bool = True
    predictor: Callable | None = None
    restore: Callable | None = None
    export: Callable | None = None
    statistics: bool = False

    @property
    def hyper_names(self) -> tuple:
        return tuple(h.name for h in self.hyper)

    def defaults(self) -> dict:
        return {h.name: h.default for h in self.hyper}

    def inferences(self) -> tuple:
        """The inferences this method supports, MAP first."""
        return (("map",) if self.fit_map is not None else ()) + tuple(
            i for i in INFERENCES if i in self.samplers)


# ----------------------------------------------------------------------------- the registry

_REGISTRY: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` under its name (and aliases); ``replace=True`` overwrites."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a Method; got {type(method).__name__}")
    if method.relation not in RELATIONS:
        raise ValueError(f"relation must be one of {tuple(RELATIONS)}; got {method.relation!r}")
    unknown = set(method.samplers) - set(INFERENCES[1:])
    if unknown:
        raise ValueError(f"unknown samplers {sorted(unknown)}; use {INFERENCES[1:]}")
    if method.sample is None and method.samplers:
        raise ValueError(f"{method.name}: samplers {sorted(method.samplers)} need sample=")
    for key in (method.name, *method.aliases):
        taken = key in _REGISTRY or key in _ALIASES
        if taken and not replace and _resolve_name(key) != method.name:
            raise ValueError(f"a method called {key!r} is registered already; pass "
                             "replace=True to overwrite it")
    _REGISTRY[method.name] = method
    for alias in method.aliases:
        _ALIASES[alias] = method.name
    return method


def unregister(name: str) -> None:
    """Remove a method (and its aliases) from the registry."""
    method = get(name)
    del _REGISTRY[method.name]
    for alias in method.aliases:
        _ALIASES.pop(alias, None)


def _resolve_name(name):
    return _ALIASES.get(name, name)


def get(method) -> Method:
    """The :class:`Method` called ``method`` (or ``method`` itself if it is one)."""
    if isinstance(method, Method):
        return method
    if isinstance(method, str) and _resolve_name(method) in _REGISTRY:
        return _REGISTRY[_resolve_name(method)]
    raise MethodError(f"unknown method {method!r}; registered: {', '.join(names())}",
                      "method", method)


def names(*, shallow: bool | None = None, kind: str | None = None,
          statistics: bool | None = None) -> tuple:
    """Registered method names (optionally only shallow ones, those fitting ``kind``, or those
    whose ``statistics`` flag is as given)."""
    return tuple(n for n, m in _REGISTRY.items()
                 if (shallow is None or m.shallow == shallow)
                 and (kind is None or kind in m.kinds)
                 and (statistics is None or m.statistics == statistics))


def validate(method, values: Mapping | None = None) -> dict:
    """The method's hyperparameters: defaults updated by ``values``, each checked.

    Raises :class:`HyperparameterError` naming the parameter and the value (an unknown name
    lists the method's hyperparameters).
    """
    method = get(method)
    values = dict(values or {})
    unknown = sorted(set(values) - set(method.hyper_names))
    if unknown:
        raise HyperparameterError(
            f"{method.name} has no hyperparameter {unknown[0]!r}; its hyperparameters are: "
            f"{', '.join(method.hyper_names) or '(none)'}", unknown[0], values[unknown[0]])
    out = {}
    for h in method.hyper:
        value = values.get(h.name, h.default)
        try:
            out[h.name] = h.check(value)
        except (ValueError, TypeError) as err:
            raise HyperparameterError(f"{method.name}: {h.name} {err}; got {value!r}",
                                      h.name, value) from None
    return out


# ----------------------------------------------------------------------------- fitting


def _check_statistics(method: Method, data: TaskStatistics, settings: Settings) -> None:
    if settings.inference != "map":
        raise MethodError(f"inference={settings.inference!r} needs the rows (a MultiTaskData);"
                          " TaskStatistics give MAP only", "inference", settings.inference)
    if not method.statistics:
        able = ", ".join(names(statistics=True))
        raise MethodError(f"{method.name} needs the rows (a MultiTaskData); the methods that "
                          f"fit from TaskStatistics are: {able}", "method", method.name)
    data.check(method.name)


def _check_inference(method: Method, data: MultiTaskData, settings: Settings) -> None:
    if isinstance(data, TaskStatistics):
        _check_statistics(method, data, settings)
    if data.kind not in method.kinds:
        raise MethodError(f"{method.name} fits {' and '.join(sorted(method.kinds))} data; got "
                          f"{data.kind} data", "method", method.name)
    inference = settings.inference
    if inference not in INFERENCES:
        raise HyperparameterError(f"inference must be one of {INFERENCES}; got {inference!r}",
                                  "inference", inference)
    if inference == "map" and method.fit_map is None:
        raise MethodError(f"{method.name} has no MAP: {method.no_map} Use inference="
                          f"{' or '.join(repr(i) for i in method.inferences())}",
                          "inference", inference)
    if inference != "map" and inference not in method.samplers:
        raise MethodError(f"inference={inference!r} is not available for {method.name}; it "
                          f"supports {', '.join(method.inferences())}", "inference", inference)


def check_finite_fit(method_name: str, result: Fit) -> Fit:
    """Raise :class:`NonFiniteResultError` when a MAP fit holds NaN or inf."""
    arrays = {k: v for k, v in {"W": result.W, "b": result.b, **result.relation}.items()
              if v is not None}
    bad = [k for k, v in arrays.items() if not np.all(np.isfinite(np.asarray(v, float)))]
    if bad or not np.isfinite(result.objective):
        raise NonFiniteResultError(
            f"{method_name}: the MAP fit holds NaN or inf (in {', '.join(bad) or 'objective'})."
            " Likely causes: badly scaled features (standardise X, e.g. with "
            "bayesmtl.data.Standardizer), a hyperparameter at an extreme value, or a problem "
            "whose MAP does not exist (see the method's docstring)")
    return result


def fit(data: MultiTaskData, method, hyper: Mapping | None = None,
        settings: Settings | None = None, init: Fit | None = None):
    """Fit ``method`` on ``data``: returns ``(fit, datatree)``.

    ``data`` is a :class:`MultiTaskData`, or a :class:`~bayesmtl.data.TaskStatistics` (MAP of
    a method whose ``statistics`` flag is set; regression).

    For MAP, ``fit`` is the :class:`Fit` (checked finite; an unconverged solver has warned
    with :class:`ConvergenceWarning` and ``fit.converged`` is False) and the DataTree holds it
    as one draw. For sampling, ``fit`` is None and the DataTree holds the draws.
    """
    method = get(method)
    settings = Settings() if settings is None else settings
    hyper = validate(method, hyper)
    _check_inference(method, data, settings)
    if settings.inference == "map":
        result = check_finite_fit(method.name, method.fit_map(data, hyper, settings, init))
        return result, to_datatree(method, result, data, hyper, settings)
    out = method.sample(data, hyper, settings)
    if isinstance(out, Fit):  # a fitted posterior approximation (networks)
        return out, to_datatree(method, out, data, hyper, settings)
    return None, out


def to_datatree(method: Method, result: Fit, data: MultiTaskData, hyper: Mapping,
                settings: Settings | None = None):
    """A MAP :class:`Fit` as a DataTree (one chain, one draw) with task and feature names."""
    from ..inference.export import from_point

    settings = Settings() if settings is None else settings
    attrs = {"method": method.name, "inference": settings.inference,
             "objective": float(result.objective),
             "converged": int(bool(result.converged))}
    attrs.update({k: v for k, v in hyper.items() if isinstance(v, (int, float, str, bool))})
    attrs.update({f"solver_{k}": v for k, v in result.info.items()
                  if isinstance(v, (int, float, str, bool))})
    if method.export is not None:
        dt = method.export(result, data)
        dt.attrs.update(attrs)
        return dt
    params = {"W": result.W, "b": result.b, **result.relation}
    return from_point(params, task_names=data.task_names, feature_names=data.feature_names,
                      attrs=attrs)


def warn_unconverged(name: str, result: Fit) -> None:
    """One ConvergenceWarning for a fit that did not converge (used by path solvers that
    collect warnings)."""
    if not result.converged:
        info = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in (result.info or {}).items()
                         if isinstance(v, (int, float, str)) and not isinstance(v, bool))
        warnings.warn(f"{name}: the MAP solver stopped before its tolerance"
                      + (f" ({info.replace('_', ' ')})" if info else "")
                      + "; raise max_iter or loosen tol in settings", ConvergenceWarning,
                      stacklevel=2)
