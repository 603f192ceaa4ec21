"""The learned transfer graph drawn like Figure 3 of Lee, Yang & Hwang (2016)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_transfer_graph", "transfer_graph_arrays"]


def transfer_graph_arrays(dt):
    """(B (m, m) posterior mean, task loss (m,) or None, inclusion (m, m) or None, names)
    from a bayesmtl DataTree (MAP point or NUTS draws)."""
    post = dt.posterior
    B = post["transfer_graph"].values.mean(axis=(0, 1))
    names = [str(v) for v in post["transfer_graph"].coords["source_task"].values]
    loss = post["task_loss"].values.mean(axis=(0, 1)) if "task_loss" in post else None
    inc = (post["transfer_graph_inclusion"].values.mean(axis=(0, 1))
           if "transfer_graph_inclusion" in post else None)
    return B, loss, inc, names


def plot_transfer_graph(dt=None, *, transfer_graph=None, task_loss=None, task_names=None,
                        inclusion=None, min_weight: float = 0.01, ax=None, title=None):
    """Directed transfer graph: nodes sized by task loss, edges s → t with width ∝ B[s, t].

    Parameters
    ----------
    dt : DataTree with ``transfer_graph`` (source_task, target_task), optionally
        ``task_loss`` (task) and ``transfer_graph_inclusion``; or give the arrays instead:
    transfer_graph : (m, m) B; task_loss : (m,) node sizes (default equal);
    task_names : m labels; inclusion : (m, m) P(B > τ), used as edge opacity.
    min_weight : edges below ``min_weight * max(B)`` are not drawn.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import networkx as nx

    if dt is not None:
        transfer_graph, task_loss, inclusion, task_names = transfer_graph_arrays(dt)
    B = np.asarray(transfer_graph, dtype=float)
    m = B.shape[0]
    names = list(task_names) if task_names is not None else [str(i) for i in range(m)]
    loss = np.ones(m) if task_loss is None else np.asarray(task_loss, dtype=float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6))
    else:
        fig = ax.figure
    G = nx.DiGraph()
    G.add_nodes_from(range(m))
    top = B.max() if B.size and B.max() > 0 else 1.0
    for s, t in zip(*np.nonzero(B > min_weight * top), strict=True):
        if s != t:
            G.add_edge(int(s), int(t), weight=float(B[s, t]))
    pos = nx.circular_layout(G)
    size = 300 + 1700 * (loss - loss.min()) / (np.ptp(loss) or 1.0)
    nx.draw_networkx_nodes(G, pos, node_size=size, node_color=loss, cmap="Oranges",
                           edgecolors="k", ax=ax)
    nx.draw_networkx_labels(G, pos, labels=dict(enumerate(names)), font_size=8, ax=ax)
    edges = list(G.edges())
    widths = [0.5 + 5.0 * G[s][t]["weight"] / top for s, t in edges]
    alpha = [float(inclusion[s, t]) for s, t in edges] if inclusion is not None else 0.8
    nx.draw_networkx_edges(G, pos, edgelist=edges, width=widths, alpha=alpha,
                           arrowstyle="-|>", arrowsize=15, node_size=size,
                           connectionstyle="arc3,rad=0.1", ax=ax)
    ax.set_title(title or "transfer graph (node size: task loss, edge width: B[s, t])")
    ax.set_axis_off()
    return fig
