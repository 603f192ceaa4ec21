"""Heatmap of the combination matrix C with tasks reordered by group (GAMTL paper, Figs 1, 3)."""

from __future__ import annotations

import numpy as np

__all__ = ["group_order", "plot_combination", "plot_combination_matrix"]


def group_order(groups) -> np.ndarray:
    """(m,) task order: by group label, original order inside a group (stable)."""
    return np.argsort(np.asarray(groups), kind="stable")


def plot_combination_matrix(C, groups, task_names, ax=None, max_labels: int = 40,
                            title: str | None = None):
    """Heatmap of C (m, m), rows = source tasks, columns = target tasks, both reordered by
    ``groups`` (m,) with group boundaries drawn. Returns the matplotlib Figure."""
    from .heatmap import new_axes, task_heatmap

    C = np.asarray(C, dtype=float)
    groups = np.asarray(groups)
    names = np.asarray(task_names).astype(str)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or not len(groups) == len(names) == len(C):
        raise ValueError(f"C must be (m, m) with m groups and names; got C {C.shape}, "
                         f"{len(groups)} groups, {len(names)} names")
    order = group_order(groups)
    fig, ax = new_axes(len(names), ax)
    task_heatmap(ax, C, names, order=order, max_labels=max_labels,
                 xlabel="target task (by group)", ylabel="source task (by group)",
                 colorbar_label="combination weight")
    for edge in np.flatnonzero(np.diff(groups[order])) + 0.5:
        ax.axhline(edge, color="k", lw=0.6)
        ax.axvline(edge, color="k", lw=0.6)
    n_groups = len(np.unique(groups))
    ax.set_title(title or f"task combination C, {len(names)} tasks in {n_groups} groups")
    return fig


def plot_combination(dt, groups=None, var_name: str = "combination", ax=None, **kwargs):
    """Heatmap of the posterior-mean (or MAP) C from a DataTree, tasks reordered by group.

    ``dt.posterior[var_name]`` has dims (chain, draw, source_task, target_task). ``groups``
    (m,) defaults to :func:`bayesmtl.models.gamtl.task_groups` of the mean C.
    """
    from ..models.gamtl import task_groups

    da = dt.posterior[var_name]
    C = da.values.mean(axis=(0, 1))
    names = np.asarray(da.coords[da.dims[-2]].values)
    if groups is None:
        groups, _ = task_groups(C)
    return plot_combination_matrix(C, groups, names, ax=ax, **kwargs)
