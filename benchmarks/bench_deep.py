"""Loss-balancing strategies × deep MTL networks on the stand-in data sets (issue 15).

Grid (default): strategies DS, DWA, Max, sMAX, CL, MGDA, BMTL, uncertainty × networks DMTL,
Ω-prior heads, trace-norm heads × stand-ins digits (5 corrupted domains, 10 classes each), School
(139 tasks), SARCOS-like (7 outputs) × training proportions 50/60/70 % × seeds. Each cell is the
mean ± standard error over seeds of the test accuracy (digits) or MSE (School, SARCOS-like),
averaged over tasks; the split and the initial values change with the seed, and every strategy
sees the same split. Prints markdown tables.

    nice -n 10 .venv/bin/python benchmarks/bench_deep.py                  # the grid
    nice -n 10 .venv/bin/python benchmarks/bench_deep.py --t-effect       # BMTL's T and λ_h
    nice -n 10 .venv/bin/python benchmarks/bench_deep.py --schedule       # paper's lr schedule

CPU vs CUDA timings of these fits are in ``bench_devices.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from bayesmtl.deep import fit_deep
from bayesmtl.deep.standins import (
    TRAIN_PROPORTIONS,
    digit_domains,
    proportion_split,
    sarcos_like,
    school_tasks,
)
from bayesmtl.errors import BayesMTLError

STRATEGIES = ("ds", "dwa", "max", "smax", "cl", "mgda", "bmtl", "uncertainty")
NETWORKS = {"dmtl": "DMTL", "omega": "Ω heads", "trace": "trace heads"}
LABELS = {"ds": "DS", "dwa": "DWA", "max": "Max", "smax": "sMAX", "cl": "CL", "mgda": "MGDA",
          "bmtl": "BMTL", "uncertainty": "uncertainty"}
DATASETS = {  # name → (loader, metric, higher is better)
    "digits": (lambda: digit_domains(seed=0), "accuracy", True),
    "school": (school_tasks, "MSE", False),
    "sarcos": (lambda: sarcos_like(n=2000, seed=0), "MSE", False),
}


def task_mean_score(result, test, metric: str) -> float:
    """Mean over tasks of the per-task accuracy or MSE on ``test``."""
    pred = result.predict(test.X, test.task)
    per_task = []
    for i in range(test.n_tasks):
        s = test.task_slice(i)
        per_task.append(np.mean(pred[s] == test.y[s]) if metric == "accuracy"
                        else np.mean((pred[s] - test.y[s]) ** 2))
    return float(np.mean(per_task))


def run_grid(args) -> list[dict]:
    rows = []
    for name in args.datasets:
        loader, metric, _ = DATASETS[name]
        data = loader()
        for p in args.proportions:
            for seed in range(args.seeds):
                train, test = proportion_split(data, p, seed)
                for network in args.networks:
                    for strategy in args.strategies:
                        rows.append(one_fit(args, name, metric, train, test, p, seed, network,
                                            strategy))
                        print(json.dumps(rows[-1]), flush=True)
    return rows


def one_fit(args, name, metric, train, test, p, seed, network, strategy) -> dict:
    t0 = time.perf_counter()
    row = {"dataset": name, "proportion": p, "seed": seed, "network": network,
           "strategy": strategy}
    try:
        r = fit_deep(train, network=network, balancing=strategy, hidden=args.hidden,
                     epochs=args.epochs, patience=args.patience, lr=args.lr,
                     lr_decay=args.lr_decay, lam=args.lam, lam_heads=args.lam_heads,
                     T=args.T, cl_T=args.cl_T, dwa_T=args.dwa_T, seed=seed, device="cpu")
    except BayesMTLError as err:  # a diverging strategy is a result, not a crash
        return {**row, "score": float("nan"), "error": str(err)[:200],
                "seconds": time.perf_counter() - t0}
    return {**row, "score": task_mean_score(r, test, metric),
            "epoch_time": float(np.median(r.history["epoch_time"])),
            "epochs_run": len(r.history["epoch_time"]), "best_epoch": r.history["best_epoch"],
            "seconds": time.perf_counter() - t0}


def _cell(values, scale):
    """(mean, "mean ± s.e.") of ``values`` × scale; a failed fit makes the cell "fail"."""
    v = np.asarray(values, dtype=float) * scale
    if np.isnan(v).any():
        return None, f"fail ({int(np.isnan(v).sum())}/{len(v)})"
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    digits = 1 if scale == 100 else 2 if abs(v.mean()) >= 10 else 3
    return v.mean(), f"{v.mean():.{digits}f} ± {se:.{digits}f}"


def tables(rows: list[dict], args) -> str:
    out = []
    for name in args.datasets:
        _, metric, higher = DATASETS[name]
        scale = 100 if metric == "accuracy" else 1
        cols = [(n, p) for n in args.networks for p in args.proportions]
        head = " | ".join(f"{NETWORKS[n]} {int(round(100 * p))}%" for n, p in cols)
        unit = "accuracy %, higher is better" if higher else "MSE, lower is better"
        out += [f"\n### {name} ({unit})\n", f"| strategy | {head} | s/epoch |",
                "|---|" + "---|" * (len(cols) + 1)]
        cells, means = {}, {}
        for s in args.strategies:
            for n, p in cols:
                vals = [r["score"] for r in rows if (r["dataset"], r["strategy"], r["network"],
                                                     r["proportion"]) == (name, s, n, p)]
                means[s, n, p], cells[s, n, p] = _cell(vals, scale)
        best = {}
        for n, p in cols:
            ok = {s: means[s, n, p] for s in args.strategies if means[s, n, p] is not None}
            best[n, p] = (max if higher else min)(ok, key=ok.get) if ok else None
        for s in args.strategies:
            times = [r["epoch_time"] for r in rows if r["dataset"] == name
                     and r["strategy"] == s and "epoch_time" in r]
            text = [f"**{cells[s, n, p]}**" if best[n, p] == s else cells[s, n, p]
                    for n, p in cols]
            out.append(f"| {LABELS[s]} | " + " | ".join(text)
                       + f" | {np.median(times):.3f} |")
        if "bmtl" in args.strategies:
            wins = sum(best[c] == "bmtl" for c in cols)
            out.append(f"\n- BMTL best in {wins} of {len(cols)} columns.")
            for other in [s for s in args.strategies if s != "bmtl"]:
                out.append(_paired(rows, name, other, higher, cols))
    return "\n".join(out)


def _paired(rows, name, other, higher, cols) -> str:
    """BMTL against ``other`` on the same split and seed: columns and pairs won."""
    score = {(r["strategy"], r["network"], r["proportion"], r["seed"]): r["score"]
             for r in rows if r["dataset"] == name}
    col_wins, pair_wins, pairs = 0, 0, 0
    for n, p in cols:
        diffs = [score["bmtl", n, p, s] - score[other, n, p, s] for (st, n2, p2, s) in score
                 if (st, n2, p2) == ("bmtl", n, p) and (other, n, p, s) in score]
        diffs = [d if higher else -d for d in diffs if not np.isnan(d)]
        pair_wins += sum(d > 0 for d in diffs)
        pairs += len(diffs)
        col_wins += bool(diffs) and np.mean(diffs) > 0
    return (f"- BMTL vs {LABELS[other]}: better mean in {col_wins} of {len(cols)} columns, better "
            f"in {pair_wins} of {pairs} paired fits (same split and seed).")


def t_effect(args) -> str:
    """BMTL's temperature and the prior's weight. h'(L) = exp(L/T)/T, so against DS the loss's
    gradient is scaled by ≈ 1/T relative to the prior's (problem (8) ≥ m + (1/T) Σ L_i + r,
    Section 3.3): BMTL with T large is DS with r multiplied by T. The control row "DS, r × T"
    (λ and λ_h multiplied by T = 50) separates that from the balancing itself."""
    out = ["\n### BMTL: temperature T and the prior (DMTL, 50 % training, "
           f"{args.seeds} seeds)\n",
           "| data | strategy | λ | λ_h | score | max/min task weight (last epoch) |",
           "|---|---|---|---|---|---|"]
    lam, lh = args.lam, args.lam_heads
    settings = [("DS", "ds", 50.0, lam, lh), ("DS, r × 50", "ds", 50.0, 50 * lam, 50 * lh)] + \
        [(f"BMTL T={T:g}", "bmtl", T, lam, lh) for T in (0.5, 5.0, 50.0, 500.0)] + \
        [("DS", "ds", 50.0, lam, 1.0), ("BMTL T=50", "bmtl", 50.0, lam, 1.0)]
    for name in args.datasets:
        loader, metric, _ = DATASETS[name]
        data = loader()
        for label, strategy, T, lam_s, lh_s in settings:
            scores, spread = [], []
            for seed in range(args.seeds):
                train, test = proportion_split(data, 0.5, seed)
                try:
                    r = fit_deep(train, balancing=strategy, T=T, hidden=args.hidden,
                                 epochs=args.epochs, patience=args.patience, lr=args.lr,
                                 lr_decay=args.lr_decay, lam=lam_s, lam_heads=lh_s, seed=seed,
                                 device="cpu")
                except BayesMTLError:
                    scores.append(float("nan"))
                    continue
                scores.append(task_mean_score(r, test, metric))
                w = r.history["task_weight"][-1]
                spread.append(w.max() / w.min())
            _, text = _cell(scores, 100 if metric == "accuracy" else 1)
            ratio = f"{np.mean(spread):.3g}" if spread else "–"
            out.append(f"| {name} | {label} | {lam_s:g} | {lh_s:g} | {text} | {ratio} |")
            print(out[-1], flush=True)
    return "\n".join(out)


def schedule(args) -> str:
    """The paper's learning-rate schedule η₀/(1 + p) per iteration p against a constant rate,
    same epochs and early stopping (DMTL, 50 % training)."""
    out = [f"\n### Learning-rate schedule (DMTL, 50 % training, {args.seeds} seeds, at most "
           f"{args.epochs} epochs)\n", "| data | strategy | η₀/(1+p), η₀ = 0.02 (paper) | "
           "0.005 constant | epochs run (paper / constant) |", "|---|---|---|---|---|"]
    for name in args.datasets:
        loader, metric, _ = DATASETS[name]
        data = loader()
        for strategy in ("ds", "bmtl"):
            cells, runs = [], []
            for lr, decay in ((0.02, 1.0), (0.005, 0.0)):
                scores, epochs = [], []
                for seed in range(args.seeds):
                    train, test = proportion_split(data, 0.5, seed)
                    r = fit_deep(train, balancing=strategy, hidden=args.hidden,
                                 epochs=args.epochs, patience=args.patience, lr=lr,
                                 lr_decay=decay, lam=args.lam, lam_heads=args.lam_heads,
                                 T=args.T, seed=seed, device="cpu")
                    scores.append(task_mean_score(r, test, metric))
                    epochs.append(len(r.history["epoch_time"]))
                cells.append(_cell(scores, 100 if metric == "accuracy" else 1)[1])
                runs.append(f"{np.mean(epochs):.0f}")
            out.append(f"| {name} | {LABELS[strategy]} | {cells[0]} | {cells[1]} | "
                       f"{' / '.join(runs)} |")
            print(out[-1], flush=True)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--proportions", nargs="+", type=float, default=list(TRAIN_PROPORTIONS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--lr-decay", type=float, default=0.0)
    ap.add_argument("--lam", type=float, default=1e-4)
    ap.add_argument("--lam-heads", type=float, default=1e-3)
    ap.add_argument("--T", type=float, default=50.0)
    ap.add_argument("--cl-T", type=float, default=50.0)
    ap.add_argument("--dwa-T", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write every fit's record to this file")
    ap.add_argument("--tables-from", help="print the grid's tables from a --json file (no fits)")
    ap.add_argument("--t-effect", action="store_true", help="BMTL's T × λ_h table only")
    ap.add_argument("--schedule", action="store_true", help="paper's lr schedule vs constant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.tables_from:
        with open(args.tables_from) as fh:
            print(tables(json.load(fh), args))
        return
    if args.t_effect or args.schedule:
        text = t_effect(args) if args.t_effect else schedule(args)
    else:
        t0 = time.perf_counter()
        rows = run_grid(args)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh)
        text = tables(rows, args) + f"\n\nwall time {time.perf_counter() - t0:.0f} s"
    print(f"\nload average at end: {os.getloadavg()}")
    print(text)


if __name__ == "__main__":
    main()
