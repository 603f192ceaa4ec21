"""Task-correlation heatmap."""

from __future__ import annotations

import numpy as np

__all__ = ["cluster_order", "plot_task_correlation"]


def cluster_order(corr: np.ndarray) -> np.ndarray:
    """(m,) task order from average-linkage hierarchical clustering on 1 - corr."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(corr) < 3:
        return np.arange(len(corr))
    dist = np.clip(1.0 - corr, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform((dist + dist.T) / 2, checks=False), "average"))


def plot_task_correlation(dt, var_name: str = "omega_corr", ax=None, max_labels: int = 40,
                          title: str | None = None):
    """Heatmap of the posterior-mean task correlation, tasks ordered by clustering.

    ``dt`` is a DataTree from bayesmtl (``posterior[var_name]`` with dims task × task_).
    Returns the matplotlib Figure.
    """
    from .heatmap import new_axes, task_heatmap

    da = dt.posterior[var_name]
    corr = da.values.mean(axis=(0, 1))
    names = np.asarray(da.coords[da.dims[-2]].values).astype(str)
    fig, ax = new_axes(len(names), ax)
    task_heatmap(ax, corr, names, order=cluster_order(corr), vmin=-1, vmax=1,
                 max_labels=max_labels, xlabel="task (clustered order)",
                 ylabel="task (clustered order)", colorbar_label="posterior mean correlation")
    ax.set_title(title or f"posterior mean task correlation ({len(names)} tasks)")
    return fig
