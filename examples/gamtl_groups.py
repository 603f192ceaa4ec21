"""GAMTL: task groups read off the learned combination matrix C (trace-Lasso prior), on the
GAMTL paper's Synthetic clusters.

    python examples/gamtl_groups.py           # 100 tasks in 5 clusters, figure gamtl_groups.png
    python examples/gamtl_groups.py --small   # 12 tasks in 3 clusters (under a minute)
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from bayesmtl.datasets.synthetic_clusters import make_synthetic_clusters  # noqa: E402
from bayesmtl.estimators import MTLClassifier  # noqa: E402
from bayesmtl.models.gamtl import task_groups  # noqa: E402
from bayesmtl.plots.groups import plot_combination  # noqa: E402


def main(small: bool = False, out: str = "gamtl_groups.png"):
    sizes = (3, 4, 5) if small else (10, 20, 20, 20, 30)
    synth = make_synthetic_clusters(sizes, n_features=10 if small else 30, seed=0)
    train, test = synth.train, synth.test
    task = np.asarray(train.task_names)[train.task]
    clf = MTLClassifier(method="gamtl", lam=0.1, gamma=0.03).fit(train.X, train.y, task=task)
    groups, n_groups = task_groups(clf.combination_)
    test_task = np.asarray(test.task_names)[test.task]
    print(f"test accuracy {clf.score(test.X, test.y, task=test_task):.3f}; {n_groups} groups, "
          f"adjusted Rand index against the true clusters "
          f"{adjusted_rand_score(synth.clusters, groups):.2f}")
    plot_combination(clf.idata_, groups).savefig(out, dpi=110, bbox_inches="tight")
    print(f"combination matrix written to {out}")
    return clf


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (under a minute)")
    parser.add_argument("--out", default="gamtl_groups.png")
    args = parser.parse_args()
    main(args.small, args.out)
