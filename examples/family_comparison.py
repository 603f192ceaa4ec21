"""Compare registered methods on School: hyperparameters by 3-fold CV on the training rows,
test RMSE, fit time and the chosen values, one call.

    python examples/family_comparison.py           # every shallow method, School split 1
    python examples/family_comparison.py --small   # 12 schools, four methods (under a minute)

The same as ``bayesmtl compare``; methods that exceed ``time_limit`` are listed as skipped.
"""

import argparse

from bayesmtl import methods
from bayesmtl.datasets import load_school
from bayesmtl.selection import compare


def main(small: bool = False):
    train, test = load_school(split=1)
    if small:
        train, test = train.select_tasks(range(12)), test.select_tasks(range(12))
        names = ["stl", "pooled", "rmtl", "mtrl"]
        grids = {name: {"lam": [0.1, 1.0, 10.0]} for name in names}
        time_limit = 60
    else:  # AMTL's and GAMTL's alternations take minutes per School fit: capped by time
        names, grids, time_limit = methods.names(shallow=True, kind="regression"), None, 600
    print(f"{'method':<18}{'test RMSE':>10}{'fit (s)':>9}  chosen")

    def show(row):
        if row["status"] != "ok":
            print(f"{row['method']:<18}{'-':>10}{'-':>9}  {row['status']}")
            return
        chosen = ", ".join(f"{k}={v:g}" for k, v in row["hyper"].items())
        print(f"{row['method']:<18}{row['test_rmse']:>10.3f}{row['fit_time_s']:>9.2f}  {chosen}")

    rows, fits = compare(train, test, names, grids=grids, time_limit=time_limit, log=show)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (under a minute)")
    main(parser.parse_args().small)
