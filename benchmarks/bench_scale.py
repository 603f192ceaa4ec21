"""MAP fits at scale (issue 19): m tasks × n rows each × d features, synthetic rank-5 W.

Every measurement runs in a fresh process (so its peak resident memory is its own): the
process builds the data, then fits the member twice (``bayesmtl.methods.fit``: the MAP and
its ArviZ export). "pass over the rows" is the one pass that computes the per-task
sufficient statistics; "first fit" then includes JIT compilation (with the persistent
compilation cache as found); "second fit" is a refit. Peak RSS is the process's
high-water mark, data included (X alone is m·n·d·8 bytes).

    # the issue's problem: 1,000 tasks × 1,000 rows × 100 features
    .venv/bin/python benchmarks/bench_scale.py --m 1000 --n 1000 --d 100 \\
        --methods stl,pooled,mtrl,rmtl,schatten,clustered,glmtl,spats,reconstruction
    # scaling in m, n and d with fitted exponents and a log-log plot
    .venv/bin/python benchmarks/bench_scale.py --sweep --methods stl,mtrl,clustered
    # the alternating members: time their first outer iterations (W-step, Ω-step)
    .venv/bin/python benchmarks/bench_scale.py --steps 2 --n 100 --methods spats,reconstruction
    # 10⁷ rows streamed in chunks of 10⁵ into TaskStatistics (never held together)
    .venv/bin/python benchmarks/bench_scale.py --m 1000 --n 10000 --d 100 --stream 100000 \
        --methods stl,mtrl,clustered
    # rerun some methods × axes, keeping the rest of results_scale.json
    .venv/bin/python benchmarks/bench_scale.py --sweep --merge --axes m --methods stl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

#: hyperparameters per member (λ = --lam; λ₂ where the member has one)
EXTRA = {"glmtl": {"lam2": 0.1}, "spats": {"lam2": 0.1}, "reconstruction": {"lam2": 0.1}}


def synthetic(m: int, n: int, d: int, seed: int = 0):
    from bayesmtl import MultiTaskData

    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, 5)) @ rng.normal(size=(5, m))
    X = rng.normal(size=(m * n, d))
    y = rng.normal(size=m * n)
    for i in range(m):  # task by task: no (d, N) temporary
        rows = slice(i * n, (i + 1) * n)
        y[rows] += X[rows] @ W[:, i]
    return MultiTaskData.from_arrays(X, y, np.repeat(np.arange(m), n))


def synthetic_chunks(m: int, n: int, d: int, chunk: int, seed: int = 0):
    """The same model as :func:`synthetic`, generated ``chunk`` rows at a time (task-major
    order, task labels "task<i>"): (X, y, task) chunks for TaskStatistics."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, 5)) @ rng.normal(size=(5, m))
    names = np.array([f"task{i}" for i in range(m)])
    for lo in range(0, m * n, chunk):
        task = np.arange(lo, min(lo + chunk, m * n)) // n
        X = rng.normal(size=(len(task), d))
        y = rng.normal(size=len(task)) + np.einsum("nd,dn->n", X, W[:, task])
        yield X, y, names[task]


def peak_mb() -> int:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmHWM"].split()[0]) // 1024


def one(args) -> dict:
    """Build the data and fit ``args.one`` twice, in this process; returns the measurements."""
    import warnings

    from bayesmtl import methods
    from bayesmtl.inference.stats import task_moments
    from bayesmtl.methods import Settings

    settings = Settings() if args.max_iter is None else Settings(max_iter=args.max_iter)
    out = {"method": args.one, "m": args.m, "n": args.n, "d": args.d}
    if args.stream:  # generate and accumulate chunk by chunk: rows_s includes generating
        from bayesmtl import TaskStatistics

        start = time.perf_counter()
        data = TaskStatistics.from_chunks(
            synthetic_chunks(args.m, args.n, args.d, args.stream),
            [f"task{i}" for i in range(args.m)], n_features=args.d)
        out.update(data_s=0.0, rows_s=time.perf_counter() - start, stream=args.stream)
    else:
        start = time.perf_counter()
        data = synthetic(args.m, args.n, args.d)
        out["data_s"] = time.perf_counter() - start
        start = time.perf_counter()
        task_moments(data)  # the one pass over the rows (cached on the data object)
        out["rows_s"] = time.perf_counter() - start
    hyper = {"lam": args.lam, **EXTRA.get(args.one, {})}
    times = []
    for _ in range(2):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit, _ = methods.fit(data, args.one, hyper, settings)
        times.append(time.perf_counter() - start)
    out.update(first_s=times[0], second_s=times[1], converged=bool(fit.converged),
               objective=float(fit.objective), n_iter=fit.info.get("n_iter"),
               warnings=sorted({str(w.message)[:80] for w in caught}), peak_mb=peak_mb())
    return out


def run_one(method, m, n, d, lam, max_iter=None, timeout=1200, stream=0) -> dict:
    cmd = [sys.executable, __file__, "--one", method, "--m", str(m), "--n", str(n),
           "--d", str(d), "--lam", str(lam), "--stream", str(stream)]
    if max_iter is not None:
        cmd += ["--max-iter", str(max_iter)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "m": m, "n": n, "d": d, "error": f"timeout {timeout} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        return {"method": method, "m": m, "n": n, "d": d,
                "error": (done.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(lines[-1])


def table(rows, header=True) -> None:
    if header:
        print("| method | m | n | d | pass over the rows (s) | first fit (s) | second fit (s) "
              "| outer iterations | converged | peak RSS (MB) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['m']} | {r['n']} | {r['d']} | {r['error']} | | | | | |")
            continue
        print(f"| {r['method']} | {r['m']} | {r['n']} | {r['d']} | {r['rows_s']:.2f} | "
              f"{r['first_s']:.1f} | "
              f"{r['second_s']:.2f} | {r['n_iter']} | {r['converged']} | {r['peak_mb']} |",
              flush=True)


#: the sweeps: one axis varied, the others at these values
SWEEPS = {"m": ([100, 300, 1000, 3000, 10000], {"n": 100, "d": 50}),
          "n": ([100, 300, 1000, 3000], {"m": 300, "d": 50}),
          "d": ([25, 50, 100, 200], {"m": 300, "n": 1000})}


def sweep(args) -> None:
    path = os.path.join(os.path.dirname(__file__), "results_scale.json")
    axes = args.axes.split(",")
    methods = args.methods.split(",")
    results = []
    if args.merge and os.path.exists(path):  # keep the other rows of an earlier sweep
        with open(path) as f:
            results = [r for r in json.load(f)
                       if not (r["axis"] in axes and r["method"] in methods)]
    for axis in axes:
        values, fixed = SWEEPS[axis]
        print(f"\n### varying {axis} ({', '.join(f'{k} = {v}' for k, v in fixed.items())})\n")
        rows = []
        table([])
        for method in methods:
            for v in values:
                size = {**fixed, axis: v}
                r = run_one(method, size["m"], size["n"], size["d"], args.lam,
                            timeout=args.timeout)
                r["axis"] = axis
                rows.append(r)
                table([r], header=False)
        results += rows
    print("\n### fitted exponents (least squares on log-log)\n")
    print("| method | axis | pass over the rows | second fit | first fit (compiles) "
          "| peak RSS |")
    print("|---|---|---|---|---|---|")
    for method in sorted({r["method"] for r in results}):
        for axis in SWEEPS:
            rs = [r for r in results if r["method"] == method and r["axis"] == axis
                  and "error" not in r]
            if len(rs) < 2:
                continue
            x = np.log([r[axis] for r in rs])
            def slope(v, x=x):
                return np.polyfit(x, np.log(v), 1)[0]

            print(f"| {method} | {axis} | {slope([r['rows_s'] for r in rs]):.2f} | "
                  f"{slope([r['second_s'] for r in rs]):.2f} | "
                  f"{slope([r['first_s'] for r in rs]):.2f} | "
                  f"{slope([r['peak_mb'] for r in rs]):.2f} |")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(os.path.dirname(__file__), "scale_loglog.png"))


def steps(args) -> None:
    """Time the first ``--steps`` outer iterations (W-step, then Ω-step) of the alternating
    members of ``--methods`` (glmtl, spats, reconstruction), plain alternation from W = 0."""
    from bench_glasso import MEMBERS, timed_outer_steps

    from bayesmtl.inference.stats import data_term

    term = data_term(synthetic(args.m, args.n, args.d))
    print("| member | outer iteration | W-step (s) | Ω-step (s) |\n|---|---|---|---|")
    for name in args.methods.split(","):
        member = MEMBERS[name](EXTRA[name]["lam2"])
        outer = timed_outer_steps(term, member, args.lam, args.d, args.m, args.steps)
        for it, (*_, w_seconds, omega_seconds) in enumerate(outer):
            print(f"| {name} | {it + 1} | {w_seconds:.2f} | {omega_seconds:.2f} |", flush=True)


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(SWEEPS), figsize=(4 * len(SWEEPS), 7))
    for j, axis in enumerate(SWEEPS):
        for method in sorted({r["method"] for r in results}):
            rs = [r for r in results if r["method"] == method and r["axis"] == axis
                  and "error" not in r]
            if not rs:
                continue
            x = [r[axis] for r in rs]
            axes[0, j].loglog(x, [r["second_s"] for r in rs], "o-", label=method)
            axes[1, j].loglog(x, [r["peak_mb"] for r in rs], "o-", label=method)
        fixed = SWEEPS[axis][1]
        axes[0, j].set_title(f"vary {axis} ({', '.join(f'{k}={v}' for k, v in fixed.items())})")
        axes[0, j].set_ylabel("second fit (s)")
        axes[1, j].set_ylabel("peak RSS (MB)")
        axes[1, j].set_xlabel(axis)
        axes[0, j].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"\nplot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--methods", default="stl,pooled,mtrl,rmtl,schatten,clustered")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--axes", default="m,n,d", help="sweep axes (subset of m,n,d)")
    parser.add_argument("--merge", action="store_true",
                        help="replace only these methods × axes in results_scale.json")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per process")
    parser.add_argument("--steps", type=int, default=0,
                        help="time this many outer iterations of the alternating members")
    parser.add_argument("--stream", type=int, default=0,
                        help="rows per chunk: stream the rows into TaskStatistics")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.steps:
        steps(args)
    elif args.sweep:
        sweep(args)
    else:
        print(f"\n{args.m} tasks × {args.n} rows × {args.d} features "
              f"({args.m * args.n:,} rows), λ = {args.lam}\n")
        if args.stream:
            print(f"streamed in chunks of {args.stream:,} rows into TaskStatistics\n")
        table(run_one(method, args.m, args.n, args.d, args.lam, args.max_iter, args.timeout,
                      args.stream) for method in args.methods.split(","))
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
