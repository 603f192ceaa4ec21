"""The one task × task heatmap every relation plot draws."""

from __future__ import annotations

import numpy as np

__all__ = ["task_heatmap", "new_axes"]


def new_axes(n_tasks: int, ax=None):
    """(fig, ax): ``ax`` as given, or a square figure sized for ``n_tasks`` labelled tasks."""
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    size = min(14, 3.5 + 0.08 * n_tasks)
    return plt.subplots(figsize=(size + 1.2, size))


def task_heatmap(ax, M, names, *, order=None, cmap="RdBu_r", vmin=None, vmax=None,
                 max_labels: int = 40, xlabel: str = "task", ylabel: str = "task",
                 colorbar_label: str = ""):
    """Draw M (m, m) with rows/columns in ``order`` (default: as given) and task names on both
    axes: every name up to ``max_labels`` tasks, else every k-th name (k = ⌈m / max_labels⌉,
    so the axes stay readable and every label is a real task). A labelled colour bar; a
    symmetric colour range around 0 when vmin/vmax are not given. Returns the image."""
    M = np.asarray(M, dtype=np.float64)
    names = np.asarray(names).astype(str)
    order = np.arange(len(names)) if order is None else np.asarray(order)
    if vmin is None or vmax is None:
        limit = max(float(np.abs(M).max()), 1e-12)
        vmin, vmax = -limit, limit
    im = ax.imshow(M[np.ix_(order, order)], cmap=cmap, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    step = max(1, -(-len(names) // max_labels))
    ticks = np.arange(0, len(names), step)
    font = 7 if step == 1 else 6
    ax.set_xticks(ticks, names[order][ticks], rotation=90, fontsize=font)
    ax.set_yticks(ticks, names[order][ticks], fontsize=font)
    shown = "" if step == 1 else f" (every {step}th name shown)"
    ax.set_xlabel(xlabel + shown)
    ax.set_ylabel(ylabel)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    return im
