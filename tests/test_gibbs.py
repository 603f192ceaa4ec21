"""Conjugate blocked Gibbs sampler (issue 3): exact conditionals, stationary distribution
against NUTS on the same model, ArviZ export, bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from arviz_stats import mcse
from conftest import make_regression

from bayesmtl import priors as P
from bayesmtl.inference import gibbs as G
from bayesmtl.inference.export import task_relation_summary, to_datatree
from bayesmtl.models.likelihoods import BernoulliLogit, Gaussian
from bayesmtl.models.losses import row_weights


def _tiny(seed=0, d=2, sizes=(9, 12, 15)):
    omega = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.4], [0.2, 0.4, 1.0]])
    return make_regression(seed, d=d, sizes=sizes, omega=omega)[0]


def _closed_form(data, weights, sigma, omega, lam, ridge, intercept_scale):
    """Posterior mean and covariance of θ = (w_i, b_i)_i written from scratch: design matrix
    Z (N, m(d+1)), prior precision (λΩ⁻¹ ⊗ I_d + ρI on weights, s_b⁻² on intercepts)."""
    m, d = data.n_tasks, data.n_features
    p = d + 1
    Z = np.zeros((len(data.y), m * p))
    for j, (x, t) in enumerate(zip(data.X, data.task, strict=True)):
        Z[j, t * p: t * p + d] = x
        Z[j, t * p + d] = 1.0
    c = weights / sigma[data.task] ** 2
    prior = np.zeros((m * p, m * p))
    prec = lam * np.linalg.inv(omega)
    for i in range(m):
        for k in range(m):
            prior[i * p: i * p + d, k * p: k * p + d] = prec[i, k] * np.eye(d)
        prior[i * p: i * p + d, i * p: i * p + d] += ridge * np.eye(d)
        prior[i * p + d, i * p + d] = 0.0 if intercept_scale is None else intercept_scale ** -2
    Q = Z.T @ (c[:, None] * Z) + prior
    cov = np.linalg.inv(Q)
    return cov @ Z.T @ (c * data.y), cov


@pytest.mark.parametrize("intercept_scale,loss_scale", [(None, "mean"), (1.5, "sum")])
def test_coefficient_conditional_is_exact(intercept_scale, loss_scale):
    data = _tiny()
    m = data.n_tasks
    weights = row_weights(data.task, m, loss_scale)
    sigma = np.array([0.7, 1.1, 0.9])
    omega = np.array([[1.0, 0.8, 0.3], [0.8, 1.2, 0.5], [0.3, 0.5, 0.9]])
    lam, ridge = 2.0, 0.3
    mean, cov = _closed_form(data, weights, sigma, omega, lam, ridge, intercept_scale)
    design = G._design(jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task),
                       jnp.asarray(weights), m)
    factor = jnp.asarray(np.linalg.cholesky(np.linalg.inv(omega)))
    b_prec = 0.0 if intercept_scale is None else intercept_scale ** -2
    args = (design, jnp.asarray(sigma), factor, lam, ridge, b_prec)
    for solver in ("cholesky", "cg"):
        theta, _ = G.sample_coefficients(None, *args, solver=solver)
        np.testing.assert_allclose(np.ravel(theta), mean, rtol=1e-8, atol=1e-10)
    # the same perturbation solved both ways gives the same draw (CG is exact to 1e-10)
    key = jax.random.PRNGKey(3)
    a, _ = G.sample_coefficients(key, *args, solver="cholesky")
    b, iters = G.sample_coefficients(key, *args, solver="cg")
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    assert 0 < int(iters) < 100
    # the perturb-and-solve draws have the closed-form mean and covariance
    n = 40_000
    draws = jax.jit(jax.vmap(lambda k: G.sample_coefficients(k, *args)[0].ravel()))(
        jax.random.split(jax.random.PRNGKey(0), n))
    draws = np.asarray(draws)
    sd = np.sqrt(np.diag(cov))
    assert np.max(np.abs(draws.mean(0) - mean) / sd) < 5 / np.sqrt(n)
    emp = np.cov(draws.T)
    # standard error of a Gaussian sample covariance entry: sqrt((C_ii C_jj + C_ij²) / n)
    se = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / n)
    assert np.max(np.abs(emp - cov) / se) < 5.5


def test_inverse_wishart_step():
    scale = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.5]])
    df = 15.0
    omega, factor = jax.jit(jax.vmap(lambda k: G.sample_inverse_wishart(k, df, scale)))(
        jax.random.split(jax.random.PRNGKey(1), 40_000))
    omega, factor = np.asarray(omega), np.asarray(factor)
    # G Gᵀ = Ω⁻¹ exactly
    np.testing.assert_allclose(omega[:5] @ factor[:5] @ np.swapaxes(factor[:5], 1, 2),
                               np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-9)
    # E[Ω] = Ψ / (ν - m - 1); Var(Ω_ij) from the IW moments
    p = 3
    mean = scale / (df - p - 1)
    var = ((df - p + 1) * scale**2 + (df - p - 1) * np.outer(np.diag(scale), np.diag(scale))) \
        / ((df - p) * (df - p - 1) ** 2 * (df - p - 3))
    se = np.sqrt(var / len(omega))
    assert np.max(np.abs(omega.mean(0) - mean) / se) < 5
    assert np.max(np.abs(omega.var(0) / var - 1)) < 0.15


def test_noise_step_matches_quadrature():
    rss, n_eff, s = 37.0, 12.0, 1.5
    u = np.asarray(jax.jit(jax.vmap(
        lambda k: G.sample_noise_variance(k, rss, n_eff, s, 1.0)))(
        jax.random.split(jax.random.PRNGKey(2), 20_000)))
    grid = np.linspace(1e-4, 60, 200_001)
    # σ ~ HalfNormal(s) and σ^{-n} exp(-rss/(2σ²)) in terms of u = σ²
    logp = -(n_eff + 1) / 2 * np.log(grid) - rss / (2 * grid) - grid / (2 * s**2)
    p = np.exp(logp - logp.max())
    p /= p.sum()
    mean = np.sum(grid * p)
    sd = np.sqrt(np.sum((grid - mean) ** 2 * p))
    assert abs(u.mean() - mean) < 5 * sd / np.sqrt(len(u))
    assert abs(u.std() / sd - 1) < 0.05


_NUTS_CASE = dict(prior=P.InverseWishart(df=12.0, scale=2.0),
                  settings=dict(lam=1.5, ridge=0.2, intercept_scale=2.0),
                  lik=Gaussian("shared", noise_scale=3.0))


@pytest.fixture(scope="module")
def nuts_reference():
    from bayesmtl.inference.mcmc import run_nuts
    from bayesmtl.models.matrix_normal import model_inputs, mtl_model

    data = _tiny(seed=1, sizes=(12, 15, 18))
    args, kw = model_inputs(data, "sum")
    mcmc = run_nuts(mtl_model, *args, omega_prior=_NUTS_CASE["prior"],
                    likelihood=_NUTS_CASE["lik"], num_warmup=400, num_samples=1000,
                    num_chains=2, seed=1, target_accept_prob=0.9, **_NUTS_CASE["settings"],
                    **kw)
    return data, mcmc.get_samples(group_by_chain=True)


@pytest.mark.parametrize("scale_moves", [False, True])
def test_gibbs_matches_nuts(nuts_reference, scale_moves):
    """The chain's stationary distribution (with and without the scale moves) equals NUTS's
    on the same model: means and standard deviations within 4.5 Monte Carlo s.e."""
    data, nuts = nuts_reference
    gibbs = G.run_gibbs(data, _NUTS_CASE["prior"], likelihood=_NUTS_CASE["lik"],
                        num_warmup=100, num_samples=3000, num_chains=2, seed=0,
                        scale_moves=scale_moves, **_NUTS_CASE["settings"]).samples
    for site in ("W", "b", "omega", "noise"):
        g, n = np.asarray(gibbs[site]), np.asarray(nuts[site])
        err = np.sqrt(mcse(g, method="mean") ** 2 + mcse(n, method="mean") ** 2)
        z = np.abs(g.mean((0, 1)) - n.mean((0, 1))) / err
        assert np.max(z) < 4.5, (site, z)
        sd_err = np.sqrt(mcse(g, method="sd") ** 2 + mcse(n, method="sd") ** 2)
        z_sd = np.abs(g.std((0, 1)) - n.std((0, 1))) / sd_err
        assert np.max(z_sd) < 4.5, (site, z_sd)


def test_scale_move_alone_keeps_a_known_posterior():
    """Scale moves only (no Gibbs blocks), started from exact posterior draws of a model whose
    posterior is known in closed form, keep the draws' distribution: m = 2 tasks, no data
    (prior only), W | Ω ~ MN(0, I, Ω/λ), Ω ~ IW(ν, Ψ)."""
    m, d, lam, nu = 2, 3, 2.0, 10.0
    psi = jnp.array([[1.0, 0.3], [0.3, 0.5]])
    key = jax.random.PRNGKey(3)
    n = 20000
    k_omega, k_w, k_move = jax.random.split(key, 3)
    draws = jax.vmap(lambda k: G.sample_inverse_wishart(k, nu, psi))(
        jax.random.split(k_omega, n))
    omega, factor = draws
    z = jax.random.normal(k_w, (n, d, m))
    W = jnp.einsum("ndm,nkm->ndk", z, jnp.linalg.cholesky(omega / lam))
    empty = G._design(jnp.zeros((1, d)), jnp.zeros(1), jnp.zeros(1, jnp.int32),
                      jnp.zeros(1), m)  # one row of weight 0: no likelihood
    basis = jnp.linalg.qr(jnp.array([[1.0, 2.0], [0.5, -1.0]]))[0]

    def one(k, w, om, g):
        theta = jnp.concatenate([w.T, jnp.zeros((m, 1))], axis=1)
        s = G.GibbsState(theta, om, g, jnp.ones(m))
        s = G.scale_moves(k, s, empty, basis, 0.0, nu, psi)
        return s.theta[:, :d].T, s.omega, s.precision_factor

    W2, omega2, factor2 = jax.vmap(one)(jax.random.split(k_move, n), W, omega, factor)
    np.testing.assert_allclose(np.asarray(factor2 @ jnp.swapaxes(factor2, 1, 2)),
                               np.asarray(jnp.linalg.inv(omega2)), rtol=1e-6, atol=1e-8)
    # the moved draws are still IW(ν, Ψ) / matrix-normal: compare log-eigenvalue moments and
    # E[Ω], E[WᵀW] = d E[Ω]/λ with their exact values
    expected = np.asarray(psi) / (nu - m - 1)
    for om in (omega, omega2):
        se = np.asarray(om).std(0) / np.sqrt(n)
        assert np.all(np.abs(np.asarray(om).mean(0) - expected) < 5 * se)
    gram = np.einsum("ndm,ndk->nmk", np.asarray(W2), np.asarray(W2))
    se = gram.std(0) / np.sqrt(n)
    assert np.all(np.abs(gram.mean(0) - d * expected / lam) < 5 * se)
    # and the move did move them
    assert np.mean(np.abs(np.asarray(omega2 - omega))) > 0.05 * np.mean(np.abs(expected))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # Ω_corr's unit diagonal
def test_export_and_stats():
    data = _tiny()
    result = G.run_gibbs(data, P.InverseWishart(), likelihood=Gaussian("task"),
                         num_warmup=10, num_samples=30, num_chains=2, seed=4)
    s = result.samples
    assert s["W"].shape == (2, 30, 2, 3) and s["omega"].shape == (2, 30, 3, 3)
    assert s["noise"].shape == (2, 30, 3) and np.all(s["noise"] > 0)
    dt = to_datatree(s, task_names=data.task_names, feature_names=data.feature_names,
                     sample_stats=result.sample_stats)
    post = dt.posterior
    assert list(post["omega"].coords["task"].values) == list(data.task_names)
    assert post["W"].dims[2:] == ("feature", "task")
    assert post["noise"].dims[2:] == ("task",)
    np.testing.assert_allclose(np.diagonal(post["omega_corr"].values, axis1=2, axis2=3), 1.0)
    table = task_relation_summary(dt, "omega")
    assert len(table) == 3 and np.all(np.isfinite(table["r_hat"]))


def test_fixed_noise_has_no_noise_site():
    data = _tiny()
    s = G.run_gibbs(data, P.InverseWishart(), likelihood=Gaussian(0.5), num_warmup=0,
                    num_samples=5, num_chains=1).samples
    assert set(s) == {"W", "b", "omega"}


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(likelihood=BernoulliLogit()), ValueError, "Gaussian likelihood only"),
    (dict(prior=P.LKJ()), P.PriorError, "needs an InverseWishart"),
    (dict(prior=P.Fixed("identity")), P.PriorError, "needs an InverseWishart"),
    (dict(prior=P.InverseWishart(df=1.5)), P.PriorError, "df must exceed"),
    (dict(prior=P.InverseWishart(scale=-1.0)), P.PriorError, "scale must be positive"),
    (dict(likelihood=Gaussian(-1.0)), ValueError, "noise must be positive"),
    (dict(likelihood=Gaussian("task"), loss_scale="mean"), ValueError, "effective sample"),
    (dict(lam=0.0), ValueError, "lam"),
    (dict(ridge=-1.0), ValueError, "ridge"),
    (dict(intercept_scale=0.0), ValueError, "intercept_scale"),
    (dict(solver="lu"), ValueError, "solver"),
    (dict(num_samples=0), ValueError, "num_samples"),
])
def test_bad_inputs(kwargs, error, match):
    data = _tiny()
    prior = kwargs.pop("prior", P.InverseWishart())
    with pytest.raises(error, match=match):
        G.run_gibbs(data, prior, num_warmup=1, **{"num_samples": 2, **kwargs})


def test_classification_data_rejected():
    from bayesmtl import MultiTaskData

    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(6, 2)), np.array([0, 1] * 3)) for _ in range(3)]
    data = MultiTaskData.from_tasks(tasks, kind="classification")
    with pytest.raises(ValueError, match="regression"):
        G.run_gibbs(data, P.InverseWishart(), num_samples=2)
