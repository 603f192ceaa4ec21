"""Reference MAP fits of the solvers before the sufficient-statistics rewrite (issue 19).

Run from a checkout of the old commit (6a90738, row-based W-steps) to write the file that
``tests/test_scale.py::test_same_W_as_the_row_based_solvers`` compares the new paths with:

    git worktree add /tmp/old 6a90738
    cd /tmp/old && /work/main/.venv/bin/python /work/main/benchmarks/make_scale_reference.py \\
        /work/main/tests/data/scale_reference_6a90738.npz
"""

import sys
import warnings

import numpy as np

from bayesmtl import MultiTaskData, methods
from bayesmtl.methods import Settings

#: the members and hyperparameters compared (tol far below the default: the alternating
#: members stop on the objective's change, so their W is compared at a tight tolerance)
CASES = {
    "stl": {"lam": 0.3},
    "pooled": {"lam": 0.3},
    "fixed": {"lam": 0.3, "omega": "graph"},
    "rmtl": {"lam": 0.3},
    "mtrl": {"lam": 0.3},
    "schatten": {"lam": 0.3},
    "clustered": {"lam": 0.3},
    "glmtl": {"lam": 0.3, "lam2": 0.1},
    "spats": {"lam": 0.3, "lam2": 0.1},
    "reconstruction": {"lam": 0.3, "lam2": 0.1},
}


def problem():
    """6 ragged tasks × 4 features, correlated weights (from the test's own generator)."""
    rng = np.random.default_rng(11)
    m, d = 6, 4
    W = rng.normal(size=(d, 2)) @ rng.normal(size=(2, m)) + 0.3 * rng.normal(size=(d, m))
    tasks = []
    for i, n in enumerate((12, 30, 9, 25, 40, 16)):
        X = rng.normal(size=(n, d))
        tasks.append((X, X @ W[:, i] + 0.2 * i + rng.normal(size=n)))
    return MultiTaskData.from_tasks(tasks, task_names=[f"t{i}" for i in range(m)])


def graph_omega(m):
    """Ω = (L + I)⁻¹ of a path graph: a fixed, non-diagonal task covariance."""
    L = 2 * np.eye(m) - np.eye(m, k=1) - np.eye(m, k=-1)
    L[0, 0] = L[-1, -1] = 1
    return np.linalg.inv(L + np.eye(m))


def fit_all(data):
    out = {}
    for name, hyper in CASES.items():
        hyper = dict(hyper)
        if hyper.get("omega") == "graph":
            hyper["omega"] = graph_omega(data.n_tasks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit, _ = methods.fit(data, name, hyper, Settings(tol=1e-14, max_iter=20000))
        out[f"{name}_W"], out[f"{name}_b"] = fit.W, fit.b
        out[f"{name}_objective"] = np.asarray(fit.objective)
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **fit_all(problem()))
