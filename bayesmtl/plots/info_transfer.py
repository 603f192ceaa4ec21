"""Plots of the information-transfer tools: covariance similarity heatmap, capacity sweep."""

from __future__ import annotations

import numpy as np

from .omega import cluster_order

__all__ = ["plot_covariance_similarity", "covariance_similarity_figure", "plot_capacity_sweep"]


def plot_covariance_similarity(sim, ax=None, max_labels: int = 40, title: str | None = None):
    """Heatmap of a task × task covariance similarity (the DataArray of
    :func:`bayesmtl.transfer.covariance_similarity`), tasks in clustered order. Returns the
    Figure."""
    from .heatmap import new_axes, task_heatmap

    S = np.asarray(sim.values, dtype=np.float64)
    names = np.asarray(sim.coords[sim.dims[0]].values).astype(str)
    fig, ax = new_axes(len(names), ax)
    task_heatmap(ax, S, names, order=cluster_order(S), cmap="viridis", vmin=0, vmax=1,
                 max_labels=max_labels, xlabel="task (clustered order)",
                 ylabel="task (clustered order)", colorbar_label="covariance similarity")
    keep = sim.attrs.get("keep", 0.99)
    ax.set_title(title or f"covariance similarity (eq. 5, {100 * keep:g}% of the spectrum)")
    return fig


def covariance_similarity_figure(data, keep: float = 0.99, normalization: str = "self",
                                 title: str | None = None):
    """The covariance similarity heatmap of a MultiTaskData's tasks (for a fit report)."""
    from ..transfer.similarity import covariance_similarity

    return plot_covariance_similarity(covariance_similarity(data, keep, normalization),
                                      title=title)


def plot_capacity_sweep(sweep, ax=None, title: str | None = None):
    """Error against the capacity r (CV on train; test when available), the chosen r marked.
    ``sweep`` is a :class:`bayesmtl.transfer.CapacitySweep`. Returns the Figure."""
    import matplotlib.pyplot as plt

    table, scoring = sweep.table, sweep.scoring
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    for column, style in ((f"cv_{scoring}", "o-"), (f"train_{scoring}", "s:"),
                          (f"test_{scoring}", "^--")):
        if np.isfinite(table[column]).any():
            ax.plot(table["r"], table[column], style, label=column.replace("_", " "))
    ax.axvline(sweep.chosen_r, color="grey", lw=1, ls="--", label=f"chosen r = {sweep.chosen_r}")
    ax.set_xlabel("capacity r of the shared module")
    ax.set_ylabel(scoring)
    ax.set_xticks(table["r"])
    ax.legend(fontsize=8)
    ax.set_title(title or "capacity sweep")
    return fig
