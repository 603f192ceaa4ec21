"""(Squared) Schatten members of L2MT's g(Ω) family: objective (1), Theorems 1–2, exact MAP
against cvxpy, NUTS + ArviZ export, bad inputs."""

import warnings

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from conftest import make_regression

from bayesmtl import MultiTaskData
from bayesmtl.errors import ConvergenceWarning, PriorError
from bayesmtl.inference import prox as PX
from bayesmtl.inference.map import map_estimate, neg_log_joint
from bayesmtl.models import schatten as S
from bayesmtl.models.likelihoods import PAPER_SQUARED_LOSS_NOISE, Gaussian
from bayesmtl.models.matrix_normal import model_inputs, mtl_model

# ----------------------------------------------------------------------------- independent math


def _sym_power(A, q):
    """A^q for symmetric PSD A (numpy, independent of the library)."""
    e, V = np.linalg.eigh(A)
    return (V * np.clip(e, 0, None) ** q) @ V.T


def paper_objective(data, W, b, omega, lam1, lam2=0.0, r=1.0):
    """Eq. (1) of L2MT written from the paper, squared loss, g(Ω) = tr(Ω^r):
    Σ_i (1/n_i) Σ_j (w_iᵀx_ij + b_i - y_ij)² + (λ1/2) tr(W Ω⁻¹ Wᵀ) + λ2 tr(Ω^r)."""
    loss = sum(np.mean((X @ W[:, i] + b[i] - y) ** 2) for i, (X, y) in enumerate(data.tasks()))
    g = np.trace(_sym_power(omega, r))
    return loss + lam1 / 2 * np.trace(W @ np.linalg.solve(omega, W.T)) + lam2 * g


def paper_lambda_r(r, lam1, lam2):
    """λ_r as printed in Theorem 1: (1 + 1/r)(λ1^r λ2 r / 2^r)^{1/(r+1)}."""
    return (1 + 1 / r) * (lam1**r * lam2 * r / 2**r) ** (1 / (r + 1))


def schatten_pp(W, p):
    return np.sum(np.linalg.svd(W, compute_uv=False) ** p)


def random_spd(rng, m):
    A = rng.normal(size=(m, m))
    return A @ A.T + 0.5 * np.eye(m)


def _nlj(data, prior, params, lam1):
    args, kw = model_inputs(data, "mean")
    kw = dict(kw, omega_prior=prior, likelihood=Gaussian(PAPER_SQUARED_LOSS_NOISE), lam=lam1)
    return float(neg_log_joint(mtl_model, args, kw, params))


@pytest.fixture(scope="module")
def data():
    return make_regression()[0]


# ----------------------------------------------------------------------------- (a) objective (1)


@pytest.mark.parametrize("r", [0.5, 2.0, 3.0])
def test_negative_log_joint_is_objective_1_schatten(data, r):
    """-log p(W, b, Ω, y) (mean scaling, σ = 1/√2) = eq. (1) with g = tr(Ω^r) + one constant,
    for random Ω; at Theorem 1's Ω*(W) the same constant links it to the profile (2)."""
    rng = np.random.default_rng(int(10 * r))
    lam1, lam2 = 0.7, 0.4
    prior = S.Schatten(r, lam2)
    diffs, profile_diffs = [], []
    for _ in range(3):
        W = rng.normal(size=(data.n_features, data.n_tasks))
        b = rng.normal(size=data.n_tasks)
        omega = random_spd(rng, data.n_tasks)
        params = {"W": jnp.asarray(W), "b": jnp.asarray(b), "omega": jnp.asarray(omega)}
        diffs.append(_nlj(data, prior, params, lam1)
                     - paper_objective(data, W, b, omega, lam1, lam2, r))
        star = np.asarray(S.schatten_omega(W, r, lam1, lam2))
        nlj_star = _nlj(data, prior, dict(params, omega=jnp.asarray(star)), lam1)
        loss = paper_objective(data, W, b, np.eye(data.n_tasks), 0.0)
        profile = loss + paper_lambda_r(r, lam1, lam2) * schatten_pp(W, 2 * r / (r + 1))
        profile_diffs.append(nlj_star - profile)
    scale = max(1.0, abs(diffs[0]))
    assert np.ptp(diffs) < 1e-9 * scale
    assert np.ptp(np.r_[diffs, profile_diffs]) < 1e-8 * scale


@pytest.mark.parametrize("r", [0.5, 2.0])
def test_negative_log_joint_is_objective_1_squared_schatten(data, r):
    """On the boundary tr(Ω^r) = 1 (omega_raw = Ω, radius t = 1, where the MAP lies) the
    joint is eq. (1) with g the indicator of tr(Ω^r) ≤ 1, plus one constant."""
    rng = np.random.default_rng(5)
    lam1 = 1.3
    diffs = []
    for _ in range(3):
        omega = random_spd(rng, data.n_tasks)
        omega /= np.trace(_sym_power(omega, r)) ** (1 / r)
        W = rng.normal(size=(data.n_features, data.n_tasks))
        b = rng.normal(size=data.n_tasks)
        params = {"W": jnp.asarray(W), "b": jnp.asarray(b), "omega_raw": jnp.asarray(omega),
                  "omega_radius": jnp.asarray(1.0)}
        diffs.append(_nlj(data, S.SquaredSchatten(r), params, lam1)
                     - paper_objective(data, W, b, omega, lam1))
    assert np.ptp(diffs) < 1e-9 * max(1.0, abs(diffs[0]))


# ----------------------------------------------------------------------------- (b) Theorems 1, 2


def _min_over_omega(A, objective, m, rng):
    """Numerical min over Ω = LLᵀ ≻ 0 of objective(Ω) (scipy BFGS, several starts)."""
    idx = np.tril_indices(m)

    def f(theta):
        L = np.zeros((m, m))
        L[idx] = theta
        return objective(L @ L.T + 1e-300 * np.eye(m))

    best = None
    for _ in range(3):
        L0 = np.linalg.cholesky(random_spd(rng, m) * 0.3)
        res = scipy.optimize.minimize(f, L0[idx], method="BFGS", options={"gtol": 1e-10})
        best = res if best is None or res.fun < best.fun else best
    L = np.zeros((m, m))
    L[idx] = best.x
    return best.fun, L @ L.T


@pytest.mark.parametrize("r", [0.5, 1.0, 2.0, 3.0])
def test_theorem_1_and_2_omega_step(r):
    """min over Ω of (λ1/2) tr(Ω⁻¹WᵀW) + λ2 tr(Ω^r) = λ_r ‖W‖_{S_p}^p at Theorem 1's Ω;
    min over tr(Ω^r) ≤ 1 of (λ1/2) tr(Ω⁻¹WᵀW) = (λ1/2)‖W‖²_{S_p} at Theorem 2's Ω."""
    rng = np.random.default_rng(1)
    W = rng.normal(size=(4, 3))
    A = W.T @ W
    lam1, lam2, p = 0.9, 0.6, 2 * r / (r + 1)
    value, omega = _min_over_omega(
        A, lambda O: lam1 / 2 * np.trace(np.linalg.solve(O, A)) + lam2 * np.trace(
            _sym_power(O, r)), 3, rng)
    assert value == pytest.approx(paper_lambda_r(r, lam1, lam2) * schatten_pp(W, p), rel=1e-7)
    assert S.schatten_lambda(r, lam1, lam2) == pytest.approx(paper_lambda_r(r, lam1, lam2),
                                                             rel=1e-14)
    np.testing.assert_allclose(S.schatten_omega(W, r, lam1, lam2), omega, atol=1e-5)

    def on_boundary(O):  # the constraint is active at the optimum: scale Ω onto it
        return lam1 / 2 * np.trace(np.linalg.solve(O, A)) * np.trace(_sym_power(O, r)) ** (1 / r)

    value, omega = _min_over_omega(A, on_boundary, 3, rng)
    assert value == pytest.approx(lam1 / 2 * schatten_pp(W, p) ** (2 / p), rel=1e-7)
    omega /= np.trace(_sym_power(omega, r)) ** (1 / r)
    np.testing.assert_allclose(S.squared_schatten_omega(W, r), omega, atol=1e-5)


@pytest.mark.parametrize("prior, lam1", [
    (S.Schatten(1.0, 0.02), 0.05), (S.Schatten(2.0, 0.5), 0.8), (S.Schatten(3.0, 0.5), 0.8),
    (S.SquaredSchatten(2.0), 0.3), (S.SquaredSchatten(1.0), 0.02)])
def test_alternating_omega_form_equals_profile_form(data, prior, lam1):
    """Alternating W-step / closed-form Ω-step on eq. (1) and ADMM on the profile Schatten
    problem reach the same W, b and objective (convex cases, full-rank optimum)."""
    a = S.fit_schatten(data, prior, lam1, method="alternating", max_iter=3000, tol=1e-14)
    p = S.fit_schatten(data, prior, lam1, method="admm")
    assert a.converged and p.converged
    assert a.objective == pytest.approx(p.objective, rel=1e-9)
    np.testing.assert_allclose(a.W, p.W, atol=1e-5)
    np.testing.assert_allclose(a.b, p.b, atol=1e-5)
    # the returned Ω realises the profile value through eq. (1)
    lam2 = getattr(prior, "lam2", 0.0)
    full = paper_objective(data, p.W, p.b, p.omega, lam1, lam2, prior.r)
    assert full == pytest.approx(p.objective, rel=1e-9)


@pytest.mark.parametrize("prior, lam1", [(S.Schatten(0.5, 0.3), 0.3),
                                         (S.Schatten(0.5, 0.3), 0.1),
                                         (S.SquaredSchatten(0.5), 0.3)])
def test_r_below_one_reaches_stationary_point(data, prior, lam1):
    """r = 1/2 (p = 2/3): the profile is non-convex and its stationary points are low-rank.
    FISTA with the exact non-convex prox (the default) stops where W is stationary on the
    manifold of its rank k: the tangent-space projection of ∇L + ∇penalty (on the k nonzero
    singular values) vanishes, and ∂/∂b = 0. The alternating W/Ω scheme ends no lower."""
    r = S.fit_schatten(data, prior, lam1, tol=1e-12)
    assert r.converged
    p = 2 * prior.r / (prior.r + 1)
    U, s, Vt = np.linalg.svd(r.W, full_matrices=False)
    k = int(np.sum(s > 1e-8 * s[0]))
    assert 0 < k < data.n_tasks  # a genuinely low-rank stationary point
    U, s, V = U[:, :k], s[:k], Vt[:k].T
    X, y, task = jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task)
    n = jnp.asarray(np.bincount(data.task))[task]

    def loss(W, b):
        return jnp.sum((jnp.sum(X * W.T[task], 1) + b[task] - y) ** 2 / n)

    gW, gb = jax.grad(loss, argnums=(0, 1))(jnp.asarray(r.W), jnp.asarray(r.b))
    if isinstance(prior, S.Schatten):  # d/dσ_j of λ_r Σ σ^p
        dpen = paper_lambda_r(prior.r, lam1, prior.lam2) * p * s ** (p - 1)
    else:  # d/dσ_j of (λ1/2)(Σ σ^p)^{2/p}
        dpen = lam1 * np.sum(s**p) ** (2 / p - 1) * s ** (p - 1)
    G = np.asarray(gW) + (U * dpen) @ V.T
    PU, PV = U @ U.T, V @ V.T
    tangent = PU @ G + G @ PV - PU @ G @ PV
    assert np.abs(tangent).max() < 1e-5 and np.abs(np.asarray(gb)).max() < 1e-5
    alternating = S.fit_schatten(data, prior, lam1, method="alternating", tol=1e-12,
                                 max_iter=3000)
    assert alternating.objective >= r.objective - 1e-9
    with pytest.raises(ValueError, match="non-convex"):
        S.fit_schatten(data, prior, lam1, method="admm")


def test_nonconvex_squared_prox_is_global_minimiser():
    """p = 2/3, two singular values: the support search equals a brute-force 2-D grid."""
    p, grid = 2 / 3, np.linspace(0, 3, 601)
    X1, X2 = np.meshgrid(grid, grid, indexing="ij")
    rng = np.random.default_rng(0)
    prox = jax.jit(PX.prox_squared_schatten)
    for _ in range(10):
        s, tau = np.sort(rng.uniform(0, 3, 2))[::-1], rng.uniform(0.05, 2)
        x = np.asarray(prox(jnp.diag(jnp.asarray(s)), tau, p)).diagonal()
        F = lambda a, b: 0.5 * ((a - s[0]) ** 2 + (b - s[1]) ** 2) + tau / 2 * (  # noqa
            a**p + b**p) ** (2 / p)
        assert F(*x) <= F(X1, X2).min() + 1e-12
        i, j = np.unravel_index(np.argmin(F(X1, X2)), X1.shape)
        np.testing.assert_allclose(x, [grid[i], grid[j]], atol=6e-3)


# ----------------------------------------------------------------------------- (c) vs cvxpy


def _cvx_loss(data, W, b, loss_scale="mean", logistic=False):
    total = 0
    for i, (X, y) in enumerate(data.tasks()):
        f = X @ W[:, i] + (b[i] if b is not None else 0)
        term = (cp.sum(cp.logistic(cp.multiply(-(2 * y - 1), f))) if logistic
                else cp.sum_squares(y - f) * (1.0 if loss_scale == "mean" else 0.5))
        total += term / len(y) if loss_scale == "mean" else term
    return total


@pytest.mark.parametrize("p", [1.0, 4 / 3, 1.5, 1.8])
def test_proxes_match_cvxpy(p):
    """Prox of τ‖·‖_{S_p}^p and of (τ/2)‖·‖²_{S_p}: the singular values solve the vector
    prox at least as well as cvxpy (and agree with it), with the input's singular vectors."""
    tau = 0.7
    V = np.random.default_rng(2).normal(size=(6, 4))
    U, s, Vt = np.linalg.svd(V, full_matrices=False)
    cases = ((PX.prox_schatten_pp(jnp.asarray(V), tau, p), lambda x: tau * cp.sum(cp.power(x, p)),
              lambda x: tau * np.sum(x**p)),
             (PX.prox_squared_schatten(jnp.asarray(V), tau, p),
              lambda x: tau / 2 * cp.square(cp.pnorm(x, p)),
              lambda x: tau / 2 * np.sum(x**p) ** (2 / p)))
    for ours, penalty, value in cases:
        x = cp.Variable(4, nonneg=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # cvxpy's rational-power notices
            cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - s) + penalty(x))).solve(
                solver=cp.CLARABEL)
        ref = np.clip(x.value, 0, None)
        ours_s = U.T @ np.asarray(ours) @ Vt.T  # diagonal iff the singular vectors are V's
        np.testing.assert_allclose(ours_s, np.diag(np.diag(ours_s)), atol=1e-12)
        mine = np.diag(ours_s)
        def f(z, value=value):
            return 0.5 * np.sum((z - s) ** 2) + value(z)

        assert f(mine) <= f(ref) + 1e-12  # never worse than cvxpy
        # cvxpy/Clarabel's answer (SOC approximation of x^p) is itself only ~1e-5 accurate
        np.testing.assert_allclose(mine, ref, atol=5e-5)


def test_nonconvex_scalar_prox_is_global_minimiser():
    """p = 2/3: generalised thresholding equals a brute-force grid minimisation."""
    s, tau, p = np.linspace(0, 3, 61), 0.7, 2 / 3
    x = np.asarray(PX.prox_schatten_pp(jnp.diag(jnp.asarray(s)), tau, p))
    x = np.sort(np.linalg.svd(x, compute_uv=False))
    grid = np.linspace(0, 3, 300001)
    brute = np.array([grid[np.argmin(0.5 * (grid - si) ** 2 + tau * grid**p)] for si in s])
    np.testing.assert_allclose(x, np.sort(brute), atol=2e-5)


def test_schatten_r1_is_trace_norm_and_matches_cvxpy(data):
    """r = 1: profile is √(2λ1λ2)‖W‖_*; ADMM and FISTA reach cvxpy's optimum."""
    lam1, lam2 = 0.8, 0.3
    W, b = cp.Variable((data.n_features, data.n_tasks)), cp.Variable(data.n_tasks)
    prob = cp.Problem(cp.Minimize(_cvx_loss(data, W, b)
                                  + np.sqrt(2 * lam1 * lam2) * cp.normNuc(W)))
    prob.solve(solver=cp.CLARABEL)
    for method in ("admm", "proximal"):
        r = S.fit_schatten(data, S.Schatten(1.0, lam2), lam1, method=method)
        assert r.converged
        assert abs(r.objective - prob.value) <= 1e-6 * abs(prob.value)
        np.testing.assert_allclose(r.W, W.value, atol=1e-4)


def test_least_trace_form_without_intercept_matches_cvxpy(data):
    """MALSAR's Least_Trace: Σ_i ½‖y_i - X_i w_i‖² + ρ‖W‖_* (sum loss, σ = 1, no b)."""
    rho = 2.0
    W = cp.Variable((data.n_features, data.n_tasks))
    prob = cp.Problem(cp.Minimize(_cvx_loss(data, W, None, "sum") + rho * cp.normNuc(W)))
    prob.solve(solver=cp.CLARABEL)
    r = S.fit_schatten(data, S.Schatten(1.0, rho**2 / 2), 1.0, loss_scale="sum", noise=1.0,
                       fit_intercept=False)
    assert r.converged and np.all(r.b == 0)
    assert abs(r.objective - prob.value) <= 1e-6 * abs(prob.value)
    np.testing.assert_allclose(r.W, W.value, atol=1e-4)


def test_mtrl_without_intercept_matches_cvxpy(data):
    """fit_intercept=False in the shared profile loops: fit_mtrl (ADMM, FISTA) and
    SquaredSchatten(1) (= MTRL) against cvxpy, b = 0."""
    from bayesmtl.models.matrix_normal import fit_mtrl
    W = cp.Variable((data.n_features, data.n_tasks))
    prob = cp.Problem(cp.Minimize(_cvx_loss(data, W, None) + 0.1 / 2 * cp.sum_squares(W)
                                  + 0.5 / 2 * cp.square(cp.normNuc(W))))
    prob.solve(solver=cp.CLARABEL)
    for r in (fit_mtrl(data, 0.5, 0.1, method="admm", fit_intercept=False),
              fit_mtrl(data, 0.5, 0.1, method="proximal", fit_intercept=False),
              S.fit_schatten(data, S.SquaredSchatten(1.0), 0.5, ridge=0.1,
                             fit_intercept=False)):
        assert r.converged and np.all(r.b == 0)
        assert abs(r.objective - prob.value) <= 1e-6 * abs(prob.value)


@pytest.mark.parametrize("squared", [False, True])
def test_r2_matches_cvxpy_omega_form(data, squared):
    """r = 2 (p = 4/3): eq. (1) in its Ω form, solved by cvxpy as an SDP (matrix_frac),
    equals the profile MAP; Ω agrees too."""
    lam1, lam2 = 0.8, 0.3
    m = data.n_tasks
    W, b = cp.Variable((data.n_features, m)), cp.Variable(m)
    omega = cp.Variable((m, m), PSD=True)
    coupling = _cvx_loss(data, W, b) + lam1 / 2 * cp.matrix_frac(W.T, omega)
    if squared:
        prob = cp.Problem(cp.Minimize(coupling), [cp.sum_squares(omega) <= 1])
        prior = S.SquaredSchatten(2.0)
    else:
        prob = cp.Problem(cp.Minimize(coupling + lam2 * cp.sum_squares(omega)))
        prior = S.Schatten(2.0, lam2)
    prob.solve(solver=cp.CLARABEL)
    for method in ("admm", "proximal"):
        r = S.fit_schatten(data, prior, lam1, method=method)
        assert r.converged
        assert abs(r.objective - prob.value) <= 1e-6 * abs(prob.value)
        np.testing.assert_allclose(r.omega, omega.value, atol=1e-4)


def test_squared_r1_is_mtrl_and_logistic_matches_cvxpy():
    """Logistic loss (FISTA): SquaredSchatten(1) = (λ1/2)‖W‖²_*, Schatten(1) = λ_1‖W‖_*."""
    rng = np.random.default_rng(7)
    tasks = []
    for _ in range(3):
        X = rng.normal(size=(40, 4))
        tasks.append((X, (X @ rng.normal(size=4) + rng.normal(size=40) > 0).astype(float)))
    data = MultiTaskData.from_tasks(tasks, kind="classification")
    lam1, lam2 = 0.3, 0.2
    for prior, penalty in ((S.SquaredSchatten(1.0), lambda W: lam1 / 2 * cp.square(cp.normNuc(W))),
                           (S.Schatten(1.0, lam2), lambda W: np.sqrt(2 * lam1 * lam2)
                            * cp.normNuc(W))):
        W, b = cp.Variable((4, 3)), cp.Variable(3)
        prob = cp.Problem(cp.Minimize(_cvx_loss(data, W, b, logistic=True) + penalty(W)))
        prob.solve(solver=cp.CLARABEL)
        r = S.fit_schatten(data, prior, lam1)
        assert abs(r.objective - prob.value) <= 1e-6 * abs(prob.value)


def test_generic_map_of_the_joint_equals_profile_map(data):
    """The Bayesian reading end to end: L-BFGS on the model's negative log joint over
    (W, b, Ω) (no profile, no closed form) lands on fit_schatten's (W, b, Ω)."""
    lam1, prior = 0.8, S.Schatten(2.0, 0.5)
    ref = S.fit_schatten(data, prior, lam1)
    args, kw = model_inputs(data, "mean")
    out = map_estimate(mtl_model, *args, omega_prior=prior,
                       likelihood=Gaussian(PAPER_SQUARED_LOSS_NOISE), lam=lam1,
                       init_params={"W": ref.W + 0.05, "b": ref.b, "omega": np.eye(4)},
                       polish_max_dim=0, **kw)
    np.testing.assert_allclose(out.params["W"], ref.W, atol=1e-5)
    np.testing.assert_allclose(out.params["omega"], ref.omega, atol=1e-5)


# ----------------------------------------------------------------------------- (d) NUTS


@pytest.mark.parametrize("prior", [S.Schatten(2.0, 1.0), S.SquaredSchatten(2.0)])
def test_nuts_runs_and_exports(prior):
    from bayesmtl.inference.export import from_mcmc
    from bayesmtl.inference.mcmc import run_nuts

    rng = np.random.default_rng(0)
    tasks = [(X := rng.normal(size=(12, 2)), X @ rng.normal(size=2) + 0.3 * rng.normal(size=12))
             for _ in range(3)]
    data = MultiTaskData.from_tasks(tasks, task_names=["a", "b", "c"])
    args, kw = model_inputs(data, "sum")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc = run_nuts(mtl_model, *args, omega_prior=prior, likelihood=Gaussian(0.3),
                        num_warmup=60, num_samples=40, num_chains=1, **kw)
    dt = from_mcmc(mcmc, task_names=data.task_names)
    omega = dt.posterior["omega"]
    assert list(omega.coords["task"].values) == ["a", "b", "c"]
    assert list(dt.posterior["W"].coords["task"].values) == ["a", "b", "c"]
    draws = omega.values.reshape(-1, 3, 3)
    assert np.all(np.isfinite(draws)) and np.linalg.eigvalsh(draws).min() > 0
    if isinstance(prior, S.SquaredSchatten):  # every draw lies in the constraint set
        assert np.all(np.einsum("nij,nji->n", draws, draws) <= 1 + 1e-12)
    assert np.ptp(draws[:, 0, 1]) > 0  # the chain moved


# ----------------------------------------------------------------------------- (e) bad inputs


@pytest.mark.parametrize("make, match", [
    (lambda: S.Schatten(0.0), "r must be a finite positive"),
    (lambda: S.Schatten(-1.0), "r must be a finite positive"),
    (lambda: S.Schatten(float("nan")), "r must be a finite positive"),
    (lambda: S.Schatten("2"), "r must be a positive number"),
    (lambda: S.Schatten(2.0, lam2=0.0), "lam2"),
    (lambda: S.Schatten(2.0, lam2=-1.0), "lam2"),
    (lambda: S.SquaredSchatten(-0.5), "r must be a finite positive"),
])
def test_bad_priors(make, match, data):
    with pytest.raises(PriorError, match=match):
        make().check(3)
    with pytest.raises(PriorError, match=match):
        S.fit_schatten(data, make(), 1.0)


def test_bad_fit_arguments(data):
    from bayesmtl import priors as P
    with pytest.raises(ValueError, match="lam"):
        S.fit_schatten(data, S.Schatten(2.0), -1.0)
    with pytest.raises(ValueError, match="ridge"):
        S.fit_schatten(data, S.Schatten(2.0), 1.0, ridge=-1.0)
    with pytest.raises(ValueError, match="noise"):
        S.fit_schatten(data, S.Schatten(2.0), 1.0, noise=0.0)
    with pytest.raises(ValueError, match="method"):
        S.fit_schatten(data, S.Schatten(2.0), 1.0, method="newton")
    with pytest.raises(TypeError, match="Schatten"):
        S.fit_schatten(data, P.MTRL(), 1.0)
    with pytest.warns(ConvergenceWarning):
        S.fit_schatten(data, S.Schatten(2.0), 1.0, max_iter=2)


@pytest.mark.parametrize("shape", [(6, 11), (11, 6)])
@pytest.mark.parametrize("rank", [6, 3])
def test_spectral_proxes_through_the_gram_matrix_equal_the_svd_route(shape, rank):
    """The Schatten proxes go through the smaller Gram matrix (spectral_map); they must agree
    with U diag(prox(s)) Vᵀ from an SVD, wide and tall, full rank and rank-deficient."""
    rng = np.random.default_rng(rank)
    d, m = shape
    W = rng.normal(size=(d, rank)) @ rng.normal(size=(rank, m)) * 3.0
    U, s, Vt = np.linalg.svd(W, full_matrices=False)

    def by_svd(fn):
        return (U * np.asarray(fn(jnp.asarray(s)))) @ Vt

    for p in (0.5, 1.0, 1.5):
        tau = 0.7 * float(np.median(s))  # some singular values survive, some do not
        np.testing.assert_allclose(PX.prox_schatten_pp(jnp.asarray(W), tau, p),
                                   by_svd(lambda v, tau=tau, p=p: PX._prox_power(v, tau, p)),
                                   atol=1e-10 * s[0])
        np.testing.assert_allclose(
            PX.prox_squared_schatten(jnp.asarray(W), 0.05, p),
            by_svd(lambda v, p=p: PX.prox_squared_schatten(jnp.diag(v), 0.05, p).diagonal()),
            atol=1e-10 * s[0])


def test_nonconvex_squared_prox_ignores_exact_zero_singular_values():
    """An exact zero among the singular values (a rank-deficient W) once made the shared
    Newton loop of the p < 1 prox stop after one step for every entry (0 · ∞ = NaN)."""
    s = jnp.array([35.904, 31.479, 9.897])
    with_zeros = jnp.concatenate([s, jnp.zeros(3)])
    x = PX._prox_squared_lp_nonconvex(s, 0.05, 0.5)
    np.testing.assert_allclose(PX._prox_squared_lp_nonconvex(with_zeros, 0.05, 0.5)[:3], x,
                               rtol=1e-12)
    objective = lambda v: 0.5 * np.sum((v - s) ** 2) + 0.025 * np.sum(v**0.5) ** 4  # noqa: E731
    best = scipy.optimize.minimize(lambda z: objective(np.abs(np.r_[z, 0.0])), np.asarray(x[:2]),
                                   method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-13))
    assert objective(np.asarray(x)) <= best.fun + 1e-9
