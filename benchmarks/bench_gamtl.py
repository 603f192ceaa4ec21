"""GAMTL benchmarks (issue 5). Prints markdown tables and writes benchmarks/results_gamtl.md.

    .venv/bin/python benchmarks/bench_gamtl.py --max-outer 8 --gamma 0.03   # ~15 min

Methods: STL (ridge per task, λ by a hold-out split of the training set), AMTL-noLoss
(bayesmtl.models.amtl.fit_amtl, variant "noloss", the paper's AMTL baseline; λ, μ by hold-out),
MTRL (bayesmtl.models.matrix_normal.fit_mtrl, λ by hold-out), GAMTL (fit_gamtl). GAMTL's λ is
STL's selected λ; γ is fixed (``--gamma``, not tuned: a full-size fit takes minutes on our two
shared cores) and each fit is capped at ``--max-outer`` outer iterations.
"""

import argparse
import time
from pathlib import Path

import numpy as np

import bayesmtl  # noqa: F401
from bayesmtl.datasets import load_school, load_sklearn_digits
from bayesmtl.datasets.synthetic_clusters import make_synthetic_clusters
from bayesmtl.models.amtl import fit_amtl
from bayesmtl.models.gamtl import fit_gamtl, fit_single_task
from bayesmtl.models.matrix_normal import fit_mtrl

HERE = Path(__file__).parent


def score(W, b, data):
    """Classification error (%) or RMSE."""
    f = np.sum(data.X * np.asarray(W).T[data.task], axis=1) + np.asarray(b)[data.task]
    if data.kind == "classification":
        return 100.0 * np.mean((f > 0) != (data.y > 0.5))
    return float(np.sqrt(np.mean((data.y - f) ** 2)))


def select(fit, grid, train, seed=0):
    """Best hyperparameters of ``fit(data, *h) -> (W, b)`` on a 30 % hold-out of ``train``."""
    inner, hold = train.train_test_split(0.3, seed=seed)
    scores = [score(*fit(inner, *h), hold) for h in grid]
    return grid[int(np.argmin(scores))]


def methods(max_outer):
    def stl(data, lam):
        return fit_single_task(data, lam)

    def amtl(data, lam, mu):
        r = fit_amtl(data, lam, mu, variant="noloss", max_iter=50, tol=1e-6)
        return r.W, r.b

    def mtrl(data, lam):
        r = fit_mtrl(data, lam, max_iter=3000, tol=1e-9)
        return r.W, r.b

    def gamtl(data, lam, gamma):
        r = fit_gamtl(data, lam, gamma, max_outer=max_outer, tol=1e-5)
        return r.W, r.b, r

    return stl, amtl, mtrl, gamtl


def run_dataset(name, train, test, max_outer, gamma, clusters=None):
    from sklearn.metrics import adjusted_rand_score

    stl, amtl, mtrl, gamtl = methods(max_outer)
    row = {}
    (lam,) = select(stl, [(0.01,), (0.1,), (1.0,)], train)
    row["STL"] = score(*stl(train, lam), test)
    lam_a, mu = select(amtl, [(lam, 0.01), (lam, 0.1)], train)
    row["AMTL"] = score(*amtl(train, lam_a, mu), test)
    (lam_m,) = select(mtrl, [(0.01,), (0.1,), (1.0,)], train)
    row["MTRL"] = score(*mtrl(train, lam_m), test)
    start = time.perf_counter()
    W, b, r = gamtl(train, lam, gamma)
    seconds = time.perf_counter() - start
    row["GAMTL"] = score(W, b, test)
    info = dict(lam=lam, gamma=gamma, seconds=seconds, n_outer=r.n_outer,
                converged=r.converged, n_groups=r.n_groups,
                ari=None if clusters is None else adjusted_rand_score(clusters, r.groups))
    print(f"{name}: {row} {info}", flush=True)
    return row, info


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-outer", type=int, default=8)
    parser.add_argument("--gamma", type=float, default=0.03)
    args = parser.parse_args()
    max_outer, gamma = args.max_outer, args.gamma
    rows, infos = {}, {}
    for name, positive in (("Synthetic", False), ("Synthetic-pos", True)):
        s = make_synthetic_clusters(positive=positive, seed=0)
        rows[name], infos[name] = run_dataset(name, s.train, s.test, max_outer, gamma,
                                                   s.clusters)
    train, test = load_sklearn_digits(mode="ovo", n_train_per_class=60, seed=0)
    rows["digits 1-vs-1"], infos["digits 1-vs-1"] = run_dataset("digits", train, test,
                                                                max_outer, gamma)
    train, test = load_school(1)
    rows["School (RMSE)"], infos["School (RMSE)"] = run_dataset("School", train, test,
                                                                max_outer, gamma)
    lines = ["| data set | STL | AMTL-noLoss | MTRL | GAMTL | paper GAMTL / AMTL |",
             "|---|---|---|---|---|---|"]
    paper = {"Synthetic": "7.55 % / 17.43 %", "Synthetic-pos": "1.56 % / 17.53 %",
             "digits 1-vs-1": "CIFAR: 16.63 % / 18.66 %", "School (RMSE)": "10.25 / 10.23"}
    for name, row in rows.items():
        unit = "" if "School" in name else " %"
        cells = " | ".join(f"{row[k]:.2f}{unit}" for k in ("STL", "AMTL", "MTRL", "GAMTL"))
        lines.append(f"| {name} | {cells} | {paper[name]} |")
    lines += ["", "| data set | GAMTL λ | γ | fit time (s) | outer iterations | converged | "
              "groups | ARI |", "|---|---|---|---|---|---|---|---|"]
    for name, i in infos.items():
        ari = "—" if i["ari"] is None else f"{i['ari']:.3f}"
        lines.append(f"| {name} | {i['lam']:g} | {i['gamma']:g} | {i['seconds']:.1f} | "
                     f"{i['n_outer']} | {i['converged']} | {i['n_groups']} | {ari} |")
    table = "\n".join(lines)
    print(table)
    command = (f"`.venv/bin/python benchmarks/bench_gamtl.py --max-outer {max_outer} "
               f"--gamma {gamma:g}`")
    (HERE / "results_gamtl.md").write_text(
        "## GAMTL (issue 5)\n\nReproduce: " + command + " (2 shared CPU cores; timings may be "
        "inflated by concurrent load). Error % on classification, RMSE on School split 1; "
        "one seed/split each.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
