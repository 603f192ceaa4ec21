"""Posterior sampling on School split 1 with the inverse-Wishart prior (issues 2 and 3):
NUTS (``run_nuts`` on ``mtl_model``, non-centred W) against the conjugate blocked Gibbs
sampler (``run_gibbs``), same model. Prints a markdown table.

    .venv/bin/python benchmarks/bench_sampling.py                        # both samplers
    .venv/bin/python benchmarks/bench_sampling.py --only gibbs           # one of them
    .venv/bin/python benchmarks/bench_sampling.py --only gibbs --features binary --seed 1
        --chains 4 --gibbs-samples 3000 --chain-summary                 # slow-mode diagnosis

Model (the ``--nuts`` row of bench_core.py, i.e. MTLRegressor(prior=InverseWishart(),
inference="nuts") defaults): raw School features (27 columns, no bias column; flat
intercepts), λ = 1, ridge 0, Ω ~ IW(m + 2, I), shared noise σ ~ HalfNormal(10), proper
("sum") likelihood. Diagnostics over the m(m+1)/2 distinct entries of Ω (and, for reference,
over W and σ): bulk ESS and rank R-hat from arviz_stats. Times are wall-clock and include
JIT compilation (reported apart for Gibbs).

XLA's multi-threaded CPU kernels are switched off below: on a shared, oversubscribed CPU the
batched small factorisations of both samplers ran 10-100× slower with them on. Chains run
sequentially (one JAX CPU device): with ``numpyro.set_host_device_count(2)`` the parallel NUTS
run stalled (all threads asleep) on this machine.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import bayesmtl  # noqa: E402,F401
from bayesmtl import priors as P  # noqa: E402
from bayesmtl.datasets import load_school  # noqa: E402
from bayesmtl.inference.export import from_mcmc, to_datatree  # noqa: E402
from bayesmtl.models.likelihoods import Gaussian  # noqa: E402

LAM = 1.0
PRIOR = P.InverseWishart()
LIKELIHOOD = Gaussian("shared")  # σ ~ HalfNormal(10)


def diagnostics(dt):
    """min bulk ESS and max rank R-hat over the distinct entries of Ω, and over W and σ;
    also the median bulk ESS over Ω's entries (``omega_median``)."""
    from arviz_stats import ess, rhat

    out = {}
    for name in ("omega", "W", "noise"):
        if name not in dt.posterior:
            continue
        e = np.asarray(ess(dt, var_names=[name], method="bulk")[name].values)
        r = np.asarray(rhat(dt, var_names=[name], method="rank")[name].values)
        if name == "omega":
            iu = np.triu_indices(e.shape[-1])
            e, r = e[iu], r[iu]
            out["omega_median"] = float(np.median(e))
        out[name] = (float(np.min(e)), float(np.max(r)))
    return out


def row(label, settings, seconds, diag, n_draws):
    eo, ro = diag["omega"]
    ew, rw = diag["W"]
    es, rs = diag["noise"]
    med = diag["omega_median"]
    return (f"| {label} | {settings} | {seconds:.0f} s | {n_draws} | {eo:.0f} | {ro:.3f} | "
            f"{eo / seconds:.3f} | {med:.0f} ({med / seconds:.2f}/s) | {ew:.0f} / {rw:.3f} | "
            f"{es:.0f} / {rs:.3f} ({es / seconds:.2f}/s) |")


#: one level of each one-hot group, dropped by --reference-coding (a different model: without
#: it each group's dummies sum to 1 on (almost) every row, i.e. they are collinear with the
#: flat intercepts; VR band is all-zero on 11 of 11,472 rows)
REFERENCE_LEVELS = ("year_1987", "gender_1", "vr_band_3", "ethnic_other", "school_female",
                    "denom_rc")


def reference_coded(data):
    keep = [i for i, f in enumerate(data.feature_names) if f not in REFERENCE_LEVELS]
    return data.with_features(data.X[:, keep], [data.feature_names[i] for i in keep])


def chain_summary(samples, train, contrast=("vr_band_1", "vr_band_2"), parts=6):
    """Per chain: medians over ``parts`` consecutive pieces of Ω's two largest eigenvalues and
    of the across-task mean of a feature contrast, and the tasks with the largest mean Ω_ii
    (do the chains sit in different modes, or walk slowly through one?)."""
    omega, W = np.asarray(samples["omega"]), np.asarray(samples["W"])
    first, second = (list(train.feature_names).index(name) for name in contrast)
    for c in range(omega.shape[0]):
        eig = np.linalg.eigvalsh(omega[c])
        mean_contrast = W[c, :, first].mean(-1) - W[c, :, second].mean(-1)
        diag = np.diagonal(omega[c], axis1=1, axis2=2).mean(0)
        top = np.argsort(diag)[::-1][:4]

        def pieces(v):
            return " ".join(f"{np.median(piece):.1f}" for piece in np.array_split(v, parts))

        print(f"chain {c}: largest eigenvalue of Ω {pieces(eig[:, -1])}; second "
              f"{pieces(eig[:, -2])}; mean {contrast[0]} − {contrast[1]} "
              f"{pieces(mean_contrast)}; largest Ω_ii: "
              + ", ".join(f"{train.task_names[t]} {diag[t]:.1f}" for t in top), flush=True)


def bench_gibbs(train, warmup, samples, chains, seed, label="Gibbs (run_gibbs)",
                scale_moves=False, prior=PRIOR, summary=False):
    from bayesmtl.inference.gibbs import run_gibbs

    kw = dict(lam=LAM, likelihood=LIKELIHOOD, num_chains=chains, seed=seed, solver="cg",
              scale_moves=scale_moves)
    start = time.perf_counter()
    run_gibbs(train, prior, num_warmup=0, num_samples=1, **kw)  # compile
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    res = run_gibbs(train, prior, num_warmup=warmup, num_samples=samples, **kw)
    run_s = time.perf_counter() - start
    if summary:
        chain_summary(res.samples, train)
    dt = to_datatree(res.samples, task_names=train.task_names,
                     feature_names=train.feature_names, sample_stats=res.sample_stats)
    it = res.sample_stats["cg_iterations"]
    print(f"gibbs: compile {compile_s:.1f} s, run {run_s:.1f} s, "
          f"{run_s / (chains * (warmup + samples)) * 1e3:.1f} ms/sweep, CG iterations per "
          f"sweep median {np.median(it):.0f} max {np.max(it)}", flush=True)
    settings = (f"{chains} chains × ({warmup} warm-up + {samples}) sweeps, "
                f"CG solver; compile {compile_s:.0f} s")
    return row(label, settings, compile_s + run_s, diagnostics(dt),
               chains * samples)


def bench_nuts(train, warmup, samples, chains, depth, seed):
    from bayesmtl.inference.mcmc import run_nuts
    from bayesmtl.models.matrix_normal import model_inputs, mtl_model

    args, kw = model_inputs(train, "sum")
    start = time.perf_counter()
    mcmc = run_nuts(mtl_model, *args, omega_prior=PRIOR, likelihood=LIKELIHOOD, lam=LAM,
                    noncentered=True, num_warmup=warmup, num_samples=samples,
                    num_chains=chains, seed=seed, max_tree_depth=depth, progress_bar=True,
                    **kw)
    seconds = time.perf_counter() - start
    dt = from_mcmc(mcmc, task_names=train.task_names, feature_names=train.feature_names,
                   var_names=["W", "b", "omega", "noise"])
    steps = np.asarray(mcmc.get_extra_fields()["num_steps"])
    n_div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    print(f"nuts: {seconds:.1f} s, leapfrog steps per draw median {np.median(steps):.0f} "
          f"max {steps.max()}, divergences {n_div}", flush=True)
    settings = (f"{chains} chains × ({warmup} warm-up + {samples}) draws, non-centred W, "
                f"max_tree_depth {depth}, {n_div} divergences")
    return row("NUTS (run_nuts, mtl_model)", settings, seconds, diagnostics(dt),
               chains * samples)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("gibbs", "nuts"))
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--gibbs-warmup", type=int, default=500)
    parser.add_argument("--gibbs-samples", type=int, default=1000)
    parser.add_argument("--nuts-warmup", type=int, default=200)
    parser.add_argument("--nuts-samples", type=int, default=200)
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-coding", action="store_true",
                        help="drop one level of each one-hot group (Gibbs only)")
    parser.add_argument("--features", default="all", choices=("all", "binary"),
                        help="School attributes: all 27, or the 25 binary ones (no percentages)")
    parser.add_argument("--df", type=float, default=None,
                        help="IW degrees of freedom (default m + 2), scale df - m - 1 so that "
                             "E[Ω] = I stays (Gibbs only)")
    parser.add_argument("--chain-summary", action="store_true",
                        help="print per-chain medians of Ω's top eigenvalues (Gibbs only)")
    parser.add_argument("--scale-moves", action="store_true",
                        help="add the joint (W, Ω) rescalings to each Gibbs sweep")
    a = parser.parse_args()
    train, _ = load_school(1, features=a.features)
    label = "Gibbs + scale moves (run_gibbs)" if a.scale_moves else "Gibbs (run_gibbs)"
    if a.reference_coding:
        train, label = reference_coded(train), "Gibbs, reference-coded dummies (other model)"
    if a.features == "binary":
        label += ", 25 binary attributes (other data)"
    prior = PRIOR
    if a.df is not None:
        prior = P.InverseWishart(df=a.df, scale=a.df - train.n_tasks - 1)
        label += f", IW df {a.df:g} (other prior)"
    print(" ".join([os.path.basename(sys.executable)] + sys.argv), flush=True)
    rows = []
    if a.only in (None, "gibbs"):
        rows.append(bench_gibbs(train, a.gibbs_warmup, a.gibbs_samples, a.chains, a.seed,
                                label, a.scale_moves, prior, a.chain_summary))
        print(rows[-1], flush=True)
    if a.only in (None, "nuts") and not a.reference_coding and a.df is None:
        rows.append(bench_nuts(train, a.nuts_warmup, a.nuts_samples, a.chains,
                               a.max_tree_depth, a.seed))
        print(rows[-1], flush=True)
    print("\n| sampler | settings | total time | draws kept | min bulk ESS (Ω) | max R-hat (Ω) "
          "| ESS/s (Ω) | median ESS (Ω) | W: min ESS / max R-hat | σ: ESS / R-hat |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
