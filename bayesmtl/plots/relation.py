"""The learned task relation of any method, from its DataTree."""

from __future__ import annotations

import numpy as np

from ..inference.export import relation_variable
from .omega import plot_task_correlation

__all__ = ["relation_variable", "plot_directed_relation", "plot_task_relation"]


def plot_directed_relation(dt, var_name: str, ax=None, max_labels: int = 40,
                           title: str | None = None):
    """Heatmap of a posterior-mean directed relation (source_task × target_task), e.g.
    AMTL's transfer graph B or GAMTL's combination C. Returns the Figure."""
    from .heatmap import new_axes, task_heatmap

    da = dt.posterior[var_name]
    M = da.values.mean(axis=(0, 1))
    names = np.asarray(da.coords[da.dims[-2]].values).astype(str)
    fig, ax = new_axes(len(names), ax)
    task_heatmap(ax, M, names, max_labels=max_labels, xlabel="target task",
                 ylabel="source task", colorbar_label=f"posterior mean {var_name}")
    ax.set_title(title or f"{var_name} ({len(names)} tasks)")
    return fig


def plot_task_relation(dt, ax=None, title: str | None = None):
    """The task relation a DataTree holds: the clustered correlation heatmap of Ω, or the
    heatmap of a directed relation (transfer graph, combination matrix)."""
    var = relation_variable(dt)
    if var is None:
        raise ValueError("the DataTree holds no task relation (omega, transfer_graph or "
                         "combination)")
    if var == "omega_corr":
        return plot_task_correlation(dt, ax=ax, title=title)
    return plot_directed_relation(dt, var, ax=ax, title=title)
