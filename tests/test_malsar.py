"""The MALSAR family (l21, lasso, dirty): prox operators, exact MAP and the Bayesian reading.

Every reference is coded independently with cvxpy atoms from MALSAR's / Jalali et al.'s
definitions (with the library's mean per-task loss and flat intercepts).
"""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_regression, solve_cvxpy
from scipy import integrate

from bayesmtl import MultiTaskData
from bayesmtl import methods as M
from bayesmtl.errors import HyperparameterError
from bayesmtl.estimators import MTLClassifier, MTLRegressor
from bayesmtl.inference.prox import project_l1_box, prox_dirty, prox_l21
from bayesmtl.models.sparse_rows import NormLaplace, dirty_penalty, dirty_split
from bayesmtl.selection import compare


def _penalty(name, lam, lam2, W, P=None):
    if name == "l21":
        return lam * cp.sum(cp.norm(W, 2, axis=1))
    if name == "lasso":
        return lam * cp.sum(cp.abs(W))
    return lam * cp.sum(cp.max(cp.abs(P), axis=1)) + lam2 * cp.sum(cp.abs(W - P))


def _data_loss(data, W, b, logistic):
    terms = []
    for i, (X, y) in enumerate(data.tasks()):
        f = X @ W[:, i] + b[i]
        terms.append((cp.sum(cp.logistic(cp.multiply(-(2 * y - 1), f))) if logistic
                      else cp.sum_squares(f - y)) / len(y))
    return cp.sum(cp.hstack(terms))


def _reference(data, name, lam, lam2, logistic=False):
    d, m = data.n_features, data.n_tasks
    W, b, P = cp.Variable((d, m)), cp.Variable(m), cp.Variable((d, m))
    return solve_cvxpy(_data_loss(data, W, b, logistic) + _penalty(name, lam, lam2, W, P))


def _classification(seed=0, d=4, sizes=(40, 50, 60)):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, len(sizes)))
    W[0] = 0.0  # a feature no task uses
    tasks = []
    for i, n in enumerate(sizes):
        X = rng.normal(size=(n, d))
        p = 1 / (1 + np.exp(-(X @ W[:, i])))
        tasks.append((X, (rng.uniform(size=n) < p).astype(float)))
    return MultiTaskData.from_tasks(tasks, kind="classification")


HYPER = {"l21": {"lam": 0.2}, "lasso": {"lam": 0.1}, "dirty": {"lam": 0.2, "lam2": 0.08}}


# -------------------------------------------------------------------- prox operators


def _prox_reference(V, step, penalty):
    Z = cp.Variable(V.shape)
    return solve_cvxpy(penalty(Z) + cp.sum_squares(Z - V) / (2 * step)), Z.value


@pytest.mark.parametrize("seed", [0, 1])
def test_prox_l21_and_dirty_match_cvxpy(seed):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(6, 4)) * 2
    V[2] *= 0.05  # a row the ℓ2,1 prox removes
    step = 0.7
    ref_value, ref = _prox_reference(V, step, lambda Z: 0.8 * cp.sum(cp.norm(Z, 2, axis=1)))
    ours = np.asarray(prox_l21(jnp.asarray(V), step * 0.8))
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.all(ours[2] == 0)
    for lam, lam2 in [(0.9, 0.4), (0.3, 0.5), (2.0, 0.3), (0.9, np.inf)]:
        def dirty(Z, lam=lam, lam2=lam2):
            P = cp.Variable(V.shape)
            if np.isinf(lam2):  # prox of λ‖·‖₁,∞ alone
                return lam * cp.sum(cp.max(cp.abs(Z), axis=1))
            # R(Z) = min_P λ‖P‖₁,∞ + λ₂‖Z - P‖₁ (a partial minimum: convex in Z)
            return lam * cp.sum(cp.max(cp.abs(P), axis=1)) + lam2 * cp.sum(cp.abs(Z - P))
        ref_value, ref = _prox_reference(V, step, dirty)
        ours = np.asarray(prox_dirty(jnp.asarray(V), step, lam, lam2))
        np.testing.assert_allclose(ours, ref, atol=1e-6)
        if np.isfinite(lam2):
            ours_value = (float(dirty_penalty(jnp.asarray(ours), (lam, lam2)))
                          + np.sum((ours - V) ** 2) / (2 * step))
            assert abs(ours_value - ref_value) < 1e-8 * max(1.0, abs(ref_value))


def test_projection_onto_l1_ball_and_box():
    rng = np.random.default_rng(3)
    V = rng.normal(size=(5, 7)) * 3
    for radius, bound in [(2.0, 0.5), (2.0, np.inf), (100.0, 0.7), (100.0, np.inf)]:
        Z = cp.Variable(V.shape)
        solve_cvxpy(cp.sum_squares(Z - V), [cp.norm(Z, 1, axis=1) <= radius, cp.abs(Z) <= bound])
        np.testing.assert_allclose(np.asarray(project_l1_box(jnp.asarray(V), radius, bound)),
                                   Z.value, atol=1e-6)


def test_dirty_split_is_optimal_and_has_jalalis_regimes():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(8, 5))
    for lam, lam2 in [(1.0, 0.3), (0.7, 0.7), (0.2, 0.5), (3.0, 0.5)]:
        P, Q = (np.asarray(a) for a in dirty_split(jnp.asarray(W), lam, lam2))
        np.testing.assert_allclose(P + Q, W, atol=1e-14)
        Pv = cp.Variable(W.shape)
        ref = solve_cvxpy(lam * cp.sum(cp.max(cp.abs(Pv), axis=1)) + lam2 * cp.sum(cp.abs(W - Pv)))
        ours = lam * np.abs(P).max(axis=1).sum() + lam2 * np.abs(Q).sum()
        assert ours <= ref + 1e-8
    m = W.shape[1]
    P, Q = dirty_split(jnp.asarray(W), m * 0.5, 0.5)  # λ ≥ mλ₂: all in Q (per-task Lasso)
    assert np.all(np.asarray(P) == 0)
    P, Q = dirty_split(jnp.asarray(W), 0.4, 0.5)  # λ < λ₂: all in P (pure ℓ1,∞)
    assert np.all(np.asarray(Q) == 0)


# -------------------------------------------------------------------- exact MAP


@pytest.mark.parametrize("name", ["l21", "lasso", "dirty"])
def test_map_equals_cvxpy_regression(name):
    data = make_regression(seed=5, d=6, sizes=(15, 20, 25, 30))[0]
    fit, _ = M.fit(data, name, HYPER[name])
    reference = _reference(data, name, HYPER[name]["lam"], HYPER[name].get("lam2"))
    assert fit.converged
    assert abs(fit.objective - reference) < 1e-6 * max(1.0, abs(reference)), (
        fit.objective, reference)


@pytest.mark.parametrize("name", ["l21", "lasso", "dirty"])
def test_map_equals_cvxpy_logistic(name):
    data = _classification()
    fit, _ = M.fit(data, name, HYPER[name])
    reference = _reference(data, name, HYPER[name]["lam"], HYPER[name].get("lam2"),
                           logistic=True)
    assert abs(fit.objective - reference) < 1e-6 * max(1.0, abs(reference)), (
        fit.objective, reference)


def test_sparsity_patterns():
    """ℓ2,1 zeroes whole rows (features for every task); Lasso zeroes single entries; a
    dirty fit splits W into a row-shared P and an entry-sparse Q."""
    rng = np.random.default_rng(6)
    d, m = 8, 4
    W = np.zeros((d, m))
    W[:3] = rng.normal(size=(3, m)) * 2  # three shared features
    W[5, 1] = 3.0  # one task-specific feature
    tasks = []
    for i in range(m):
        X = rng.normal(size=(60, d))
        tasks.append((X, X @ W[:, i] + 0.1 * rng.normal(size=60)))
    data = MultiTaskData.from_tasks(tasks)
    l21, _ = M.fit(data, "l21", {"lam": 0.3})
    rows = np.linalg.norm(l21.W, axis=1)
    assert np.all(rows[:3] > 0) and np.all(rows[[3, 4, 6, 7]] == 0)
    lasso, _ = M.fit(data, "lasso", {"lam": 0.1})
    assert lasso.W[5, 1] != 0 and np.all(lasso.W[5, [0, 2, 3]] == 0)
    dirty, dt = M.fit(data, "dirty", {"lam": 0.5, "lam2": 0.2})
    P, Q = dirty.relation["P"], dirty.relation["Q"]
    np.testing.assert_allclose(P + Q, dirty.W, atol=1e-12)
    assert np.all(np.abs(P[:3]).max(axis=1) > 0) and np.all(P[5] == 0) and Q[5, 1] != 0
    assert dt.posterior["P"].dims[-2:] == ("feature", "task")


# -------------------------------------------------------------------- the Bayesian reading


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_row_prior_is_normalised_and_samples_its_radius(norm):
    lam = 1.7
    d = NormLaplace(lam, 2, norm)
    # the density depends on x only through its norm: log p(x) = log p(‖x‖ e₁) everywhere
    x = np.random.default_rng(0).normal(scale=2.0, size=(200, 2))
    r = np.linalg.norm(x, axis=1) if norm == "l2" else np.abs(x).max(axis=1)
    on_axis = np.c_[r, np.zeros_like(r)]
    np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(x))),
                               np.asarray(d.log_prob(jnp.asarray(on_axis))), rtol=1e-12)
    # so ∫ p = ∫₀^∞ |∂B(ρ)| p(ρ e₁) dρ, the sphere's length 2πρ (ℓ2) or 8ρ (ℓ∞)
    length = (lambda rho: 2 * np.pi * rho) if norm == "l2" else (lambda rho: 8 * rho)
    total, _ = integrate.quad(
        lambda rho: length(rho) * float(np.exp(d.log_prob(jnp.array([rho, 0.0])))), 0, np.inf,
        epsabs=1e-12)
    assert abs(total - 1.0) < 1e-8
    draws = d.sample(jax.random.PRNGKey(0), (20000,))
    radius = np.asarray(jnp.linalg.norm(draws, axis=-1) if norm == "l2"
                        else jnp.max(jnp.abs(draws), axis=-1))
    assert abs(radius.mean() - 2 / lam) < 0.03  # ‖x‖ ~ Gamma(m, λ): mean m/λ


def test_nuts_samples_the_proper_model():
    data = make_regression(seed=7, d=2, sizes=(12, 14, 16))[0]
    task = np.asarray(data.task_names)[data.task]
    est = MTLRegressor(method="dirty", lam=1.0, lam2=0.5, inference="nuts", num_warmup=150,
                       num_samples=150, num_chains=1, seed=1)
    with pytest.warns(Warning):  # few draws: the sampler says so
        est.fit(data.X, data.y, task=task)
    post = est.idata_.posterior
    np.testing.assert_allclose(post["P"].values + post["Q"].values, post["W"].values,
                               atol=1e-12)
    # the posterior mean predicts as well as the MAP of the same proper model (summed
    # likelihood, σ = 1; the data's noise caps R² near 0.49 here)
    map_fit = MTLRegressor(method="dirty", lam=1.0, lam2=0.5, loss_scale="sum",
                           noise=1.0).fit(data.X, data.y, task=task)
    assert est.score(data.X, data.y, task=task) > 0.95 * map_fit.score(data.X, data.y,
                                                                       task=task) > 0.3


# -------------------------------------------------------------------- the shared paths


@pytest.mark.parametrize("name", ["l21", "lasso", "dirty"])
def test_bad_hyperparameters_are_named(name):
    for h in M.get(name).hyper:
        with pytest.raises(HyperparameterError, match=h.name) as err:
            M.validate(name, {h.name: -1.0})
        assert err.value.parameter == h.name
    with pytest.raises(HyperparameterError, match="lam2") if name != "dirty" else \
            pytest.raises(HyperparameterError, match="lam"):
        M.validate(name, {"lam2": 0.1} if name != "dirty" else {"lam": 0.0})


def test_classifier_and_compare_include_the_family():
    data = _classification(seed=1, sizes=(120, 140, 160))
    train, test = data.train_test_split(0.3, seed=0)
    task = np.asarray(train.task_names)[train.task]
    clf = MTLClassifier(method="l21", lam=0.05).fit(train.X, train.labels(), task=task)
    assert clf.score(test.X, test.labels(), task=np.asarray(test.task_names)[test.task]) > 0.6
    rows, fits = compare(train, test, ["l21", "lasso", "dirty"], n_folds=2)
    assert [r["status"] for r in rows] == ["ok"] * 3 and set(fits) == {"l21", "lasso", "dirty"}
    assert {"l21", "lasso", "dirty"} <= set(M.names(shallow=True, kind="classification"))


def test_lasso_blocks_exact_where_admm_stalls():
    """The Gaussian lasso's per-task solver (interior point, then coordinate descent): on tasks
    whose centred Gram matrices are singular (a feature constant within each task, a feature
    duplicated) at a small λ it reaches Clarabel's optimum with exact zeros, and agrees with
    the ADMM path where that one converges."""
    from bayesmtl.models.sparse_rows import fit_sparse_rows

    rng = np.random.default_rng(11)
    tasks = []
    for i, n in enumerate((12, 18, 25)):
        X = rng.normal(size=(n, 5))
        X[:, 3] = float(i)  # constant within the task: S_i singular
        X[:, 4] = X[:, 0]  # a duplicated column: singular again
        tasks.append((X, X[:, 0] - 2 * X[:, 1] + 0.3 * rng.normal(size=n)))
    data = MultiTaskData.from_tasks(tasks)
    for lam in (1e-3, 0.05):
        fit = fit_sparse_rows(data, "lasso", lam)
        assert fit.converged and fit.residual <= 1e-10
        reference = _reference(data, "lasso", lam, None)
        assert abs(fit.objective - reference) < 1e-9 * abs(reference), (lam, fit.objective,
                                                                          reference)
        assert np.all(fit.W[3] == 0)  # the constant feature: exactly zero
    admm = fit_sparse_rows(data, "lasso", 0.05, method="admm")
    blocks = fit_sparse_rows(data, "lasso", 0.05, method="blocks")
    assert admm.converged and abs(admm.objective - blocks.objective) < 1e-10 * blocks.objective
    with pytest.raises(ValueError, match="blocks"):
        fit_sparse_rows(_classification(), "lasso", 0.1, method="blocks")


def test_lasso_on_school_small_lambda_converges_by_default():
    """School split 1 at λ = 0.01: the default solver (blocks) certifies the optimum; ADMM ran
    into its 5,000-evaluation cap there, 2e-8 above it, and warned."""
    import warnings

    from bayesmtl.datasets import load_school
    from bayesmtl.errors import ConvergenceWarning
    from bayesmtl.models.sparse_rows import fit_sparse_rows

    data, _ = load_school(split=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = fit_sparse_rows(data, "lasso", 0.01)
    assert fit.converged and fit.residual <= 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        admm = fit_sparse_rows(data, "lasso", 0.01, method="admm", max_iter=300)
    assert fit.objective <= admm.objective
