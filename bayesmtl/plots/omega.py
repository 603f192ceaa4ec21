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
    import matplotlib.pyplot as plt

    da = dt.posterior[var_name]
    corr = da.values.mean(axis=(0, 1))
    names = np.asarray(da.coords[da.dims[-2]].values).astype(str)
    order = cluster_order(corr)
    if ax is None:
        size = min(12, 3 + 0.08 * len(names))
        fig, ax = plt.subplots(figsize=(size + 1, size))
    else:
        fig = ax.figure
    im = ax.imshow(corr[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1,
                   interpolation="nearest")
    if len(names) <= max_labels:
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, names[order], rotation=90, fontsize=7)
        ax.set_yticks(ticks, names[order], fontsize=7)
    else:
        ax.set_xlabel("task (clustered order)")
        ax.set_ylabel("task (clustered order)")
    ax.set_title(title or f"posterior mean task correlation ({len(names)} tasks)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig
