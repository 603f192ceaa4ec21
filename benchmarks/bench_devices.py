"""CPU vs CUDA: the torch/Pyro training paths (deep MTL + BMTL, L2MT) timed side by side.

Each case is one fit of a fixed number of epochs (no early stopping) on every device given:
``cpu:1`` (one torch thread, the library's setting for small models), ``cpu:N`` (all cores)
and ``cuda`` when torch sees one. Per case and device it prints the median seconds per epoch
over epochs 2… (the first holds CUDA's and the allocator's warm-up), the total, and the final
training objective (deep) or loss (L2MT), which must agree across devices up to float
round-off (MAP cases; SVI draws differ between CPU and CUDA random streams).

Cases (``--cases``):

=================  ==========================================================================
``digits``         deep MAP: digits stand-in (5 corrupted domains × 10 classes, 64 pixels),
                   DMTL heads, BMTL, hidden 600, 32 rows per task per step, float32
``digits-svi``     the same network trained by SVI (mean-field Normal guide), float32
``digits-wide``    digits, hidden 4096, 512 rows per task per step (a size where a GPU pays)
``school``         deep MAP: School's 139 regression tasks, DMTL, BMTL, hidden 600, float32
``school-omega``   School with matrix-normal heads (MTRL's Ω over 139 tasks), float64
``l2mt``           L2MT MAP (objective (6)), ``--problems`` MNIST-pool problems (m = 4…8),
                   K = ``--tuples`` task covariances each, hidden 50, 8 problems per step,
                   float64: the paper's sizes (Ω and o are random: only the time is measured)
``l2mt-svi``       the same by SVI (AutoNormal)
=================  ==========================================================================

    .venv/bin/python benchmarks/bench_devices.py                 # every case, every device
    .venv/bin/python benchmarks/bench_devices.py --cases digits l2mt --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

CASES = ("digits", "digits-svi", "digits-wide", "school", "school-omega", "l2mt", "l2mt-svi")


def devices() -> list[tuple[str, str, int]]:
    """(label, torch device, threads) for every device to time."""
    out = [("cpu:1", "cpu", 1)]
    n = os.cpu_count() or 1
    if n > 1:
        out.append((f"cpu:{n}", "cpu", n))
    if torch.cuda.is_available():
        out.append(("cuda", "cuda", 1))
    return out


def deep_case(name: str, device: str, epochs: int) -> dict:
    from bayesmtl.deep import fit_deep
    from bayesmtl.deep.standins import digit_domains, proportion_split, school_tasks

    data = school_tasks() if name.startswith("school") else digit_domains(seed=0)
    train, _ = proportion_split(data, 0.5, 0)
    kw = {"balancing": "bmtl", "hidden": 600, "batch_size": 32, "epochs": epochs,
          "patience": None, "lr": 0.005, "lr_decay": 0.0, "seed": 0, "device": device}
    kw.update({"digits-svi": {"inference": "svi"},
               "digits-wide": {"hidden": 4096, "batch_size": 512},
               "school-omega": {"network": "omega", "dtype": "float64"}}.get(name, {}))
    t0 = time.perf_counter()
    r = fit_deep(train, **kw)
    total = time.perf_counter() - t0
    return {"epoch_time": list(r.history["epoch_time"]), "total": total,
            "loss": float(r.history["objective"][-1])}


def l2mt_meta(problems: int, tuples: int, seed: int = 0):
    """MetaData of ``problems`` MNIST-pool training problems, each with ``tuples`` random
    trace-one Ω's and relative errors o ~ U(0.7, 1.3) (shapes as in the paper's experience)."""
    from bayesmtl.l2mt.model import meta_data
    from bayesmtl.l2mt.problems import build_problem, sample_spec

    rng = np.random.default_rng(seed)
    out = []
    for i in range(problems):
        train = build_problem(sample_spec(seed, i, pools=("mnist",))).train
        m = train.n_tasks
        A = rng.normal(size=(tuples, m, m))
        out.append((train, A @ A.transpose(0, 2, 1) + 0.1 * np.eye(m),
                    rng.uniform(0.7, 1.3, tuples)))
    return meta_data(out)


def l2mt_case(name: str, device: str, epochs: int, meta) -> dict:
    from bayesmtl.l2mt.model import fit_l2mt

    t0 = time.perf_counter()
    r = fit_l2mt(meta, epochs=epochs, device=device,
                 inference="svi" if name == "l2mt-svi" else "map")
    total = time.perf_counter() - t0
    return {"epoch_time": list(r.history["epoch_time"]), "total": total,
            "loss": float(r.history["loss"][-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--problems", type=int, default=95, help="L2MT training problems")
    ap.add_argument("--tuples", type=int, default=44, help="L2MT tuples (Ω, o) per problem")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}; torch {torch.__version__}; "
          f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
          flush=True)
    meta = (l2mt_meta(args.problems, args.tuples)
            if any(c.startswith("l2mt") for c in args.cases) else None)
    rows = []
    print("| case | device | s/epoch (median of epochs 2…) | total s | final objective |\n"
          "|---|---|---|---|---|", flush=True)
    for case in args.cases:
        for label, dev, threads in devices():
            torch.set_num_threads(threads)
            run = (l2mt_case(case, dev, args.epochs, meta) if case.startswith("l2mt")
                   else deep_case(case, dev, args.epochs))
            if dev == "cuda":
                torch.cuda.synchronize()
            per_epoch = float(np.median(run["epoch_time"][1:] or run["epoch_time"]))
            rows.append({"case": case, "device": label, "s_per_epoch": per_epoch, **run})
            print(f"| {case} | {label} | {per_epoch:.4f} | {run['total']:.2f} | "
                  f"{run['loss']:.6g} |", flush=True)
    print(f"\nload average at end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
