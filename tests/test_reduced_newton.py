"""Newton on glMTL's reduced objective φ(W, b) = min_P F(W, b, P) (inference.reduced_newton)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import binary_tasks, make_regression

from bayesmtl import methods
from bayesmtl.errors import ConvergenceWarning
from bayesmtl.inference import reduced_newton as RN
from bayesmtl.inference.alternation import family_objective
from bayesmtl.inference.stats import data_term
from bayesmtl.models import family as F
from bayesmtl.models.losses import row_weights

LAM = 1.0


@pytest.fixture(scope="module")
def reg():
    return make_regression(seed=3, d=4, sizes=(12, 15, 18, 20, 25, 30))[0]


def _exact_precision(member, W, lam):
    d, m = W.shape
    return np.asarray(member.omega_step(jnp.asarray(W.T @ W), lam, d, jnp.eye(m)))


def test_glmtl_curvature_is_the_derivative_of_the_exact_omega_step():
    """λ V P* + C vec V is the directional derivative of the prior's reduced gradient λ W P*(W)
    (central differences through the graphical lasso, its support unchanged), and C is
    symmetric negative semidefinite."""
    rng = np.random.default_rng(0)
    d, m = 3, 7
    W = rng.normal(size=(d, m))
    member = F.SparsePrecision(lam2=0.4)
    P = _exact_precision(member, W, LAM)
    zeros = np.count_nonzero(P == 0)
    assert 0 < zeros < m * m - m  # a support with zeros off the diagonal, not diagonal only
    C = member.reduced_curvature(W, LAM, P)
    assert C.shape == (m * d, m * d)
    np.testing.assert_allclose(C, C.T, atol=1e-12 * np.abs(C).max())
    assert np.linalg.eigvalsh(C).max() <= 1e-10 * np.abs(C).max()
    assert np.abs(C).max() > 1e-3  # the Ω-step moves: a zero C would pass the above
    for _ in range(3):
        V = rng.normal(size=(d, m))
        eps = 1e-5
        plus, minus = W + eps * V, W - eps * V
        P_plus, P_minus = _exact_precision(member, plus, LAM), _exact_precision(member, minus, LAM)
        assert np.array_equal(P_plus != 0, P != 0) and np.array_equal(P_minus != 0, P != 0)
        numeric = LAM * (plus @ P_plus - minus @ P_minus) / (2 * eps)
        analytic = LAM * V @ P + (C @ V.T.ravel()).reshape(m, d).T
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6 * np.abs(numeric).max())


def _reduced_gradient_from_rows(data, member, lam, W, b):
    """∇ of F (eq. (1) from the rows, not the moments) in (W, b) at P = P*(W), the exact
    Ω-step: the gradient of φ by the envelope theorem."""
    P = _exact_precision(member, np.asarray(W), lam)
    X, y, task = (jnp.asarray(v) for v in (data.X, data.y, data.task))
    weights = jnp.asarray(row_weights(data.task, data.n_tasks, "mean"))
    return jax.grad(lambda W, b: family_objective(W, b, P, member, X, y, task, weights, lam),
                    argnums=(0, 1))(jnp.asarray(W), jnp.asarray(b))


def test_newton_reaches_the_alternations_optimum_and_a_stationary_point(reg):
    member = F.SparsePrecision(lam2=0.05)
    newton = F.fit_family(reg, member, LAM, newton_after=1e-3, tol=1e-14)
    assert newton.converged and newton.newton_steps > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        alternation = F.fit_family(reg, member, LAM, newton_after=None, tol=1e-15,
                                   max_iter=20000)
    assert alternation.newton_steps == 0
    scale = max(1.0, abs(alternation.objective))
    assert newton.objective <= alternation.objective + 1e-11 * scale
    np.testing.assert_allclose(newton.W, alternation.W, atol=1e-6 * np.abs(newton.W).max())
    gW, gb = _reduced_gradient_from_rows(reg, member, LAM, newton.W, newton.b)
    assert float(jnp.linalg.norm(gW)) + float(jnp.linalg.norm(gb)) <= 1e-7 * scale
    # the history is F after every outer iteration and Newton step, non-increasing
    assert len(newton.history) == newton.n_iter
    assert np.all(np.diff(newton.history) <= 1e-12 * scale)


def test_newton_gradient_and_hessian_match_autodiff_at_fixed_precision(reg):
    """At a fixed P (C = 0), the reduced gradient and H₀ are F's gradient and Hessian in θ."""
    term = data_term(reg, "mean", None)
    d, m = reg.n_features, reg.n_tasks
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(d, m)), rng.normal(size=m)
    P = np.linalg.inv(np.cov(rng.normal(size=(m, 3 * m)))) + np.eye(m)
    member = F.SparsePrecision(lam2=0.05)
    D = d + 1

    def f(theta):
        W, b = RN.unstack(theta, m, d)
        return (family_objective(W, b, P, member, jnp.asarray(reg.X), jnp.asarray(reg.y),
                                 jnp.asarray(reg.task),
                                 jnp.asarray(row_weights(reg.task, m, "mean")), LAM))

    theta = jnp.asarray(RN.stack(W, b, D))
    np.testing.assert_allclose(RN.reduced_gradient(term, LAM, np.asarray(theta), P, d),
                               jax.grad(f)(theta), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(RN.reduced_hessian(term, LAM, P, np.zeros((m * d, m * d)), d),
                               jax.hessian(f)(theta), rtol=1e-10, atol=1e-10)


def test_newton_is_not_used_where_it_does_not_apply():
    """Classification glMTL (no Gaussian W-system) and members without the curvature
    alternate as before."""
    data = make_regression(seed=2, d=3, sizes=(20, 25, 30))[0]
    assert F.fit_family(data, F.SparseCovariance(lam2=0.1), LAM).newton_steps == 0
    assert F.fit_family(data, F.SparsePrecision(lam2=0.1), LAM).newton_steps > 0
    fit, _ = methods.fit(data, "glmtl", {"lam": LAM, "lam2": 0.1})  # the registry reports it
    assert fit.converged and fit.info["newton_steps"] > 0
    rng = np.random.default_rng(0)
    binary = binary_tasks(rng, 3, 40, d=3)
    assert binary.kind == "classification"
    r = F.fit_family(binary, F.SparsePrecision(lam2=0.1), LAM)
    assert r.converged and r.newton_steps == 0


class _RecordingGlmtl(F.SparsePrecision):
    """glMTL recording the accuracy each Ω-step was asked for."""

    def omega_step(self, gram, lam, d, state, previous_gram=None, accuracy=None):
        self.asked.append(accuracy)
        return super().omega_step(gram, lam, d, state, previous_gram, accuracy)


def test_inexact_early_omega_steps_reach_the_exact_alternations_result(reg, monkeypatch):
    """Early glMTL Ω-steps solved to a residual following the change of F (down to exact)
    give the alternation with exact steps' optimum, F monotone."""
    from bayesmtl.inference import alternation

    loose = _RecordingGlmtl(lam2=0.05)
    object.__setattr__(loose, "asked", [])
    inexact = F.fit_family(reg, loose, LAM, newton_after=None, tol=1e-13, max_iter=5000)
    asked = np.array([a for a in loose.asked if a is not None])
    assert asked.max() == alternation.OMEGA_ACCURACY_MAX  # loose early steps were taken
    assert asked[-1] == alternation.OMEGA_ACCURACY_MIN  # exact at the end
    monkeypatch.setattr(alternation, "OMEGA_ACCURACY_MAX", alternation.OMEGA_ACCURACY_MIN)
    exact = F.fit_family(reg, F.SparsePrecision(lam2=0.05), LAM, newton_after=None, tol=1e-13,
                         max_iter=5000)
    assert inexact.converged and exact.converged
    scale = max(1.0, abs(exact.objective))
    assert abs(inexact.objective - exact.objective) <= 1e-11 * scale
    np.testing.assert_allclose(inexact.W, exact.W, atol=1e-5 * np.abs(exact.W).max())
    assert np.all(np.diff(inexact.history) <= 1e-12 * scale)
