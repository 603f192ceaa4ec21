"""No compiled MAP fit runs two batched LAPACK calls at once (the deadlock of
``tests/hlo_hazards.py``): every registered shallow method is fitted on a small regression and
a small classification problem in a child process that dumps XLA's optimised HLO, and the dump
is scanned. AMTL on School hung in 3 of 3 fits before ``coupled_block_solve`` ordered its
preconditioner after its right-hand side (XLA had hoisted the squared loss's constant
factorisation out of Newton's loop, next to the first direction's). Fits running at once on
threads are the same hazard across programs: the "threads" scheduler leaves a pool thread
free."""

import os
import textwrap

import pytest
from conftest import run_python
from hlo_hazards import computations, hazards, scan

from bayesmtl.parallel import thread_workers

FIT_ALL = textwrap.dedent("""
    import warnings
    import numpy as np
    import bayesmtl
    from bayesmtl import MultiTaskData, methods
    from bayesmtl.errors import MethodError
    from bayesmtl.methods import Settings, registry

    rng = np.random.default_rng(0)
    m, d, n = 6, 4, 20
    W = rng.normal(size=(d, 2)) @ rng.normal(size=(2, m))
    X = rng.normal(size=(m * n, d))
    task = np.repeat(np.arange(m), n)
    s = np.einsum("nd,dn->n", X, W[:, task]) + 0.5 * rng.normal(size=m * n)
    for kind, y in (("regression", s), ("classification", (s > 0).astype(float))):
        data = MultiTaskData.from_arrays(X, y, task, kind=kind)
        for name in registry.names(shallow=True, kind=kind):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    methods.fit(data, name, {}, Settings(max_iter=3))
                except MethodError:  # no MAP (LKJ)
                    continue
            print(kind, name, flush=True)
""")


def test_the_scan_finds_an_unordered_pair():
    text = textwrap.dedent("""
        ENTRY %main (p: f64[4,3,3]) -> f64[4,3,3] {
          %p = f64[4,3,3]{2,1,0} parameter(0)
          %a = (f64[4,3,3]{2,1,0}, s32[4]) custom-call(%p), custom_call_target="lapack_dpotrf"
          %b = (f64[4,3,3]{2,1,0}, s32[4]) custom-call(%p), custom_call_target="lapack_dsyevd"
          %c = f64[4,3,3]{2,1,0} get-tuple-element(%a), index=0
          %e = (f64[4,3,3]{2,1,0}, s32[4]) custom-call(%c), custom_call_target="lapack_dpotrf"
          ROOT %r = f64[4,3,3]{2,1,0} get-tuple-element(%b), index=0
        }
    """)
    # a ∥ b and e ∥ b; e depends on a
    assert sorted(pair[1:] for pair in hazards(computations(text))) == [("a", "b"), ("b", "e")]


def test_no_fit_compiles_concurrent_batched_lapack_calls(tmp_path):
    env = {"XLA_FLAGS": f"--xla_dump_to={tmp_path} --xla_dump_hlo_as_text",
           "BAYESMTL_JAX_CACHE": "0"}  # a cache hit compiles (and dumps) nothing
    assert "classification gamtl" in run_python(FIT_ALL, timeout=900, env=env)  # every method ran
    modules, calls, found = scan(tmp_path)
    assert modules > 100 and calls > 50  # the dump was read and holds LAPACK calls
    assert not found, "\n".join(found[:20])


@pytest.mark.parametrize("cpus,asked,used", [(2, 2, 1), (2, 8, 1), (4, 8, 3), (4, 2, 2), (1, 3, 1)])
def test_thread_workers_leave_a_pool_thread_free(monkeypatch, cpus, asked, used):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cpus)), raising=False)
    assert thread_workers(asked) == used


THREADED_FITS = textwrap.dedent("""
    import warnings
    from bayesmtl import methods
    from bayesmtl.datasets import load_school
    from bayesmtl.methods import Settings
    from bayesmtl.parallel import map_completed

    train, _ = load_school(split=1)

    def run(lam):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return methods.fit(train, "amtl", {"lam": lam}, Settings(max_iter=2))[0].objective

    if __name__ == "__main__":
        done = dict(map_completed(run, [0.1, 1.0, 10.0, 0.01], scheduler="threads",
                                  n_workers=3, progress=False))
        print(len(done))
""")


def test_school_sized_fits_on_the_threads_scheduler_finish():
    """Three AMTL fits of School's size on three threads hung on this 2-core machine (2 of 2
    runs) before thread_workers; the same call must finish."""
    assert run_python(THREADED_FITS).split()[-1] == "4"
