"""ArviZ export: every result (MAP point, NUTS draws, SVI draws, Pyro draws) goes through
:func:`to_datatree`, which names dimensions after tasks and features.

Dimension names
---------------
``task`` and ``task_`` (the two axes of a task × task matrix), ``feature``, and
``source_task`` / ``target_task`` for directed task graphs (AMTL's B, GAMTL's C). Variables not
in :data:`DEFAULT_DIMS` keep ArviZ's automatic dimension names unless ``dims`` says otherwise.

Sampled fits given their data and likelihood also get ``observed_data`` (``y``, dim ``obs``)
and ``log_likelihood`` (``y``: log p(y_j | draw), dims chain, draw, obs), both with the row's
task name as coordinate ``task`` along ``obs``, so ``arviz_stats.loo`` and ``compare`` work on
the user's data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_DIMS", "to_datatree", "from_mcmc", "from_point", "omega_to_corr",
           "task_relation_summary", "relation_variable", "pointwise_log_likelihood"]

DEFAULT_DIMS = {
    "W": ["feature", "task"],
    "W_raw": ["feature", "task"],
    "b": ["task"],
    "noise": ["task"],
    "omega": ["task", "task_"],
    "omega_corr": ["task", "task_"],
    "omega_scale": ["task"],
    "omega_inv": ["task", "task_"],
    "transfer_graph": ["source_task", "target_task"],
    "transfer_graph_inclusion": ["source_task", "target_task"],
    "combination": ["source_task", "target_task"],
    "reconstruction": ["source_task", "target_task"],
    "task_loss": ["task"],
    "P": ["feature", "task"],
    "Q": ["feature", "task"],
}


def omega_to_corr(omega: np.ndarray) -> np.ndarray:
    """(..., m, m) covariance → correlation (zero-variance tasks get zero off-diagonals)."""
    sd = np.sqrt(np.clip(np.diagonal(omega, axis1=-2, axis2=-1), 0.0, None))
    denom = sd[..., :, None] * sd[..., None, :]
    corr = np.divide(omega, denom, out=np.zeros_like(omega), where=denom > 0)
    idx = np.arange(omega.shape[-1])
    corr[..., idx, idx] = 1.0
    return corr


def pointwise_log_likelihood(posterior: dict, data, likelihood) -> np.ndarray:
    """(chain, draw, N) log p(y_j | W, b, σ) of every row of ``data`` under every draw.

    ``posterior`` holds ``W`` (chain, draw, d, m), ``b`` (chain, draw, m; absent = 0) and, for
    a learned Gaussian noise, ``noise`` (chain, draw) or (chain, draw, m); ``likelihood`` is
    the model's observation model (:mod:`bayesmtl.models.likelihoods`). The proper
    (untempered) density, whatever row weights the sampler used.
    """
    W = np.asarray(posterior["W"], dtype=np.float64)
    n_chain, n_draw = W.shape[:2]
    b = (np.asarray(posterior["b"], dtype=np.float64) if "b" in posterior
         else np.zeros((n_chain, n_draw, data.n_tasks)))
    f = np.empty((n_chain, n_draw, len(data.y)))
    for i in range(data.n_tasks):  # rows are sorted by task
        rows = data.task_slice(i)
        f[:, :, rows] = (np.einsum("nk,csk->csn", data.X[rows], W[:, :, :, i])
                         + b[:, :, i, None])
    y = data.y
    if likelihood.kind == "classification":
        return -np.logaddexp(0.0, -(2.0 * y - 1.0) * f)
    if isinstance(likelihood.noise, str):
        sigma = np.asarray(posterior["noise"], dtype=np.float64)
        sigma = sigma[..., None] if sigma.ndim == 2 else sigma[:, :, data.task]
    else:
        sigma = float(likelihood.noise)
    return -0.5 * np.log(2.0 * np.pi * sigma**2) - 0.5 * ((y - f) / sigma) ** 2


def _with_row_tasks(dt, data):
    """The per-row task names as coordinate ``task`` along ``obs`` of the data groups."""
    names = np.asarray(data.task_names)[data.task]
    for group in ("observed_data", "log_likelihood"):
        if group in dt.children:
            dt[group] = dt[group].to_dataset().assign_coords(task=("obs", names))
    return dt


def to_datatree(samples: dict, *, task_names, feature_names=None, dims=None,
                sample_stats=None, observed=None, attrs=None, data=None, likelihood=None):
    """Build an ArviZ DataTree from draws shaped ``(chain, draw, ...)``.

    Adds ``omega_corr`` when ``omega`` is present. ``observed`` is an optional dict of
    observed-data arrays (with their own ``dims`` entries). With ``data`` (the fitted
    MultiTaskData) and its ``likelihood`` the tree also holds ``observed_data`` and
    ``log_likelihood`` (:func:`pointwise_log_likelihood`), dim ``obs`` with task
    coordinates.
    """
    from arviz_base import from_dict

    posterior = {k: np.asarray(v) for k, v in samples.items()}
    if "omega" in posterior and "omega_corr" not in posterior:
        posterior["omega_corr"] = omega_to_corr(posterior["omega"])
    all_dims = {k: v for k, v in DEFAULT_DIMS.items()}
    all_dims.update(dims or {})
    m = len(task_names)
    coords = {"task": list(task_names), "task_": list(task_names),
              "source_task": list(task_names), "target_task": list(task_names)}
    if feature_names is not None:
        coords["feature"] = list(feature_names)
    groups = {"posterior": posterior}
    if sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in sample_stats.items()}
    if observed:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed.items()}
    var_dims = {}
    if data is not None and likelihood is not None:
        groups.setdefault("observed_data", {})["y"] = np.asarray(data.y)
        groups["log_likelihood"] = {"y": pointwise_log_likelihood(posterior, data, likelihood)}
        coords["obs"] = np.arange(len(data.y))
        var_dims["y"] = ["obs"]
    used = set().union(*(g.keys() for g in groups.values()))
    for k, v in all_dims.items():
        if k not in used or k in var_dims:
            continue
        arr = next(g[k] for g in groups.values() if k in g)
        shape = arr.shape[2:] if k in posterior or k in groups.get("sample_stats", {}) \
            else arr.shape
        if len(shape) == len(v) and all(
            coords.get(d) is None or len(coords[d]) == n for d, n in zip(v, shape, strict=True)
        ):
            var_dims[k] = v
    dt = from_dict(groups, dims=var_dims, coords=coords)
    dt.attrs.update(attrs or {}, n_tasks=m)
    return dt if data is None or likelihood is None else _with_row_tasks(dt, data)


def from_mcmc(mcmc, *, task_names, feature_names=None, var_names=None, dims=None, attrs=None,
              data=None, likelihood=None):
    """DataTree from a NumPyro ``MCMC`` run (draws grouped by chain; divergences kept);
    ``data`` and ``likelihood`` add the observed data and pointwise log-likelihood."""
    samples = mcmc.get_samples(group_by_chain=True)
    if var_names is not None:
        samples = {k: v for k, v in samples.items() if k in var_names}
    from .mcmc import convergence_diagnostics

    extra = mcmc.get_extra_fields(group_by_chain=True)
    attrs = {**(attrs or {}), **convergence_diagnostics(samples)}
    stats = {}
    if "diverging" in extra:
        stats["diverging"] = np.asarray(extra["diverging"])
    if "num_steps" in extra:
        stats["n_steps"] = np.asarray(extra["num_steps"])
    return to_datatree(samples, task_names=task_names, feature_names=feature_names, dims=dims,
                       sample_stats=stats, attrs=attrs, data=data, likelihood=likelihood)


def from_point(params: dict, *, task_names, feature_names=None, dims=None, attrs=None):
    """DataTree holding a point estimate (MAP) as one chain with one draw."""
    samples = {k: np.asarray(v)[None, None] for k, v in params.items()}
    return to_datatree(samples, task_names=task_names, feature_names=feature_names, dims=dims,
                       attrs=attrs)


#: DataTree variables holding a task relation, in order of preference
RELATION_VARIABLES = ("omega_corr", "transfer_graph", "combination")


def relation_variable(dt) -> str | None:
    """The task-relation variable of a bayesmtl DataTree (None if it has none)."""
    return next((v for v in RELATION_VARIABLES if v in dt.posterior), None)


def task_relation_summary(dt, var_name: str | None = None, ci_prob: float = 0.89):
    """One row per task pair: posterior mean, equal-tailed ``ci_prob`` interval, R-hat and
    bulk/tail ESS of a task × task variable.

    ``var_name`` defaults to the DataTree's task relation: ``omega_corr`` (symmetric: the upper
    triangle), else ``transfer_graph`` or ``combination`` (dims (source_task, target_task):
    every ordered pair s ≠ t, columns ``source_task``/``target_task``). R-hat needs ≥ 2
    chains and ESS ≥ 4 draws; otherwise they are NaN (a MAP point has neither).
    """
    import warnings

    from arviz_stats import ess, rhat

    var_name = relation_variable(dt) if var_name is None else var_name
    if var_name is None:
        raise ValueError("the DataTree holds no task relation (omega, transfer_graph or "
                         "combination)")
    da = dt.posterior[var_name]
    names = list(da.coords[da.dims[-2]].values)
    values = da.values  # (chain, draw, m, m)
    lo, hi = np.quantile(values, [(1 - ci_prob) / 2, (1 + ci_prob) / 2], axis=(0, 1))
    mean = values.mean(axis=(0, 1))
    n_chain, n_draw = values.shape[:2]
    r = eb = et = np.full(mean.shape, np.nan)
    if n_draw >= 4:
        da = da.where(~np.eye(len(names), dtype=bool), 0.0)  # constant diagonal: no R-hat
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant entries (e.g. zeros)
            if n_chain > 1:
                r = rhat(da, method="rank").values
            eb = ess(da, method="bulk").values
            et = ess(da, method="tail").values
    directed = da.dims[-2:] == ("source_task", "target_task")
    iu, ju = (np.nonzero(~np.eye(len(names), dtype=bool)) if directed
              else np.triu_indices(len(names), k=1))
    first, second = ("source_task", "target_task") if directed else ("task", "task_")
    pct = f"{int(round(100 * ci_prob))}%"
    return pd.DataFrame({
        first: [names[i] for i in iu], second: [names[j] for j in ju],
        "mean": mean[iu, ju], f"lower_{pct}": lo[iu, ju], f"upper_{pct}": hi[iu, ju],
        "r_hat": r[iu, ju], "ess_bulk": eb[iu, ju], "ess_tail": et[iu, ju],
    })
