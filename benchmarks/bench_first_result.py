"""Time to first result in a fresh process (issue 19), cold and with the compilation cache warm:

    .venv/bin/python benchmarks/bench_first_result.py [--runs 2] [-- extra CLI arguments]

runs ``bayesmtl fit --dataset school --split 1 --method mtrl --lam 0.1`` ``--runs`` times in
child processes, all pointed (``BAYESMTL_JAX_CACHE``) at one fresh, empty compilation-cache
folder: the first run is a new machine, the later ones find the cache warm. Prints each run's
wall time, the STL and MTRL fit times the command reports, and the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["fit", "--dataset", "school", "--split", "1", "--method", "mtrl", "--lam", "0.1"]


def fit_times(stdout: str) -> dict[str, float]:
    """{model: fit seconds} from the command's results table (last column)."""
    rows = re.findall(r"^(\S.*?)\s{2,}[-\d.]+\s+([\d.]+)\s*$", stdout, flags=re.M)
    return {name.strip(): float(seconds) for name, seconds in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    cli = str(Path(sys.executable).with_name("bayesmtl"))
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "BAYESMTL_JAX_CACHE": cache}
        print("| run | compilation cache | wall time | fit times (s) | load average |")
        print("|---|---|---|---|---|")
        for run in range(1, args.runs + 1):
            start = time.perf_counter()
            done = subprocess.run([cli, *COMMAND, "--out", out, *extra], env=env,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode:
                sys.exit(f"the command failed ({done.returncode}):\n{done.stderr[-2000:]}")
            fits = ", ".join(f"{k} {v:.2f}" for k, v in fit_times(done.stdout).items())
            print(f"| {run} | {'empty' if run == 1 else 'warm'} | {wall:.1f} s | {fits} | "
                  f"{os.getloadavg()[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
