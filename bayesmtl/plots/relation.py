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
    import matplotlib.pyplot as plt

    da = dt.posterior[var_name]
    M = da.values.mean(axis=(0, 1))
    names = np.asarray(da.coords[da.dims[-2]].values).astype(str)
    if ax is None:
        size = min(12, 3 + 0.08 * len(names))
        fig, ax = plt.subplots(figsize=(size + 1, size))
    else:
        fig = ax.figure
    limit = max(float(np.abs(M).max()), 1e-12)
    im = ax.imshow(M, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    if len(names) <= max_labels:
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, names, fontsize=7)
    ax.set_xlabel("target task")
    ax.set_ylabel("source task")
    ax.set_title(title or f"{var_name} ({len(names)} tasks)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=var_name)
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
