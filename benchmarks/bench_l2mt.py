"""L2MT against its 10 baselines on held-out problems (issue 17; the paper's Section 4).

1. Experience: ``--train`` problems of the "train" stream and ``--test`` problems of the "test"
   stream (disjoint seeds) from one pool (LGNN's L₁ is d × d̂, so one feature space), each
   fitted by the 10 baselines over their grids (Dask, ``--workers`` local processes; files are
   kept in ``--cache``, so a re-run only does what is missing).
2. L2MT trained on the training tuples by MAP (objective (6)) and by SVI; time per epoch.
3. The test process on every test problem: Ω̃ by Theorem 3, λ₁ on the validation split.
4. The average relative test error ε̃_MTL/ε̃_STL of every method (baselines tuned on the
   validation splits), and the SVI posterior over Ω̃ of one test problem.

    .venv/bin/python benchmarks/bench_l2mt.py --pool mnist --train 100 --test 50 --workers 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bayesmtl.l2mt.evaluate import evaluate_problem, relative_errors
from bayesmtl.l2mt.experience import DEFAULT_CANDIDATES, build_experience, load_experience
from bayesmtl.l2mt.model import experience_meta, fit_l2mt
from bayesmtl.l2mt.problems import build_problem
from bayesmtl.methods.l2mt import omega_used


def experience(cache: Path, stream: str, q: int, pool: str, workers: int, max_iter: int):
    t0 = time.perf_counter()
    build_experience(cache / f"{pool}-{stream}", q, stream=stream, pools=(pool,),
                     settings={"max_iter": max_iter}, n_workers=workers,
                     scheduler="serial" if workers == 1 else None)
    took = time.perf_counter() - t0
    return load_experience(cache / f"{pool}-{stream}")[:q], took


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="mnist", choices=["mnist", "usps", "digits"])
    parser.add_argument("--train", type=int, default=100, help="training problems q")
    parser.add_argument("--test", type=int, default=50, help="held-out test problems")
    parser.add_argument("--workers", type=int, default=1,
                        help="Dask worker processes (1: serial, in this process)")
    parser.add_argument("--max-iter", type=int, default=100,
                        help="outer iterations of the alternating baselines (glMTL, SPATS, …)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--svi-epochs", type=int, default=200)
    parser.add_argument("--lam", type=float, default=0.1, help="λ of objective (6)")
    parser.add_argument("--link", default="learned", choices=["learned", "fixed"],
                        help="learned: the paper's υ(o) = tanh(γ₁o + γ₂); fixed: γ = (1, 0)")
    parser.add_argument("--cache", default="benchmarks/.l2mt_cache")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = Path(args.cache)

    train, t_train = experience(cache, "train", args.train, args.pool, args.workers,
                                args.max_iter)
    test, t_test = experience(cache, "test", args.test, args.pool, args.workers, args.max_iter)
    print(f"experience: {len(train)} training problems ({sum(len(p.o) for p in train)} tuples)"
          f" in {t_train:.0f} s, {len(test)} test problems in {t_test:.0f} s "
          f"({args.workers} workers; 0 s = all cached)")

    meta = experience_meta(train)
    fits = {}
    for inference, epochs in (("map", args.epochs), ("svi", args.svi_epochs)):
        t0 = time.perf_counter()
        fits[inference] = fit_l2mt(meta, lam=args.lam, epochs=epochs, inference=inference,
                                   link=args.link, seed=args.seed)
        per_epoch = float(np.median(fits[inference].history["epoch_time"]))
        print(f"L2MT {inference}: {epochs} epochs in {time.perf_counter() - t0:.1f} s "
              f"(median {per_epoch * 1e3:.0f} ms/epoch, device "
              f"{fits[inference].device}); final loss {fits[inference].history['loss'][-1]:.4g}")

    outcomes = {}
    t0 = time.perf_counter()
    for p in test:
        outcomes[p.spec.index] = evaluate_problem(fits["map"], p.spec)
    print(f"test process on {len(test)} problems: {time.perf_counter() - t0:.1f} s")
    rho = np.array([o.rho for o in outcomes.values()])
    print(f"ρ = γ₁α₄ = {rho[0]:.3g} (Theorem 3 case: "
          f"{'ρ > 0' if rho[0] > 0 else 'ρ = 0' if rho[0] == 0 else 'ρ < 0'})")

    labels = [c.label for c in DEFAULT_CANDIDATES]
    rel = relative_errors(test, labels, outcomes)
    print(f"\nAverage relative test error ε̃_MTL/ε̃_STL over {len(test)} held-out {args.pool} "
          f"problems ({args.train} training problems, link {args.link}; baselines tuned on "
          "validation):\n")
    print("| method | ε̃_MTL/ε̃_STL |\n|---|---|")
    for label, value in sorted(rel.items(), key=lambda kv: kv[1]):
        print(f"| {label} | {value:.4f} |")
    l2mt_err = np.array([outcomes[p.spec.index].chosen_test_error for p in test])
    print(f"\nmean test error of L2MT {100 * l2mt_err.mean():.2f} % (per-problem s.e. "
          f"{100 * l2mt_err.std(ddof=1) / np.sqrt(len(l2mt_err)):.2f} %)")

    # the SVI posterior over Ω̃ of the first test problem
    problem = build_problem(test[0].spec)
    draws = omega_used(fits["svi"].omega_draws(problem.train, num_draws=200, seed=args.seed),
                       1e-3)  # the Ω the l2mt method fits with (Ω̃ is often singular)
    sd = np.sqrt(np.einsum("sii->si", draws))
    corr = draws / (sd[:, :, None] * sd[:, None, :])
    names = problem.train.task_names
    print(f"\nSVI posterior over Ω̃'s task correlations, test problem {test[0].spec.index} "
          "(mean, 89 % interval):\n")
    print("| task | task' | mean | 5.5 % | 94.5 % |\n|---|---|---|---|---|")
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            lo, hi = np.quantile(corr[:, i, j], [0.055, 0.945])
            print(f"| {names[i]} | {names[j]} | {corr[:, i, j].mean():.3f} | {lo:.3f} | "
                  f"{hi:.3f} |")


if __name__ == "__main__":
    main()
