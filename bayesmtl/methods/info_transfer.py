r"""``shared_subspace``: the shared-module model of Wu, Zhang & Ré (information transfer).

y_i = X_i B A_i + b_i + ε_i with a shared module B (d, r) of capacity ``r`` and heads A_i (r,)
(:mod:`bayesmtl.models.info_transfer`): Gaussian priors N(0, 1/λ) on B and on the A_i are the
weight decay (λ = ``lam``), the task weights α_i of eq. (2) (``task_weights``: None, "svd" for
Algorithm 2 at rank r — tasks must share X — or m numbers) temper each task's likelihood. MAP
is eq. (2)/(3) plus the weight decay: alternating exact block minimisation, or Proposition 3's
closed form (the global optimum) when every task has the same X and λ = 0; logistic tasks by
L-BFGS on the joint. NUTS and SVI sample the same model (λ > 0).

B and A are not identifiable; the fit exports the task models W = B A (``W``), the Gram matrix
``omega`` = WᵀW / d and its correlation ``omega_corr`` = the cosines cos(θ_i, θ_j) (dims
``task``, ``task_``), and the MAP's balanced factors ``B`` (feature, component) and ``A``
(component, task). Posterior draws export W, b, omega and omega_corr (the factors wander along
their rotations; R-hat and ESS are checked on the identifiable quantities only).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from ..data import CLASSIFICATION, REGRESSION
from ..errors import HyperparameterError, SamplingWarning
from ..models import info_transfer as IT
from ..models.likelihoods import BernoulliLogit
from ..models.matrix_normal import model_inputs
from .common import history_info, likelihood, map_noise, sample_model
from .registry import Fit, Hyper, JointForm, Method, nonnegative, register, warn_unconverged

NAME = "shared_subspace"
REPORTED = ("W", "b", "omega", "noise")


def _rank(value) -> int:
    """An integer ≥ 1 (an integral float such as 2.0 is accepted); ≤ d is checked at fit time."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not float(value).is_integer() or value < 1:
        raise ValueError("must be an integer ≥ 1 (the capacity of the shared module)")
    return int(value)


def _task_weights(value):
    """None, "svd" (Algorithm 2) or a vector of positive task weights α_i."""
    if value is None or (isinstance(value, str) and value == "svd"):
        return value
    if isinstance(value, str):
        raise ValueError("must be None, 'svd' or a vector of positive task weights")
    w = np.asarray(value, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("must be None, 'svd' or a vector of positive task weights")
    return w


HYPER = (
    Hyper("r", 1, _rank, "capacity r of the shared module B (d × r); r ≥ m: no transfer"),
    Hyper("lam", 0.01, nonnegative, "λ: precision of the Gaussian priors on B and A_i (weight "
                                    "decay); 0 = eq. (2)/(3) exactly (MAP only)"),
    Hyper("task_weights", None, _task_weights, "α_i of eq. (2): None (1), 'svd' (Algorithm 2 "
                                               "at rank r; tasks share X) or m positive numbers"),
)


def _alpha(data, value, r) -> np.ndarray:
    if value is None:
        return np.ones(data.n_tasks)
    if isinstance(value, str):
        from ..transfer.reweighting import svd_task_weights

        return svd_task_weights(data, min(r, data.n_tasks))
    if value.shape != (data.n_tasks,):
        raise HyperparameterError(f"{NAME}: task_weights has {value.size} entries for "
                                  f"{data.n_tasks} tasks", "task_weights", value)
    return value


def _warm_start(init, d, r):
    if init is None or "B" not in init.relation or init.relation["B"].shape != (d, r):
        return None
    return init.relation["B"]


def _fit_gaussian(data, r, lam, alpha, settings, init):
    kw = {"alpha": alpha, "loss_scale": settings.resolved_loss_scale(),
          "noise": map_noise(settings)}
    if lam == 0 and IT.shared_design(data) is not None:
        return IT.proposition3(data, r, **kw), "proposition3"
    extra = {k: v for k, v in (("max_iter", settings.max_iter), ("tol", settings.tol))
             if v is not None}
    return IT.fit_subspace(data, r, lam, init=_warm_start(init, data.n_features, r), **kw,
                           **extra), "alternating"


def _fit_logistic(data, r, lam, alpha, settings, init):
    """Logistic heads: L-BFGS on the negative log joint, started from the Gaussian fit of the
    0/1 labels (logits ≈ 4 × probabilities)."""
    from ..inference.map import map_estimate

    if lam == 0:
        raise HyperparameterError(f"{NAME}: logistic tasks need lam > 0 (with flat priors the "
                                  "MAP does not exist on separable data)", "lam", lam)
    loss_scale = settings.resolved_loss_scale()
    start = IT.fit_subspace(dataclasses.replace(data, kind=REGRESSION, label_values=None), r,
                            lam, alpha=alpha, loss_scale=loss_scale,
                            init=_warm_start(init, data.n_features, r), max_iter=200)
    args, kw = model_inputs(data, loss_scale)
    res = map_estimate(IT.shared_subspace_model, *args,
                       init_params={"B": 2 * start.B, "A": 2 * start.A, "b": 4 * start.b - 2},
                       rank=r, lam=lam, likelihood=BernoulliLogit(), task_weights=alpha,
                       polish_max_dim=0, **kw)
    B, A = IT.balanced_factors(res.params["B"], res.params["A"])
    b = res.params["b"]
    F = _logistic_objective(data, B @ A, b, B, A, lam, alpha, loss_scale)
    return IT.SubspaceFit(B, A, b, B @ A, F, res.history, res.n_iter, res.converged,
                          res.grad_norm), "lbfgs"


def _logistic_objective(data, W, b, B, A, lam, alpha, loss_scale) -> float:
    """Σ_i α_i s_i Σ_j log(1 + exp(-(2y-1) f)) + (λ/2)(‖B‖² + ‖A‖²)."""
    f = np.einsum("nd,dn->n", data.X, W[:, data.task]) + b[data.task]
    rows = np.logaddexp(0.0, -(2 * data.y - 1) * f) * alpha[data.task]
    if loss_scale == "mean":
        rows = rows / data.n_per_task[data.task]
    return float(rows.sum() + 0.5 * lam * (np.sum(B**2) + np.sum(A**2)))


def _fit_map(data, hyper, settings, init=None):
    r = IT.check_rank(hyper["r"], data.n_features)
    alpha = _alpha(data, hyper["task_weights"], r)
    fitter = _fit_logistic if data.kind == CLASSIFICATION else _fit_gaussian
    res, solver = fitter(data, r, hyper["lam"], alpha, settings, init)
    info = history_info(res.history, res.n_iter)
    info.update(solver=solver, grad_norm=float(res.grad_norm))
    fit = Fit(res.W, np.asarray(res.b), {"omega": np.asarray(IT.task_gram(res.W)), "B": res.B,
                                         "A": res.A},
              res.objective, bool(res.converged), info, res)
    warn_unconverged(NAME, fit)
    return fit


def _joint(data, hyper, settings, fit):
    r = IT.check_rank(hyper["r"], data.n_features)
    args, kw = model_inputs(data, settings.resolved_loss_scale())
    kw.update(rank=r, lam=hyper["lam"], likelihood=likelihood(data, settings),
              task_weights=_alpha(data, hyper["task_weights"], r))
    return JointForm(IT.shared_subspace_model, args, kw,
                     {"B": fit.relation["B"], "A": fit.relation["A"], "b": fit.b})


def _sample(data, hyper, settings):
    r = IT.check_rank(hyper["r"], data.n_features)
    if hyper["lam"] == 0:
        raise HyperparameterError(f"{NAME}: sampling needs lam > 0 (with flat priors on B and A "
                                  "the posterior is improper: B Q, Q⁻¹A is as likely for every "
                                  "invertible Q)", "lam", 0.0)
    with warnings.catch_warnings():  # B, A are not identified: R-hat is checked below instead
        warnings.simplefilter("ignore", SamplingWarning)
        dt = sample_model(IT.shared_subspace_model, data, settings, REPORTED, rank=r,
                          lam=hyper["lam"], task_weights=_alpha(data, hyper["task_weights"], r))
    rhat, ess = dt.attrs.get("max_rhat", np.nan), dt.attrs.get("min_ess", np.nan)
    if rhat > 1.01 or ess < 100:
        warnings.warn(f"{NAME}: the chains have not mixed on the identifiable quantities (W, "
                      f"omega): max R-hat {rhat:.3f} (want ≤ 1.01), min effective sample size "
                      f"{ess:.0f} (want ≥ 100); run longer chains", SamplingWarning,
                      stacklevel=2)
    return dt


def _export(fit, data):
    from ..inference.export import from_point

    params = {"W": fit.W, "b": fit.b, **fit.relation}
    return from_point(params, task_names=data.task_names, feature_names=data.feature_names,
                      dims={"B": ["feature", "component"], "A": ["component", "task"]})


register(Method(
    name=NAME,
    summary="shared module B (d × r) + task heads A_i (Wu, Zhang & Ré): capacity r, task "
            "weights (Algorithm 2), Proposition 3's closed form",
    hyper=HYPER,
    fit_map=_fit_map,
    joint=_joint,
    sample=_sample,
    samplers=frozenset({"nuts", "svi"}),
    relation="omega",
    kinds=frozenset({REGRESSION, CLASSIFICATION}),
    grid={"lam": (0.1, 0.01, 0.001), "r": (1, 2, 3)},
    sampling_prior="B, A_i ~ N(0, 1/λ) elementwise, flat intercepts: proper for λ > 0; "
                   "omega_corr = cosines of the task models",
    aliases=("info_transfer",),
    export=_export,
))
