import gc
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import bayesmtl  # noqa: F401  (enables x64 before any JAX work)
from bayesmtl import MultiTaskData


def make_regression(seed=0, d=5, sizes=(15, 20, 25, 30), noise=1.0, omega=None):
    """Small ragged regression problem drawn from the matrix-normal model."""
    rng = np.random.default_rng(seed)
    m = len(sizes)
    omega = np.eye(m) if omega is None else omega
    W = rng.normal(size=(d, m)) @ np.linalg.cholesky(omega).T
    tasks = []
    for i, n in enumerate(sizes):
        X = rng.normal(size=(n, d))
        tasks.append((X, X @ W[:, i] + 0.5 * i + noise * rng.normal(size=n)))
    return MultiTaskData.from_tasks(tasks, task_names=[f"t{i}" for i in range(m)]), W


def solve_cvxpy(objective, constraints=()):
    """Minimise a cvxpy ``objective`` under ``constraints`` with Clarabel to 1e-10 (the
    independent reference solver of the MAP tests); returns the optimal value."""
    import cvxpy as cp

    problem = cp.Problem(cp.Minimize(objective), list(constraints))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10,
                  max_iter=500)
    assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), problem.status
    return problem.value


def run_python(code: str, *, timeout: float = 300, env: dict | None = None) -> str:
    """Run ``code`` in a fresh Python process (``env`` added to this one's environment) and
    return its stdout; fail the test with its stderr if it exits non-zero, and say so if it
    does not finish within ``timeout`` seconds (a hang fails the test, not the suite)."""
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout, env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child process did not finish in {timeout:g} s (a deadlock?)")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def binary_tasks(rng, m, n, d=5):
    """m binary classification tasks of n rows (both classes in every task), d features."""
    X = rng.normal(size=(m * n, d))
    task = np.repeat(np.arange(m), n)
    y = (X[:, 0] + 0.3 * rng.normal(size=m * n) > 0).astype(int)
    y[::n] = 0
    y[1::n] = 1  # both classes in every task
    return MultiTaskData.from_arrays(X, y, task, kind="classification")


def l2mt_meta(seed=0, P=4, K=3, d=5):
    """P small L2MT training problems (3–4 tasks, K random Ω's and relative errors each) and
    their MetaData (k = 3)."""
    from bayesmtl.l2mt.model import meta_data  # torch: only where a test needs it

    rng = np.random.default_rng(seed)
    problems = []
    for p in range(P):
        m = 3 + p % 2
        data = binary_tasks(rng, m, 12 + 2 * (p % 2), d)
        A = rng.normal(size=(K, m, m))
        omegas = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(m)
        problems.append((data, omegas, rng.uniform(0.7, 1.3, K)))
    return problems, meta_data(problems, k=3)


@pytest.fixture
def small_regression():
    return make_regression()[0]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module. XLA's CPU JIT maps a few
    memory regions per executable; a whole suite in one process otherwise compiles enough
    shapes to exhaust vm.max_map_count (65530) and crash the compiler (SIGSEGV/SIGABRT)."""
    yield
    jax.clear_caches()
    gc.collect()
