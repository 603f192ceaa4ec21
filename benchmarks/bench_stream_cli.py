"""The command line on a file larger than one wants in memory (issue 19): write N rows of m
tasks × d features to Parquet (or CSV) in row groups, then time

    bayesmtl fit --data FILE --task-col task --target y --method METHOD --lam 0.1 \\
        --chunksize C --out reports/stream

in a child process and report its wall time and peak resident memory (from the child's
``ru_maxrss``). The file is written once and reused (delete it to rewrite).

    .venv/bin/python benchmarks/bench_stream_cli.py --rows 10000000 --tasks 1000 --d 20
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write(path: Path, rows: int, m: int, d: int, chunk: int, seed: int = 0) -> None:
    """Rows in task-interleaved order (task = row mod m), y = xᵀw_task + noise with a rank-3 W."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, 3)) @ rng.normal(size=(3, m))
    tmp = path.with_suffix(path.suffix + ".tmp")
    writer = None
    try:
        for lo in range(0, rows, chunk):
            idx = np.arange(lo, min(lo + chunk, rows))
            task = idx % m
            X = rng.normal(size=(len(idx), d))
            y = np.einsum("nd,dn->n", X, W[:, task]) + rng.normal(size=len(idx))
            df = pd.DataFrame(X, columns=[f"x{j}" for j in range(d)])
            df["task"], df["y"] = [f"t{t}" for t in task], y
            if path.suffix == ".csv":
                df.to_csv(tmp, mode="a", header=lo == 0, index=False)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(df, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--chunksize", type=int, default=500_000)
    parser.add_argument("--method", default="mtrl")
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    parser.add_argument("--file", default=None, help="default /tmp/bayesmtl_stream_<size>")
    args = parser.parse_args()
    path = Path(args.file or f"/tmp/bayesmtl_stream_{args.rows}_{args.tasks}_{args.d}"
                             f".{args.format}")
    if not path.exists():
        start = time.perf_counter()
        write(path, args.rows, args.tasks, args.d, 500_000)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in "
              f"{time.perf_counter() - start:.0f} s")
    print(f"{args.rows:,} rows × {args.d} features, {args.tasks} tasks, {path.name} "
          f"({path.stat().st_size / 2**30:.2f} GiB); load average {os.getloadavg()[0]:.2f}")
    cmd = [str(Path(sys.executable).with_name("bayesmtl")), "fit", "--data", str(path),
           "--task-col", "task", "--target", "y", "--method", args.method, "--lam", "0.1",
           "--chunksize", str(args.chunksize), "--out", "reports/stream"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(done.stderr[-2000:] if done.returncode else done.stdout[-1200:])
    print(f"exit {done.returncode}: wall {wall:.1f} s, peak RSS {peak:,.0f} MB; load average "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
