"""MAP fits at scale (issue 19): m tasks × n rows each × d features, synthetic rank-5 W.

Prints, per method, the first fit (with JIT compilation) and the second (warm) fit's wall time,
whether it converged, and the process's peak resident memory so far (the data alone, X in
float64, is m·n·d·8 bytes; it is held once by MultiTaskData and once as a JAX array).

    .venv/bin/python benchmarks/bench_scale.py --m 1000 --n 1000 --d 100 \\
        --methods stl,pooled,mtrl,rmtl,schatten,clustered
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from bayesmtl import MultiTaskData, methods


def synthetic(m: int, n: int, d: int, seed: int = 0) -> MultiTaskData:
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, 5)) @ rng.normal(size=(5, m))
    X = rng.normal(size=(m * n, d))
    task = np.repeat(np.arange(m), n)
    y = np.einsum("nd,dn->n", X, W[:, task]) + rng.normal(size=m * n)
    return MultiTaskData.from_arrays(X, y, task)


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--methods", default="stl,pooled,mtrl,rmtl,schatten,clustered")
    args = parser.parse_args()
    start = time.perf_counter()
    data = synthetic(args.m, args.n, args.d)
    print(f"{args.m} tasks × {args.n} rows × {args.d} features ({args.m * args.n:,} rows): "
          f"data in {time.perf_counter() - start:.1f} s, peak {peak_mb()} MB\n")
    print("| method | first fit (s, with JIT) | second fit (s) | converged | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for name in args.methods.split(","):
        times = []
        for _ in range(2):
            start = time.perf_counter()
            fit, _ = methods.fit(data, name, {"lam": args.lam})
            times.append(time.perf_counter() - start)
        print(f"| {name} | {times[0]:.1f} | {times[1]:.1f} | {fit.converged} | {peak_mb()} |",
              flush=True)


if __name__ == "__main__":
    main()
