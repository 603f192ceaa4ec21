"""The matrix-normal task-covariance model: objective equivalence, exact MAP, recovery."""

import cvxpy as cp
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmtl import priors as P
from bayesmtl.inference.map import map_estimate, neg_log_joint
from bayesmtl.models.likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from bayesmtl.models.matrix_normal import fit_mtrl, model_inputs, mtl_model


def paper_objective_1(data, W, b, omega, lam1, lam2_g=0.0):
    """Eq. (1) of L2MT written from the paper: Σ_i (1/n_i) Σ_j (w_iᵀx_ij + b_i - y_ij)²
    + (λ1/2) tr(W Ω⁻¹ Wᵀ) + λ2 g(Ω)."""
    loss = 0.0
    for i, (X, y) in enumerate(data.tasks()):
        loss += np.mean((X @ W[:, i] + b[i] - y) ** 2)
    return loss + lam1 / 2 * np.trace(W @ np.linalg.inv(omega) @ W.T) + lam2_g


def random_spd(rng, m, trace_one=False):
    A = rng.normal(size=(m, m))
    S = A @ A.T + 0.5 * np.eye(m)
    return S / np.trace(S) if trace_one else S


def _nlj(data, prior, params, lam):
    args, kw = model_inputs(data, "mean")
    return float(neg_log_joint(mtl_model, args, dict(kw, omega_prior=prior,
                                                     likelihood=Gaussian(PAPER_SQUARED_LOSS_NOISE),
                                                     lam=lam), params))


def test_negative_log_joint_is_objective_1_fixed_omega(small_regression):
    """Fixed Ω: -log p(W, b, y) (mean scaling, σ = 1/√2) = eq. (1) + constant."""
    data = small_regression
    rng = np.random.default_rng(3)
    omega = random_spd(rng, data.n_tasks)
    lam = 0.7
    diffs = []
    for _ in range(4):
        W = rng.normal(size=(data.n_features, data.n_tasks))
        b = rng.normal(size=data.n_tasks)
        nlj = _nlj(data, P.Fixed(omega), {"W": jnp.asarray(W), "b": jnp.asarray(b)}, lam)
        diffs.append(nlj - paper_objective_1(data, W, b, omega, lam))
    assert np.ptp(diffs) < 1e-9 * max(1.0, abs(diffs[0]))


def test_negative_log_joint_is_mtrl_objective_over_w_and_omega(small_regression):
    """MTRL prior: the joint over (W, b, Ω) on {Ω ⪰ 0, tr Ω = 1} equals eq. (1) with g the
    indicator of that set, up to one constant — Ω varies too."""
    data = small_regression
    rng = np.random.default_rng(4)
    lam = 1.3
    diffs = []
    for _ in range(4):
        omega = random_spd(rng, data.n_tasks, trace_one=True)
        W = rng.normal(size=(data.n_features, data.n_tasks))
        b = rng.normal(size=data.n_tasks)
        nlj = _nlj(data, P.MTRL(), {"W": jnp.asarray(W), "b": jnp.asarray(b),
                                    "omega_raw": jnp.asarray(omega)}, lam)
        diffs.append(nlj - paper_objective_1(data, W, b, omega, lam))
    assert np.ptp(diffs) < 1e-9 * max(1.0, abs(diffs[0]))


def closed_form_fixed(data, omega, lam, sigma2):
    """Independent closed form: the stationarity system of (W, b) written with Kronecker
    blocks, solved densely."""
    d, m = data.n_features, data.n_tasks
    D = d + 1
    K = np.zeros((m * D, m * D))
    r = np.zeros(m * D)
    P_ = np.linalg.inv(omega)
    for i, (X, y) in enumerate(data.tasks()):
        Xa = np.c_[X, np.ones(len(X))]
        c = 1.0 / (len(y) * sigma2)
        K[i * D:(i + 1) * D, i * D:(i + 1) * D] += c * Xa.T @ Xa
        r[i * D:(i + 1) * D] = c * Xa.T @ y
    K += np.kron(lam * P_, np.diag(np.r_[np.ones(d), 0.0]))
    theta = np.linalg.solve(K, r).reshape(m, D)
    return theta[:, :d].T, theta[:, d]


def test_map_fixed_omega_equals_closed_form(small_regression):
    data = small_regression
    omega = random_spd(np.random.default_rng(5), data.n_tasks)
    W_ref, b_ref = closed_form_fixed(data, omega, 2.0, 0.49)
    args, kw = model_inputs(data, "mean")
    r = map_estimate(mtl_model, *args, omega_prior=P.Fixed(omega), likelihood=Gaussian(0.7),
                     lam=2.0, **kw)
    assert r.converged
    np.testing.assert_allclose(r.params["W"], W_ref, atol=1e-8, rtol=0)
    np.testing.assert_allclose(r.params["b"], b_ref, atol=1e-8, rtol=0)
    assert np.all(np.diff(r.history) <= 1e-12 * abs(r.history[0]))  # objective decreases


def cvxpy_mtrl(data, lam, ridge, classification=False):
    d, m = data.n_features, data.n_tasks
    W, b = cp.Variable((d, m)), cp.Variable(m)
    loss = 0
    for i, (X, y) in enumerate(data.tasks()):
        f = X @ W[:, i] + b[i]
        if classification:
            loss += cp.sum(cp.logistic(cp.multiply(-(2 * y - 1), f))) / len(y)
        else:
            loss += cp.sum_squares(y - f) / len(y)
    obj = loss + ridge / 2 * cp.sum_squares(W) + lam / 2 * cp.square(cp.normNuc(W))
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver=cp.CLARABEL)
    return prob.value


@pytest.mark.parametrize("method", ["admm", "proximal"])
def test_mtrl_map_matches_cvxpy(small_regression, method):
    ref = cvxpy_mtrl(small_regression, lam=0.5, ridge=0.1)
    r = fit_mtrl(small_regression, 0.5, 0.1, method=method)
    assert r.converged
    assert abs(r.objective - ref) <= 1e-6 * abs(ref)
    np.testing.assert_allclose(np.trace(r.omega), 1.0)
    assert np.linalg.eigvalsh(r.omega).min() > -1e-10


def test_mtrl_logistic_matches_cvxpy():
    rng = np.random.default_rng(7)
    from bayesmtl import MultiTaskData
    tasks = [(X := rng.normal(size=(40, 4)), (X @ rng.normal(size=4) + rng.normal(size=40) > 0)
              .astype(float)) for _ in range(3)]
    data = MultiTaskData.from_tasks(tasks, kind="classification")
    ref = cvxpy_mtrl(data, lam=0.3, ridge=0.05, classification=True)
    r = fit_mtrl(data, 0.3, 0.05)
    assert abs(r.objective - ref) <= 1e-6 * abs(ref)


def test_mtrl_alternating_reaches_optimum_when_full_rank(small_regression):
    """Zhang & Yeung's alternating scheme: exact when the optimum has full rank (small λ)."""
    ref = cvxpy_mtrl(small_regression, lam=0.01, ridge=0.1)
    r = fit_mtrl(small_regression, 0.01, 0.1, method="alternating", max_iter=2000, tol=1e-13)
    assert abs(r.objective - ref) <= 1e-6 * abs(ref)


def test_posterior_recovers_block_task_correlation():
    """NUTS under an inverse-Wishart prior recovers a block-structured task correlation.

    Identity design (each task observes its d weights with noise) keeps the posterior of W
    well conditioned, so a short run suffices; W is drawn from the model with the true Ω."""
    from bayesmtl import MultiTaskData
    from bayesmtl.inference.export import from_mcmc, task_relation_summary
    from bayesmtl.inference.mcmc import run_nuts

    omega = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(0)
    d = 300
    W = rng.normal(size=(d, 3)) @ np.linalg.cholesky(omega).T
    data = MultiTaskData.from_tasks(
        [(np.eye(d), W[:, i] + 0.3 * rng.normal(size=d)) for i in range(3)],
        task_names=["t0", "t1", "t2"])
    args, kw = model_inputs(data, "sum")
    mcmc = run_nuts(mtl_model, *args, omega_prior=P.InverseWishart(), likelihood=Gaussian(0.3),
                    num_warmup=300, num_samples=700, num_chains=2, **kw)
    dt = from_mcmc(mcmc, task_names=data.task_names)
    post = dt.posterior["omega_corr"].values.mean(axis=(0, 1))
    assert np.max(np.abs(post - omega)) < 0.1
    summary = task_relation_summary(dt)
    assert summary["r_hat"].max() < 1.01
    assert list(dt.posterior["omega_corr"].coords["task"].values) == ["t0", "t1", "t2"]


@pytest.mark.parametrize("make, match", [
    (lambda: P.Fixed(np.array([[1.0, 2.0], [0.0, 1.0]])), "not symmetric"),
    (lambda: P.Fixed(np.array([[1.0, 2.0], [2.0, 1.0]])), "not positive semidefinite"),
    (lambda: P.Fixed(np.eye(3)), "3×3 but there are 2 tasks"),
    (lambda: P.InverseWishart(df=0.5), "df must exceed"),
    (lambda: P.InverseWishart(df=float("nan")), "finite"),
    (lambda: P.LKJ(eta=-1.0), "eta must be positive"),
])
def test_bad_priors(make, match):
    with pytest.raises(P.PriorError, match=match):
        make().check(2)


def test_bad_hyperparameters(small_regression):
    with pytest.raises(ValueError, match="lam"):
        fit_mtrl(small_regression, -1.0)
    with pytest.raises(ValueError, match="ridge"):
        fit_mtrl(small_regression, 1.0, ridge=-0.1)
    with pytest.raises(ValueError, match="noise"):
        Gaussian(-1.0).check()
    with pytest.raises(ValueError, match="classification"):
        from bayesmtl import MultiTaskData
        data = MultiTaskData.from_arrays(np.ones((4, 1)), [0, 1, 0, 1], list("aabb"),
                                         kind="classification")
        fit_mtrl(data, 1.0, method="admm")
    assert BernoulliLogit().kind == "classification"
