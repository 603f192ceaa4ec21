"""AMTL's asymmetric transfer graph on the paper's Section 4.1 synthetic set: who transfers to
whom, with the MAP graph and (optionally) posterior edge probabilities.

    python examples/amtl_transfer_graph.py           # MAP + NUTS, figure amtl_graph.png
    python examples/amtl_transfer_graph.py --small   # MAP only (under a minute)

Easy tasks (low noise, 1–3 and 7–9) should send, hard ones receive, within each group.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from bayesmtl.datasets.synthetic import EASY_TASKS, load_amtl_synthetic  # noqa: E402
from bayesmtl.estimators import MTLRegressor  # noqa: E402
from bayesmtl.plots.graph import plot_transfer_graph  # noqa: E402


def main(small: bool = False, out: str = "amtl_graph.png"):
    train, valid, test = load_amtl_synthetic(seed=0)
    task = np.asarray(train.task_names)[train.task]
    est = MTLRegressor(method="amtl", lam=1.0, mu=0.1).fit(train.X, train.y, task=task)
    B = est.transfer_graph_
    easy = np.isin(np.arange(12), EASY_TASKS)
    print(f"outgoing transfer: easy tasks {B[easy].sum():.2f}, hard tasks {B[~easy].sum():.2f}")
    test_task = np.asarray(test.task_names)[test.task]
    print(f"test R² {est.score(test.X, test.y, task=test_task):.3f}")
    dt = est.idata_
    if not small:  # posterior over the graph: P(B[s, t] > 0.05 | data)
        dt = MTLRegressor(method="amtl", lam=1.0, mu=0.1, inference="nuts", num_warmup=300,
                          num_samples=300, num_chains=1).fit(train.X, train.y, task=task).idata_
    fig = plot_transfer_graph(dt)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"transfer graph written to {out}")
    return est


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (under a minute)")
    parser.add_argument("--out", default="amtl_graph.png")
    args = parser.parse_args()
    main(args.small, args.out)
